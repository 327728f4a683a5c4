"""Helpers shared by the dataset readers: folder listings, frame stems and meta JSON files.

Readers make jobs from ``meta.json`` files and folder listings only: nothing here opens an image,
so reading a split of thousands of videos costs one ``scandir`` per folder that a layout needs
(see ``benchmarks/bench_discovery.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from pipelines.sources import IMAGE_EXTENSIONS, natural_sort_key
from vos.datasets.job import Job, check_name
from vos.errors import UserError

__all__ = [
    "list_folders",
    "list_stems",
    "natural_sort_key",
    "object_id",
    "read_meta_json",
    "read_name_list",
    "sort_stems",
]


def list_folders(folder: Path) -> list[str]:
    """Names of the sub-folders of ``folder`` (hidden ones left out), in natural order; ``[]`` when
    ``folder`` is missing or unreadable."""
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it if not e.name.startswith(".") and e.is_dir()]
    except OSError:
        return []
    return sorted(names, key=natural_sort_key)


def list_stems(folder: Path, suffixes: frozenset[str] = frozenset({".png"})) -> list[str]:
    """Stems of the files of ``folder`` whose suffix (lower-cased) is in ``suffixes`` (hidden files
    left out), in natural order; ``[]`` when ``folder`` is missing or unreadable."""
    try:
        with os.scandir(folder) as it:
            stems = [os.path.splitext(e.name)[0] for e in it
                     if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in suffixes]
    except OSError:
        return []
    return sort_stems(stems)


def sort_stems(stems) -> list[str]:
    """Distinct ``stems`` in natural order (``"2"`` before ``"10"``, as the frame sources take files)."""
    stems = set(stems)
    if all(s.isdigit() for s in stems):     # the usual frame stems: the same order, 20x faster
        return sorted(stems, key=lambda s: (int(s), s))
    return sorted(stems, key=natural_sort_key)


def first_stem(stems: list[str]) -> str:
    """The first of ``stems`` (non-empty) in natural order (:func:`sort_stems`)."""
    if all(s.isdigit() for s in stems):
        return min(stems, key=lambda s: (int(s), s))
    return min(stems, key=natural_sort_key)


#: Suffixes of frame files (those :class:`pipelines.sources.FrameFolderSource` reads).
FRAME_SUFFIXES = frozenset(IMAGE_EXTENSIONS)


def read_meta_json(path: Path) -> dict[str, Any]:
    """The ``videos`` object of a YouTube-VOS / LVOS style meta JSON file
    (``{"videos": {VIDEO: {"objects": {ID: {...}}}}}``).

    Raises:
        UserError: ``"{path}: ..."`` for an unreadable file, not JSON, or no ``videos`` object.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise UserError(f"{path}: no 'videos' object (expected {{\"videos\": {{VIDEO: {{\"objects\": "
                        f"...}}}}}})")
    return videos


def video_objects(path: Path, video: str, entry: Any) -> dict[str, Any]:
    """The ``objects`` object of one video entry of a meta JSON file.

    Raises:
        UserError: ``"{path}: video {video}: ..."`` when the entry has no ``objects`` object.
    """
    objects = entry.get("objects") if isinstance(entry, dict) else None
    if not isinstance(objects, dict):
        raise UserError(f"{path}: video {video!r} has no 'objects' object")
    return objects


def object_id(key: Any, where: str) -> int:
    """An object id 1..254 from a meta JSON key or a folder name (``"3"``, ``"003"``).

    Raises:
        UserError: ``"{where}: ..."`` for anything else (255 is void in label PNGs).
    """
    text = str(key).strip()
    if not text.isdigit() or not 1 <= int(text) <= 254:
        raise UserError(f"{where}: object id {key!r} is not an integer in 1..254")
    return int(text)


def read_name_list(path: Path) -> list[str]:
    """Video names of a list file (one a line, blank lines skipped, order kept, duplicates dropped).

    Raises:
        UserError: unreadable file or no name.
    """
    try:
        names = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the video list ({exc})") from None
    if not names:
        raise UserError(f"{path}: lists no video")
    return list(dict.fromkeys(names))


def split_root(root: str | os.PathLike, what: str) -> Path:
    """``root`` (absolute) when it holds ``JPEGImages/`` and ``Annotations/``.

    Raises:
        UserError: ``"{root}: not {what} (no JPEGImages/ folder)"`` (or ``Annotations/``).
    """
    root = Path(root).resolve()
    for part in ("JPEGImages", "Annotations"):
        if not (root / part).is_dir():
            raise UserError(f"{root}: not {what} (no {part}/ folder)")
    return root


def frames_root(root: Path, all_frames: str | os.PathLike | None) -> Path:
    """Where the videos' frame folders are: ``root/JPEGImages``, or the ``--all-frames`` folder.

    Raises:
        UserError: an ``--all-frames`` folder that does not exist.
    """
    if all_frames is None:
        return root / "JPEGImages"
    folder = Path(all_frames).resolve()
    if not folder.is_dir():
        raise UserError(f"{folder}: --all-frames folder does not exist")
    return folder


def first_appearance_job(vid: str, where: str, root: Path, frames: Path, starts: dict[str, list[int]],
                         write_stems: tuple[str, ...] | None = None) -> Job:
    """The job of a video whose objects are prompted by their first-appearance masks only
    (YouTube-VOS, LVOS): ``Annotations/VID/STEM.png`` for each start stem, holding the objects
    ``starts[STEM]``; no backward pass before the first annotation."""
    stem_masks = {s: os.path.join(root, "Annotations", vid, f"{s}.png") for s in sort_stems(starts)}
    return Job(vid, os.path.join(frames, vid), None, where, stem_masks=stem_masks,
               mask_objects={s: tuple(sorted(starts[s])) for s in stem_masks},
               write_stems=write_stems, backward=False)


def listed_videos(meta: Path, videos: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(video, where, objects)`` for each video of a meta file (:func:`read_meta_json`), in natural
    name order; ``where`` names the meta file and the video for messages.

    Raises:
        UserError: a video name that cannot be an output folder, or a video without objects.
    """
    for vid in sorted(videos, key=natural_sort_key):
        where = f"{meta}: video {vid!r}"
        check_name(vid, where)
        objects = video_objects(meta, vid, videos[vid])
        if not objects:
            raise UserError(f"{where} has no object")
        yield vid, where, objects
