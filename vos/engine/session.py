"""Per-video state of semi-supervised VOS with SegGPT: the prompt memory and the object ids.

Prompt memory (SegGPT paper Sec. 4, video object segmentation; Painter ``inference_video``): the
annotated frames are always prompts (*pinned*); the most recent frames with their predicted masks
fill the rest of the ``context`` prompts, first in first out. All prompts are fed as one batch with
feature ensemble, so memory per video is bounded by ``context`` whatever the video's length.

With one annotation (the first frame) this is exactly the paper's setting: ``[first frame,
context - 1 most recent predictions]``. :class:`vos.engine.predictor.VideoPredictor` adds annotations on
any frame (each one pinned, the most recent ``max_pinned`` of them kept); :class:`VideoSession` is
the first-frame-only form ``vos run --first-mask`` has always used.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")

DEFAULT_CONTEXT = 8  # SegGPT paper's best DAVIS setting (first frame included)
DEFAULT_MAX_PINNED = 4  # annotated frames kept as prompts when a video has more


class PromptMemory(Generic[T]):
    """Pinned (annotated) prompts plus a FIFO of the most recent predicted ones.

    :meth:`prompts` is ``[pinned..., recent...]`` (oldest first in each part): the most recent
    ``min(max_pinned, context)`` pinned items, then the most recent predicted items that fit in the
    remaining ``context - n_pinned`` places. With one pinned item this is ``[first, context - 1 most
    recent]``.

    Args:
        context: prompts per query, pinned ones included (>= 1).
        max_pinned: pinned items kept; the oldest is dropped when one more is pinned (>= 1).

    Raises:
        ValueError: ``context < 1`` or ``max_pinned < 1``.
    """

    def __init__(self, context: int = DEFAULT_CONTEXT, max_pinned: int = DEFAULT_MAX_PINNED) -> None:
        if context < 1:
            raise ValueError(f"context must be >= 1, got {context}")
        if max_pinned < 1:
            raise ValueError(f"max_pinned must be >= 1, got {max_pinned}")
        self.context = context
        self.max_pinned = max_pinned
        self._pinned: deque[T] = deque(maxlen=max_pinned)
        self._recent: deque[T] = deque(maxlen=context - 1)

    def set_first(self, item: T) -> None:
        """Start over from one annotated frame: it becomes the only pinned item, the FIFO is cleared."""
        self._pinned.clear()
        self._recent.clear()
        self._pinned.append(item)

    def pin(self, item: T) -> None:
        """Add an annotated frame (kept while it is among the ``max_pinned`` most recent ones)."""
        self._pinned.append(item)

    def push(self, item: T) -> None:
        """Add the newest predicted frame, dropping the oldest beyond ``context - 1``."""
        if self.context > 1:
            self._recent.append(item)

    @property
    def pinned(self) -> tuple[T, ...]:
        """The pinned items kept, oldest first (at most ``max_pinned``)."""
        return tuple(self._pinned)

    def prompts(self) -> list[T]:
        """``[pinned oldest, ..., pinned newest, recent oldest, ..., recent newest]``; at most
        ``context`` items.

        Raises:
            RuntimeError: nothing was pinned yet.
        """
        if not self._pinned:
            raise RuntimeError("the prompt memory has no annotated frame")
        pinned = list(self._pinned)[-self.context:]
        room = self.context - len(pinned)
        recent = list(self._recent)[max(0, len(self._recent) - room):] if room else []
        return [*pinned, *recent]

    def __len__(self) -> int:
        return len(self.prompts()) if self._pinned else 0

    def __iter__(self) -> Iterator[T]:
        return iter(self.prompts())


class ObjectIds:
    """Maps the annotations' object ids (any of 1..254, kept in the output) to model labels 1..K.

    The first ids (constructor) get labels ``1..k`` in ascending id order; ids added later
    (:meth:`add`) get the next labels, so a label never changes once given. SegGPT paints label
    ``j`` of ``K`` in colour ``j`` of its ``K``-colour palette; prompts keep label maps, so all of
    them are repainted when ``K`` grows (:meth:`pipelines.model_stage.SegGptStage.segment`).

    Args:
        object_ids: distinct ids of the first annotation's objects.

    Raises:
        ValueError: no ids, repeated ids, or ids outside 1..254.
    """

    def __init__(self, object_ids: tuple[int, ...] | list[int]) -> None:
        ids = sorted(int(i) for i in object_ids)
        if not ids:
            raise ValueError(f"object ids must be distinct values in 1..254, got {object_ids}")
        self.object_ids: tuple[int, ...] = ()
        self._to_labels = np.zeros(256, dtype=np.uint8)
        self._to_ids = np.zeros(1, dtype=np.uint8)
        if len(set(ids)) != len(ids):
            raise ValueError(f"object ids must be distinct values in 1..254, got {object_ids}")
        self.add(ids)

    def add(self, object_ids) -> tuple[int, ...]:
        """Give the ids not known yet the next labels (ascending id order); returns those new ids.

        Raises:
            ValueError: an id outside 1..254.
        """
        ids = sorted({int(i) for i in object_ids})
        if ids and (ids[0] < 1 or ids[-1] > 254):
            raise ValueError(f"object ids must be in 1..254, got {list(object_ids)}")
        new = tuple(i for i in ids if not self._to_labels[i])
        start = len(self.object_ids) + 1
        self._to_labels[list(new)] = np.arange(start, start + len(new), dtype=np.uint8)
        self._to_ids = np.array([0, *self.object_ids, *new], dtype=np.uint8)
        self.object_ids = (*self.object_ids, *new)
        return new

    def __contains__(self, object_id: int) -> bool:
        return 0 < int(object_id) < 256 and bool(self._to_labels[int(object_id)])

    @property
    def num_objects(self) -> int:
        """K, the number of objects (model labels ``1..K``)."""
        return len(self.object_ids)

    def to_labels(self, ids: np.ndarray) -> np.ndarray:
        """``(H, W)`` uint8 object ids -> ``(H, W)`` uint8 labels ``0..K`` (unknown ids -> 0)."""
        return self._to_labels[ids]

    def to_ids(self, labels: np.ndarray) -> np.ndarray:
        """``(H, W)`` labels ``0..K`` -> ``(H, W)`` uint8 object ids."""
        return self._to_ids[labels]


def segment_frame(stage, memory: PromptMemory, ids: ObjectIds, rgb: np.ndarray,
                  per_object: bool = False):
    """Segment one frame from the prompts in ``memory`` (SegGPT feature ensemble over all of them).

    Args:
        stage: a :class:`pipelines.model_stage.SegGptStage` (or anything with its methods).
        memory: the prompts (:class:`~pipelines.model_stage.PromptTensors`), annotated first.
        ids: the object ids of the prompts' labels (``K = ids.num_objects``).
        rgb: ``(H, W, 3)`` uint8 frame.
        per_object: one binary pass per object instead of one multi-colour pass.

    Returns:
        ``(object_ids, prompt)``: the ``(H, W)`` uint8 object ids of the frame, and the frame with
        its prediction as a prompt for later frames (not added to ``memory``).
    """
    query = stage.query(rgb)
    labels = stage.segment(query, memory.prompts(), ids.num_objects, per_object)
    return ids.to_ids(stage.to_frame(labels, rgb.shape[0], rgb.shape[1])), stage.as_prompt(query, labels)


class VideoSession:
    """Segments one video frame by frame from its first frame's annotation.

    Args:
        stage: a :class:`pipelines.model_stage.SegGptStage` (or anything with its methods).
        first_rgb: ``(H, W, 3)`` uint8 first frame.
        first_ids: ``(H, W)`` uint8 object ids of the first frame (0 = background; void already
            removed).
        object_ids: the objects to track (ids present in ``first_ids``).
        context: prompts per frame, first frame included.
        per_object: one binary pass per object instead of one multi-colour pass.

    Raises:
        ValueError: the frame and the mask differ in size, or bad ``object_ids`` / ``context``.
    """

    def __init__(self, stage, first_rgb: np.ndarray, first_ids: np.ndarray, object_ids,
                 context: int = DEFAULT_CONTEXT, per_object: bool = False) -> None:
        self.stage = stage
        self.ids = ObjectIds(object_ids)
        self.per_object = per_object
        self.height, self.width = first_ids.shape
        if first_rgb.shape[:2] != first_ids.shape:
            raise ValueError(f"first frame {first_rgb.shape[:2]} and mask {first_ids.shape} differ in size")
        self.memory: PromptMemory = PromptMemory(context)
        self.memory.set_first(stage.prompt(first_rgb, self.ids.to_labels(first_ids)))

    def step(self, rgb: np.ndarray) -> np.ndarray:
        """Segment the next frame: ``(H, W, 3)`` uint8 -> ``(H, W)`` uint8 object ids.

        The frame and its prediction then join the prompt memory.

        Raises:
            ValueError: the frame's size differs from the first frame's.
        """
        if rgb.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame size {rgb.shape[1]}x{rgb.shape[0]} differs from the first frame's "
                             f"{self.width}x{self.height}")
        out, prompt = segment_frame(self.stage, self.memory, self.ids, rgb, self.per_object)
        self.memory.push(prompt)
        return out
