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
from pipelines.devices import check_device_dtype, use_device
from pipelines.kernel_record import cuda_attention_choice
from seggpt_model import processing as P
from seggpt_model.build import from_pretrained
from seggpt_model.config import ATTENTION_IMPLEMENTATIONS, DEFAULT_CHECKPOINT

__all__ = ["PromptTensors", "SegGptStage", "load_stage", "ATTENTION_CHOICES"]

#: ``attn`` values of :func:`load_stage`: ``"auto"`` (on CUDA the measured record's winner,
#: :func:`pipelines.kernel_record.cuda_attention_choice`; on CPU ``"sdpa"``) or a kernel name of
#: :data:`seggpt_model.config.ATTENTION_IMPLEMENTATIONS`.
ATTENTION_CHOICES = ("auto", *ATTENTION_IMPLEMENTATIONS)


@dataclass
class PromptTensors:
    """A frame kept as a prompt: its preprocessed image and its label map at model resolution.

    Attributes:
        image: ``(3, S, S)`` normalised image in the model dtype, on the model device.
        labels: ``(S, S)`` int64 labels ``0..K`` (contiguous object labels) on the device.
        max_label: the largest label, read on the host before upload (:meth:`SegGptStage.prompt`),
            or None for labels the model produced (in range by construction). Lets
            :meth:`SegGptStage.segment` check the range without a device sync.
    """

    image: torch.Tensor
    labels: torch.Tensor
    max_label: int | None = None


class SegGptStage:
    """One SegGPT model on one device, used frame by frame by :class:`vos.engine.session.VideoSession`.

    Args:
        model: a loaded :class:`seggpt_model.SegGptForImageSegmentation` (already on its device and
            in its dtype; see :func:`load_stage` to build one from a checkpoint).
        embedding_type: ``"instance"`` (VOS default) or ``"semantic"``.
        compile: run the forward through :func:`compiled_segment` (``torch.compile``).
    """

    def __init__(self, model, embedding_type: str = "instance", compile: bool = False) -> None:
        self.model = model.eval()
        #: ``torch.compile`` of ``model.segment`` (:func:`compiled_segment`), or None: the plain forward
        self._compiled = compiled_segment(self.model) if compile else None
        self.compiled = bool(compile)
        self.device = model.device
        self.dtype = model.dtype
        self.size = model.config.query_image_size
        self.embedding_type = embedding_type
        self._palettes: dict[int, torch.Tensor] = {}
        self._pin = self.device.type == "cuda"

    @property
    def attn(self) -> str:
        """The attention kernel rule the model runs (a ``set_attn_implementation`` name; ``load_stage``
        resolves ``"auto"`` to one)."""
        return self.model.model.encoder.layers[0].attention.attn_implementation

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
        max_label = int(labels.max()) if labels.size else 0          # host array: no device sync
        if labels.size and int(labels.min()) < 0:
            raise ValueError(f"labels must be >= 0, got minimum {int(labels.min())}")
        lab = self._to_device(labels).long()[None]
        return PromptTensors(image=image, labels=P.resize_labels(lab, (self.size, self.size))[0],
                             max_label=max_label)

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
        else:  # the range check on host values (PromptTensors.max_label): no device sync per frame
            for p in prompts:
                if p.max_label is not None and p.max_label >= palette.shape[0]:
                    raise ValueError(f"labels must lie in [0, {palette.shape[0]}), got a prompt with label "
                                     f"{p.max_label}")
        masks = P.preprocess_label_masks(labels, palette, self.size, self.dtype,
                                         check_range=False)                        # (N, 3, S, S)
        segment = self.model.segment if self._compiled is None else self._compiled
        return segment(query[None], images, masks, embedding_type=self.embedding_type)

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


def compiled_segment(model):
    """``model.segment`` through ``torch.compile`` (inductor), one graph per prompt count.

    On CUDA with ``mode="reduce-overhead"``: inductor's kernels replayed as CUDA graphs, so a frame
    costs a few graph launches instead of about 1,600 kernel launches (the shapes are fixed by the
    number of prompts, 1 to ``--context``; each count is captured once, so the recompile limit is
    raised to cover up to 64 counts). On CPU, plain inductor (measured slower than eager for the
    bf16 ViT-L, ``docs/benchmarks.md``; offered for completeness). ``dynamic=False``: shapes are
    specialised, none is traced symbolically. The first frame of each prompt count pays the
    compilation (tens of seconds for ViT-L). The outputs of a CUDA-graph replay are overwritten
    by the next replay: callers use them before the next call, as :class:`SegGptStage` does.

    Returns:
        A callable with the signature of ``model.segment``.
    """
    import torch._dynamo  # lazy: only the compile path needs dynamo's config (loaded by torch.compile anyway)

    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, 64)
    mode = "reduce-overhead" if model.device.type == "cuda" else None
    return torch.compile(model.segment, mode=mode, dynamic=False)


def load_stage(checkpoint: str | None = None, device: str | None = None, dtype: str | None = None,
               embedding_type: str = "instance", *, attn: str | None = "auto",
               compile: bool = False) -> SegGptStage:
    """Build a :class:`SegGptStage` from a checkpoint (anything ``seggpt_model.from_pretrained``
    accepts; default :data:`seggpt_model.config.DEFAULT_CHECKPOINT`) on the resolved device and
    dtype (:func:`pipelines.devices.check_device_dtype`).

    Also tunes the process's C allocator for the model's large per-layer tensors
    (:func:`pipelines.allocator.keep_freed_memory`; ``VOS_MALLOC_TUNING=0`` opts out), and makes a
    CUDA device the process's current one (:func:`pipelines.devices.use_device`, so that
    ``cuda:1`` is synced and captured on the right GPU).

    Args:
        checkpoint, device, dtype, embedding_type: as described above (``--checkpoint``,
            ``--device``, ``--dtype``).
        attn: the attention kernel (``--attn``): ``"auto"`` or None (CPU: ``"sdpa"``; CUDA: the
            winner of the GPU check's record, :func:`pipelines.kernel_record.cuda_attention_choice`,
            ``"sdpa"`` while none exists), or a name of :data:`ATTENTION_CHOICES`.
        compile: ``torch.compile`` the forward (``--compile``; :func:`compiled_segment`).

    Raises:
        ValueError: unknown device, dtype or attention name (checked before any weight is read).
        seggpt_model.CheckpointError: the checkpoint cannot be loaded.
    """
    attn = attn or "auto"
    if attn not in ATTENTION_CHOICES:
        raise ValueError(f"unknown attention kernel {attn!r}: use {', '.join(ATTENTION_CHOICES)}")
    dev, dt = check_device_dtype(device, dtype)
    use_device(dev)
    keep_freed_memory()
    model = from_pretrained(checkpoint or DEFAULT_CHECKPOINT, device=dev, dtype=dt)
    if attn == "auto":
        attn = cuda_attention_choice() if dev.type == "cuda" else "sdpa"
    model.set_attn_implementation(attn)
    return SegGptStage(model, embedding_type=embedding_type, compile=compile)
