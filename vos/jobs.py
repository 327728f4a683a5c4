"""``vos batch`` jobs: what to segment, read from a DAVIS root or a JSONL / CSV manifest.

A :class:`Job` names one video, its output folder name and its prompt (absolute paths). Prompts:
``first_mask`` (the first frame's annotation), ``masks`` (annotations of any frames, frame index
-> file; JSONL only), ``text`` (object descriptions) or ``classes`` (class names). A job needs
exactly one prompt kind; ``first_mask`` and ``masks`` may be combined (``first_mask`` is frame 0's
mask, so ``masks`` must then not give frame 0). See ``docs/ray_cluster.md`` for the formats and
``docs/architecture.md`` for where this module sits.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vos.batch_log import BATCH_MANIFEST
from vos.errors import UserError

__all__ = ["Job", "default_name", "check_name", "read_davis_root", "read_job_manifest", "discover_jobs"]


@dataclass(frozen=True)
class Job:
    """One video to segment: results go to ``OUTPUT/name``.

    Attributes:
        name: output folder name (unique within a batch).
        video: absolute path of the video file or frame folder.
        first_mask: absolute path of the first frame's annotation, or None.
        where: where the job was defined (``file:line``), for messages.
        masks: {frame index (0-based, decoding order): absolute annotation path}, or None.
        text: object descriptions (non-empty strings), or None.
        classes: class names (non-empty strings), or None.
        stem_masks: {frame stem: absolute annotation path} (frame folders; dataset layouts), or None.
        mask_objects: {frame stem: object ids}: only these ids are taken from that stem's mask
            (the objects that start there; 0 elsewhere means "no label"), or None (all ids).
        object_masks: {object id: absolute binary mask path}: each object tracked on its own
            (SA-V: ``OUTPUT/NAME/OBJ/STEM.png``), or None.
        write_stems: the stems of the frames to write (others are propagated over, not written),
            or None (every frame).
        backward: False: nothing is segmented before the first annotated frame (YouTube-VOS, LVOS).
    """

    name: str
    video: str
    first_mask: str | None
    where: str = ""
    masks: dict[int, str] | None = None
    text: tuple[str, ...] | None = None
    classes: tuple[str, ...] | None = None
    stem_masks: dict[str, str] | None = None
    mask_objects: dict[str, tuple[int, ...]] | None = None
    object_masks: dict[int, str] | None = None
    write_stems: tuple[str, ...] | None = None
    backward: bool = True

    def prompt(self) -> dict[str, Any]:
        """The prompt fields that are set, as JSON-ready values (``masks`` keys as strings, lists):
        what the worker passes to ``run_video`` and what ``--resume`` compares."""
        out: dict[str, Any] = {}
        if self.first_mask is not None:
            out["first_mask"] = self.first_mask
        if self.masks is not None:
            out["masks"] = {str(k): v for k, v in sorted(self.masks.items())}
        if self.text is not None:
            out["text"] = list(self.text)
        if self.classes is not None:
            out["classes"] = list(self.classes)
        if self.stem_masks is not None:
            out["stem_masks"] = dict(self.stem_masks)
        if self.mask_objects is not None:
            out["mask_objects"] = {k: list(v) for k, v in self.mask_objects.items()}
        if self.object_masks is not None:
            out["object_masks"] = {str(k): v for k, v in sorted(self.object_masks.items())}
        if self.write_stems is not None:
            out["write_stems"] = list(self.write_stems)
        if not self.backward:
            out["backward"] = False
        return out


def default_name(video: Path) -> str:
    """The output name ``vos run`` would use: a folder's name or a file's stem."""
    return video.resolve().name if video.is_dir() else video.stem


def check_name(name: str, where: str) -> str:
    """``name`` when it can be an output folder name (no path separators, no leading dot).

    Raises:
        UserError: ``"{where}: ..."``.
    """
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{where}: empty name")
    bad = [c for c in ("/", "\\", "\0", "\n", "\r") if c in name]
    if bad or name in (".", "..") or name.startswith(".") or name == BATCH_MANIFEST:
        raise UserError(f"{where}: {name!r} cannot be an output folder name (no path separators, "
                        f"no leading dot)")
    return name


def _check_unique(jobs: list[Job]) -> list[Job]:
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.name in seen:
            raise UserError(f"{job.where}: output name {job.name!r} is already used by "
                            f"{seen[job.name].where}; give distinct names (the name column)")
        seen[job.name] = job
    return jobs


def read_davis_root(root: str | os.PathLike, subset: str = "val", year: str = "2017") -> list[Job]:
    """Jobs of a DAVIS-layout root, one per sequence.

    Sequences come from ``ImageSets/<year>/<subset>.txt`` when it exists, else from every folder of
    ``Annotations/480p`` (sorted). Each sequence's video is ``JPEGImages/480p/<seq>`` and its prompt
    the first (by name) PNG of ``Annotations/480p/<seq>``. A sequence whose frames or annotation
    are missing still gives a job: it fails on its own, naming the missing path.

    Raises:
        UserError: no ``Annotations/480p`` folder, or an empty or unreadable sequence list.
    """
    from pipelines.sources import natural_sort_key

    root = Path(root).resolve()
    ann = root / "Annotations" / "480p"
    if not ann.is_dir():
        raise UserError(f"{root}: not a DAVIS root (no Annotations/480p folder)")
    list_file = root / "ImageSets" / str(year) / f"{subset}.txt"
    if list_file.is_file():
        try:
            names = [ln.strip() for ln in list_file.read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{list_file}: cannot read the sequence list ({exc})") from None
        if not names:
            raise UserError(f"{list_file}: lists no sequence")
        where = str(list_file)
    else:
        names = sorted(p.name for p in ann.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not names:
            raise UserError(f"{ann}: no sequence folders")
        where = str(ann)
    jobs = []
    for i, name in enumerate(dict.fromkeys(names)):
        loc = f"{where}:{i + 1}" if list_file.is_file() else f"{ann / name}"
        check_name(name, loc)
        pngs = sorted((p.name for p in (ann / name).glob("*.png") if not p.name.startswith(".")),
                      key=natural_sort_key) if (ann / name).is_dir() else []
        mask = ann / name / (pngs[0] if pngs else "00000.png")
        jobs.append(Job(name, str(root / "JPEGImages" / "480p" / name), str(mask), loc))
    return jobs


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _path(value: Any, key: str, base: Path, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: {key!r} must be a path string, got {value!r}")
    value = value.strip()
    return str(Path(value) if os.path.isabs(value) else (base / value).resolve())


def _masks(value: Any, base: Path, where: str) -> dict[int, str]:
    if not isinstance(value, dict) or not value:
        raise UserError(f"{where}: 'masks' must be a non-empty object {{\"FRAME\": \"file.png\"}}, "
                        f"got {value!r}")
    out: dict[int, str] = {}
    for key, path in value.items():
        text = str(key).strip()
        if not text.isdigit():
            raise UserError(f"{where}: 'masks' key {key!r} is not a frame index (0, 1, ...)")
        if int(text) in out:
            raise UserError(f"{where}: 'masks' gives frame {int(text)} twice")
        out[int(text)] = _path(path, f"masks[{text}]", base, where)
    return dict(sorted(out.items()))


def _strings(value: Any, key: str, where: str, *, comma: bool) -> tuple[str, ...]:
    if comma and isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        kind = "a list of strings or an \"a,b\" string" if comma else "a list of strings"
        raise UserError(f"{where}: {key!r} must be {kind}, got {value!r}")
    items = tuple(v.strip() for v in value)
    if not items or not all(items):
        raise UserError(f"{where}: {key!r} must hold non-empty strings, got {value!r}")
    return items


def _job_from_fields(fields: dict[str, Any], base: Path, where: str) -> Job:
    """A :class:`Job` from one manifest row or object (see :func:`read_job_manifest`)."""
    if _blank(fields.get("video")):
        raise UserError(f"{where}: missing 'video'")
    video = _path(fields["video"], "video", base, where)
    given = [k for k in ("first_mask", "masks", "text", "classes") if not _blank(fields.get(k))]
    if not given:
        raise UserError(f"{where}: missing 'first_mask' (or another prompt: masks, text, classes)")
    kinds = {"first_mask": "masks"}.get
    if len({kinds(k, k) for k in given}) > 1:
        raise UserError(f"{where}: give one prompt kind, got {', '.join(given)} (first_mask and "
                        f"masks may be combined)")
    first = None if "first_mask" not in given else _path(fields["first_mask"], "first_mask", base, where)
    masks = None if "masks" not in given else _masks(fields["masks"], base, where)
    if first is not None and masks is not None and 0 in masks:
        raise UserError(f"{where}: 'first_mask' and 'masks' both give frame 0")
    text = None if "text" not in given else _strings(fields["text"], "text", where, comma=False)
    classes = None if "classes" not in given else _strings(fields["classes"], "classes", where, comma=True)
    name = fields.get("name")
    if _blank(name):
        name = default_name(Path(video))
    elif not isinstance(name, str):
        raise UserError(f"{where}: 'name' must be a string, got {name!r}")
    return Job(check_name(name.strip(), where), video, first, where, masks=masks, text=text,
               classes=classes)


def read_job_manifest(path: str | os.PathLike) -> list[Job]:
    """Jobs of a JSONL (``.jsonl``/``.ndjson``: one object a line) or CSV (``.csv``, header row)
    manifest.

    Fields: ``video``, a prompt, and optional ``name`` (default: the video's stem or folder name).
    The prompt is ``first_mask`` (path), ``masks`` (JSONL: an object ``{"FRAME": "file.png"}`` of
    0-based frame index -> annotation; may be combined with ``first_mask`` when it does not give
    frame 0), ``text`` (JSONL: a list of strings) or ``classes`` (a list of strings, or one
    ``"a,b"`` string; in CSV always the latter). Relative paths are relative to the manifest's
    folder; blank lines and other fields are ignored.

    Raises:
        UserError: ``FILE:LINE: ...`` for bad JSON, missing fields or columns, bad prompts, no job,
            duplicate names; ``FILE: ...`` for an unreadable file.
    """
    p = Path(path)
    base = p.resolve().parent
    suffix = p.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise UserError(f"{p}: unknown manifest type (use .jsonl or .csv, or give a DAVIS root)")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UserError(f"{p}: cannot read the manifest ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{p}: manifest is not UTF-8 text ({exc.reason})") from None
    jobs: list[Job] = []
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in ("video", "first_mask") if c not in header]
        if "classes" in header and "first_mask" in missing:
            missing.remove("first_mask")
        if missing:
            raise UserError(f"{p}: CSV header must name the columns video, first_mask (or classes)"
                            f"[, name]; missing {', '.join(missing)} (header: {', '.join(header) or 'none'})")
        reader.fieldnames = header
        try:
            for row in reader:
                if not any((v or "").strip() for k, v in row.items() if k is not None):
                    continue
                row = {k: v for k, v in row.items() if k not in ("masks", "text")}
                jobs.append(_job_from_fields(row, base, f"{p}:{reader.line_num}"))
        except csv.Error as exc:
            raise UserError(f"{p}:{reader.line_num}: bad CSV ({exc})") from None
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{p}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{p}:{lineno}: expected a JSON object with keys video, "
                                f"first_mask[, name]")
            jobs.append(_job_from_fields(obj, base, f"{p}:{lineno}"))
    if not jobs:
        raise UserError(f"{p}: manifest lists no video")
    return _check_unique(jobs)


def discover_jobs(source: str | os.PathLike, layout: str | None = None,
                  all_frames: str | os.PathLike | None = None) -> tuple[list[Job], str]:
    """Jobs of SOURCE and its kind: a dataset layout (``"davis"``, ``"youtube-vos"``, ``"mose"``,
    ``"sa-v"``, ``"lvos"``: :func:`vos.datasets.layouts.read_layout`) or ``"manifest"`` (JSONL / CSV).

    Args:
        source: a dataset root or a manifest file.
        layout: the root's layout, or None to detect it.
        all_frames: ``--all-frames`` folder (youtube-vos, lvos).

    Raises:
        UserError: missing SOURCE, a folder of no (or an ambiguous) layout, a bad manifest or
            meta file, ``layout`` / ``all_frames`` given with a manifest.
    """
    from vos.datasets.layouts import read_layout  # imports this module (Job): moves at the layout merge

    p = Path(source)
    if not p.exists():
        raise UserError(f"{p}: no such file or directory")
    if p.is_dir():
        jobs, kind = read_layout(p, layout, all_frames)
        return _check_unique(jobs), kind
    if layout is not None or all_frames is not None:
        raise UserError(f"{p}: --layout and --all-frames need a dataset root, not a manifest")
    return read_job_manifest(p), "manifest"
