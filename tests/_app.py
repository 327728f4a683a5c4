"""Helpers of the ``vos app`` tests: a free local port and a small clip with its masks."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_clip(shared_data: Path, folder: Path, n: int, size: tuple[int, int], masks=(2, 5)):
    """The first ``n`` car-shadow frames at ``size`` as an H.264 mp4, and the DAVIS annotations of
    frames ``masks`` resized to it (palette PNGs)."""
    import av

    base = shared_data / "davis_sample"
    files = sorted((base / "JPEGImages" / "480p" / "car-shadow").glob("*.jpg"))[:n]
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / "car.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for f in files:
            rgb = np.array(Image.open(f).convert("RGB").resize(size))
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    paths = {}
    for k in masks:
        im = Image.open(base / "Annotations" / "480p" / "car-shadow" / f"{k:05d}.png")
        paths[k] = folder / f"mask{k}.png"
        im.resize(size, Image.NEAREST).save(paths[k])
    return video, paths
