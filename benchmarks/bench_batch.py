"""Benchmark of ``vos batch`` on one machine: throughput against the number of actors, and the
scheduling overhead per video compared with ``vos run``.

Data: ``--videos`` DAVIS-layout sequences made of the first ``--frames`` frames of the real
``car-shadow`` sequence (854x480 JPEGs and its first annotation, symlinked from
``../shared/data/davis_sample``). Model: the tiny random-weight SegGPT of the tests
(``configs/seggpt-tiny.json``; the model input is 896x448 whatever the model size, so decode,
pre-processing and PNG writing cost what they cost with the real model), or ``--checkpoint``.

Measured, on one local Ray cluster (``ray.init(num_cpus=<cores>)``), each configuration
``--repeat`` times, taking turns, median reported:

* ``vos batch`` with 1..``--max-actors`` actors of 1 CPU (torch 1 thread each), and one actor of
  all CPUs: wall time from the call to the last record (actor start-up included), videos/s and
  frames/s, and frames/s after the first actor was ready;
* ``vos run``'s chain in this process (:func:`vos.engine.video.run_video` with a loaded model, torch 1
  thread), one video after the other: the same work without Ray;
* per video: ``task_s - wall_s`` (driver submit to result minus the actor's own run time), i.e.
  what Ray and the driver add to a video, and the round trip of an empty job;
* fixed costs: starting the local cluster, starting an actor (worker process + model load), and the
  ``vos run`` command's start-up (interpreter, imports, model load) for one video.

Usage::

    python benchmarks/bench_batch.py [--videos 8] [--frames 10] [--max-actors 2] [--repeat 2] [--no-wide]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CAR = REPO.parent / "shared" / "data" / "davis_sample"
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_data(work: Path, n_videos: int, n_frames: int) -> Path:
    frames = sorted((CAR / "JPEGImages" / "480p" / "car-shadow").glob("*.jpg"))[:n_frames]
    mask = CAR / "Annotations" / "480p" / "car-shadow" / "00000.png"
    if not frames or not mask.is_file():
        sys.exit(f"car-shadow not found in {CAR}")
    root = work / "davis"
    names = [f"car-{i:02d}" for i in range(n_videos)]
    for name in names:
        (root / "JPEGImages" / "480p" / name).mkdir(parents=True)
        (root / "Annotations" / "480p" / name).mkdir(parents=True)
        for f in frames:
            (root / "JPEGImages" / "480p" / name / f.name).symlink_to(f)
        (root / "Annotations" / "480p" / name / "00000.png").symlink_to(mask)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    return root


def tiny_checkpoint(work: Path) -> str:
    from tests._reference import make_hf_model

    folder = work / "tiny_hf"
    make_hf_model(REPO / "configs" / "seggpt-tiny.json", seed=0).save_pretrained(folder)
    return str(folder)


def run_batch_once(jobs, out: Path, checkpoint: str, context: int, actors: int, cpus: float):
    from vos.batch.runner import BatchOptions, run_batch

    submits: list[float] = []
    options = BatchOptions(output=out, checkpoint=checkpoint, context=context, num_actors=actors,
                           cpus_per_actor=cpus, quiet=True)
    t0 = time.perf_counter()
    result = run_batch(jobs, options, on_submit=lambda *a: submits.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    assert not result.failed, result.failed
    return {"wall": wall, "frames": result.frames_run, "videos": result.ran,
            "after_start": wall - (submits[0] - t0),            # from the first submission
            "overhead": [r["task_s"] - r["wall_s"] for r in result.records]}


def run_inprocess(jobs, out: Path, checkpoint: str, context: int) -> dict:
    import torch

    from pipelines.model_stage import load_stage
    from vos.engine.video import run_video

    torch.set_num_threads(1)
    stage = load_stage(checkpoint, "cpu", "float32")
    t0 = time.perf_counter()
    frames = 0
    for job in jobs:
        frames += run_video(job.video, job.first_mask, output=out, name=job.name, checkpoint=checkpoint,
                            context=context, stage=stage).frames
    return {"wall": time.perf_counter() - t0, "frames": frames, "videos": len(jobs)}


def empty_round_trip(checkpoint: str, n: int = 50) -> float:
    """Median round trip of ``process`` on a job that fails at once (no video): Ray's own cost."""
    import ray

    from pipelines.actors import actor_class
    from vos.batch.worker import VideoWorker

    actor = actor_class(VideoWorker, num_cpus=1).remote(checkpoint, "cpu", num_threads=1)
    ray.get(actor.ready.remote())
    times = []
    job = {"name": "x", "video": "/nonexistent.mp4", "first_mask": "/nonexistent.png", "output": "/tmp"}
    for _ in range(n):
        t = time.perf_counter()
        ray.get(actor.process.remote(job))
        times.append(time.perf_counter() - t)
    ray.kill(actor)
    return statistics.median(times)


