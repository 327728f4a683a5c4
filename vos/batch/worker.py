"""The batch worker: one SegGPT model that runs whole videos, and the record of one video.

:class:`VideoWorker` (a :class:`pipelines.actors.ModelWorker`) runs :func:`vos.engine.video.run_video`, the
unchanged ``vos run`` chain (decode thread -> model -> writer thread, atomic ``DIR/NAME`` output),
on one video per :meth:`VideoWorker.process` call. It works without Ray; ``vos batch`` and
``vos run --address`` wrap it with :func:`pipelines.actors.actor_class`. Only a small job dict goes
in and a small record dict (:class:`VideoRecord`) comes out: frames never cross the object store
(the worker reads the video and writes the PNGs itself, so the output root must be on a
filesystem every node sees). See ``docs/architecture.md`` for where this sits.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from pipelines.actors import ModelWorker, node_info
from seggpt_model.errors import one_line
from vos.engine.objects import run_video_objects
from vos.engine.video import run_video
from vos.errors import UserError, user_errors
from vos.prompts.first_mask import FirstMaskProposer, MaskPrompt

__all__ = ["VideoWorker", "VideoRecord", "failed_record", "JOB_KEYS", "PROMPT_KEYS", "RUN_KEYS",
           "WORD_PROMPT_KEYS"]

#: Prompt fields of a job (at least one of them is set; see :mod:`vos.datasets.job`).
PROMPT_KEYS = ("first_mask", "masks", "text", "classes", "stem_masks", "object_masks")
#: Job keys passed to :func:`vos.engine.video.run_video` (or, with ``object_masks``,
#: :func:`vos.engine.objects.run_video_objects`) as keyword arguments, each only when it is set
#: (not None), so that a job works with every ``run_video`` that has the keywords it uses.
RUN_KEYS = (*PROMPT_KEYS, "context", "per_object", "allow_partial", "overlay", "mask_video",
            "max_pinned", "mask_objects", "write_stems", "backward")
#: Keys of a job dict (see :meth:`VideoWorker.process`); ``name``, ``video`` and ``output`` are
#: required, and one prompt of :data:`PROMPT_KEYS`.
#: Options of a ``text``/``classes`` prompt (:class:`vos.prompts.first_mask.MaskPrompt` fields).
WORD_PROMPT_KEYS = ("threshold", "instances", "text_model", "class_model")
JOB_KEYS = ("name", "video", "output", *RUN_KEYS, *WORD_PROMPT_KEYS, "return_manifest")


@dataclass
class VideoRecord:
    """The result of one video, as a line of ``batch_manifest.jsonl`` (see ``docs/ray_cluster.md``).

    Attributes:
        name, video, first_mask: the job's (absolute paths; ``first_mask`` None for a job prompted
            only by ``masks``, ``text`` or ``classes``).
        output: the finished ``OUTPUT/NAME`` folder, None unless ``status == "ok"``.
        status: ``"ok"`` or ``"failed"``.
        frames: frames written; model_fps, end_to_end_fps: frames per second of model time and of
            wall time (None on failure).
        wall_s: the worker's seconds for the video; task_s: submission to result as the driver
            saw it (set by the pool); attempts: times the video was given to a worker (pool).
        error: one line or None; error_type: the exception's type name (``"WorkerLost"`` when the
            worker died running it); user_error: the failure was caused by the input.
        warnings: ``"Category: message"`` of each warning raised while processing.
        pid, hostname, node_id: where it ran (None for a driver-side failure).
        finished_at: ISO 8601 UTC time the driver logged it.
        masks, text, classes, stem_masks, mask_objects, object_masks, write_stems, backward: the
            job's other prompt fields (dataset layouts: :mod:`vos.datasets`); manifest: the
            output's ``manifest.json`` dict (``vos run --address``). These are left out of
            :meth:`to_dict` when None.
    """

    name: str | None
    video: str | None
    first_mask: str | None = None
    output: str | None = None
    status: str = "failed"
    frames: int | None = None
    model_fps: float | None = None
    end_to_end_fps: float | None = None
    wall_s: float | None = None
    task_s: float | None = None
    attempts: int | None = None
    error: str | None = None
    error_type: str | None = None
    user_error: bool = False
    warnings: list[str] = field(default_factory=list)
    pid: int | None = None
    hostname: str | None = None
    node_id: str | None = None
    finished_at: str | None = None
    masks: dict[str, str] | None = None
    text: list[str] | None = None
    classes: list[str] | None = None
    stem_masks: dict[str, str] | None = None
    mask_objects: dict[str, list[int]] | None = None
    object_masks: dict[str, str] | None = None
    write_stems: list[str] | None = None
    backward: bool | None = None
    manifest: dict | None = None

    _OPTIONAL = ("masks", "text", "classes", "stem_masks", "mask_objects", "object_masks", "write_stems",
                 "backward", "manifest")

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (optional fields left out when None)."""
        out = dataclasses.asdict(self)
        for key in self._OPTIONAL:
            if out[key] is None:
                del out[key]
        return out


def failed_record(job: dict[str, Any], error: str, error_type: str, *, user_error: bool = False,
                  **where: Any) -> dict[str, Any]:
    """The ``failed`` record of ``job``: the one builder of failures, worker-side (bad job, bad
    input, model not loaded) and driver-side (``error_type="WorkerLost"``, ``"RayTaskError"``).

    Args:
        job: the job dict (``name``, ``video`` and the prompt fields are copied).
        error: one line; error_type: a type name; user_error: caused by the input.
        **where: ``pid``, ``hostname``, ``node_id``, ``wall_s`` when known.
    """
    return _record(job, error=error, error_type=error_type, user_error=user_error, **where).to_dict()


