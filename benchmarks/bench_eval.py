"""Benchmark of ``vos eval`` against ``vos-benchmark`` and against itself on one process.

Builds a DAVIS-layout data set from the real ``car-shadow`` sequence (``../shared/data/davis_sample``):
``--sequences`` copies of its 40 frames, each with 3 objects (the car, the car mirrored left-right and a
small moving box) and results made from them (eroded, dilated or shifted objects, some missed frames).
Then times, on the same files:

* ``vos eval`` as a command (``vos eval --davis-root ... --results ...``, all cores and ``--workers 1``),
  start-up included;
* :func:`vos.evaluation.davis2017.evaluate_davis` in this process (all cores and one worker);
* ``vos-benchmark`` (PyPI ``vos-benchmark``, which reproduces the official numbers):
  ``benchmark(..., num_processes=<cores>)`` and its per-video evaluator on one process;

checks that every object's J-Mean and F-Mean agree with vos-benchmark to 1e-9, and prints a Markdown
table of the timings (median of ``--repeat`` runs) and ratios.

Usage::

    python benchmarks/bench_eval.py [--sequences 8] [--repeat 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
CAR = REPO.parent / "shared" / "data" / "davis_sample" / "Annotations" / "480p" / "car-shadow"


def _palette_png(path: Path, arr: np.ndarray, palette) -> None:
    im = Image.fromarray(arr.astype(np.uint8))
    im.putpalette(palette)
    im.save(path)


def build_data(work: Path, n_seq: int) -> tuple[Path, Path, list[str]]:
    files = sorted(CAR.glob("*.png"))
    if not files:
        sys.exit(f"car-shadow ground truth not found in {CAR}")
    with Image.open(files[0]) as im:
        palette = im.getpalette()
    cars = [np.array(Image.open(p)) == 1 for p in files]
    root, res_root = work / "davis", work / "results"
    names = [f"car-shadow-{i:02d}" for i in range(n_seq)]
    rng = np.random.default_rng(0)
    for s, name in enumerate(names):
        gdir = root / "Annotations" / "480p" / name
        rdir = res_root / name
        gdir.mkdir(parents=True)
        rdir.mkdir(parents=True)
        for t, car in enumerate(cars):
            h, w = car.shape
            gt = np.zeros((h, w), np.uint8)
            gt[np.fliplr(car)] = 2
            gt[car] = 1
            y, x = 40 + 3 * t, 60 + 5 * s
            gt[y:y + 24, x:x + 30] = 3
            res = np.zeros_like(gt)
            for k in (1, 2, 3):
                m = gt == k
                kind = (s + k + t // 10) % 4
                if kind == 0:
                    m = ndi.binary_erosion(m, iterations=3)
                elif kind == 1:
                    m = ndi.binary_dilation(m, iterations=4)
                elif kind == 2:
                    m = np.roll(m, (5, -7), axis=(0, 1))
                if rng.random() < 0.05:
                    continue  # missed in this frame
                res[m & (res == 0)] = k
            _palette_png(gdir / files[t].name, gt, palette)
            _palette_png(rdir / files[t].name, res, palette)
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text("\n".join(names) + "\n")
    return root, res_root, names


def time_round_robin(runs: list[tuple[str, object]], repeat: int) -> list[tuple[str, float]]:
    """Median wall time of each run; the repeats are interleaved (run 1, 2, ..., 1, 2, ...) so that
    load from other processes on a shared machine hits every run alike."""
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    for _ in range(repeat):
        for name, fn in runs:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return [(name, statistics.median(times[name])) for name, _ in runs]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sequences", type=int, default=8, help="copies of car-shadow (default 8)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument("--workdir", default=None, help="where to build the data (default: a temp dir)")
    args = ap.parse_args()

    from vos.evaluation.davis2017 import _default_workers, evaluate_davis
    from vos_benchmark.benchmark import VideoEvaluator, benchmark

    cores = _default_workers()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_eval_"))
    if work.exists() and any(work.iterdir()):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        root, res_root, names = build_data(work, args.sequences)
        ann = root / "Annotations" / "480p"
        n_obj = 3 * len(names)
        n_frames = sum(len(list((ann / n).glob("*.png"))) - 2 for n in names)

        # correctness first: per-object means against vos-benchmark
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = evaluate_davis(root, res_root, workers=cores)
        worst = 0.0
        for name in names:
            _, iou, bf = VideoEvaluator(str(ann), str(res_root))(name)
            for k in iou:
                po = ours["per_object"][f"{name}_{k}"]
                worst = max(worst, abs(po["J-Mean"] - iou[k] / 100), abs(po["F-Mean"] - bf[k] / 100))
        assert worst < 1e-9, worst

        exe = shutil.which("vos")
        cmd = [exe] if exe else [sys.executable, "-m", "vos.cli"]
        base = [*cmd, "eval", "--davis-root", str(root), "--results", str(res_root)]

        def cli(extra=()):
            subprocess.run([*base, *extra], check=True, capture_output=True)

        def lib(workers):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                evaluate_davis(root, res_root, workers=workers)

        def vb_pool():
            benchmark([str(ann)], [str(res_root)], strict=False, num_processes=cores, verbose=False)

        def vb_single():
            ev = VideoEvaluator(str(ann), str(res_root))
            for name in names:
                ev(name)

        load_before = os.getloadavg()
        rows = time_round_robin([
            (f"`vos eval` command, all cores ({cores} workers)", lambda: cli()),
            ("`vos eval --workers 1` command", lambda: cli(["--workers", "1"])),
            (f"`evaluate_davis(workers={cores})` in process", lambda: lib(cores)),
            ("`evaluate_davis(workers=1)` in process", lambda: lib(1)),
            (f"vos-benchmark `benchmark(num_processes={cores})`", vb_pool),
            ("vos-benchmark `VideoEvaluator`, one process", vb_single),
        ], args.repeat)
        load_after = os.getloadavg()
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    ours_all, ours_one = rows[0][1], rows[1][1]
    lib_all, lib_one = rows[2][1], rows[3][1]
    vb_all, vb_one = rows[4][1], rows[5][1]
    print(f"date: {datetime.date.today().isoformat()}; machine: {platform.machine()}, {cores} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    print(f"data: {len(names)} sequences x 40 frames (854x480), {n_obj} objects, "
          f"{n_frames} scored frames, {3 * n_frames} scored object-frames; "
          f"max |ours - vos-benchmark| per object = {worst:.1e}")
    print(f"1-minute load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f}\n")
    print("| run | time (s) | per scored object-frame (ms) |")
    print("|---|---:|---:|")
    obj_frames = n_frames * 3
    for name, sec in rows:
        print(f"| {name} | {sec:.2f} | {1e3 * sec / obj_frames:.2f} |")
    print()
    print(f"* vos-benchmark ({cores} processes) / `vos eval` command ({cores} workers): "
          f"{vb_all / ours_all:.1f}x")
    print(f"* vos-benchmark ({cores} processes) / `evaluate_davis` ({cores} workers): "
          f"{vb_all / lib_all:.1f}x")
    print(f"* vos-benchmark one process / `evaluate_davis(workers=1)`: {vb_one / lib_one:.1f}x")
    print(f"* `vos eval --workers 1` / `vos eval` ({cores} workers): {ours_one / ours_all:.2f}x; "
          f"in process {lib_one / lib_all:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
