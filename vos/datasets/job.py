"""A job: one video to segment, its prompt and its output name, as the dataset readers make it.

A :class:`Job` names one video, its output folder name and its prompt (absolute paths). Prompts:
``first_mask`` (the first frame's annotation), ``masks`` (annotations of any frames, frame index
-> file; JSONL only), ``text`` (object descriptions) or ``classes`` (class names). A job needs
exactly one prompt kind; ``first_mask`` and ``masks`` may be combined (``first_mask`` is frame 0's
mask, so ``masks`` must then not give frame 0). The dataset readers (:mod:`vos.datasets.layouts`)
also set ``stem_masks`` / ``mask_objects`` / ``object_masks`` / ``write_stems`` / ``backward``.
See ``docs/ray_cluster.md`` for the formats and
``docs/architecture.md`` for where this module sits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vos.errors import UserError

__all__ = ["BATCH_MANIFEST", "Job", "check_name", "check_unique", "default_name"]

#: File name of the batch log in an output root (:mod:`vos.batch.log`): no job may take it as its
#: output name.
BATCH_MANIFEST = "batch_manifest.jsonl"


@dataclass(frozen=True)
class Job:
    """One video to segment: results go to ``OUTPUT/name``.

    Attributes:
        name: output folder name (unique within a batch).
        video: absolute path of the video file or frame folder.
        first_mask: absolute path of the first frame's annotation, or None.
        where: where the job was defined (``file:line``), for messages.
        masks: {frame index (0-based, decoding order): absolute annotation path}, or None.
        text: object descriptions (non-empty strings), or None.
        classes: class names (non-empty strings), or None.
        stem_masks: {frame stem: absolute annotation path} (frame folders; dataset layouts), or None.
        mask_objects: {frame stem: object ids}: only these ids are taken from that stem's mask
            (the objects that start there; 0 elsewhere means "no label"), or None (all ids).
        object_masks: {object id: absolute binary mask path}: each object tracked on its own
            (SA-V: ``OUTPUT/NAME/OBJ/STEM.png``), or None.
        write_stems: the stems of the frames to write (others are propagated over, not written),
            or None (every frame).
        backward: False: nothing is segmented before the first annotated frame (YouTube-VOS, LVOS).
    """

    name: str
    video: str
    first_mask: str | None
    where: str = ""
    masks: dict[int, str] | None = None
    text: tuple[str, ...] | None = None
    classes: tuple[str, ...] | None = None
    stem_masks: dict[str, str] | None = None
    mask_objects: dict[str, tuple[int, ...]] | None = None
    object_masks: dict[int, str] | None = None
    write_stems: tuple[str, ...] | None = None
    backward: bool = True

    def prompt(self) -> dict[str, Any]:
        """The prompt fields that are set, as JSON-ready values (``masks`` keys as strings, lists):
        what the worker passes to ``run_video`` and what ``--resume`` compares."""
        out: dict[str, Any] = {}
        if self.first_mask is not None:
            out["first_mask"] = self.first_mask
        if self.masks is not None:
            out["masks"] = {str(k): v for k, v in sorted(self.masks.items())}
        if self.text is not None:
            out["text"] = list(self.text)
        if self.classes is not None:
            out["classes"] = list(self.classes)
        if self.stem_masks is not None:
            out["stem_masks"] = dict(self.stem_masks)
        if self.mask_objects is not None:
            out["mask_objects"] = {k: list(v) for k, v in self.mask_objects.items()}
        if self.object_masks is not None:
            out["object_masks"] = {str(k): v for k, v in sorted(self.object_masks.items())}
        if self.write_stems is not None:
            out["write_stems"] = list(self.write_stems)
        if not self.backward:
            out["backward"] = False
        return out


def default_name(video: Path) -> str:
    """The output name ``vos run`` would use: a folder's name or a file's stem."""
    return video.resolve().name if video.is_dir() else video.stem


def check_name(name: str, where: str) -> str:
    """``name`` when it can be an output folder name (no path separators, no leading dot).

    Raises:
        UserError: ``"{where}: ..."``.
    """
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{where}: empty name")
    bad = [c for c in ("/", "\\", "\0", "\n", "\r") if c in name]
    if bad or name in (".", "..") or name.startswith(".") or name == BATCH_MANIFEST:
        raise UserError(f"{where}: {name!r} cannot be an output folder name (no path separators, "
                        f"no leading dot)")
    return name


def check_unique(jobs: list[Job]) -> list[Job]:
    """``jobs`` when their output names differ.

    Raises:
        UserError: two jobs with one name (both places named).
    """
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.name in seen:
            raise UserError(f"{job.where}: output name {job.name!r} is already used by "
                            f"{seen[job.name].where}; give distinct names (the name column)")
        seen[job.name] = job
    return jobs