def _record(job: dict[str, Any], **fields: Any) -> VideoRecord:
    masks, objects = job.get("masks"), job.get("object_masks")
    mask_objects, stems = job.get("mask_objects"), job.get("write_stems")
    return VideoRecord(name=job.get("name"), video=job.get("video"), first_mask=job.get("first_mask"),
                       masks=None if masks is None else {str(k): v for k, v in masks.items()},
                       text=job.get("text"), classes=job.get("classes"),
                       stem_masks=job.get("stem_masks"),
                       mask_objects=(None if mask_objects is None
                                     else {k: list(v) for k, v in mask_objects.items()}),
                       object_masks=None if objects is None else {str(k): v for k, v in objects.items()},
                       write_stems=None if stems is None else list(stems),
                       backward=False if job.get("backward") is False else None, **fields)


class VideoWorker(ModelWorker):
    """One SegGPT model on one device, segmenting whole videos one at a time.

    Args: as :class:`pipelines.actors.ModelWorker` (``checkpoint`` is recorded as given in every
        output's ``manifest.json``).

    Raises:
        UserError: unknown device or dtype, CUDA missing (unless ``defer_init_errors``).
        seggpt_model.errors.CheckpointError: unloadable checkpoint (unless ``defer_init_errors``).
    """

    def __init__(self, checkpoint: str | None = None, device: str | None = "auto",
                 dtype: str | None = "auto", **kwargs: Any) -> None:
        try:
            super().__init__(checkpoint, device, dtype, **kwargs)
        except ValueError as exc:
            raise UserError(one_line(exc)) from None
        self.videos = 0

    def _proposer(self):
        """The word-prompt models (:class:`vos.prompts.first_mask.FirstMaskProposer`) on the worker's
        device and dtype, made once and loaded on first use, so a batch pays for loading once."""
        if getattr(self, "_first_mask_proposer", None) is None:
            device, dtype = getattr(self.stage, "device", None), getattr(self.stage, "dtype", None)
            self._first_mask_proposer = FirstMaskProposer(
                device=None if device is None else str(device),
                dtype=None if dtype is None else str(dtype).replace("torch.", ""))
        return self._first_mask_proposer

    def process(self, job: dict[str, Any]) -> dict[str, Any]:
        """Segment one video, decode to written PNGs, with :func:`vos.engine.video.run_video`.

        Args:
            job: ``name``, ``video``, ``output`` (the output root: the result is ``output/name``),
                at least one prompt (``first_mask`` path, ``masks`` {frame index: path}, ``text``
                or ``classes`` lists of strings), and optionally ``context``, ``per_object``,
                ``allow_partial``, ``overlay``, ``mask_video``, ``max_pinned`` as for ``vos run``, and
                ``return_manifest`` (include the output's manifest dict in the record). Each key of
                :data:`RUN_KEYS` that is set (not None) is passed to ``run_video`` as a keyword.

        Returns:
            :meth:`VideoRecord.to_dict` of the video's :class:`VideoRecord`.

        A video that fails for its own reasons (bad video or mask, unwritable output, or any other
        exception) gives a ``"failed"`` record and leaves no output; the worker stays usable.
        """
        t0 = time.perf_counter()
        unknown = sorted(set(job) - set(JOB_KEYS))
        missing = [k for k in ("name", "video", "output") if not job.get(k)]
        if not any(job.get(k) for k in PROMPT_KEYS):
            missing.append("|".join(PROMPT_KEYS))
        if unknown or missing:
            return failed_record(job, f"bad job: missing {missing}, unknown {unknown}", "ValueError",
                                 wall_s=time.perf_counter() - t0, **node_info())
        if self.stage is None:
            return failed_record(job, self.init_error or "the model is not loaded", "UserError",
                                 user_error=True, wall_s=time.perf_counter() - t0, **node_info())
        record = _record(job, **node_info())
        kwargs = {k: job[k] for k in RUN_KEYS if job.get(k) is not None}
        if kwargs.get("text") or kwargs.get("classes"):     # frame 0's mask from words
            kwargs["prompt"] = MaskPrompt(texts=tuple(kwargs.pop("text", None) or ()),
                                          classes=tuple(kwargs.pop("classes", None) or ()),
                                          instances=bool(job.get("instances")),
                                          threshold=job.get("threshold"),
                                          text_model=job.get("text_model"),
                                          class_model=job.get("class_model"))
            kwargs["proposer"] = self._proposer()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                run = run_video_objects if kwargs.get("object_masks") else run_video
                result = run(job["video"], output=job["output"], name=job["name"],   # a rerun replaces
                             checkpoint=self.checkpoint, quiet=True, stage=self.stage,     # (--resume skips)
                             overwrite=True, **kwargs)
            except user_errors() as exc:
                record.error, record.error_type, record.user_error = one_line(exc), type(exc).__name__, True
            except Exception as exc:  # the video's own failure: report it, keep the worker
                record.error, record.error_type = one_line(exc, with_type=True), type(exc).__name__
                if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in record.error:
                    record.error += f": {exc.filename}"
            else:
                record.status, record.output, record.frames = "ok", str(result.output_dir), result.frames
                record.model_fps, record.end_to_end_fps = result.model_fps, result.end_to_end_fps
                if job.get("return_manifest"):
                    record.manifest = result.manifest
        record.warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
        self.videos += 1
        record.wall_s = time.perf_counter() - t0
        return record.to_dict()
