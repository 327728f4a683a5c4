"""Test helpers that make media files from real frames (never copied into the repo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def encode_mp4(frames_dir: Path, path: Path, limit: int | None = None, fps: int = 24) -> Path:
    """Encode the sorted ``*.jpg`` frames of ``frames_dir`` (the first ``limit``) as H.264 mp4."""
    import av

    files = sorted(Path(frames_dir).glob("*.jpg"))[:limit]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = Image.open(files[0]).size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for f in files:
            frame = av.VideoFrame.from_ndarray(np.array(Image.open(f).convert("RGB")), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def small_car_shadow(shared_data: Path, base: Path, size: tuple[int, int], frames: int) -> tuple[Path, Path]:
    """The first ``frames`` frames of DAVIS car-shadow scaled to ``size`` as the frame folder
    ``base/car``, and its frame-0 annotation scaled the same way (nearest neighbour, DAVIS palette
    kept) as ``base/00000.png``. Returns ``(folder, mask)``."""
    src = shared_data / "davis_sample" / "JPEGImages" / "480p" / "car-shadow"
    folder = base / "car"
    folder.mkdir(parents=True)
    for f in sorted(src.glob("*.jpg"))[:frames]:
        Image.open(f).resize(size, Image.BILINEAR).save(folder / f.name, quality=95)
    ann = Image.open(shared_data / "davis_sample" / "Annotations" / "480p" / "car-shadow" / "00000.png")
    small = ann.resize(size, Image.NEAREST)
    assert small.mode == "P" and np.array(small).any()
    small.save(base / "00000.png")
    return folder, base / "00000.png"
