"""SA-V evaluation splits (``sav_val``, ``sav_test``) of the Segment Anything Video dataset.

Layout (SAM 2's ``sav_dataset/README.md``; read as ``tools/vos_inference.py --per_obj_png_file``
reads it)::

    ROOT/sav_val.txt (or sav_test.txt)         video names, one a line
    ROOT/JPEGImages_24fps/VID/00000.jpg ...    every frame, 24 fps
    ROOT/Annotations_6fps/VID/OBJ/00000.png    one binary mask per object (OBJ = 000, 001, ...) per
                                               annotated frame (every 4th frame: 00000, 00004, ...)

* Objects may overlap (a person and their hand), so each object is tracked on its own: its result
  equals ``vos run JPEGImages_24fps/VID --first-mask Annotations_6fps/VID/OBJ/00000.png``.
* Only the first annotated frame's masks are prompts (SAM 2 prompts with the video's first frame);
  the later 6 fps masks are ground truth and never read (not even opened) by the run.
* Propagation runs over every 24 fps frame; the frames written are the annotated (6 fps) ones, as
  ``OUTPUT/VID/OBJ/STEM.png`` binary palette PNGs (0 background, 1 object; SAM 2's output format),
  which ``vos eval --protocol sav`` scores against ``Annotations_6fps``.
"""

from __future__ import annotations

import os
from pathlib import Path

from vos.datasets.common import list_folders, list_stems, read_name_list, sort_stems
from vos.datasets.job import Job, check_name
from vos.errors import UserError

__all__ = ["NAME", "looks_like", "read_sav_root"]

NAME = "sa-v"
FRAMES = "JPEGImages_24fps"
MASKS = "Annotations_6fps"


def looks_like(root: Path) -> bool:
    """``JPEGImages_24fps/`` and ``Annotations_6fps/``."""
    return (root / FRAMES).is_dir() and (root / MASKS).is_dir()


def _list_file(root: Path) -> Path | None:
    """``sav_val.txt`` / ``sav_test.txt`` (or any single ``*.txt``) in ``root``, or None."""
    for name in ("sav_val.txt", "sav_test.txt"):
        if (root / name).is_file():
            return root / name
    found = sorted(root.glob("*.txt"))
    return found[0] if len(found) == 1 else None


def _object_id(folder: Path) -> int:
    """An SA-V object folder's id (``000`` -> 0: SA-V counts objects from 0).

    Raises:
        UserError: a folder name that is not a number.
    """
    if not folder.name.isdigit():
        raise UserError(f"{folder}: SA-V object folders are numbers (000, 001, ...), got {folder.name!r}")
    return int(folder.name)


def read_sav_root(root: str | os.PathLike) -> list[Job]:
    """Jobs of an SA-V split: one per video of ``sav_*.txt`` (else per folder of ``Annotations_6fps``).

    Each job's ``object_masks`` is ``{object id: Annotations_6fps/VID/OBJ/FIRST.png}`` where FIRST is
    the earliest annotated stem of the video (the same frame for every object), and ``write_stems``
    the union of the annotated stems. Only folder listings are read: a missing first mask, a
    non-binary mask or a missing frame fails that video alone when it runs.

    Raises:
        UserError: missing folders, an empty list, a video name that cannot be an output folder,
            an object folder whose name is not an id.
    """
    root = Path(root).resolve()
    for part in (FRAMES, MASKS):
        if not (root / part).is_dir():
            raise UserError(f"{root}: not an SA-V split (no {part}/ folder)")
    listing = _list_file(root)
    names = read_name_list(listing) if listing is not None else list_folders(root / MASKS)
    if not names:
        raise UserError(f"{root / MASKS}: no video folders")
    jobs = []
    for i, vid in enumerate(names):
        where = f"{listing}:{i + 1}" if listing is not None else str(root / MASKS / vid)
        check_name(vid, where)
        folder = root / MASKS / vid
        objects = {_object_id(folder / name): name for name in list_folders(folder)}
        stems = {oid: list_stems(folder / name) for oid, name in objects.items()}
        annotated = sort_stems(s for v in stems.values() for s in v)
        first = annotated[0] if annotated else "00000"
        jobs.append(Job(vid, str(root / FRAMES / vid), None, where,
                        object_masks={oid: str(folder / name / f"{first}.png")
                                      for oid, name in sorted(objects.items())}
                        or {0: str(folder / "000" / f"{first}.png")},   # fails naming it
                        write_stems=tuple(annotated) or None))
    return jobs
