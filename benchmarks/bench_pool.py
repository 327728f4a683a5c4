"""Our actor pool (:func:`vos.batch.pool.run_jobs`) against Ray's (``ray.util.ActorPool`` over actors
with ``max_restarts`` / ``max_task_retries``): throughput, and what a worker killed mid-video gives.

Data: ``--videos`` DAVIS-layout sequences of the first ``--frames`` frames of the real
``car-shadow`` (854x480), tiny random-weight SegGPT (as ``benchmarks/bench_batch.py``), context 1,
one local Ray cluster.

Measured, once each (the numbers go into :mod:`vos.batch.pool`'s docstring):

* clean run with ``--actors`` actors of 1 CPU: wall seconds (actor start-up included), frames/s;
* fault run with 1 actor: its worker process is killed (``SIGKILL`` of the actor's pid, as a node
  or the OOM killer would) once the second video's first PNG is in its temporary folder. Checked:
  the video's PNGs equal the clean run's, exactly one record per video, ``attempts`` known, no
  ``.NAME.tmp-*`` folder left;
* for Ray's pool also ``ray.kill(actor)`` (``no_restart=True``, what a driver or an operator does):
  is the video retried at all?

Usage::

    python benchmarks/bench_pool.py [--videos 6] [--frames 6] [--actors 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.bench_batch import build_data, tiny_checkpoint  # noqa: E402

CONTEXT = 1


def _kill_when_started(out: Path, name: str, kill) -> threading.Thread:
    """Call ``kill()`` once ``out/.NAME.tmp-*`` holds a PNG (mid-video)."""
    def watch():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            tmp = list(out.glob(f".{name}.tmp-*"))
            if tmp and list(tmp[0].glob("0*.png")):
                kill()
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _check(out: Path, clean: Path | None, records: list[dict], names: list[str]) -> dict:
    """Fault behaviour: same PNGs as the clean run, one ok record per video, no temp folder."""
    same = clean is not None and all(
        (out / n).is_dir() and sorted(p.name for p in (out / n).glob("*.png"))
        == sorted(p.name for p in (clean / n).glob("*.png"))
        and all((out / n / p.name).read_bytes() == p.read_bytes() for p in (clean / n).glob("*.png"))
        for n in names)
    ok = [r.get("name") for r in records if r.get("status") == "ok"]
    return {"identical": same, "one_ok_record_each": sorted(ok) == sorted(names) and len(ok) == len(names),
            "attempts": {r.get("name"): r.get("attempts") for r in records},
            "temp_left": sorted(p.name for p in out.iterdir() if p.name.startswith(".tmp") or ".tmp-" in p.name)}


def _job_dicts(jobs, out: Path) -> list[dict]:
    return [{"name": j.name, "video": j.video, "first_mask": j.first_mask, "output": str(out),
             "context": CONTEXT} for j in jobs]


def ours(jobs, out: Path, checkpoint: str, actors: int, kill_name: str | None = None) -> dict:
    """:func:`vos.batch.pool.run_jobs` as ``vos batch`` calls it (stale temps removed on a lost worker)."""
    import ray

    from seggpt_model.files import remove_stale_temps
    from vos.batch.cluster import actor_setup
    from vos.batch.pool import run_jobs

    out.mkdir(parents=True, exist_ok=True)
    pids: list[int] = []

    def on_submit(job, actor, attempt):
        if kill_name and job["name"] == kill_name and attempt == 1:
            _kill_when_started(out, kill_name, lambda: os.kill(pids[0], signal.SIGKILL))

    t0 = time.perf_counter()
    cls, kwargs, num = actor_setup(ray, checkpoint=checkpoint, device="cpu", dtype="float32",
                                   n_jobs=len(jobs), num_actors=actors, cpus_per_actor=1)
    records = run_jobs(_job_dicts(jobs, out), actor_cls=cls, actor_kwargs=kwargs, num_actors=num,
                       on_submit=on_submit, on_actor=lambda info: pids.append(info["pid"]),
                       cleanup=lambda job: remove_stale_temps(out, job["name"], any_owner=True))
    return {"wall": time.perf_counter() - t0, "frames": sum(r.get("frames") or 0 for r in records),
            "records": records}


def ray_pool(jobs, out: Path, checkpoint: str, actors: int, kill_name: str | None = None,
             how: str = "sigkill") -> dict:
    import ray
    from ray.util import ActorPool

    from pipelines.actors import actor_class
    from vos.batch.worker import VideoWorker

    out.mkdir(parents=True, exist_ok=True)
    cls = actor_class(VideoWorker, num_cpus=1, max_restarts=1, max_task_retries=2)
    t0 = time.perf_counter()
    handles = [cls.remote(checkpoint, "cpu", num_threads=1) for _ in range(actors)]
    pids = [info["pid"] for info in ray.get([h.ready.remote() for h in handles])]
    dicts = _job_dicts(jobs, out)
    if kill_name:
        kill = (lambda: os.kill(pids[0], signal.SIGKILL)) if how == "sigkill" else \
            (lambda: ray.kill(handles[0]))
        _kill_when_started(out, kill_name, kill)
    records, error = [], None
    try:
        for rec in ActorPool(handles).map_unordered(lambda a, job: a.process.remote(job), dicts):
            records.append(rec)
    except Exception as exc:  # what the caller of ActorPool sees
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    for h in handles:
        ray.kill(h)
    return {"wall": time.perf_counter() - t0, "frames": sum(r.get("frames") or 0 for r in records),
            "records": records, "error": error}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--actors", type=int, default=2)
    args = ap.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="bench_pool-"))
    root = build_data(work, args.videos, args.frames)
    checkpoint = tiny_checkpoint(work)
    from vos.datasets.discover import discover_jobs

    jobs, _ = discover_jobs(root)
    names = [j.name for j in jobs]
    ray.init(num_cpus=max(2, args.actors), include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING, object_store_memory=200 * 1024 * 1024)
    rows = []
    clean = ours(jobs, work / "ours-clean", checkpoint, args.actors)
    rows.append(("ours, clean", clean, None))
    r = ray_pool(jobs, work / "ray-clean", checkpoint, args.actors)
    rows.append(("ActorPool + restarts, clean", r, None))
    few = jobs[:3]
    victim = few[1].name
    r = ours(few, work / "ours-kill", checkpoint, 1, kill_name=victim)
    rows.append(("ours, 1 actor, SIGKILL mid-video", r, _check(work / "ours-kill", work / "ours-clean", r["records"],
                                                                  [j.name for j in few])))
    r = ray_pool(few, work / "ray-kill", checkpoint, 1, kill_name=victim)
    rows.append(("ActorPool + restarts, 1 actor, SIGKILL mid-video", r,
                 _check(work / "ray-kill", work / "ours-clean", r["records"], [j.name for j in few])))
    r = ray_pool(few, work / "ray-raykill", checkpoint, 1, kill_name=victim, how="ray.kill")
    rows.append(("ActorPool + restarts, 1 actor, ray.kill mid-video", r,
                 _check(work / "ray-raykill", work / "ours-clean", r["records"], [j.name for j in few])))
    ray.shutdown()
    print(f"\n{args.videos} videos x {args.frames} frames (854x480), tiny model, context {CONTEXT}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("| run | wall (s) | frames/s | fault check |")
    print("|---|---:|---:|---|")
    for label, r, check in rows:
        extra = f"; error: {r['error']}" if r.get("error") else ""
        print(f"| {label} | {r['wall']:.1f} | {r['frames'] / r['wall']:.2f} | {check or '-'}{extra} |")


if __name__ == "__main__":
    main()
