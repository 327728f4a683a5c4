"""Dataset layouts of ``vos batch``: detection by what a root contains, and one reader per layout.

=============== ===================================================== ==========================
layout          the root holds                                        reader
=============== ===================================================== ==========================
``davis``       ``Annotations/480p/`` (+ ``ImageSets/2017/val.txt``)  :func:`read_davis_root`
``youtube-vos`` ``meta.json``, ``JPEGImages/``, ``Annotations/``      :mod:`.youtube_vos`
``lvos``        ``*_meta.json``, ``JPEGImages/``, ``Annotations/``    :mod:`.lvos`
``sa-v``        ``JPEGImages_24fps/``, ``Annotations_6fps/``          :mod:`.sav`
``mose``        ``JPEGImages/``, ``Annotations/`` (nothing else)      :mod:`.mose`
=============== ===================================================== ==========================

``--layout`` skips detection; a root that matches no layout, or more than one, is a one-line error
listing what was looked for.
"""

from __future__ import annotations

import os
from pathlib import Path

from vos.datasets import lvos, mose, sav, youtube_vos
from vos.datasets.davis import read_davis_root
from vos.datasets.job import Job
from vos.errors import UserError

__all__ = ["ALL_FRAMES_LAYOUTS", "LAYOUTS", "detect_layout", "read_layout"]

#: Layout names, as ``--layout`` takes them.
LAYOUTS = ("davis", "youtube-vos", "mose", "sa-v", "lvos")

#: What each layout is recognised by (for messages).
MARKERS = {
    "davis": "Annotations/480p/",
    "youtube-vos": "meta.json + JPEGImages/ + Annotations/",
    "lvos": "*_meta.json + JPEGImages/ + Annotations/",
    "sa-v": "JPEGImages_24fps/ + Annotations_6fps/",
    "mose": "JPEGImages/ + Annotations/ (no meta file)",
}

#: Layouts whose frames to propagate over may come from an ``--all-frames`` folder.
ALL_FRAMES_LAYOUTS = ("youtube-vos", "lvos")


def detect_layout(root: str | os.PathLike) -> str:
    """The layout of ``root`` (one of :data:`LAYOUTS`), from the folders and files it holds.

    Raises:
        UserError: ``root`` matches no layout or several (one line naming what was looked for).
    """
    root = Path(root)
    found = []
    if (root / "Annotations" / "480p").is_dir():
        found.append("davis")
    if sav.looks_like(root):
        found.append("sa-v")
    if youtube_vos.looks_like(root):
        found.append("youtube-vos")
    if lvos.looks_like(root):
        found.append("lvos")
    if not found and mose.looks_like(root):
        found.append("mose")
    if len(found) == 1:
        return found[0]
    looked = "; ".join(f"{name}: {MARKERS[name]}" for name in ("davis", "youtube-vos", "lvos", "sa-v", "mose"))
    if not found:
        raise UserError(f"{root}: no dataset layout recognised (looked for {looked}); give --layout, "
                        f"or a .jsonl / .csv manifest")
    raise UserError(f"{root}: ambiguous dataset layout, it looks like {' and '.join(found)}; "
                    f"choose one with --layout {'|'.join(found)}")


def read_layout(root: str | os.PathLike, layout: str | None = None,
                all_frames: str | os.PathLike | None = None) -> tuple[list[Job], str]:
    """Jobs of a dataset root and its layout.

    Args:
        root: the dataset (split) folder.
        layout: one of :data:`LAYOUTS`, or None to detect it (:func:`detect_layout`).
        all_frames: folder of every frame of each video (``VID/STEM.jpg``) to propagate over
            (``youtube-vos`` and ``lvos``; the results are still written for the layout's frames).

    Raises:
        UserError: unknown or undetectable layout, ``all_frames`` with another layout, or the
            reader's errors.
    """
    if layout is None:
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    if all_frames is not None and layout not in ALL_FRAMES_LAYOUTS:
        raise UserError(f"--all-frames applies to the {' and '.join(ALL_FRAMES_LAYOUTS)} layouts, "
                        f"not {layout}")
    if layout == "davis":
        return read_davis_root(root), layout
    if layout == "youtube-vos":
        return youtube_vos.read_youtube_vos_root(root, all_frames), layout
    if layout == "lvos":
        return lvos.read_lvos_root(root, all_frames), layout
    if layout == "sa-v":
        return sav.read_sav_root(root), layout
    return mose.read_mose_root(root), layout
