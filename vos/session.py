"""Per-video state of semi-supervised VOS with SegGPT: the prompt memory and the object ids.

Prompt memory (SegGPT paper Sec. 4, video object segmentation; Painter ``inference_video``): the
annotated first frame is always a prompt; the ``context - 1`` most recent frames with their
predicted masks follow, first in first out. All prompts are fed as one batch with feature
ensemble, so memory per video is bounded by ``context`` whatever the video's length.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")

DEFAULT_CONTEXT = 8  # SegGPT paper's best DAVIS setting (first frame included)


class PromptMemory(Generic[T]):
    """The first (annotated) prompt, pinned, plus a FIFO of the ``context - 1`` most recent ones.

    Args:
        context: prompts per query, first frame included (>= 1).

    Raises:
        ValueError: ``context < 1``.
    """

    def __init__(self, context: int = DEFAULT_CONTEXT) -> None:
        if context < 1:
            raise ValueError(f"context must be >= 1, got {context}")
        self.context = context
        self._first: T | None = None
        self._recent: deque[T] = deque(maxlen=context - 1)

    def set_first(self, item: T) -> None:
        """Pin the annotated frame (replaces any earlier first prompt and clears the FIFO)."""
        self._first = item
        self._recent.clear()

    def push(self, item: T) -> None:
        """Add the newest predicted frame, dropping the oldest beyond ``context - 1``."""
        if self.context > 1:
            self._recent.append(item)

    def prompts(self) -> list[T]:
        """``[first, oldest recent, ..., newest]``; at most ``context`` items.

        Raises:
            RuntimeError: no first prompt was set.
        """
        if self._first is None:
            raise RuntimeError("the prompt memory has no first frame")
        return [self._first, *self._recent]

    def __len__(self) -> int:
        return (self._first is not None) + len(self._recent)

    def __iter__(self) -> Iterator[T]:
        return iter(self.prompts())


class ObjectIds:
    """Maps the annotation's object ids (any of 1..254, kept in the output) to model labels 1..K.

    Args:
        object_ids: sorted distinct ids of the first mask's objects.
    """

    def __init__(self, object_ids: tuple[int, ...] | list[int]) -> None:
        ids = sorted(int(i) for i in object_ids)
        if not ids or ids[0] < 1 or ids[-1] > 254 or len(set(ids)) != len(ids):
            raise ValueError(f"object ids must be distinct values in 1..254, got {object_ids}")
        self.object_ids = tuple(ids)
        self._to_labels = np.zeros(256, dtype=np.uint8)
        self._to_labels[ids] = np.arange(1, len(ids) + 1, dtype=np.uint8)
        self._to_ids = np.array([0, *ids], dtype=np.uint8)

    @property
    def num_objects(self) -> int:
        return len(self.object_ids)

    def to_labels(self, ids: np.ndarray) -> np.ndarray:
        """``(H, W)`` uint8 object ids -> ``(H, W)`` uint8 labels ``0..K`` (unknown ids -> 0)."""
        return self._to_labels[ids]

    def to_ids(self, labels: np.ndarray) -> np.ndarray:
        """``(H, W)`` labels ``0..K`` -> ``(H, W)`` uint8 object ids."""
        return self._to_ids[labels]


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
        """
        if rgb.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame size {rgb.shape[1]}x{rgb.shape[0]} differs from the first frame's "
                             f"{self.width}x{self.height}")
        query = self.stage.query(rgb)
        labels = self.stage.segment(query, self.memory.prompts(), self.ids.num_objects, self.per_object)
        self.memory.push(self.stage.as_prompt(query, labels))
        return self.ids.to_ids(self.stage.to_frame(labels, self.height, self.width))
