"""The actor pool of ``vos batch``: one video in flight per actor, lost actors replaced, videos retried.

Why not Ray's own (``ray.util.ActorPool`` with actor ``max_restarts`` / ``max_task_retries``)?
``benchmarks/bench_pool.py`` measured both on the same jobs (tiny model, local cluster; the
numbers are below). Throughput is the same: both keep one call in flight per actor, and what
Ray adds per video is milliseconds either way. The fault behaviour is not:

* ``ActorPool`` drops an actor that died (``ActorDiedError``) and raises from ``get_next*``;
  it does not start a replacement, does not give the lost video again, and (unordered) does not
  say which video was lost. Every retry, and the ``failed`` record after the last one, would be
  code around it anyway.
* With ``max_restarts``/``max_task_retries`` Ray restarts the actor process (the model loads
  again) and re-runs the call on it. That retries a process killed by the OS or a lost node, but
  not an actor stopped with ``ray.kill`` (``no_restart=True`` by default), which surfaces as a
  plain error; the driver does not learn how many attempts a video took (``attempts`` in the
  log); and the dead attempt's ``.NAME.tmp-*`` folder stays unless someone who knows the writer is
  dead removes it (the driver does here, ``remove_stale_temps(any_owner=True)``, also for a
  worker that was on another node).

So this module keeps its own small loop, on plain Ray primitives (``ray.wait`` over at most one
ref per actor, ``ray.kill``), and takes from Ray what gives the same behaviour: actor scheduling
and placement, the error types that say an actor or node was lost (:func:`lost_errors`).

Measured once (``python benchmarks/bench_pool.py --videos 6 --frames 6 --actors 2``: tiny model,
context 1, 854x480 car-shadow frames, local cluster on a shared 2-core machine at load 11, so the
seconds are only good to ~20%):

* clean, 2 actors x 1 CPU, 36 frames: this pool 55.7 s (0.65 frames/s), ``ActorPool`` over
  restartable actors 60.6 s (0.59 frames/s): the same within noise.
* 1 actor, its process SIGKILLed during the 2nd of 3 videos: both end with PNGs identical to
  the clean run and one ``ok`` record per video. This pool: ``attempts`` 1/2/1, no temporary
  folder left. Ray's restart: ``attempts`` unknown, the killed attempt's ``.car-01.tmp-*`` left
  behind.
* 1 actor stopped with ``ray.kill`` during the 2nd video (what ``test_actor_killed_mid_video_is_
  retried`` does): Ray does not restart it; ``ActorPool`` raises ``ActorDiedError``, the 2nd and
  3rd videos get no result and the temporary folder stays. This pool retries it (attempts 2).

See ``docs/architecture.md`` for the data flow of ``vos batch``.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import ray
import ray.exceptions as E
from ray.exceptions import RayTaskError

from seggpt_model.errors import one_line
from vos.batch.worker import failed_record
from vos.errors import UserError

__all__ = ["run_jobs", "lost_errors"]

_POLL_S = 1.0

#: Retries of a video whose actor died (``--max-retries``).
DEFAULT_MAX_RETRIES = 2


def lost_errors() -> tuple[type[BaseException], ...]:
    """Ray errors meaning the worker (not the video) failed: retry the video elsewhere."""
    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError",
             "OutOfMemoryError", "RaySystemError", "LocalRayletDiedError", "ActorUnschedulableError",
             "TaskUnschedulableError")
    return tuple(getattr(E, n) for n in names if hasattr(E, n))


class _Actor:
    __slots__ = ("handle", "job", "info", "t_submit")

    def __init__(self, handle) -> None:
        self.handle = handle
        self.job: int | None = None      # index of the job in flight; None: ready() in flight / idle
        self.info: dict | None = None    # ready() answer once it came
        self.t_submit = 0.0


class _Pool:
    """State of one :func:`run_jobs` call (see there)."""

    def __init__(self, jobs, *, actor_cls, actor_kwargs, num_actors, max_retries, on_record,
                 on_submit, on_actor, cleanup, start_timeout_s) -> None:
        self.ray = ray
        self.jobs, self.actor_cls, self.actor_kwargs = jobs, actor_cls, actor_kwargs
        self.num_actors, self.max_retries, self.start_timeout_s = num_actors, max_retries, start_timeout_s
        self.on_record, self.on_submit, self.on_actor, self.cleanup = on_record, on_submit, on_actor, cleanup
        self.pending = deque(range(len(jobs)))
        self.attempts = [0] * len(jobs)
        self.results: dict[int, dict] = {}
        self.waits: dict[Any, _Actor] = {}          # ObjectRef -> actor (a ready() or a process() call)
        self.everyone: list[_Actor] = []
        self.idle: deque[_Actor] = deque()
        self.start_failures = 0
        self.max_start_failures = 2 * max(1, num_actors) + max_retries
        self.last_error = "no actor started"
        self.last_usable = time.monotonic()

    # -- actors ----------------------------------------------------------------------------------
    def start_actor(self) -> None:
        if self.start_failures > self.max_start_failures:
            return
        actor = _Actor(self.actor_cls.remote(**self.actor_kwargs))
        self.everyone.append(actor)
        self.waits[actor.handle.ready.remote()] = actor

    def retire(self, actor: _Actor) -> None:
        with contextlib.suppress(Exception):
            self.ray.kill(actor.handle, no_restart=True)

    def wait_dead(self, actors: list[_Actor], timeout_s: float = 10.0) -> None:
        """After :meth:`retire` of actors that were running a video (the loop was interrupted):
        wait until calls to them fail, so that no killed worker still writes into the temporary
        folder the driver removes next (best effort, at most ``timeout_s``)."""
        with contextlib.suppress(Exception):
            refs = [a.handle.ready.remote() for a in actors]
            if refs:
                self.ray.wait(refs, num_returns=len(refs), timeout=timeout_s)

    # -- jobs ------------------------------------------------------------------------------------
    def finish(self, i: int, record: dict) -> None:
        record["attempts"] = self.attempts[i]
        self.results[i] = record
        if self.on_record is not None:
            self.on_record(record)

    def fail_pending(self, error: str) -> None:
        for i in list(self.pending):
            self.finish(i, failed_record(self.jobs[i], error, "WorkerLost"))
        self.pending.clear()

    def submit(self) -> None:
        while self.idle and self.pending:
            actor, i = self.idle.popleft(), self.pending.popleft()
            actor.job, actor.t_submit = i, time.perf_counter()
            self.attempts[i] += 1
            self.waits[actor.handle.process.remote(self.jobs[i])] = actor
            if self.on_submit is not None:
                self.on_submit(self.jobs[i], actor.handle, self.attempts[i])

    def busy(self) -> bool:
        return bool(self.pending) or any(a.job is not None for a in self.waits.values())

    # -- events ----------------------------------------------------------------------------------
    def on_timeout(self) -> None:
        if any(a.info is not None for a in self.waits.values()) or self.idle:
            self.last_usable = time.monotonic()
        elif self.pending and time.monotonic() - self.last_usable > self.start_timeout_s:
            self.fail_pending(f"no actor became ready within {self.start_timeout_s:.0f} s (cluster "
                              f"too small or busy? last error: {self.last_error})")

    def on_lost(self, actor: _Actor, exc: BaseException) -> None:
        self.retire(actor)
        self.last_error = one_line(exc, last=True, with_type=True)
        i, actor.job = actor.job, None
        if i is None:                       # died while loading the model
            self.start_failures += 1
        else:                               # died mid-video: retry it first
            if self.cleanup is not None:
                self.cleanup(self.jobs[i])
            if self.attempts[i] > self.max_retries:
                self.finish(i, failed_record(
                    self.jobs[i], f"worker lost {self.attempts[i]} time(s) while running this video; "
                                  f"last: {self.last_error}", "WorkerLost"))
            else:
                self.pending.appendleft(i)
        self.start_actor()

    def on_task_error(self, actor: _Actor, exc: BaseException) -> None:
        """A method raised (not expected from a worker): a load failure, or the video fails."""
        i, actor.job = actor.job, None
        if i is None:
            self.retire(actor)
            self.start_failures += 1
            self.last_error = one_line(exc, last=True, with_type=True)
            self.start_actor()
        else:
            self.finish(i, failed_record(self.jobs[i], one_line(exc, last=True, with_type=True),
                                         "RayTaskError"))
            self.idle.append(actor)

    def on_value(self, actor: _Actor, value: dict) -> None:
        if actor.job is None:               # ready() answered
            if value.get("error"):
                raise UserError(value["error"])
            actor.info = value
            self.last_usable = time.monotonic()
            if self.on_actor is not None:
                self.on_actor(value)
        else:
            i, actor.job = actor.job, None
            value["task_s"] = time.perf_counter() - actor.t_submit
            self.finish(i, value)
        self.idle.append(actor)

    def run(self) -> list[dict]:
        lost = lost_errors()
        try:
            for _ in range(max(1, min(self.num_actors, len(self.jobs)))):
                self.start_actor()
            while self.busy():
                self.submit()
                if not self.waits:          # every actor failed to start and no more are tried
                    self.fail_pending(f"no actor could be started ({self.last_error})")
                    break
                done, _ = self.ray.wait(list(self.waits), num_returns=1, timeout=_POLL_S)
                if not done:
                    self.on_timeout()
                    continue
                actor = self.waits.pop(done[0])
                try:
                    value = self.ray.get(done[0])
                except lost as exc:
                    self.on_lost(actor, exc)
                except RayTaskError as exc:
                    self.on_task_error(actor, exc)
                else:
                    self.on_value(actor, value)
        finally:
            for actor in self.everyone:
                self.retire(actor)
            self.wait_dead([a for a in self.waits.values() if a.job is not None])
        return [self.results[i] for i in sorted(self.results)]


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
    **actor_kwargs)`` and used once its ``ready()`` answered without error. When the loop ends,
    normally or not (Ctrl-C, SIGTERM as :class:`vos.signals.Terminated`), every actor it started
    is killed.

    Args:
        jobs: job dicts for :meth:`vos.batch.worker.VideoWorker.process`.
        actor_cls: a Ray actor class of :class:`~vos.batch.worker.VideoWorker`
            (:func:`pipelines.actors.actor_class`).
        num_actors: pool size (at most ``len(jobs)`` are started).
        max_retries: times a job is given again after its actor died while running it.
        on_record: called with each finished record (in completion order).
        on_submit: called as ``on_submit(job, actor_handle, attempt)`` after each submission.
        on_actor: called with each actor's ``ready()`` information.
        cleanup: called with a job before it is retried or failed after a lost actor (remove its
            partial output).
        start_timeout_s: fail the remaining jobs when no actor has been usable for this long.

    Returns:
        One record per job (job order), each with ``attempts`` and ``task_s`` (submission to
        result, seconds) set; a lost video's is :func:`vos.batch.worker.failed_record` with
        ``error_type="WorkerLost"``.

    Raises:
        UserError: an actor reported a bad device, dtype or checkpoint (nothing can run).
    """
    return _Pool(jobs, actor_cls=actor_cls, actor_kwargs=actor_kwargs, num_actors=num_actors,
                 max_retries=max_retries, on_record=on_record, on_submit=on_submit, on_actor=on_actor,
                 cleanup=cleanup, start_timeout_s=start_timeout_s).run()
