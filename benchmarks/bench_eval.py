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

With ``--protocol sav`` it times the SA-V protocol (:func:`vos.evaluation.sav.evaluate_sav`) instead, on
the same objects written both ways: as SA-V per-object folders (``GT/<vid>/<obj>/<stem>.png``, 0/255
masks) and as id-map folders (``GT/<vid>/<stem>.png``); the references are SAM 2's per-object loop
around vos-benchmark's ``Evaluator`` (SA-V folders, one process) and vos-benchmark itself (id folders,
pool and one process), checked to 1e-6.

Usage::

    python benchmarks/bench_eval.py [--sequences 8] [--repeat 3] [--workdir DIR] [--protocol sav]
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
    ap.add_argument("--protocol", default="davis2017", choices=["davis2017", "sav"],
                    help="which vos eval protocol to time (default davis2017)")
    args = ap.parse_args()
    if args.protocol == "sav":
        return main_sav(args)

    from vos.evaluation.common import default_workers
    from vos.evaluation.davis2017 import evaluate_davis
    from vos_benchmark.benchmark import VideoEvaluator, benchmark

    cores = default_workers()
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


def to_sav(id_root: Path, sav_root: Path, names: list[str]) -> None:
    """Write the id maps of ``id_root/<vid>/*.png`` as SA-V per-object folders of 0/255 masks
    (objects 1, 2, 3 -> ``000``, ``001``, ``002``)."""
    for name in names:
        for png in sorted((id_root / name).glob("*.png")):
            ids = np.array(Image.open(png))
            for k in (1, 2, 3):
                d = sav_root / name / f"{k - 1:03d}"
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.where(ids == k, 255, 0).astype(np.uint8), mode="L").save(d / png.name)


def sam2_sav_loop(gt_root: Path, res_root: Path, names: list[str]) -> dict[str, tuple[float, float]]:
    """SAM 2's ``VideoEvaluator`` on SA-V folders (``sav_dataset/utils/sav_benchmark.py``): per
    object folder, frames 1..T-2, both masks read as ``> 0``, vos-benchmark's ``Evaluator``."""
    from vos_benchmark.evaluator import Evaluator

    out = {}
    for name in names:
        for obj in sorted(os.listdir(gt_root / name)):
            ev = Evaluator(name=name)
            for fr in sorted(os.listdir(gt_root / name / obj))[1:-1]:
                g = np.array(Image.open(gt_root / name / obj / fr)) > 0
                p = np.array(Image.open(res_root / name / obj / fr)) > 0
                ev.feed_frame(mask=p, gt=g)
            iou, bf = ev.conclude()
            (k,) = iou
            out[f"{name}_{obj}"] = (iou[k] / 100, bf[k] / 100)
    return out


