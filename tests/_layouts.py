"""Small dataset trees of every layout, built in a temporary folder from the real car-shadow frames.

Frames are car-shadow's first frames resized to 64x36; masks are its annotations resized the same
way (nearest) and cut into a left and a right half, so that one real object gives two (ids chosen
by each test: gaps, late starts, overlaps). Nothing here is committed data: every tree is made
from ``../shared/data`` at test time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import SHARED_DATA
from vos.labels import davis_palette

CAR = SHARED_DATA / "davis_sample"
SIZE = (64, 36)


def car_frame(i: int) -> np.ndarray:
    """car-shadow frame ``i`` as ``(36, 64, 3)`` uint8."""
    im = Image.open(CAR / "JPEGImages" / "480p" / "car-shadow" / f"{i:05d}.jpg").convert("RGB")
    return np.asarray(im.resize(SIZE, Image.BILINEAR))


def car_halves(i: int) -> tuple[np.ndarray, np.ndarray]:
    """The car of frame ``i`` (``(36, 64)`` bool, nearest-resized), cut into its left and right half."""
    lab = np.asarray(Image.open(CAR / "Annotations" / "480p" / "car-shadow" / f"{i:05d}.png").resize(
        SIZE, Image.NEAREST)) > 0
    cols = np.flatnonzero(lab.any(axis=0))
    mid = (cols[0] + cols[-1] + 1) // 2
    left, right = lab.copy(), lab.copy()
    left[:, mid:] = False
    right[:, :mid] = False
    return left, right


def labels(i: int, left: int = 0, right: int = 0) -> np.ndarray:
    """Frame ``i``'s label map with the car's left half as id ``left`` and right half as ``right``
    (0 leaves that half out)."""
    a, b = car_halves(i)
    out = np.zeros(a.shape, np.uint8)
    if left:
        out[a] = left
    if right:
        out[b] = right
    return out


def save_png(path: Path, arr: np.ndarray, palette: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        im.putpalette(davis_palette().tobytes())
    im.save(path)
    return path


def save_jpg(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)
    return path


def write_frames(folder: Path, stems: list[str], sources: list[int]) -> None:
    """``folder/STEM.jpg`` = car frame ``sources[i]`` for each ``stems[i]``."""
    for stem, i in zip(stems, sources):
        save_jpg(folder / f"{stem}.jpg", car_frame(i))


def youtube_vos_tree(root: Path) -> dict:
    """A YouTube-VOS split (``root/valid``) and its all-frames folder (``root/all``).

    * ``late``: object 2 (left half) from 00000, object 5 (right half) from 00004 (ids with gaps,
      a later start); 00004.png holds object 5 only. Dense frames 00000..00006, sparse every 2nd.
    * ``nofirst``: the first frame has no annotation; object 1 (whole car) starts at 00002.
    """
    split, dense = root / "valid", root / "all"
    d_stems = [f"{i:05d}" for i in range(7)]
    s_stems = d_stems[::2]
    meta = {"videos": {}}
    for vid in ("late", "nofirst"):
        write_frames(split / "JPEGImages" / vid, s_stems, [int(s) for s in s_stems])
        write_frames(dense / vid, d_stems, list(range(7)))
    save_png(split / "Annotations" / "late" / "00000.png", labels(0, left=2))
    save_png(split / "Annotations" / "late" / "00004.png", labels(4, right=5))
    meta["videos"]["late"] = {"objects": {"2": {"category": "car", "frames": s_stems},
                                          "5": {"category": "car", "frames": s_stems[2:]}}}
    save_png(split / "Annotations" / "nofirst" / "00002.png", labels(2, left=1, right=1))
    meta["videos"]["nofirst"] = {"objects": {"1": {"category": "car", "frames": s_stems[1:]}}}
    (split / "meta.json").write_text(json.dumps(meta))
    return {"split": split, "all": dense, "sparse": s_stems, "dense": d_stems}


def mose_tree(root: Path, n: int = 4) -> Path:
    """A MOSE-style root: one video ``car`` with objects 1 and 3 on its first frame."""
    stems = [f"{i:05d}" for i in range(n)]
    write_frames(root / "JPEGImages" / "car", stems, list(range(n)))
    save_png(root / "Annotations" / "car" / "00000.png", labels(0, left=1, right=3))
    return root


def sav_tree(root: Path, n: int = 5) -> dict:
    """An SA-V split: video ``sav_000001`` with two overlapping objects: ``000`` the whole car,
    ``001`` its right half; binary 0/1 palette PNGs every 2nd frame (the "6 fps" ones), every frame
    in ``JPEGImages_24fps``; ``sav_val.txt``."""
    stems = [f"{i:05d}" for i in range(n)]
    vid = "sav_000001"
    write_frames(root / "JPEGImages_24fps" / vid, stems, list(range(n)))
    for s in stems[::2]:
        i = int(s)
        save_png(root / "Annotations_6fps" / vid / "000" / f"{s}.png", labels(i, left=1, right=1))
        save_png(root / "Annotations_6fps" / vid / "001" / f"{s}.png", labels(i, right=1))
    (root / "sav_val.txt").write_text(vid + "\n")
    return {"root": root, "vid": vid, "stems": stems, "annotated": stems[::2]}


def lvos_tree(root: Path, n: int = 5) -> dict:
    """An LVOS split: video ``lv1`` with 8-digit stems from 00000001, dense annotations (every
    frame holds every object present: ground truth); object 1 (left half) from the first frame,
    object 4 (right half) from the third, numeric ``start`` values as in the meta files."""
    stems = [f"{i + 1:08d}" for i in range(n)]
    write_frames(root / "JPEGImages" / "lv1", stems, list(range(n)))
    for k, s in enumerate(stems):
        save_png(root / "Annotations" / "lv1" / f"{s}.png", labels(k, left=1, right=4 if k >= 2 else 0))
    meta = {"videos": {"lv1": {"objects": {
        "1": {"frame_range": {"start": 1, "end": n, "frame_nums": n}},
        "4": {"frame_range": {"start": "00000003", "end": n, "frame_nums": n - 2}}}}}}
    (root / "valid_meta.json").write_text(json.dumps(meta))
    return {"root": root, "stems": stems}
