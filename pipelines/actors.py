"""The thin Ray layer: a video worker that holds one SegGPT model and runs whole videos.

:class:`VideoWorker` is a plain class: it loads one :class:`~pipelines.model_stage.SegGptStage`
and runs :func:`vos.run.run_video` (the unchanged ``vos run`` chain: decode thread -> model ->
writer thread, atomic ``DIR/NAME`` output) on one video per :meth:`VideoWorker.process` call. It
works without Ray; :func:`actor_class` wraps it as a Ray actor class with the requested GPUs and
CPUs. Only a small job dict goes in and a small record dict comes out: frames never cross the
object store (the worker reads the video and writes the PNGs itself, so the output root must be
on a filesystem every node sees).

Importing this module is cheap: torch and the model are imported when a worker is built, and ray
only inside :func:`actor_class` and :func:`node_info`.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from typing import Any

__all__ = ["VideoWorker", "actor_class", "node_info", "threads_for_cpus", "JOB_KEYS"]

#: Keys of a job dict (see :meth:`VideoWorker.process`); ``name``, ``video``, ``first_mask`` and
#: ``output`` are required, the others default to ``vos run``'s defaults.
JOB_KEYS = ("name", "video", "first_mask", "output", "context", "per_object", "allow_partial",
            "overlay", "mask_video", "return_manifest")


def threads_for_cpus(cpus: float | None) -> int | None:
    """Torch intra-op threads for an actor holding ``cpus`` CPUs (at least 1; None: leave as is)."""
    if cpus is None:
        return None
    return max(1, int(cpus))


def node_info() -> dict[str, Any]:
    """Where this process runs: pid, host name and, inside a Ray worker, the Ray node id."""
    info: dict[str, Any] = {"pid": os.getpid(), "hostname": socket.gethostname(), "node_id": None}
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            info["node_id"] = ray.get_runtime_context().get_node_id()
        except Exception:  # pragma: no cover - the id is informative only
            pass
    return info


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class VideoWorker:
    """One SegGPT model on one device, segmenting whole videos one at a time.

    Args:
        checkpoint: anything :func:`pipelines.model_stage.load_stage` accepts (None: the default
            hub checkpoint). Recorded as given in every output's ``manifest.json``.
        device, dtype: model device and precision (``auto`` as in ``vos run``).
        num_threads: torch intra-op threads (``torch.set_num_threads``); None leaves torch's default.
        stage: an already loaded stage to use instead of loading ``checkpoint``.
        defer_init_errors: keep a bad-input error raised while loading (unknown device or dtype,
            unloadable checkpoint) instead of raising it, and report it from :meth:`ready`. Ray
            actors use this so that the driver gets the one-line message rather than a dead actor
            with a traceback.

    Raises:
        UserError / CheckpointError: bad device, dtype or checkpoint (unless ``defer_init_errors``).
    """

    def __init__(self, checkpoint: str | None = None, device: str | None = "auto",
                 dtype: str | None = "auto", *, num_threads: int | None = None, stage=None,
                 defer_init_errors: bool = False) -> None:
        from vos.errors import UserError, user_errors

        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.init_error: str | None = None
        self.stage = stage
        self.videos = 0
        t0 = time.perf_counter()
        if num_threads is not None:
            import torch

            torch.set_num_threads(int(num_threads))
        if self.stage is None:
            from pipelines.model_stage import load_stage

            try:
                try:
                    self.stage = load_stage(self.checkpoint, device, dtype)
                except ValueError as exc:  # unknown device / dtype, CUDA missing
                    raise UserError(str(exc)) from None
            except user_errors() as exc:
                if not defer_init_errors:
                    raise
                self.init_error = _one_line(exc)
        self.load_s = time.perf_counter() - t0

    def ready(self) -> dict[str, Any]:
        """Information about the worker, returned once its model is loaded.

        Returns:
            dict with ``pid``, ``hostname``, ``node_id``, ``device``, ``dtype``, ``num_threads``,
            ``load_s`` and ``error`` (the deferred load error, or None).
        """
        import torch

        info = node_info()
        info.update(load_s=self.load_s, num_threads=torch.get_num_threads(), error=self.init_error,
                    device=str(self.stage.device) if self.stage is not None else None,
                    dtype=str(self.stage.dtype).replace("torch.", "") if self.stage is not None else None)
        return info

    def process(self, job: dict[str, Any]) -> dict[str, Any]:
        """Segment one video, decode to written PNGs, with :func:`vos.run.run_video`.

        Args:
            job: ``name``, ``video``, ``first_mask`` (paths), ``output`` (the output root: the
                result is ``output/name``), and optionally ``context``, ``per_object``,
                ``allow_partial``, ``overlay``, ``mask_video`` as for ``vos run``, and
                ``return_manifest`` (include the output's manifest dict in the record).

        Returns:
            A small record: ``name``, ``video``, ``first_mask``, ``output`` (the ``output/name``
            folder), ``status`` (``"ok"`` or ``"failed"``), ``frames``, ``model_fps``,
            ``end_to_end_fps``, ``wall_s`` (this call's duration), ``error`` (one line or None),
            ``error_type``, ``user_error`` (the failure was caused by the input), ``warnings``
            (messages of the warnings raised while processing), ``pid``, ``hostname``, ``node_id``
            and, when asked for, ``manifest``.

        A video that fails for its own reasons (bad video or mask, unwritable output, or any other
        exception) gives a ``"failed"`` record and leaves no output; the worker stays usable.
        """
        from vos.errors import user_errors
        from vos.run import run_video
        from vos.session import DEFAULT_CONTEXT

        t0 = time.perf_counter()
        unknown = sorted(set(job) - set(JOB_KEYS))
        missing = [k for k in ("name", "video", "first_mask", "output") if not job.get(k)]
        record: dict[str, Any] = {
            "name": job.get("name"), "video": job.get("video"), "first_mask": job.get("first_mask"),
            "output": None, "status": "failed", "frames": None, "model_fps": None,
            "end_to_end_fps": None, "wall_s": None, "error": None, "error_type": None,
            "user_error": False, "warnings": [],
        }
        record.update(node_info())
        if unknown or missing:
            record.update(error=f"bad job: missing {missing}, unknown {unknown}", error_type="ValueError")
            record["wall_s"] = time.perf_counter() - t0
            return record
        if self.stage is None:
            record.update(error=self.init_error or "the model is not loaded", error_type="UserError",
                          user_error=True, wall_s=time.perf_counter() - t0)
            return record
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = run_video(job["video"], job["first_mask"], output=job["output"],
                                   name=job["name"], checkpoint=self.checkpoint,
                                   context=int(job.get("context") or DEFAULT_CONTEXT),
                                   per_object=bool(job.get("per_object", False)),
                                   overlay=job.get("overlay"), mask_video=job.get("mask_video"),
                                   allow_partial=bool(job.get("allow_partial", False)),
                                   quiet=True, stage=self.stage)
            except user_errors() as exc:
                record.update(error=_one_line(exc), error_type=type(exc).__name__, user_error=True)
            except Exception as exc:  # the video's own failure: report it, keep the worker
                record.update(error=f"{type(exc).__name__}: {_one_line(exc)}",
                              error_type=type(exc).__name__)
            else:
                record.update(status="ok", output=str(result.output_dir), frames=result.frames,
                              model_fps=result.model_fps, end_to_end_fps=result.end_to_end_fps)
                if job.get("return_manifest"):
                    record["manifest"] = result.manifest
        record["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
        self.videos += 1
        record["wall_s"] = time.perf_counter() - t0
        return record


def actor_class(num_gpus: float = 0.0, num_cpus: float = 1.0, **options):
    """:class:`VideoWorker` as a Ray actor class holding ``num_gpus`` GPUs and ``num_cpus`` CPUs.

    Ray does not restart the actor or retry its calls (``max_restarts=0``,
    ``max_task_retries=0``): the driver sees an actor's death as an error of the call in flight
    and decides itself whether to retry the video on another actor (see :mod:`vos.batch`).
    Construct it with ``defer_init_errors=True`` and call ``ready`` to get a load error as a line.

    Args:
        num_gpus: GPUs per actor (fractions share a GPU; 0 on CPU-only clusters).
        num_cpus: CPUs per actor (Ray's scheduling unit; set the torch threads to match with
            ``num_threads=threads_for_cpus(num_cpus)``).
        **options: more ``ray.remote`` options (``resources``, ``scheduling_strategy``...).
    """
    import ray

    opts = {"max_restarts": 0, "max_task_retries": 0, **options}
    return ray.remote(num_gpus=num_gpus, num_cpus=num_cpus, **opts)(VideoWorker)
