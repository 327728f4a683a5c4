"""Decoder and writer stages on real DAVIS frames: can they keep up with the model at GPU speed?

Issue 15: at 45 frames/s the model leaves the writer about 22 ms per frame for the palette PNG, the
overlay and the mask video, and the decoder as much for decoding and conversion to RGB. This script
measures, on the 854x480 ``car-shadow`` frames of the shared DAVIS sample with their annotations as
labels (the clip is repeated ``--passes`` times):

1. decoding alone: the JPEG frame folder, and an H.264 mp4 made from it in a temporary folder
   (``tests._media.encode_mp4``);
2. each writer alone, on frames already in memory: :class:`pipelines.writers.PalettePngWriter`
   (thread pool, and ``workers=0`` for comparison), :class:`~pipelines.writers.OverlayVideoWriter`
   (H.264) and :class:`~pipelines.writers.MaskVideoWriter` (FFV1);
3. everything together through :func:`pipelines.runner.run_pipeline` with an identity process
   step: mp4 decode -> labels -> PNG + overlay + mask video.

Each result is in frames per second (higher is better); the target is 60 frames/s. Nothing is
written outside a temporary folder and no torch is imported.

Usage::

    python benchmarks/bench_io.py               # 3 passes over the 40 frames
    python benchmarks/bench_io.py --passes 1    # quicker, noisier
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pipelines.runner import PipelineStats, run_pipeline  # noqa: E402
from pipelines.sources import Frame, open_source  # noqa: E402
from pipelines.writers import MaskVideoWriter, OverlayVideoWriter, PalettePngWriter  # noqa: E402
from tests._media import encode_mp4  # noqa: E402
from tests.conftest import SHARED_DATA  # noqa: E402
from vos.labels import davis_palette  # noqa: E402

SEQUENCE = "car-shadow"
TARGET_FPS = 60.0


def _fps(frames: int, seconds: float) -> float:
    return frames / seconds if seconds > 0 else float("inf")


def decode_fps(path: Path, passes: int) -> float:
    """Frames per second of iterating ``open_source(path)`` ``passes`` times (open included)."""
    frames = 0
    t0 = time.perf_counter()
    for _ in range(passes):
        with open_source(path) as src:
            for _frame in src:
                frames += 1
    return _fps(frames, time.perf_counter() - t0)


def writer_fps(make, items: list[tuple[Frame, np.ndarray]]) -> float:
    """Frames per second of ``write`` for every item plus the final ``close`` of ``make()``."""
    writer = make()
    t0 = time.perf_counter()
    for frame, labels in items:
        writer.write(frame, labels)
    writer.close()
    return _fps(len(items), time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=3, help="times the 40-frame clip is repeated")
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "davis_sample",
                    help="DAVIS folder with JPEGImages/480p and Annotations/480p")
    args = ap.parse_args(argv)
    frames_dir = args.data / "JPEGImages" / "480p" / SEQUENCE
    ann_dir = args.data / "Annotations" / "480p" / SEQUENCE
    if not frames_dir.is_dir():
        print(f"bench_io: error: {frames_dir}: no such folder", file=sys.stderr)
        return 2
    passes = max(1, args.passes)
    palette = davis_palette()
    labels = [np.array(Image.open(p)) for p in sorted(ann_dir.glob("*.png"))]
    print(f"{SEQUENCE}: {len(labels)} frames of {labels[0].shape[1]}x{labels[0].shape[0]}, "
          f"{passes} pass(es), {os.cpu_count()} CPU cores; target {TARGET_FPS:.0f} frames/s")

    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench_io-") as tmp_name:
        tmp = Path(tmp_name)
        mp4 = encode_mp4(frames_dir, tmp / f"{SEQUENCE}.mp4")
        rows.append(("decode JPEG folder", decode_fps(frames_dir, passes)))
        rows.append(("decode H.264 mp4", decode_fps(mp4, passes)))

        with open_source(mp4) as src:
            clip = [(f, labels[f.index % len(labels)]) for f in src]
        span = len(clip) / 24  # seconds per pass (encode_mp4 writes 24 frames/s)
        items = [(Frame(k * len(clip) + f.index, f.pts + k * span, f.rgb), lab)
                 for k in range(passes) for f, lab in clip]
        h, w = labels[0].shape
        fps = 24
        n = [0]

        def out(name: str) -> Path:
            n[0] += 1
            return tmp / f"{n[0]:02d}-{name}"

        rows.append(("PNG writer (thread pool)",
                     writer_fps(lambda: PalettePngWriter(out("png"), palette), items)))
        rows.append(("PNG writer (workers=0)",
                     writer_fps(lambda: PalettePngWriter(out("png"), palette, workers=0), items)))
        rows.append(("overlay writer (H.264)",
                     writer_fps(lambda: OverlayVideoWriter(out("overlay.mp4"), w, h, fps, palette),
                                items)))
        rows.append(("mask video writer (FFV1)",
                     writer_fps(lambda: MaskVideoWriter(out("masks.mkv"), w, h, fps), items)))

        # everything together: decode (reader thread) -> identity -> all writers (writer thread)
        total = PipelineStats()
        t0 = time.perf_counter()
        for _ in range(passes):
            writers = [PalettePngWriter(out("png"), palette),
                       OverlayVideoWriter(out("overlay.mp4"), w, h, fps, palette),
                       MaskVideoWriter(out("masks.mkv"), w, h, fps)]

            def sink(item: tuple[Frame, np.ndarray], writers=writers) -> None:
                frame, lab = item
                for writer in writers:
                    writer.write(frame, lab)

            with open_source(mp4) as src:
                stats = run_pipeline(src, lambda f: (f, labels[f.index % len(labels)]), sink)
            for writer in writers:
                writer.close()
            total.items_written += stats.items_written
            total.read_s += stats.read_s
            total.write_s += stats.write_s
        wall = time.perf_counter() - t0
        rows.append(("all writers through run_pipeline", _fps(total.items_written, wall)))

    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        mark = "ok" if value >= TARGET_FPS else "below target"
        print(f"  {name:<{width}}  {value:8.1f} frames/s  ({1000 / value:6.2f} ms/frame)  {mark}")
    print(f"  pipeline: decode {total.read_s:.2f} s, writers {total.write_s:.2f} s over "
          f"{total.items_written} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