def main_sav(args) -> int:
    from vos.evaluation.common import default_workers
    from vos.evaluation.davis2017 import evaluate_davis
    from vos.evaluation.sav import evaluate_sav
    from vos_benchmark.benchmark import VideoEvaluator, benchmark

    cores = default_workers()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_eval_sav_"))
    if work.exists() and any(work.iterdir()):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        root, id_res, names = build_data(work, args.sequences)
        id_gt = root / "Annotations" / "480p"
        sav_gt, sav_res = work / "sav_gt", work / "sav_res"
        to_sav(id_gt, sav_gt, names)
        to_sav(id_res, sav_res, names)
        n_frames = sum(len(list((id_gt / n).glob("*.png"))) - 2 for n in names)

        # correctness first, against the references
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours_sav = evaluate_sav(sav_gt, sav_res, workers=cores)
            ours_ids = evaluate_sav(id_gt, id_res, workers=cores)
        worst = 0.0
        for key, (j, f) in sam2_sav_loop(sav_gt, sav_res, names).items():
            po = ours_sav["per_object"][key]
            worst = max(worst, abs(po["J-Mean"] - j), abs(po["F-Mean"] - f))
        gjf, gj, gf, objs = benchmark([str(id_gt)], [str(id_res)], strict=False,
                                      num_processes=cores, verbose=False)
        os.unlink(id_res / "results.csv")
        for name, (iou, bf) in objs[0].items():
            for k in iou:
                po = ours_ids["per_object"][f"{name}_{k}"]
                worst = max(worst, abs(po["J-Mean"] - iou[k] / 100), abs(po["F-Mean"] - bf[k] / 100))
        worst = max(worst, abs(ours_ids["global"]["J&F-Mean"] - gjf[0] / 100))
        assert worst < 1e-6, worst

        exe = [sys.executable, "-m", "vos.cli"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}

        def cli():
            subprocess.run([*exe, "eval", "--protocol", "sav", "--gt-root", str(sav_gt), "--results",
                            str(sav_res)], check=True, capture_output=True, env=env)

        def lib(gt, res, workers):
            def run():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    evaluate_sav(gt, res, workers=workers)
            return run

        def vb_pool():
            benchmark([str(id_gt)], [str(id_res)], strict=False, num_processes=cores, verbose=False)
            os.unlink(id_res / "results.csv")

        def davis_one():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                evaluate_davis(root, id_res, workers=1)

        def vb_single():
            ev = VideoEvaluator(str(id_gt), str(id_res))
            for name in names:
                ev(name)

        load_before = os.getloadavg()
        rows = time_round_robin([
            (f"`vos eval --protocol sav` command, SA-V folders, all cores ({cores} workers)", cli),
            (f"`evaluate_sav(workers={cores})`, SA-V folders", lib(sav_gt, sav_res, cores)),
            ("`evaluate_sav(workers=1)`, SA-V folders", lib(sav_gt, sav_res, 1)),
            ("SAM 2's per-object loop on vos-benchmark's `Evaluator`, SA-V folders, one process",
             lambda: sam2_sav_loop(sav_gt, sav_res, names)),
            (f"`evaluate_sav(workers={cores})`, id folders", lib(id_gt, id_res, cores)),
            ("`evaluate_sav(workers=1)`, id folders", lib(id_gt, id_res, 1)),
            ("`evaluate_davis(workers=1)` (DAVIS 2017 protocol), id folders", davis_one),
            (f"vos-benchmark `benchmark(num_processes={cores})`, id folders", vb_pool),
            ("vos-benchmark `VideoEvaluator`, id folders, one process", vb_single),
        ], args.repeat)
        load_after = os.getloadavg()
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    t = dict(rows)
    keys = [name for name, _ in rows]
    print(f"date: {datetime.date.today().isoformat()}; machine: {platform.machine()}, {cores} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    print(f"data: {len(names)} videos x 40 frames (854x480), 3 objects each, {n_frames} scored frames, "
          f"{3 * n_frames} scored object-frames; max |ours - reference| per object = {worst:.1e}")
    print(f"1-minute load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f}\n")
    print("| run | time (s) | per scored object-frame (ms) |")
    print("|---|---:|---:|")
    for name, sec in rows:
        print(f"| {name} | {sec:.2f} | {1e3 * sec / (3 * n_frames):.2f} |")
    print()
    print(f"* SAM 2's loop / `evaluate_sav(workers=1)`, SA-V folders: {t[keys[3]] / t[keys[2]]:.1f}x")
    print(f"* vos-benchmark one process / `evaluate_sav(workers=1)`, id folders: "
          f"{t[keys[8]] / t[keys[5]]:.1f}x")
    print(f"* vos-benchmark ({cores} processes) / `evaluate_sav(workers={cores})`, id folders: "
          f"{t[keys[7]] / t[keys[4]]:.1f}x")
    print(f"* `evaluate_sav(workers=1)` / `evaluate_davis(workers=1)`, id folders: "
          f"{t[keys[5]] / t[keys[6]]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
