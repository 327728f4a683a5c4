"""``vos batch``: segment many videos on a Ray cluster, one SegGPT model per actor.

Flow::

    SOURCE (DAVIS root | JSONL | CSV) -> jobs (name, video, first_mask: absolute paths)
      -> driver: bounded queue of jobs, at most one video in flight per actor (ray.wait)
      -> actors (pipelines.actors.VideoWorker, model loaded once): vos run's chain on one video,
         decode -> model -> PNGs written under DIR/.NAME.tmp-* and renamed to DIR/NAME
      -> small records back to the driver -> DIR/batch_manifest.jsonl (+ progress bar)

Only job dicts (paths) and result records cross the object store; frames stay inside the actor.

Faults:

* an actor or its worker process or node dies mid-video (``RayActorError`` / ``ActorDiedError``,
  ``WorkerCrashedError``, ``NodeDiedError``, ...): the actor is killed and replaced, the stale
  temporary folder removed, and the video queued again first (at most ``--max-retries`` times).
  Outputs are only ever published by rename, so a retried video's output equals a clean run's.
* a video that fails for its own reasons (bad video or mask...): the actor reports a ``failed``
  record and goes on; the other videos are not affected; the exit code is 1.
* the driver is killed: every finished video already has its line in ``batch_manifest.jsonl``
  (appended with one ``write`` and ``fsync``; a torn last line is ignored when read back), and
  ``--resume`` skips the videos whose output folder and manifest entry are complete and agree.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import glob
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vos.errors import UserError
from vos.session import DEFAULT_CONTEXT

__all__ = [
    "BATCH_MANIFEST", "DEFAULT_MAX_RETRIES", "Job", "BatchOptions", "BatchResult", "ClusterError",
    "discover_jobs", "read_davis_root", "read_job_manifest", "read_batch_manifest", "output_complete",
    "ray_session", "run_jobs", "run_batch", "main", "run_on_cluster",
]

#: Name of the per-video result log written in the output root.
BATCH_MANIFEST = "batch_manifest.jsonl"
#: Retries of a video whose actor died (``--max-retries``).
DEFAULT_MAX_RETRIES = 2
#: ``vos batch`` options a ``--config`` file may set besides those of ``vos run``.
BATCH_DEFAULTS: dict[str, Any] = {"num_actors": None, "gpus_per_actor": None, "cpus_per_actor": None,
                                  "max_retries": DEFAULT_MAX_RETRIES}
#: Hub id recorded in ``manifest.json`` when no checkpoint is given (as ``vos run`` does).
_DEFAULT_CHECKPOINT_LABEL = "BAAI/seggpt-vit-large"
_DEVICES = ("auto", "cpu", "cuda")
_DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
_POLL_S = 1.0


class ClusterError(UserError):
    """The Ray cluster could not run the work (unreachable, too small, actors that keep dying)."""


# ----------------------------------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One video to segment: results go to ``OUTPUT/name``.

    Attributes:
        name: output folder name (unique within a batch).
        video: absolute path of the video file or frame folder.
        first_mask: absolute path of the first frame's annotation.
        where: where the job was defined (``file:line``), for messages.
    """

    name: str
    video: str
    first_mask: str
    where: str = ""


def _default_name(video: Path) -> str:
    """The output name ``vos run`` would use: a folder's name or a file's stem."""
    return video.resolve().name if video.is_dir() else video.stem


