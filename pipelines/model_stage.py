"""The model stage: one SegGPT on one device, turning numpy frames and label maps into label maps.

This is the only stage that imports torch. Its inputs and outputs at the stage boundary are numpy
arrays (``(H, W, 3)`` uint8 frames, ``(H, W)`` uint8 label maps); between calls it keeps prompt
tensors on the device (:class:`PromptTensors`), so a frame is preprocessed once however many later
frames use it as a prompt.

On CUDA the host arrays are copied into pinned (page-locked) memory and sent with
``non_blocking=True``, so the copy overlaps the GPU work queued before it; the only point where the
host waits for the device is :meth:`SegGptStage.to_frame`, where the labels come back. On CPU the
tensors are used as they are (no copy, results bit-identical to a plain ``.to(device)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines.allocator import keep_freed_memory
from pipelines.devices import check_device_dtype
from seggpt_model import processing as P
from seggpt_model.build import from_pretrained
from seggpt_model.config import DEFAULT_CHECKPOINT

__all__ = ["PromptTensors", "SegGptStage", "load_stage"]


@dataclass
class PromptTensors:
    """A frame kept as a prompt: its preprocessed image and its label map at model resolution.

    Attributes:
        image: ``(3, S, S)`` normalised image in the model dtype, on the model device.
        labels: ``(S, S)`` int64 labels ``0..K`` (contiguous object labels) on the device.
    """

    image: torch.Tensor
    labels: torch.Tensor


class SegGptStage:
    """One SegGPT model on one device, used frame by frame by :class:`vos.engine.session.VideoSession`.

    Args:
        model: a loaded :class:`seggpt_model.SegGptForImageSegmentation` (already on its device and
            in its dtype; see :func:`load_stage` to build one from a checkpoint).
        embedding_type: ``"instance"`` (VOS default) or ``"semantic"``.
    """

    def __init__(self, model, embedding_type: str = "instance") -> None:
        self.model = model.eval()
        self.device = model.device
        self.dtype = model.dtype
        self.size = model.config.query_image_size
        self.embedding_type = embedding_type
        self._palettes: dict[int, torch.Tensor] = {}
        self._pin = self.device.type == "cuda"

    # -- numpy -> device -------------------------------------------------------------------
    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        """A host array on the model device: on CUDA through pinned memory, without waiting."""
        t = torch.from_numpy(np.ascontiguousarray(array))
        if self._pin:
            # pinned memory from the caching host allocator stays reserved until the copy is done
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def _rgb_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"frames must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        return self._to_device(rgb).permute(2, 0, 1)[None]                    # (1, 3, H, W)

    def palette(self, num_labels: int) -> torch.Tensor:
        """SegGPT palette ``(num_labels + 1, 3)`` uint8 on the device (cached)."""
        if num_labels not in self._palettes:
            self._palettes[num_labels] = P.build_palette(num_labels).to(self.device)
        return self._palettes[num_labels]

    @torch.inference_mode()
    def prompt(self, rgb: np.ndarray, labels: np.ndarray) -> PromptTensors:
        """Preprocess an annotated frame: ``(H, W, 3)`` uint8 and ``(H, W)`` labels ``0..K``."""
        image = P.preprocess_images(self._rgb_tensor(rgb), self.size, self.dtype)[0]
        lab = self._to_device(labels).long()[None]
        return PromptTensors(image=image, labels=P.resize_labels(lab, (self.size, self.size))[0])

    @torch.inference_mode()
    def query(self, rgb: np.ndarray) -> torch.Tensor:
        """Preprocess a frame to segment: ``(H, W, 3)`` uint8 -> ``(3, S, S)`` on the device."""
        return P.preprocess_images(self._rgb_tensor(rgb), self.size, self.dtype)[0]

    @staticmethod
    def as_prompt(query: torch.Tensor, labels: torch.Tensor) -> PromptTensors:
        """A segmented frame as a future prompt: :meth:`query`'s tensor and :meth:`segment`'s labels."""
        return PromptTensors(image=query, labels=labels)

    # -- model -----------------------------------------------------------------------------
    def _predict(self, query: torch.Tensor, prompts: list[PromptTensors], palette: torch.Tensor,
                 select: int | None) -> torch.Tensor:
        """Normalised prediction ``(1, 3, S, S)`` from prompts painted with ``palette``.

        ``select`` paints only that label white (per-object pass with a binary palette).
        """
        images = torch.stack([p.image for p in prompts])                           # (N, 3, S, S)
        labels = torch.stack([p.labels for p in prompts])                          # (N, S, S)
        if select is not None:
            labels = (labels == select).long()
        masks = P.preprocess_label_masks(labels, palette, self.size, self.dtype)  # (N, 3, S, S)
        return self.model.segment(query[None], images, masks, embedding_type=self.embedding_type)

    @torch.inference_mode()
    def segment(self, query: torch.Tensor, prompts: list[PromptTensors], num_labels: int,
                per_object: bool = False) -> torch.Tensor:
        """Label map ``(S, S)`` int64 in ``0..num_labels`` for the query frame.

        Args:
            query: from :meth:`query`.
            prompts: the prompt memory's frames, first-frame annotation first.
            num_labels: K objects, labelled ``1..K`` in the prompts.
            per_object: one binary (white on black) pass per object, merged by the highest
                foreground score (score > 0.5 required); else one pass with every object painted in
                its own SegGPT palette colour, decoded by nearest colour.
        """
        if not per_object:
            pred = self._predict(query, prompts, self.palette(num_labels), None)
            return P.postprocess_masks(pred, self.palette(num_labels))[0]
        binary = self.palette(1)
        scores = torch.stack([P.foreground_scores(self._predict(query, prompts, binary, k))[0]
                              for k in range(1, num_labels + 1)])                   # (K, S, S)
        best, index = scores.max(dim=0)
        return torch.where(best > 0.5, index + 1, torch.zeros_like(index))

    @torch.inference_mode()
    def to_frame(self, labels: torch.Tensor, height: int, width: int) -> np.ndarray:
        """``(S, S)`` labels -> ``(height, width)`` uint8 numpy, nearest resize (as the reference
        post-processing does). The one place where the host waits for the device."""
        out = torch.nn.functional.interpolate(labels[None, None].float(), size=(height, width),
                                              mode="nearest")[0, 0]
        return out.to(torch.uint8).cpu().numpy()


def load_stage(checkpoint: str | None = None, device: str | None = None, dtype: str | None = None,
               embedding_type: str = "instance") -> SegGptStage:
    """Build a :class:`SegGptStage` from a checkpoint (anything ``seggpt_model.from_pretrained``
    accepts; default :data:`seggpt_model.config.DEFAULT_CHECKPOINT`) on the resolved device and
    dtype (:func:`pipelines.devices.check_device_dtype`).

    Also tunes the process's C allocator for the model's large per-layer tensors
    (:func:`pipelines.allocator.keep_freed_memory`; ``VOS_MALLOC_TUNING=0`` opts out).

    Raises:
        ValueError: unknown device or dtype (checked before any weight is read).
        seggpt_model.CheckpointError: the checkpoint cannot be loaded.
    """
    dev, dt = check_device_dtype(device, dtype)
    keep_freed_memory()
    model = from_pretrained(checkpoint or DEFAULT_CHECKPOINT, device=dev, dtype=dt)
    return SegGptStage(model, embedding_type=embedding_type)
