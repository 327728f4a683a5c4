"""MOSE splits and any plain ``JPEGImages/VID`` + ``Annotations/VID`` root (a DAVIS test-dev export,
MOSE ``train`` / ``valid``), i.e. DAVIS without the ``480p`` level and without ``ImageSets``.

Layout (MOSE's release; read as SAM 2's ``tools/vos_inference.py`` reads it)::

    ROOT/JPEGImages/VID/00000.jpg ...
    ROOT/Annotations/VID/00000.png        palette PNG of the first frame (valid: only this one;
                                          train: every frame, the later ones ground truth)

* Every object is annotated on the first frame: the prompt is the video's first annotation PNG
  (natural name order), on the frame of the same stem. Every frame is predicted and written
  (``OUTPUT/VID/STEM.png``), so the result equals ``vos run JPEGImages/VID --first-mask
  Annotations/VID/00000.png``.
* Submission: a zip with the video folders at its root (``VID/STEM.png``).
"""

from __future__ import annotations

import os
from pathlib import Path

from vos.datasets.common import list_folders, list_stems
from vos.datasets.job import Job, check_name
from vos.errors import UserError

__all__ = ["NAME", "looks_like", "read_mose_root"]

NAME = "mose"


def looks_like(root: Path) -> bool:
    """``JPEGImages/`` and ``Annotations/`` (the other layouts' markers are checked by
    :func:`vos.datasets.layouts.detect_layout`)."""
    return (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir()


def read_mose_root(root: str | os.PathLike) -> list[Job]:
    """Jobs of a MOSE-style root: one per folder of ``JPEGImages`` (natural order).

    Each job's video is ``JPEGImages/VID`` and its prompt the first PNG of ``Annotations/VID`` on
    the frame of the same stem (``stem_masks``). A video without any annotation PNG still gives a
    job, whose prompt ``Annotations/VID/00000.png`` is missing: it fails on its own, naming that
    file. Only folder listings are read.

    Raises:
        UserError: no ``JPEGImages`` / ``Annotations`` folder, no video, or a video name that
            cannot be an output folder.
    """
    root = Path(root).resolve()
    for part in ("JPEGImages", "Annotations"):
        if not (root / part).is_dir():
            raise UserError(f"{root}: not a MOSE-style root (no {part}/ folder)")
    names = list_folders(root / "JPEGImages")
    if not names:
        raise UserError(f"{root / 'JPEGImages'}: no video folders")
    jobs = []
    for vid in names:
        where = str(root / "JPEGImages" / vid)
        check_name(vid, where)
        stems = list_stems(root / "Annotations" / vid)
        stem = stems[0] if stems else "00000"
        jobs.append(Job(vid, str(root / "JPEGImages" / vid), None, where,
                        stem_masks={stem: str(root / "Annotations" / vid / f"{stem}.png")}))
    return jobs
