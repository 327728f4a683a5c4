"""The Ray cluster side shared by ``vos batch`` and ``vos run --address``.

* :func:`ray_session`: join a cluster or start a local one, and leave it cleanly, SIGTERM and
  Ctrl-C included (``ray.init`` installs its own SIGTERM handler in the driver, whose native
  failure handler prints a stack dump and exits 1; the ``vos`` handler is put back after it).
* :func:`plan_actors`: actors, GPUs and CPUs per actor, and the device, from the options and the
  cluster's resources.
* :func:`run_on_cluster`: ``vos run --address``, one video on one actor.

See ``docs/architecture.md`` (data flow of ``vos batch``) and ``docs/ray_cluster.md`` (usage).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from pipelines.actors import actor_class, threads_for_cpus
from seggpt_model.errors import one_line
from vos.batch.pool import DEFAULT_MAX_RETRIES, run_jobs
from vos.batch.worker import VideoWorker
from vos.datasets.job import check_name, default_name
from vos.engine.video import RunResult, parse_mask_args
from vos.errors import UserError, check_device_dtype
from vos.prompts.first_mask import prompt_from_args
from vos.signals import Terminated, install_sigterm_handler, sigterm_received

__all__ = ["ClusterError", "DEFAULT_MAX_RETRIES", "ray_session", "plan_actors",
           "checkpoint_arg", "run_on_cluster"]


class ClusterError(UserError):
    """The Ray cluster could not run the work (unreachable, too small, actors that keep dying)."""


def checkpoint_arg(checkpoint: str | None) -> str | None:
    """An existing local checkpoint path made absolute (actors have another working directory);
    a hub id or None as given."""
    if checkpoint is None:
        return None
    checkpoint = str(checkpoint)
    return str(Path(checkpoint).resolve()) if os.path.exists(checkpoint) else checkpoint


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """Connected ``ray`` module: joins ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``)
    or, without one, starts a local cluster on this machine; disconnects (and stops the local
    cluster, its actors with it) at the end, also when SIGTERM or Ctrl-C ends the block. When this
    process is already connected (a caller's ``ray.init``), that connection is used as it is and
    left open.

    Inside the block SIGTERM raises :class:`vos.signals.Terminated` (``ray.init`` replaces the
    SIGTERM handler; :func:`vos.signals.install_sigterm_handler` puts it back; Ray may hand it on
    as a plain KeyboardInterrupt, which :func:`vos.signals.sigterm_received` tells from Ctrl-C),
    and the handler that was there before is restored at the end.

    Raises:
        ClusterError: the cluster cannot be reached.
    """
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
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        try:
            ray.init(address=address or None, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"Ray cluster at {address}" if address else "a local Ray cluster"
            raise ClusterError(f"cannot connect to {where}: {one_line(exc)}") from None
        finally:
            if main:
                # ray.wait / ray.get re-raise the handler's Terminated as a plain
                # KeyboardInterrupt; vos.signals.sigterm_received() still tells it from Ctrl-C
                install_sigterm_handler()
        yield ray
    except KeyboardInterrupt as exc:
        if sigterm_received() and not isinstance(exc, Terminated):
            raise Terminated("received SIGTERM") from None      # a SIGTERM stays a Terminated
        raise
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def plan_actors(ray, *, device: str | None, n_jobs: int, num_actors: int | None = None,
                gpus_per_actor: float | None = None,
                cpus_per_actor: float | None = None) -> tuple[int, float, float, str]:
    """How many actors, with how many GPUs and CPUs each, on which device.

    ``gpus_per_actor`` None: 1 when the cluster has a GPU and ``device`` is not ``cpu``, else 0.
    ``cpus_per_actor`` None: 1. ``num_actors`` None: one per GPU (total GPUs // G), or 1 on CPU.
    ``device`` ``auto`` becomes ``cuda`` for actors holding a GPU, else ``cpu``. Warns
    (RuntimeWarning) when fewer of the ``min(num_actors, n_jobs)`` actors fit now.

    Returns:
        ``(num_actors, gpus_per_actor, cpus_per_actor, device)``.

    Raises:
        UserError: a CUDA device without GPUs per actor; ClusterError: no node fits one actor.
    """
    device, _ = check_device_dtype(device, None, resolve=False)
    total = ray.cluster_resources()
    total_gpus = float(total.get("GPU", 0.0))
    gpus = gpus_per_actor
    if gpus is None:
        gpus = 1.0 if total_gpus >= 1 and device != "cpu" else 0.0
    cpus = 1.0 if cpus_per_actor is None else float(cpus_per_actor)
    if gpus == 0 and device.startswith("cuda"):
        raise UserError(f"--device {device} needs GPUs: give --gpus-per-actor (the cluster has "
                        f"{total_gpus:g} GPU(s))")
    if device == "auto":
        device = "cuda" if gpus > 0 else "cpu"
    num = num_actors
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


def actor_setup(ray, *, checkpoint: str | None, device: str | None, dtype: str | None, n_jobs: int,
                num_actors: int | None = None, gpus_per_actor: float | None = None,
                cpus_per_actor: float | None = None, attn: str = "auto",
                compile: bool = False) -> tuple[Any, dict[str, Any], int]:
    """The :class:`vos.batch.worker.VideoWorker` actor class, its constructor arguments and the pool
    size for :func:`vos.batch.pool.run_jobs` (from :func:`plan_actors`)."""
    num, gpus, cpus, device = plan_actors(ray, device=device, n_jobs=n_jobs, num_actors=num_actors,
                                          gpus_per_actor=gpus_per_actor, cpus_per_actor=cpus_per_actor)
    kwargs = {"checkpoint": checkpoint_arg(checkpoint), "device": device, "dtype": dtype,
              "num_threads": threads_for_cpus(cpus), "defer_init_errors": True, "attn": attn,
              "compile": compile}
    return actor_class(VideoWorker, num_gpus=gpus, num_cpus=cpus), kwargs, num


def run_on_cluster(args, opts: dict[str, Any]):
    """``vos run --address``: the same single-video run, on one actor of a Ray cluster.

    The actor loads the model (on a GPU when the cluster has one), reads the video and writes
    ``OUTPUT/NAME`` itself, so every path must be visible from the cluster's nodes; a lost actor
    is replaced and the video retried (up to :data:`DEFAULT_MAX_RETRIES` times).

    Args:
        args: the parsed ``vos run`` command line (``video``, ``first_mask``, ``name``,
            ``address``, ``overlay``, ``mask_video``, ``allow_partial``; ``masks`` when given).
        opts: :func:`vos.engine.video.resolve_options` of it.

    Returns:
        :class:`vos.engine.video.RunResult`.

    Raises:
        UserError: bad input (the worker's one-line message), cluster problems (:class:`ClusterError`).
    """
    device, dtype = check_device_dtype(opts.get("device"), opts.get("dtype"), resolve=False)
    video = Path(args.video).resolve()
    name = getattr(args, "name", None) or default_name(video)
    check_name(name, "--name")
    output = Path(opts.get("output") or "results").resolve()

    def absolute(p):
        return None if p is None else str(Path(p).resolve())

    masks = getattr(args, "masks", None) or {}
    if not isinstance(masks, dict):   # the raw --mask K:FILE values
        masks = parse_mask_args(masks)
    job = {"name": name, "video": str(video), "first_mask": absolute(getattr(args, "first_mask", None)),
           "masks": {int(k): absolute(v) for k, v in masks.items()} or None,
           "output": str(output), "context": opts["context"], "per_object": bool(opts.get("per_object")),
           "allow_partial": bool(getattr(args, "allow_partial", False)),
           "overlay": absolute(getattr(args, "overlay", None)),
           "mask_video": absolute(getattr(args, "mask_video", None)), "max_pinned": opts.get("max_pinned"),
           "return_manifest": True}
    prompt = prompt_from_args(args)
    if prompt is not None:                    # frame 0's mask from words, proposed on the actor
        extra = [flag for flag, on in (("--example", prompt.example_image or prompt.example_mask),
                                       ("--instances", prompt.instances),
                                       ("--threshold", prompt.threshold is not None),
                                       ("--text-model", prompt.text_model),
                                       ("--class-model", prompt.class_model)) if on]
        if extra:
            raise UserError(f"--address takes --text and --classes with their defaults; "
                            f"{', '.join(extra)} only run in-process (vos mask, then --first-mask)")
        job.update(text=list(prompt.check().texts) or None, classes=list(prompt.classes) or None)
    with ray_session(args.address) as ray:
        cls, kwargs, _ = actor_setup(ray, checkpoint=opts.get("checkpoint"), device=device, dtype=dtype,
                                     attn=opts.get("attn") or "auto", compile=bool(opts.get("compile")),
                                     n_jobs=1, num_actors=1)
        (record,) = run_jobs([job], actor_cls=cls, actor_kwargs=kwargs, num_actors=1,
                             max_retries=DEFAULT_MAX_RETRIES)
    for w in record.get("warnings") or []:
        print(f"vos run: warning: {w}", file=sys.stderr)
    if record["status"] != "ok":
        if record.get("user_error"):
            raise UserError(record["error"])
        raise ClusterError(f"{name}: {record['error']}")
    return RunResult(output_dir=Path(record["output"]), frames=record["frames"],
                     model_fps=record["model_fps"], end_to_end_fps=record["end_to_end_fps"],
                     manifest=record.get("manifest") or {})
