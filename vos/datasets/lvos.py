"""LVOS v1 / v2 splits (``train``, ``valid`` / ``val``, ``test``): long videos where objects start
late, vanish and come back.

Layout (LVOS README; ``LVOS-api``'s conversion to the YouTube-VOS form)::

    SPLIT/JPEGImages/VID/00000001.jpg ...
    SPLIT/Annotations/VID/00000001.png ...   palette PNGs (train/valid: every frame, dense ground
                                             truth; test: the first-appearance frames only)
    SPLIT/valid_meta.json                    {"videos": {VID: {"objects": {"ID": {"frame_range":
                                              {"start": S, "end": E, "frame_nums": N}}}}}}

* The meta file is the split's ``*_meta.json`` (``train_meta.json``, ``valid_meta.json``,
  ``test_meta.json``...; ``*_expression_meta.json`` and ``*_meta_attribute.json`` are left alone
  unless they are the only one). ``start`` is the stem of the object's first frame, given as a
  string or a number: a number (or digits) matches the annotation whose stem has that value.
* As LVOS's conversion tool does, only each object's first-appearance mask is a prompt: from the
  PNG of its ``start`` frame only the objects starting there are taken (0 = "no label"), the rest
  of the dense masks is ground truth and never read.
* Nothing is segmented before the earliest start (no backward propagation); every frame from there
  on is written, ``OUTPUT/VID/STEM.png``.
* Submission: a zip with ``Annotations/VID/STEM.png``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vos.datasets.common import (first_appearance_job, frames_root, list_stems, listed_videos, object_id,
                                 read_meta_json, split_root)
from vos.datasets.job import Job
from vos.errors import UserError

__all__ = ["NAME", "looks_like", "meta_file", "read_lvos_root"]

NAME = "lvos"


def _meta_candidates(root: Path) -> list[Path]:
    try:
        files = [p for p in root.iterdir() if p.is_file() and p.name.endswith(".json")
                 and p.name != "meta.json" and "meta" in p.name]
    except OSError:
        return []
    main = [p for p in files if p.name.endswith("_meta.json") and "expression" not in p.name]
    return sorted(main or files)


def meta_file(root: Path) -> Path | None:
    """The split's meta JSON (see the module docstring), or None.

    Raises:
        UserError: several candidates (naming them).
    """
    found = _meta_candidates(root)
    if len(found) > 1:
        raise UserError(f"{root}: several LVOS meta files ({', '.join(p.name for p in found)}); "
                        f"keep one")
    return found[0] if found else None


def looks_like(root: Path) -> bool:
    """``JPEGImages/``, ``Annotations/`` and a ``*_meta.json`` (not YouTube-VOS's ``meta.json``)."""
    return ((root / "JPEGImages").is_dir() and (root / "Annotations").is_dir()
            and bool(_meta_candidates(root)))


def _start_stem(start: Any, annotated: list[str], where: str) -> str:
    """The annotation stem of a ``frame_range.start`` (string or number)."""
    if isinstance(start, bool) or not isinstance(start, (str, int)) or str(start).strip() == "":
        raise UserError(f"{where}: 'frame_range.start' must be a frame stem or number, got {start!r}")
    text = str(start).strip()
    if text in annotated:
        return text
    if text.isdigit():
        for stem in annotated:
            if stem.isdigit() and int(stem) == int(text):
                return stem
        width = max((len(s) for s in annotated), default=8)
        return text.zfill(width)
    return text


def read_lvos_root(root: str | os.PathLike, all_frames: str | os.PathLike | None = None) -> list[Job]:
    """Jobs of an LVOS split, one per video of its meta JSON (natural order).

    Each job: ``video`` = ``JPEGImages/VID``, ``stem_masks`` = ``{start stem: Annotations/VID/STEM.png}``
    for every object's start, ``mask_objects`` = the ids starting on each, ``backward`` False,
    every frame from the earliest start written. Reads the meta JSON and lists each video's
    ``Annotations`` folder (to match numeric starts to stems); a missing PNG fails that video alone.

    Args:
        root: the split folder.
        all_frames: folder of the videos' frames to propagate over instead of ``JPEGImages``.

    Raises:
        UserError: missing folders or meta JSON, a meta JSON that is not JSON or lacks ``videos``,
            a video without objects, an object without ``frame_range.start``, bad ids or names.
    """
    root = split_root(root, "an LVOS split")
    meta = meta_file(root)
    if meta is None:
        raise UserError(f"{root}: not an LVOS split (no *_meta.json)")
    videos = read_meta_json(meta)
    frames_dir = frames_root(root, all_frames)
    jobs = []
    for vid, where, objects in listed_videos(meta, videos):
        annotated = list_stems(root / "Annotations" / vid)
        starts: dict[str, list[int]] = {}
        for key, obj in objects.items():
            oid = object_id(key, where)
            rng = obj.get("frame_range") if isinstance(obj, dict) else None
            if not isinstance(rng, dict) or "start" not in rng:
                raise UserError(f"{where}: object {key!r} has no 'frame_range.start'")
            starts.setdefault(_start_stem(rng["start"], annotated, f"{where}: object {key!r}"), []).append(oid)
        jobs.append(first_appearance_job(vid, where, root, frames_dir, starts))
    if not jobs:
        raise UserError(f"{meta}: lists no video")
    return jobs