def _check_name(name: str, where: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{where}: empty name")
    bad = [c for c in ("/", "\\", "\0", "\n", "\r") if c in name]
    if bad or name in (".", "..") or name.startswith(".") or name == BATCH_MANIFEST:
        raise UserError(f"{where}: {name!r} cannot be an output folder name (no path separators, "
                        f"no leading dot)")
    return name


def _check_unique(jobs: list[Job]) -> list[Job]:
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.name in seen:
            raise UserError(f"{job.where}: output name {job.name!r} is already used by "
                            f"{seen[job.name].where}; give distinct names (the name column)")
        seen[job.name] = job
    return jobs


def read_davis_root(root: str | os.PathLike, subset: str = "val", year: str = "2017") -> list[Job]:
    """Jobs of a DAVIS-layout root, one per sequence.

    Sequences come from ``ImageSets/<year>/<subset>.txt`` when it exists, else from every folder of
    ``Annotations/480p`` (sorted). Each sequence's video is ``JPEGImages/480p/<seq>`` and its prompt
    the first (by name) PNG of ``Annotations/480p/<seq>``. A sequence whose frames or annotation
    are missing still gives a job: it fails on its own, naming the missing path.

    Raises:
        UserError: no ``Annotations/480p`` folder, or an empty or unreadable sequence list.
    """
    from pipelines.sources import natural_sort_key

    root = Path(root).resolve()
    ann = root / "Annotations" / "480p"
    if not ann.is_dir():
        raise UserError(f"{root}: not a DAVIS root (no Annotations/480p folder)")
    list_file = root / "ImageSets" / str(year) / f"{subset}.txt"
    if list_file.is_file():
        try:
            names = [ln.strip() for ln in list_file.read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{list_file}: cannot read the sequence list ({exc})") from None
        if not names:
            raise UserError(f"{list_file}: lists no sequence")
        where = str(list_file)
    else:
        names = sorted(p.name for p in ann.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not names:
            raise UserError(f"{ann}: no sequence folders")
        where = str(ann)
    jobs = []
    for i, name in enumerate(dict.fromkeys(names)):
        loc = f"{where}:{i + 1}" if list_file.is_file() else f"{ann / name}"
        _check_name(name, loc)
        pngs = sorted((p.name for p in (ann / name).glob("*.png") if not p.name.startswith(".")),
                      key=natural_sort_key) if (ann / name).is_dir() else []
        mask = ann / name / (pngs[0] if pngs else "00000.png")
        jobs.append(Job(name, str(root / "JPEGImages" / "480p" / name), str(mask), loc))
    return jobs


def _job_from_fields(fields: dict[str, Any], base: Path, where: str) -> Job:
    values = {}
    for key in ("video", "first_mask"):
        value = fields.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise UserError(f"{where}: missing {key!r}")
        if not isinstance(value, str):
            raise UserError(f"{where}: {key!r} must be a path string, got {value!r}")
        values[key] = (base / value.strip()).resolve() if not os.path.isabs(value.strip()) \
            else Path(value.strip())
    name = fields.get("name")
    if name is None or (isinstance(name, str) and not name.strip()):
        name = _default_name(values["video"])
    elif not isinstance(name, str):
        raise UserError(f"{where}: 'name' must be a string, got {name!r}")
    return Job(_check_name(name.strip(), where), str(values["video"]), str(values["first_mask"]), where)


def read_job_manifest(path: str | os.PathLike) -> list[Job]:
    """Jobs of a JSONL (``.jsonl``/``.ndjson``: one object a line) or CSV (``.csv``, header row)
    manifest with fields ``video``, ``first_mask`` and optional ``name`` (default: the video's stem
    or folder name). Relative paths are relative to the manifest's folder; blank lines and other
    fields are ignored.

    Raises:
        UserError: unreadable file, bad JSON, missing fields or columns, no job, duplicate names.
    """
    p = Path(path)
    base = p.resolve().parent
    suffix = p.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise UserError(f"{p}: unknown manifest type (use .jsonl or .csv, or give a DAVIS root)")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UserError(f"{p}: cannot read the manifest ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{p}: manifest is not UTF-8 text ({exc.reason})") from None
    jobs: list[Job] = []
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in ("video", "first_mask") if c not in header]
        if missing:
            raise UserError(f"{p}: CSV header must name the columns video, first_mask[, name]; "
                            f"missing {', '.join(missing)} (header: {', '.join(header) or 'none'})")
        reader.fieldnames = header
        try:
            for row in reader:
                if not any((v or "").strip() for k, v in row.items() if k is not None):
                    continue
                jobs.append(_job_from_fields(row, base, f"{p}:{reader.line_num}"))
        except csv.Error as exc:
            raise UserError(f"{p}:{reader.line_num}: bad CSV ({exc})") from None
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{p}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{p}:{lineno}: expected a JSON object with keys video, "
                                f"first_mask[, name]")
            jobs.append(_job_from_fields(obj, base, f"{p}:{lineno}"))
    if not jobs:
        raise UserError(f"{p}: manifest lists no video")
    return _check_unique(jobs)


def discover_jobs(source: str | os.PathLike) -> tuple[list[Job], str]:
    """Jobs of SOURCE and its kind: ``"davis"`` (a DAVIS root) or ``"manifest"`` (JSONL / CSV).

    Raises:
        UserError: missing SOURCE, a folder that is not a DAVIS root, or a bad manifest.
    """
    p = Path(source)
    if not p.exists():
        raise UserError(f"{p}: no such file or directory")
    if p.is_dir():
        if not (p / "Annotations" / "480p").is_dir():
            raise UserError(f"{p}: not a DAVIS root (no Annotations/480p folder); give a DAVIS root "
                            f"or a .jsonl / .csv manifest")
        return _check_unique(read_davis_root(p)), "davis"
    return read_job_manifest(p), "manifest"


# ----------------------------------------------------------------------------------------------
# batch manifest (DIR/batch_manifest.jsonl)
# ----------------------------------------------------------------------------------------------


def read_batch_manifest(path: str | os.PathLike) -> dict[str, dict]:
    """Entries of a ``batch_manifest.jsonl`` by video name (the last entry of a name wins).

    Lines that are not JSON objects with a ``name`` (a line torn by a killed job) are skipped.
    A missing file gives ``{}``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    entries: dict[str, dict] = {}
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            entries.pop(obj["name"], None)
            entries[obj["name"]] = obj
    return entries


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)              # mkstemp makes 0600; a plain file is wanted
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _ManifestLog:
    """``batch_manifest.jsonl``: rewritten atomically at the start and end, appended in between
    (one ``os.write`` of a whole line, then ``fsync``, so a killed job leaves whole lines)."""

    def __init__(self, path: Path, entries: list[dict]) -> None:
        self.path = path
        self.rewrite(entries)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    @staticmethod
    def _lines(entries: list[dict]) -> str:
        return "".join(json.dumps(e, default=str) + "\n" for e in entries)

    def append(self, entry: dict) -> None:
        os.write(self._fd, self._lines([entry]).encode("utf-8"))
        os.fsync(self._fd)

    def rewrite(self, entries: list[dict]) -> None:
        _write_atomic(self.path, self._lines(entries))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def output_complete(job: Job, entry: dict | None, output: Path, settings: dict[str, Any]) -> bool:
    """Whether ``output/job.name`` is a finished result of ``job`` with these settings.

    True when the manifest entry says ``ok``, the folder's ``manifest.json`` names the same video,
    has the entry's frame count and the same ``checkpoint``, ``context`` and ``per_object``, and
    every ``00000.png ...`` it lists exists.
    """
    if not entry or entry.get("status") != "ok":
        return False
    folder = output / job.name
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("video") != str(Path(job.video).resolve()):
        return False
    frames = manifest.get("frames")
    if not isinstance(frames, int) or frames < 1 or frames != entry.get("frames"):
        return False
    got = manifest.get("settings") or {}
    if any(got.get(k) != v for k, v in settings.items()):
        return False
    return all((folder / f"{i:05d}.png").is_file() for i in range(frames))


def _remove_stale(output: Path, name: str) -> None:
    """Remove temporary folders left by a worker that died while writing ``output/name``."""
    pattern = glob.escape(f".{name}")
    for path in [*output.glob(f"{pattern}.tmp-*"), *output.glob(f"{pattern}.old-*")]:
        shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Ray
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """Connected ``ray`` module: joins ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``)
    or, without one, starts a local cluster on this machine; disconnects (and stops the local
    cluster) at the end. When this process is already connected (a caller's ``ray.init``), that
    connection is used as it is and left open.

    Raises:
        ClusterError: the cluster cannot be reached.
    """
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray

    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {}
    if address and address.startswith("ray://"):
        pass  # Ray Client accepts few init options
    elif address:
        kwargs.update(log_to_driver=False, logging_level=logging.WARNING)
    else:  # embedded local cluster: small object store (only paths and records cross it)
        kwargs.update(log_to_driver=False, logging_level=logging.WARNING, include_dashboard=False,
                      object_store_memory=256 * 1024 * 1024)
    try:
        ray.init(address=address or None, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"Ray cluster at {address}" if address else "a local Ray cluster"
        raise ClusterError(f"cannot connect to {where}: {' '.join(str(exc).split())[:300]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _lost_errors() -> tuple[type[BaseException], ...]:
    """Ray errors meaning the worker (not the video) failed: retry elsewhere."""
    import ray.exceptions as E

    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError",
             "OutOfMemoryError", "RaySystemError", "LocalRayletDiedError", "ActorUnschedulableError",
             "TaskUnschedulableError")
    return tuple(getattr(E, n) for n in names if hasattr(E, n))


def _error_line(exc: BaseException) -> str:
    """A short one-line description of a Ray error (its traceback text trimmed)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: {lines[-1] if lines else ''}".strip()
    return text if len(text) <= 300 else text[:297] + "..."


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class _Actor:
    __slots__ = ("handle", "job", "info", "t_submit")

    def __init__(self, handle) -> None:
        self.handle = handle
        self.job: int | None = None
        self.info: dict | None = None
        self.t_submit = 0.0


def run_jobs(jobs: list[dict], *, actor_cls, actor_kwargs: dict[str, Any], num_actors: int,
             max_retries: int = DEFAULT_MAX_RETRIES,
             on_record: Callable[[dict], None] | None = None,
             on_submit: Callable[[dict, Any, int], None] | None = None,
             on_actor: Callable[[dict], None] | None = None,
             cleanup: Callable[[dict], None] | None = None,
             start_timeout_s: float = 900.0) -> list[dict]:
    """Run ``VideoWorker.process`` on every job over a pool of actors (Ray must be connected).

    At most one job is in flight per actor (``num_actors`` in all), so the driver holds only
    small refs whatever the number of jobs. An actor is created with ``actor_cls.remote(
    **actor_kwargs)`` and used once its ``ready()`` answered without error.

    Args:
        jobs: job dicts for :meth:`pipelines.actors.VideoWorker.process`.
        actor_cls: a Ray actor class of :class:`~pipelines.actors.VideoWorker`
            (:func:`pipelines.actors.actor_class`).
        num_actors: pool size (at most ``len(jobs)`` are started).
        max_retries: times a job is given again after its actor died while running it.
        on_record: called with each finished record (in completion order).
        on_submit: called as ``on_submit(job, actor_handle, attempt)`` after each submission.
        on_actor: called with each actor's ``ready()`` information.
        cleanup: called with a job before it is retried (remove its partial output).
        start_timeout_s: fail the remaining jobs when no actor has been usable for this long.

    Returns:
        One record per job (job order), each with ``attempts`` and ``task_s`` (submission to
        result, seconds) added.

    Raises:
        UserError: an actor reported a bad device, dtype or checkpoint (nothing can run).
    """
    import ray
    from ray.exceptions import RayTaskError

    lost = _lost_errors()
    pending = deque(range(len(jobs)))
    attempts = [0] * len(jobs)
    results: dict[int, dict] = {}
    waits: dict[Any, _Actor] = {}       # ObjectRef -> actor (a ready() or a process() call)
    everyone: list[_Actor] = []
    idle: deque[_Actor] = deque()
    start_failures = 0
    max_start_failures = 2 * max(1, num_actors) + max_retries
    last_error = "no actor started"
    last_usable = time.monotonic()

    def start_actor() -> None:
        nonlocal start_failures
        if start_failures > max_start_failures:
            return
        actor = _Actor(actor_cls.remote(**actor_kwargs))
        everyone.append(actor)
        waits[actor.handle.ready.remote()] = actor

    def retire(actor: _Actor) -> None:
        with contextlib.suppress(Exception):
            ray.kill(actor.handle, no_restart=True)

    def finish(i: int, record: dict) -> None:
        record["attempts"] = attempts[i]
        results[i] = record
        if on_record is not None:
            on_record(record)

    def failed(i: int, error: str) -> dict:
        job = jobs[i]
        return {"name": job.get("name"), "video": job.get("video"), "first_mask": job.get("first_mask"),
                "output": None, "status": "failed", "frames": None, "model_fps": None,
                "end_to_end_fps": None, "wall_s": None, "task_s": None, "error": error,
                "error_type": "WorkerLost", "user_error": False, "warnings": []}

    try:
        for _ in range(max(1, min(num_actors, len(jobs)))):
            start_actor()
        while pending or any(a.job is not None for a in waits.values()):
            while idle and pending:
                actor, i = idle.popleft(), pending.popleft()
                actor.job, actor.t_submit = i, time.perf_counter()
                attempts[i] += 1
                waits[actor.handle.process.remote(jobs[i])] = actor
                if on_submit is not None:
                    on_submit(jobs[i], actor.handle, attempts[i])
            if not waits:  # every actor failed to start and no more are tried
                for i in list(pending):
                    finish(i, failed(i, f"no actor could be started ({last_error})"))
                pending.clear()
                break
            done, _ = ray.wait(list(waits), num_returns=1, timeout=_POLL_S)
            if not done:
                usable = any(a.info is not None for a in waits.values()) or idle
                if usable:
                    last_usable = time.monotonic()
                elif pending and time.monotonic() - last_usable > start_timeout_s:
                    for i in list(pending):
                        finish(i, failed(i, f"no actor became ready within {start_timeout_s:.0f} s "
                                            f"(cluster too small or busy? last error: {last_error})"))
                    pending.clear()
                continue
            ref = done[0]
            actor = waits.pop(ref)
            try:
                value = ray.get(ref)
            except lost as exc:
                retire(actor)
                last_error = _error_line(exc)
                i, actor.job = actor.job, None
                if i is None:                       # died while loading the model
                    start_failures += 1
                else:                               # died mid-video: retry it first
                    if cleanup is not None:
                        cleanup(jobs[i])
                    if attempts[i] > max_retries:
                        finish(i, failed(i, f"worker lost {attempts[i]} time(s) while running this "
                                            f"video; last: {last_error}"))
                    else:
                        pending.appendleft(i)
                start_actor()
                continue
            except RayTaskError as exc:             # a method raised: not expected from a worker
                i, actor.job = actor.job, None
                if i is None:
                    retire(actor)
                    start_failures += 1
                    last_error = _error_line(exc)
                    start_actor()
                else:
                    record = failed(i, _error_line(exc))
                    record["error_type"] = "RayTaskError"
                    finish(i, record)
                    idle.append(actor)
                continue
            if actor.job is None:                   # ready() answered
                if value.get("error"):
                    raise UserError(value["error"])
                actor.info = value
                last_usable = time.monotonic()
                if on_actor is not None:
                    on_actor(value)
                idle.append(actor)
            else:
                i, actor.job = actor.job, None
                value["task_s"] = time.perf_counter() - actor.t_submit
                finish(i, value)
                idle.append(actor)
    finally:
        for actor in everyone:
            retire(actor)
    return [results[i] for i in sorted(results)]


# ----------------------------------------------------------------------------------------------
# batch
# ----------------------------------------------------------------------------------------------


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
        records: the final manifest entries of the batch's videos, in job order.
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


def _checkpoint_arg(checkpoint: str | None) -> str | None:
    """An existing local checkpoint path made absolute (actors have another working directory)."""
    if checkpoint is None:
        return None
    checkpoint = str(checkpoint)
    return str(Path(checkpoint).resolve()) if os.path.exists(checkpoint) else checkpoint


def _check_device_dtype(device: str | None, dtype: str | None) -> tuple[str, str]:
    device = (device or "auto").strip().lower()
    dtype = (dtype or "auto").strip().lower()
    if device not in _DEVICES and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise UserError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    return device, dtype


def _check_options(options: BatchOptions) -> None:
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
    _check_device_dtype(options.device, options.dtype)


def _plan_actors(ray, options: BatchOptions, n_jobs: int) -> tuple[int, float, float, str]:
    """(num_actors, gpus, cpus, device) from the options and the cluster's resources."""
    device, _ = _check_device_dtype(options.device, options.dtype)
    total = ray.cluster_resources()
    total_gpus = float(total.get("GPU", 0.0))
    gpus = options.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if total_gpus >= 1 and device != "cpu" else 0.0
    cpus = 1.0 if options.cpus_per_actor is None else float(options.cpus_per_actor)
    if gpus == 0 and device.startswith("cuda"):
        raise UserError(f"--device {device} needs GPUs: give --gpus-per-actor (the cluster has "
                        f"{total_gpus:g} GPU(s))")
    if device == "auto":
        device = "cuda" if gpus > 0 else "cpu"
    num = options.num_actors
    if num is None:
        num = max(1, int(total_gpus // gpus)) if gpus > 0 else 1
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    fits = [min(int(r.get("CPU", 0) // cpus) if cpus > 0 else num,
                int(r.get("GPU", 0) // gpus) if gpus > 0 else num) for r in nodes]
    if nodes and not any(fits):
        raise ClusterError(f"no node of the cluster has {cpus:g} CPU(s) and {gpus:g} GPU(s) for one "
                           f"actor (cluster: {total.get('CPU', 0):g} CPUs, {total_gpus:g} GPUs)")
    capacity = sum(fits)
    if nodes and min(num, n_jobs) > capacity:
        warnings.warn(f"only {capacity} of {num} actors fit the cluster's free resources now; "
                      f"the others start when resources free up", RuntimeWarning, stacklevel=3)
    return num, gpus, cpus, device


def _job_dict(job: Job, output: Path, options: BatchOptions) -> dict[str, Any]:
    return {"name": job.name, "video": job.video, "first_mask": job.first_mask, "output": str(output),
            "context": options.context, "per_object": options.per_object}


def run_batch(jobs: list[Job], options: BatchOptions, *,
              on_submit: Callable[[dict, Any, int], None] | None = None) -> BatchResult:
    """Segment ``jobs`` on the connected Ray cluster and write ``OUTPUT/batch_manifest.jsonl``.

    Each video is written to ``OUTPUT/<name>`` exactly as ``vos run`` writes it. The manifest gets
    one line per video when it finishes (status ``ok`` or ``failed``, frames, model fps, wall time,
    error), and is rewritten at the end in job order with one entry per video. With
    ``options.resume``, videos whose output and ``ok`` entry are complete and were made with the
    same checkpoint, context and per-object setting keep their entry and are not run again.

    Args:
        jobs: from :func:`discover_jobs` (distinct names).
        options: :class:`BatchOptions`.
        on_submit: see :func:`run_jobs` (tests use it to kill an actor mid-video).

    Raises:
        UserError: unwritable output, bad device/dtype/checkpoint, a cluster too small for one actor.
    """
    import ray
    from tqdm import tqdm

    from pipelines.actors import actor_class, threads_for_cpus

    _check_options(options)
    t0 = time.perf_counter()
    output = Path(options.output).resolve()
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{output}: output folder is not writable ({exc.strerror or exc})") from None
    manifest_path = output / BATCH_MANIFEST
    checkpoint = _checkpoint_arg(options.checkpoint)
    settings = {"checkpoint": checkpoint or _DEFAULT_CHECKPOINT_LABEL, "context": options.context,
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
        log = _ManifestLog(manifest_path, [done[j.name] for j in jobs if j.name in done] + others)
    except OSError as exc:
        raise UserError(f"{manifest_path}: cannot write ({exc.strerror or exc})") from None
    for job in todo:
        _remove_stale(output, job.name)
    actors: list[dict] = []
    bar = tqdm(total=len(jobs), initial=len(done), unit="video", desc="vos batch",
               disable=options.quiet, dynamic_ncols=True, file=sys.stderr)
    frames = 0
    n_failed = 0
    finished: set[str] = set()

    def on_record(record: dict) -> None:
        nonlocal frames, n_failed
        record["finished_at"] = _now()
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
            num, gpus, cpus, device = _plan_actors(ray, options, len(todo))
            cls = actor_class(num_gpus=gpus, num_cpus=cpus)
            kwargs = {"checkpoint": checkpoint, "device": device, "dtype": options.dtype,
                      "num_threads": threads_for_cpus(cpus), "defer_init_errors": True}
            records = run_jobs([_job_dict(j, output, options) for j in todo], actor_cls=cls,
                               actor_kwargs=kwargs, num_actors=num, max_retries=options.max_retries,
                               on_record=on_record, on_submit=on_submit, on_actor=actors.append,
                               cleanup=lambda job: _remove_stale(output, job["name"]),
                               start_timeout_s=options.actor_start_timeout_s)
        new = {r["name"]: r for r in records}
        final = [done.get(job.name) or new[job.name] for job in jobs if job.name in done or job.name in new]
        log.rewrite(final + others)
    finally:
        bar.close()
        log.close()
        for job in todo:               # interrupted: best-effort removal of half-written folders
            if job.name not in finished:
                _remove_stale(output, job.name)
    return BatchResult(records=final, manifest_path=manifest_path, ran=len(records), skipped=len(done),
                       wall_s=time.perf_counter() - t0, actors=actors, frames_run=frames)


def _run_eval(davis_root: str, output: Path, names: list[str], quiet: bool) -> None:
    """``vos eval`` on the finished sequences; the report to stdout, all scores to
    ``OUTPUT/eval_results.json``."""
    from vos import evaluate

    if not names:
        print("vos batch: warning: no finished sequence to evaluate", file=sys.stderr)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = evaluate.evaluate_davis(davis_root, output, sequences=names)
        finally:
            for w in caught:
                print(f"vos batch: warning: {w.message}", file=sys.stderr)
    print(evaluate.format_report(result))
    path = output / "eval_results.json"
    evaluate.write_json(result, path)
    if not quiet:
        print(f"\nJ&F scores written to {path}")


def main(args) -> int:
    """``vos batch`` entry point (see :func:`vos.cli.build_parser`).

    Returns:
        0 when every video finished, 1 when any failed (see ``batch_manifest.jsonl``).
    """
    from vos.run import resolve_options

    opts = resolve_options(args, BATCH_DEFAULTS)
    jobs, kind = discover_jobs(args.source)
    if getattr(args, "eval", False) and kind != "davis":
        raise UserError("--eval needs SOURCE to be a DAVIS root (ground truth in Annotations/480p)")
    options = BatchOptions(
        output=opts["output"], checkpoint=opts["checkpoint"], device=opts["device"],
        dtype=opts["dtype"], context=opts["context"], per_object=bool(opts["per_object"]),
        num_actors=opts["num_actors"], gpus_per_actor=opts["gpus_per_actor"],
        cpus_per_actor=opts["cpus_per_actor"], max_retries=opts["max_retries"],
        resume=bool(args.resume), quiet=bool(opts["quiet"]))
    _check_options(options)
    with ray_session(args.address):
        result = run_batch(jobs, options)
    for r in result.records:
        if r.get("status") != "ok":
            print(f"vos batch: failed: {r['name']}: {r.get('error')}", file=sys.stderr)
    if not options.quiet:
        wall = max(result.wall_s, 1e-9)
        print(f"{len(result.records)} videos: {len(result.ok)} ok, {len(result.failed)} failed, "
              f"{result.skipped} skipped (resume); ran {result.ran} videos, {result.frames_run} "
              f"frames in {wall:.1f} s ({result.ran / wall:.2f} videos/s, "
              f"{result.frames_run / wall:.2f} frames/s) -> {result.manifest_path}")
    if getattr(args, "eval", False):
        _run_eval(args.source, Path(options.output).resolve(),
                  [r["name"] for r in result.records if r.get("status") == "ok"], options.quiet)
    return 1 if result.failed else 0


# ----------------------------------------------------------------------------------------------
# vos run --address
# ----------------------------------------------------------------------------------------------


def run_on_cluster(args, opts: dict[str, Any]):
    """``vos run --address``: the same single-video run, on one actor of a Ray cluster.

    The actor loads the model (on a GPU when the cluster has one), reads the video and writes
    ``OUTPUT/NAME`` itself, so every path must be visible from the cluster's nodes; a lost actor
    is replaced and the video retried (up to :data:`DEFAULT_MAX_RETRIES` times).

    Returns:
        :class:`vos.run.RunResult`.

    Raises:
        UserError: bad input (the worker's one-line message), cluster problems (:class:`ClusterError`).
    """
    from pipelines.actors import actor_class, threads_for_cpus
    from vos.run import RunResult

    device, dtype = _check_device_dtype(opts.get("device"), opts.get("dtype"))
    video = Path(args.video).resolve()
    name = getattr(args, "name", None) or _default_name(video)
    _check_name(name, "--name")
    output = Path(opts.get("output") or "results").resolve()

    def absolute(p):
        return None if p is None else str(Path(p).resolve())

    job = {"name": name, "video": str(video), "first_mask": absolute(args.first_mask),
           "output": str(output), "context": opts["context"], "per_object": bool(opts.get("per_object")),
           "allow_partial": bool(getattr(args, "allow_partial", False)),
           "overlay": absolute(getattr(args, "overlay", None)),
           "mask_video": absolute(getattr(args, "mask_video", None)), "return_manifest": True}
    with ray_session(args.address) as ray:
        options = BatchOptions(device=device, dtype=dtype, num_actors=1)
        _, gpus, cpus, device = _plan_actors(ray, options, 1)
        kwargs = {"checkpoint": _checkpoint_arg(opts.get("checkpoint")), "device": device,
                  "dtype": dtype, "num_threads": threads_for_cpus(cpus), "defer_init_errors": True}
        (record,) = run_jobs([job], actor_cls=actor_class(num_gpus=gpus, num_cpus=cpus),
                             actor_kwargs=kwargs, num_actors=1, max_retries=DEFAULT_MAX_RETRIES)
    for w in record.get("warnings") or []:
        print(f"vos run: warning: {w}", file=sys.stderr)
    if record["status"] != "ok":
        if record.get("user_error"):
            raise UserError(record["error"])
        raise ClusterError(f"{name}: {record['error']}")
    return RunResult(output_dir=Path(record["output"]), frames=record["frames"],
                     model_fps=record["model_fps"], end_to_end_fps=record["end_to_end_fps"],
                     manifest=record.get("manifest") or {})
