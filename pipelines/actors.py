"""The thin Ray layer: a worker that holds one SegGPT model, and its Ray actor class.

:class:`ModelWorker` is a plain class: it loads one :class:`~pipelines.model_stage.SegGptStage`
once (the expensive part: weights read, moved to the device) and reports where it runs from
:meth:`ModelWorker.ready`. What it does with the model per item is the subclass's
:meth:`ModelWorker.process` (``vos.batch.worker.VideoWorker`` runs one whole video per call), so this
layer knows nothing of videos, prompts or the command line (the layering is described in
``docs/architecture.md``). :func:`actor_class` wraps any such class as a Ray actor class with the
requested GPUs and CPUs; only small items and results should cross the object store.

Imports torch and Ray (the batch layer and Ray actors use it; the per-video engine does not).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import ray
import torch

from pipelines.devices import map_to_visible_cuda
from pipelines.errors import PipelineError
from pipelines.model_stage import load_stage
from seggpt_model.errors import CheckpointError, one_line

__all__ = ["ModelWorker", "actor_class", "node_info", "threads_for_cpus", "LOAD_ERRORS"]

#: Errors of a model load that the user caused (unknown device or dtype, CUDA missing: ValueError;
#: an unloadable checkpoint: CheckpointError); :class:`ModelWorker` can defer them to ``ready()``.
LOAD_ERRORS: tuple[type[BaseException], ...] = (ValueError, CheckpointError, PipelineError)


def threads_for_cpus(cpus: float | None) -> int | None:
    """Torch intra-op threads for an actor holding ``cpus`` CPUs (at least 1; None: leave as is)."""
    if cpus is None:
        return None
    return max(1, int(cpus))


def node_info() -> dict[str, Any]:
    """Where this process runs: ``pid``, ``hostname`` and, inside a Ray worker, ``node_id``."""
    info: dict[str, Any] = {"pid": os.getpid(), "hostname": socket.gethostname(), "node_id": None}
    if ray.is_initialized():
        try:
            info["node_id"] = ray.get_runtime_context().get_node_id()
        except Exception:  # pragma: no cover - the id is informative only
            pass
    return info


def _actor_device(device: str | None) -> str | None:
    """``device`` as this process can use it: in a Ray worker that was given GPUs, an index it
    cannot see maps to its own GPU (:func:`pipelines.devices.map_to_visible_cuda`); elsewhere, or
    for a string that does not parse (reported by the load), unchanged."""
    if not ray.is_initialized() or not ray.get_gpu_ids():
        return device
    try:
        return map_to_visible_cuda(device, torch.cuda.device_count())
    except ValueError:
        return device


class ModelWorker:
    """One SegGPT model on one device; subclasses define :meth:`process` (one item per call).

    Args:
        checkpoint: anything :func:`pipelines.model_stage.load_stage` accepts (None: the default
            hub checkpoint), kept as given in :attr:`checkpoint`.
        device, dtype: model device and precision strings (``auto`` as in ``vos run``, see
            :mod:`pipelines.devices`).
        num_threads: torch intra-op threads (``torch.set_num_threads``); None leaves torch's default.
        stage: an already loaded stage to use instead of loading ``checkpoint``.
        defer_init_errors: keep a load error of :data:`LOAD_ERRORS` instead of raising it, as
            :attr:`init_error` (one line) reported by :meth:`ready`. Ray actors use this so that the
            driver gets the one-line message rather than a dead actor with a traceback.
        attn: attention kernel (``--attn``), as :func:`pipelines.model_stage.load_stage`'s ``attn``.
        compile: ``torch.compile`` the forward (``--compile``), as ``load_stage``'s ``compile``.

    Inside a Ray actor that holds GPUs, a ``cuda:N`` the actor cannot see (Ray renumbers each
    actor's GPUs from 0) is mapped to the actor's own GPU (:func:`pipelines.devices.map_to_visible_cuda`)
    instead of failing; :meth:`ready` reports the requested and the used device.

    Raises:
        ValueError: unknown device or dtype, or CUDA missing (unless ``defer_init_errors``).
        seggpt_model.errors.CheckpointError: unloadable checkpoint (unless ``defer_init_errors``).
    """

    def __init__(self, checkpoint: str | None = None, device: str | None = "auto",
                 dtype: str | None = "auto", *, num_threads: int | None = None, stage=None,
                 defer_init_errors: bool = False, attn: str | None = "auto", compile: bool = False) -> None:
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.init_error: str | None = None
        self.stage = stage
        self.requested_device = device
        t0 = time.perf_counter()
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        if self.stage is None:
            try:
                device = _actor_device(device)
                self.stage = load_stage(self.checkpoint, device, dtype, attn=attn, compile=compile)
            except LOAD_ERRORS as exc:
                if not defer_init_errors:
                    raise
                self.init_error = one_line(exc)
        self.load_s = time.perf_counter() - t0

    def ready(self) -> dict[str, Any]:
        """Information about the worker, returned once its model is loaded (or failed to load).

        Returns:
            dict with ``pid``, ``hostname``, ``node_id``, ``device``, ``dtype`` (``"float32"``...),
            ``num_threads``, ``load_s`` (seconds) and ``error`` (the deferred load error, or None).
        """
        info = node_info()
        info.update(load_s=self.load_s, num_threads=torch.get_num_threads(), error=self.init_error,
                    requested_device=self.requested_device,
                    device=str(self.stage.device) if self.stage is not None else None,
                    dtype=str(self.stage.dtype).replace("torch.", "") if self.stage is not None else None)
        return info

    def process(self, item: Any) -> Any:
        """Work on one item with :attr:`stage`; defined by subclasses."""
        raise NotImplementedError(f"{type(self).__name__} does not define process()")


def actor_class(worker_cls: type = ModelWorker, *, num_gpus: float = 0.0, num_cpus: float = 1.0,
                **options):
    """``worker_cls`` (a :class:`ModelWorker` subclass) as a Ray actor class holding ``num_gpus``
    GPUs and ``num_cpus`` CPUs.

    Ray does not restart the actor or retry its calls (``max_restarts=0``,
    ``max_task_retries=0``) unless ``options`` say otherwise: the driver sees an actor's death as
    an error of the call in flight and decides itself whether to retry the item on another actor
    (``vos.batch.pool`` says why Ray's own restarts are not used). Construct it with
    ``defer_init_errors=True`` and call ``ready`` to get a load error as a line.

    Args:
        worker_cls: the class to wrap.
        num_gpus: GPUs per actor (fractions share a GPU; 0 on CPU-only clusters).
        num_cpus: CPUs per actor (Ray's scheduling unit; set the torch threads to match with
            ``num_threads=threads_for_cpus(num_cpus)``).
        **options: more ``ray.remote`` options (``resources``, ``scheduling_strategy``,
            ``max_restarts``...).
    """
    opts = {"max_restarts": 0, "max_task_retries": 0, **options}
    return ray.remote(num_gpus=num_gpus, num_cpus=num_cpus, **opts)(worker_cls)
