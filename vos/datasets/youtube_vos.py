"""YouTube-VOS 2018 / 2019 splits (``YouTube/valid``, ``YouTube/test``, ``YouTube/train``).

Layout (the CodaLab release; conventions as read by STM / XMem / Cutie's YouTube-VOS loaders)::

    SPLIT/meta.json                       {"videos": {VID: {"objects": {"ID": {"frames": [STEM, ...]}}}}}
    SPLIT/JPEGImages/VID/STEM.jpg         the sparse "6 fps" frames: 00000, 00005, 00010, ...
    SPLIT/Annotations/VID/STEM.png        palette PNGs, only where some object first appears
    all_frames/valid_all_frames/JPEGImages/VID/STEM.jpg   every frame (same stems, denser)

* Object ids are the meta keys (``"1"``, ``"2"``, ``"5"``: gaps happen) and the PNGs' pixel
  values. An object's first ``frames`` entry is where it first appears: its mask there is its
  prompt; the annotation PNG of that frame holds the objects that start there, and 0 in it means
  "no label" for the objects tracked already (not background). Only the ids that start on a frame
  are taken from its PNG.
* A video's first frame may have no annotation: nothing is segmented before the first annotated
  frame (no backward propagation), and those frames are not required.
* The frames to predict (and the only ones the server scores) are the union of the objects'
  ``frames``; with ``--all-frames DIR`` the video is ``DIR/VID`` (propagation over every frame) and
  still only those frames are written.
* Submission: a zip with ``Annotations/VID/STEM.png`` (:mod:`vos.datasets.submission`).
"""

from __future__ import annotations

import os
from pathlib import Path

from vos.datasets.common import (first_appearance_job, first_stem, frames_root, listed_videos, object_id,
                                 read_meta_json, sort_stems, split_root)
from vos.datasets.job import Job
from vos.errors import UserError

__all__ = ["NAME", "looks_like", "read_youtube_vos_root"]

NAME = "youtube-vos"
META = "meta.json"


def looks_like(root: Path) -> bool:
    """``meta.json`` beside ``JPEGImages/`` and ``Annotations/``."""
    return (root / META).is_file() and (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir()


def read_youtube_vos_root(root: str | os.PathLike, all_frames: str | os.PathLike | None = None) -> list[Job]:
    """Jobs of a YouTube-VOS split folder, one per video of ``meta.json`` (sorted by name).

    Each job: ``video`` = ``JPEGImages/VID`` (or ``all_frames/VID``), ``stem_masks`` = ``{first stem
    of each object: Annotations/VID/STEM.png}``, ``mask_objects`` = the ids starting on each of those
    stems, ``write_stems`` = the union of the objects' ``frames``, ``backward`` False. Only
    ``meta.json`` is read: the frames and PNGs are checked by the worker that runs the video (a
    missing one fails that video alone).

    Args:
        root: the split folder (holding ``meta.json``, ``JPEGImages``, ``Annotations``).
        all_frames: folder of every frame of each video (``VID/STEM.jpg``), or None.

    Raises:
        UserError: missing folders or ``meta.json``, ``meta.json`` not JSON or without ``videos``,
            a video without objects, an object without frames, a bad object id or video name.
    """
    root = split_root(root, "a YouTube-VOS split")
    meta = root / META
    if not meta.is_file():
        raise UserError(f"{root}: not a YouTube-VOS split (no {META})")
    videos = read_meta_json(meta)
    frames_dir = frames_root(root, all_frames)
    jobs = []
    for vid, where, objects in listed_videos(meta, videos):
        starts: dict[str, list[int]] = {}
        required: list[str] = []
        for key, obj in objects.items():
            oid = object_id(key, where)
            frames = obj.get("frames") if isinstance(obj, dict) else None
            if not isinstance(frames, list) or not frames or not all(isinstance(s, str) and s for s in frames):
                raise UserError(f"{where}: object {key!r} needs a non-empty 'frames' list of frame stems")
            starts.setdefault(first_stem(frames), []).append(oid)
            required += frames
        jobs.append(first_appearance_job(vid, where, root, frames_dir, starts,
                                         write_stems=tuple(sort_stems(required))))
    if not jobs:
        raise UserError(f"{meta}: lists no video")
    return jobs
