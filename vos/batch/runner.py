"""``run_batch``: segment many videos on a Ray cluster, one SegGPT model per actor (``vos batch``).

Flow (``docs/architecture.md`` has the whole picture)::

    SOURCE (DAVIS root | JSONL | CSV) -> vos.datasets.job: Job (name, video, prompt: absolute paths)
      -> vos.batch.pool: bounded queue of jobs, at most one video in flight per actor (ray.wait)
      -> actors (vos.batch.worker.VideoWorker, model loaded once): vos run's chain on one video,
         decode -> model -> PNGs written under DIR/.NAME.tmp-* and renamed to DIR/NAME
      -> small records (vos.batch.worker.VideoRecord) back to the driver
      -> vos.batch.log: DIR/batch_manifest.jsonl (+ progress bar)

Only job dicts (paths) and result records cross the object store; frames stay inside the actor.
The cluster (join or start, sizing) is :mod:`vos.batch.cluster`, shared with ``vos run --address``.

Faults:

* an actor or its worker process or node dies mid-video (``RayActorError`` / ``ActorDiedError``,
  ``WorkerCrashedError``, ``NodeDiedError``, ...): the actor is killed and replaced, the stale
  temporary folder removed, and the video queued again first (at most ``--max-retries`` times).
  Outputs are only ever published by rename, so a retried video's output equals a clean run's.
* a video that fails for its own reasons (bad video or mask...): the actor reports a ``failed``
  record and goes on; the other videos are not affected; the exit code is 1.
* SIGTERM or Ctrl-C: the actors are killed, the local cluster (if this command started it)
  stopped, the half-written folders removed; every finished video has its line in the log, so
  ``--resume`` goes on from there. The CLI prints ``vos batch: terminated`` (exit 143) or
  ``interrupted`` (130).
* the driver is killed (SIGKILL): every finished video already has its line in
  ``batch_manifest.jsonl`` (a torn last line is ignored when read back), and ``--resume`` skips the
  videos whose output folder and log entry are complete and agree.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from seggpt_model.config import DEFAULT_CHECKPOINT
from seggpt_model.files import remove_stale_temps
from vos.batch.cluster import actor_setup, checkpoint_arg
from vos.batch.log import BATCH_MANIFEST, BatchLog, now, output_complete, read_batch_manifest
from vos.batch.pool import DEFAULT_MAX_RETRIES, run_jobs
from vos.datasets.job import Job
from vos.engine.session import DEFAULT_CONTEXT
from vos.errors import UserError, check_device_dtype

__all__ = [
    "BatchOptions", "BatchResult", "check_options", "run_batch",
]

@dataclass
class BatchOptions:
    """Settings of one batch (see ``vos batch --help``).

    ``num_actors`` / ``gpus_per_actor`` None choose from the cluster: one actor per GPU with one
    GPU each, or one CPU actor (0 GPUs) on CPU-only clusters. ``device`` ``auto`` is ``cuda`` for
    actors that hold a GPU and ``cpu`` otherwise. Torch threads per actor follow ``cpus_per_actor``.
    """

    output: str | os.PathLike = "results"
    checkpoint: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    context: int = DEFAULT_CONTEXT
    per_object: bool = False
    attn: str = "auto"
    compile: bool = False
    num_actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    resume: bool = False
    quiet: bool = True
    actor_start_timeout_s: float = 900.0


@dataclass
class BatchResult:
    """What :func:`run_batch` did.

    Attributes:
        records: the final log entries of the batch's videos, in job order.
        manifest_path: ``OUTPUT/batch_manifest.jsonl``.
        ran, skipped: videos run now / skipped by ``resume``.
        frames_run: frames written by the videos run now.
        wall_s: seconds from start to the last record (actor start-up included).
        actors: ``ready()`` information of the actors used.
    """

    records: list[dict]
    manifest_path: Path
    ran: int = 0
    skipped: int = 0
    wall_s: float = 0.0
    actors: list[dict] = field(default_factory=list)
    frames_run: int = 0

    @property
    def ok(self) -> list[dict]:
        return [r for r in self.records if r.get("status") == "ok"]

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r.get("status") != "ok"]

    @property
    def frames(self) -> int:
        """Frames of every finished video (skipped ones included)."""
        return sum(r.get("frames") or 0 for r in self.records if r.get("status") == "ok")


def check_options(options: BatchOptions) -> None:
    """Raise :class:`UserError` for option values that no cluster could run."""
    if not isinstance(options.context, int) or options.context < 1:
        raise UserError(f"--context must be a positive integer, got {options.context!r}")
    if options.max_retries is None or options.max_retries < 0:
        raise UserError(f"--max-retries must be at least 0, got {options.max_retries!r}")
    if options.num_actors is not None and options.num_actors < 1:
        raise UserError(f"--num-actors must be at least 1, got {options.num_actors}")
    for flag, value in (("--gpus-per-actor", options.gpus_per_actor),
                        ("--cpus-per-actor", options.cpus_per_actor)):
        if value is not None and not value >= 0:
            raise UserError(f"{flag} must not be negative, got {value}")
    check_device_dtype(options.device, options.dtype, resolve=False)


def _job_dict(job: Job, output: Path, options: BatchOptions) -> dict[str, Any]:
    """The job dict a :class:`vos.batch.worker.VideoWorker` runs (``masks`` keys as ints)."""
    prompt = job.prompt()
    if job.masks is not None:
        prompt["masks"] = dict(job.masks)
    return {"name": job.name, "video": job.video, "first_mask": job.first_mask, **prompt,
            "output": str(output), "context": options.context, "per_object": options.per_object}


def run_batch(jobs: list[Job], options: BatchOptions, *,
              on_submit: Callable[[dict, Any, int], None] | None = None) -> BatchResult:
    """Segment ``jobs`` on the connected Ray cluster and write ``OUTPUT/batch_manifest.jsonl``.

    Each video is written to ``OUTPUT/<name>`` exactly as ``vos run`` writes it. The log gets
    one line per video when it finishes (status ``ok`` or ``failed``, frames, model fps, wall time,
    error), and is rewritten at the end in job order with one entry per video. With
    ``options.resume``, videos whose output and ``ok`` entry are complete and were made with the
    same prompt, checkpoint, context and per-object setting keep their entry and are not run again.
    When interrupted (Ctrl-C, SIGTERM), the actors are killed and the unfinished videos'
    temporary folders removed before the exception goes on; the log keeps the finished lines.

    Args:
        jobs: from :func:`discover_jobs` (distinct names).
        options: :class:`BatchOptions`.
        on_submit: see :func:`vos.batch.pool.run_jobs` (tests use it to kill an actor mid-video).

    Raises:
        UserError: unwritable output, bad device/dtype/checkpoint, a cluster too small for one actor.
    """
    check_options(options)
    t0 = time.perf_counter()
    output = Path(options.output).resolve()
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{output}: output folder is not writable ({exc.strerror or exc})") from None
    manifest_path = output / BATCH_MANIFEST
    checkpoint = checkpoint_arg(options.checkpoint)
    settings = {"checkpoint": checkpoint or DEFAULT_CHECKPOINT, "context": options.context,
                "per_object": bool(options.per_object)}
    previous = read_batch_manifest(manifest_path) if options.resume else {}
    names = {job.name for job in jobs}
    done: dict[str, dict] = {}
    todo: list[Job] = []
    for job in jobs:
        entry = previous.get(job.name)
        if options.resume and output_complete(job, entry, output, settings):
            done[job.name] = entry
        else:
            todo.append(job)
    others = [e for n, e in previous.items() if n not in names]  # other batches' entries: kept
    try:
        log = BatchLog(manifest_path, [done[j.name] for j in jobs if j.name in done] + others)
    except OSError as exc:
        raise UserError(f"{manifest_path}: cannot write ({exc.strerror or exc})") from None
    for job in todo:
        remove_stale_temps(output, job.name)
    actors: list[dict] = []
    bar = tqdm(total=len(jobs), initial=len(done), unit="video", desc="vos batch",
               disable=options.quiet, dynamic_ncols=True, file=sys.stderr)
    frames = 0
    n_failed = 0
    finished: set[str] = set()

    def on_record(record: dict) -> None:
        nonlocal frames, n_failed
        record["finished_at"] = now()
        log.append(record)
        finished.add(record["name"])
        for w in record.get("warnings") or []:
            tqdm.write(f"vos batch: warning: {record.get('name')}: {w}", file=sys.stderr)
        frames += record.get("frames") or 0
        n_failed += record.get("status") != "ok"
        elapsed = max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix({"frames": frames, "frames/s": f"{frames / elapsed:.1f}", "failed": n_failed},
                        refresh=False)
        bar.update(1)

    records: list[dict] = []
    try:
        if todo:
            cls, kwargs, num = actor_setup(ray, checkpoint=checkpoint, device=options.device,
                                           attn=options.attn, compile=options.compile,
                                           dtype=options.dtype, n_jobs=len(todo),
                                           num_actors=options.num_actors,
                                           gpus_per_actor=options.gpus_per_actor,
                                           cpus_per_actor=options.cpus_per_actor)
            records = run_jobs([_job_dict(j, output, options) for j in todo], actor_cls=cls,
                               actor_kwargs=kwargs, num_actors=num, max_retries=options.max_retries,
                               on_record=on_record, on_submit=on_submit, on_actor=actors.append,
                               cleanup=lambda job: remove_stale_temps(output, job["name"], any_owner=True),
                               start_timeout_s=options.actor_start_timeout_s)
        new = {r["name"]: r for r in records}
        final = [done.get(job.name) or new[job.name] for job in jobs if job.name in done or job.name in new]
        log.rewrite(final + others)
    finally:
        bar.close()
        log.close()
        for job in todo:       # interrupted: the killed actors' half-written folders
            if job.name not in finished:
                remove_stale_temps(output, job.name, any_owner=True)
    return BatchResult(records=final, manifest_path=manifest_path, ran=len(records), skipped=len(done),
                       wall_s=time.perf_counter() - t0, actors=actors, frames_run=frames)


