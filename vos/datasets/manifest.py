"""Job manifests: JSONL (one JSON object per line) or CSV (columns ``video``, ``first_mask``,
optional ``name``) listing videos and their prompts; relative paths are relative to the manifest.
See ``docs/ray_cluster.md`` for the fields.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from vos.datasets.job import Job, check_name, check_unique, default_name
from vos.errors import UserError

__all__ = ["read_job_manifest"]


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
    return check_unique(jobs)