def actor_start(checkpoint: str) -> float:
    import ray

    from pipelines.actors import actor_class
    from vos.batch.worker import VideoWorker

    t = time.perf_counter()
    actor = actor_class(VideoWorker, num_cpus=1).remote(checkpoint, "cpu", num_threads=1)
    ray.get(actor.ready.remote())
    dt = time.perf_counter() - t
    ray.kill(actor)
    return dt


def vos_run_command(job, out: Path, checkpoint: str, context: int) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vos.cli", "run", job.video, "--first-mask", job.first_mask,
                    "--output", str(out), "--checkpoint", checkpoint, "--context", str(context),
                    "--quiet"], check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--context", type=int, default=2)
    ap.add_argument("--max-actors", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-wide", action="store_true",
                    help="skip the run with one actor holding every CPU")
    args = ap.parse_args()

    import ray

    from vos.datasets.discover import discover_jobs

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_batch-"))
    root = build_data(work, args.videos, args.frames)
    checkpoint = args.checkpoint or tiny_checkpoint(work)
    jobs, _ = discover_jobs(root)
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]

    t = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING, object_store_memory=256 * 1024 * 1024)
    ray_init_s = time.perf_counter() - t
    configs = [(n, 1.0) for n in range(1, args.max_actors + 1)]
    if not args.no_wide and cores > 1:
        configs.append((1, float(cores)))
    results: dict = {c: [] for c in configs}
    inproc = []
    for rep in range(args.repeat):
        inproc.append(run_inprocess(jobs, work / f"inproc-{rep}", checkpoint, args.context))
        for c in configs:
            results[c].append(run_batch_once(jobs, work / f"batch-{c[0]}x{c[1]:g}-{rep}", checkpoint,
                                             args.context, *c))
            print(c, f"{results[c][-1]['wall']:.1f} s", flush=True)
    rt = empty_round_trip(checkpoint)
    starts = [actor_start(checkpoint) for _ in range(3)]
    ray.shutdown()
    cmd = [vos_run_command(jobs[0], work / "cmd", checkpoint, args.context) for _ in range(2)]
    load_after = os.getloadavg()[0]

    med = statistics.median
    n_frames = inproc[0]["frames"]
    print(f"\n* Machine: {cores}-core CPU ({platform.machine()}), {platform.python_version()}, "
          f"ray {ray.__version__}; date {datetime.date.today()}; 1-min load average "
          f"{load_before:.1f} before, {load_after:.1f} after.")
    print(f"* Data: {args.videos} videos x {args.frames} frames (854x480), context {args.context}, "
          f"{n_frames} frames in all; median of {args.repeat} runs.\n")
    base = med(r["wall"] for r in inproc)
    print("| run | wall (s) | videos/s | frames/s | frames/s from first submission |")
    print("|---|---:|---:|---:|---:|")
    print(f"| `vos run` chain in process, one video after the other (1 thread) | {base:.1f} | "
          f"{args.videos / base:.2f} | {n_frames / base:.2f} | - |")
    for (n, cpus), rs in results.items():
        wall = med(r["wall"] for r in rs)
        steady = med(r["frames"] / r["after_start"] for r in rs)
        label = f"`vos batch`, {n} actor(s) x {cpus:g} CPU ({int(cpus)} torch thread(s))"
        print(f"| {label} | {wall:.1f} | {args.videos / wall:.2f} | {n_frames / wall:.2f} | {steady:.2f} |")
    over = [o for rs in results.values() for r in rs for o in r["overhead"]]
    print(f"\n* Per video, Ray + driver (`task_s - wall_s`): median {1000 * med(over):.1f} ms, "
          f"max {1000 * max(over):.1f} ms; empty job round trip {1000 * rt:.2f} ms.")
    per_video = base / args.videos
    print(f"* `vos run` chain per video in process: {per_video:.2f} s.")
    print(f"* Fixed costs: local cluster start {ray_init_s:.1f} s; actor start (process + imports + "
          f"model load) median {med(starts):.1f} s; `vos run` command for one video "
          f"{med(cmd):.1f} s.")


if __name__ == "__main__":
    main()
