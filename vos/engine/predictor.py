"""A stateful per-video predictor: annotations on any frames, forward and backward propagation.

In the spirit of SAM 2's video predictor (``add_new_mask`` on a frame index, then propagate), but
streaming: frames are handed in one at a time and nothing of the video is held beyond the prompt
memory, so a video of any length runs in bounded memory.

Rules (issue 14, ``vos run --mask K:FILE``):

* Forward (:meth:`VideoPredictor.step`) starts at the earliest annotated frame ``A``. An annotated
  frame's output is its annotation for the objects it contains; other tracked objects keep their
  predicted pixels where the annotation is background (0), void pixels (255) stay void. A mask may
  hold new objects (tracked from that frame on) and known ones (a correction).
* Prompt memory (:class:`vos.engine.session.PromptMemory`): every annotated frame, with its output as
  labels, is pinned (the most recent ``max_pinned`` when there are more); the most recent predicted
  frames fill the rest of ``context``, first in, first out. With a single annotation on frame 0 this
  is :class:`vos.engine.session.VideoSession` exactly.
* Resume (:meth:`VideoPredictor.resume`): a fresh predictor given the same annotations is put in
  the state an earlier run had just before frame ``K`` (pinned annotated frames, the FIFO of
  predictions, object ids) from the frames and labels that run kept, so that stepping ``K, K+1,
  ...`` gives what the earlier run would have given (``vos app`` re-propagates from a correction
  without redoing the frames before it).
* Backward (:meth:`VideoPredictor.backward`): frames ``A-1, ..., 0`` are segmented in that order
  from annotation ``A`` alone, with the same memory rules: the result equals a forward run over the
  reversed frames ``A, A-1, ..., 0`` with ``A``'s mask as first mask. Objects first annotated after
  ``A`` are not propagated backward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from vos.engine.session import DEFAULT_CONTEXT, DEFAULT_MAX_PINNED, ObjectIds, PromptMemory, segment_frame

__all__ = ["Annotation", "VideoPredictor"]


@dataclass(frozen=True, eq=False)
class Annotation:
    """One frame's annotation as given to :meth:`VideoPredictor.add_mask`.

    Attributes:
        ids: ``(H, W)`` uint8 object ids, 0 background, 1..254 objects (void pixels are 0 here).
        void: ``(H, W)`` bool void pixels, or None.
        object_ids: the ids present in ``ids``, ascending.
    """

    ids: np.ndarray
    void: np.ndarray | None
    object_ids: tuple[int, ...]


class VideoPredictor:
    """Segments one video from annotations on any of its frames (see the module docstring).

    Typical use (what ``vos run`` does)::

        p = VideoPredictor(stage, height, width, context=8)
        p.add_mask(20, ids20)                 # before frame 20 is stepped
        p.step(20, rgb20)                     # -> ids20 (the annotation)
        for ids in p.backward([rgb19, ..., rgb0]):   # frames 19, 18, ..., 0
            ...
        p.step(21, rgb21)                     # forward from 20, further masks applied on the way

    Args:
        stage: a :class:`pipelines.model_stage.SegGptStage` (or anything with its methods).
        height, width: frame size in pixels (every frame and mask has it).
        context: prompts per frame, pinned annotated frames included (>= 1).
        max_pinned: annotated frames kept as prompts, the most recent ones (>= 1).
        per_object: one binary pass per object instead of one multi-colour pass.

    Raises:
        ValueError: ``context`` or ``max_pinned`` below 1, or a non-positive size.
    """

    def __init__(self, stage, height: int, width: int, *, context: int = DEFAULT_CONTEXT,
                 max_pinned: int = DEFAULT_MAX_PINNED, per_object: bool = False) -> None:
        if height < 1 or width < 1:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        self.stage = stage
        self.height, self.width = int(height), int(width)
        self.context, self.max_pinned, self.per_object = context, max_pinned, per_object
        self.memory: PromptMemory = PromptMemory(context, max_pinned)
        self.ids: ObjectIds | None = None
        self._pending: dict[int, Annotation] = {}
        self._last: int | None = None
        # the earliest annotated frame: (index, its prompt, the ObjectIds of its objects alone)
        self._origin: tuple[int, object, ObjectIds] | None = None
        self._last_prompt = None            # the prompt of the frame stepped last

    # -- annotations ----------------------------------------------------------------------------
    def add_mask(self, frame_index: int, ids: np.ndarray, void: np.ndarray | None = None) -> Annotation:
        """Register frame ``frame_index``'s annotation; it is applied when that frame is stepped.

        Args:
            frame_index: 0-based index in decoding order; after the last frame stepped.
            ids: ``(H, W)`` uint8 object ids (0 background, 1..254 objects).
            void: ``(H, W)`` bool pixels that are void (255 in the output), or None.

        Returns:
            the stored :class:`Annotation`.

        Raises:
            ValueError: negative or already segmented frame index, a second mask for the frame,
                wrong shape or dtype, ids over 254, or no object.
        """
        k = int(frame_index)
        if k < 0:
            raise ValueError(f"frame index must be >= 0, got {frame_index}")
        if k in self._pending:
            raise ValueError(f"frame {k} has two masks")
        if self._last is not None and k <= self._last:
            raise ValueError(f"frame {k} is already segmented (the predictor is at frame {self._last})")
        arr = np.asarray(ids)
        if arr.shape != (self.height, self.width) or arr.dtype != np.uint8:
            raise ValueError(f"mask of frame {k} must be ({self.height}, {self.width}) uint8, got "
                             f"{arr.shape} {arr.dtype}")
        present = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
        if present.size and present[-1] > 254:
            raise ValueError(f"mask of frame {k} has ids over 254 (255 is void: pass it as void)")
        object_ids = tuple(int(i) for i in present if i)
        if not object_ids:
            raise ValueError(f"mask of frame {k} has no object")
        if void is not None:
            void = np.asarray(void, dtype=bool)
            if void.shape != arr.shape:
                raise ValueError(f"void of frame {k} has shape {void.shape}, expected {arr.shape}")
            if not void.any():
                void = None
        ann = Annotation(ids=arr.copy(), void=None if void is None else void.copy(), object_ids=object_ids)
        self._pending[k] = ann
        return ann

    @property
    def pending_frames(self) -> list[int]:
        """Annotated frames not stepped yet, ascending."""
        return sorted(self._pending)

    @property
    def first_annotated(self) -> int | None:
        """The earliest annotated frame ``A`` (stepped or not), or None before any mask."""
        if self._origin is not None:
            return self._origin[0]
        return min(self._pending) if self._pending else None

    @property
    def object_ids(self) -> tuple[int, ...]:
        """Ids of the objects tracked so far, in label order (ascending within each annotation)."""
        return self.ids.object_ids if self.ids is not None else ()

    # -- forward --------------------------------------------------------------------------------
    def _check_rgb(self, rgb: np.ndarray) -> None:
        if rgb.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame size {rgb.shape[1]}x{rgb.shape[0]} differs from the video's "
                             f"{self.width}x{self.height}")

    def step(self, frame_index: int, rgb: np.ndarray) -> np.ndarray:
        """Segment frame ``frame_index`` going forward: ``(H, W, 3)`` uint8 -> ``(H, W)`` uint8 ids.

        The first call must be for the earliest annotated frame; later calls for increasing indices
        (an annotated frame may not be skipped). An annotated frame returns its annotation merged
        with the other tracked objects' predictions and is pinned; any other frame is predicted
        from the memory and joins its FIFO.

        Raises:
            ValueError: wrong frame order or size, or no annotation at or before the frame.
        """
        k = int(frame_index)
        self._check_rgb(rgb)
        if self._last is None:
            first = self.first_annotated
            if first is None or k != first:
                raise ValueError(f"forward segmentation starts at the earliest annotated frame "
                                 f"({first}), not at frame {k}; earlier frames go to backward()")
        elif k <= self._last:
            raise ValueError(f"frame {k} does not come after frame {self._last}")
        skipped = [i for i in self._pending if i < k]
        if skipped:
            raise ValueError(f"annotated frame {min(skipped)} was skipped")
        ann = self._pending.pop(k, None)
        if ann is None:
            out, prompt = segment_frame(self.stage, self.memory, self.ids, rgb, self.per_object)
            self.memory.push(prompt)
            self._last_prompt = prompt
        else:
            out = self._apply(k, ann, rgb)
            self._last_prompt = None
        self._last = k
        return out

    @property
    def last_prompt_labels(self) -> np.ndarray | None:
        """The labels ``0..K`` the memory keeps for the predicted frame stepped last, or None after an
        annotated frame (or before any step).

        ``(S, S)`` uint8 at the model's resolution for a :class:`pipelines.model_stage.SegGptStage`
        (not the frame's size: the output ids cannot rebuild them exactly); with the frame's rgb,
        what :meth:`resume` takes back for that frame.
        """
        p = self._last_prompt
        if p is None:
            return None
        h, w = p.labels.shape[-2:]
        return np.asarray(self.stage.to_frame(p.labels, h, w), dtype=np.uint8)

    # -- resume ---------------------------------------------------------------------------------
    def resume(self, frame_index: int, load: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> None:
        """Put this fresh predictor in the state an earlier run had just before stepping frame ``K``.

        The earlier run had the same settings and the same annotations on frames before ``K`` (given
        to this predictor with :meth:`add_mask`, together with any at ``K`` and later, which are then
        applied when stepped), and stepped ``A, ..., K-1`` forward. Only the frames the memory holds
        are loaded: the pinned annotated frames (the ``max_pinned`` most recent, and ``A``) and the
        ``context - 1`` most recent predicted frames before ``K``. The prompts are rebuilt with
        ``stage.prompt`` exactly as they were made, so stepping ``K, K+1, ...`` afterwards (and
        :meth:`backward`) gives what the earlier run gave or would have given, bit for bit.

        Args:
            frame_index: ``K``, after the earliest annotated frame ``A``.
            load: ``load(i) -> (rgb, labels)`` for a frame ``i`` in ``A..K-1``: ``(H, W, 3)`` uint8 and,
                for an annotated frame, its ``(H, W)`` uint8 output ids as :meth:`step` returned them;
                for a predicted frame, its :attr:`last_prompt_labels` saved after stepping it.

        Raises:
            RuntimeError: this predictor has stepped a frame already.
            ValueError: no annotation before ``K``, or a loaded frame or label map of the wrong size.
        """
        k = int(frame_index)
        if self._last is not None:
            raise RuntimeError("resume() needs a predictor that has not stepped any frame")
        first = self.first_annotated
        if first is None or k <= first:
            raise ValueError(f"resume() needs an annotated frame before frame {k} (earliest: {first})")
        annotated = sorted(i for i in self._pending if i < k)
        anns = [self._pending.pop(i) for i in annotated]
        self.ids = ObjectIds(anns[0].object_ids)
        for ann in anns[1:]:
            self.ids.add(ann.object_ids)
        keep = set(annotated[-self.max_pinned:]) | {first}
        prompts = {}
        for i in sorted(keep):
            rgb, out = load(i)
            self._check_rgb(rgb)
            if np.shape(out) != (self.height, self.width):
                raise ValueError(f"output of frame {i} has shape {np.shape(out)}, expected "
                                 f"{(self.height, self.width)}")
            prompts[i] = self.stage.prompt(rgb, self.ids.to_labels(np.asarray(out, dtype=np.uint8)))
        self._origin = (first, prompts[first], ObjectIds(anns[0].object_ids))
        for i in annotated[-self.max_pinned:]:
            self.memory.pin(prompts[i])
        if self.context > 1:
            marks = set(annotated)
            predicted = [i for i in range(k - 1, first, -1) if i not in marks][:self.context - 1]
            for i in reversed(predicted):
                rgb, labels = load(i)
                self._check_rgb(rgb)
                self.memory.push(self.stage.prompt(rgb, np.asarray(labels, dtype=np.uint8)))
        self._last = k - 1

    def _apply(self, k: int, ann: Annotation, rgb: np.ndarray) -> np.ndarray:
        """Output and pinned prompt of annotated frame ``k``."""
        out = ann.ids.copy()
        if self.ids is None:
            self.ids = ObjectIds(ann.object_ids)
        else:
            others = [i for i in self.ids.object_ids if i not in ann.object_ids]
            if others:      # objects the mask does not hold keep their predicted pixels
                pred, _ = segment_frame(self.stage, self.memory, self.ids, rgb, self.per_object)
                keep = (out == 0) & np.isin(pred, others)
                if ann.void is not None:
                    keep &= ~ann.void
                out[keep] = pred[keep]
            self.ids.add(ann.object_ids)
        prompt = self.stage.prompt(rgb, self.ids.to_labels(out))
        if self._origin is None:
            self._origin = (k, prompt, ObjectIds(ann.object_ids))
        self.memory.pin(prompt)
        if ann.void is not None:
            out[ann.void] = 255
        return out

    # -- backward -------------------------------------------------------------------------------
    def backward(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Segment frames ``A-1, A-2, ..., 0`` (given in that order) from annotation ``A`` alone.

        ``A`` is the earliest annotated frame and must have been stepped. The memory starts from
        ``A``'s pinned prompt and fills its FIFO with the backward predictions, exactly as a forward
        run over the reversed frames would; the forward memory is not touched.

        Args:
            frames: ``(H, W, 3)`` uint8 frames ``A-1`` down to ``0`` (at most ``A`` of them; read
                lazily, one at a time).

        Yields:
            ``(H, W)`` uint8 object ids of each frame, in the order given.

        Raises:
            RuntimeError: frame ``A`` was not stepped yet.
            ValueError: more than ``A`` frames, or a frame of another size.
        """
        if self._origin is None:
            raise RuntimeError("backward() needs the earliest annotated frame stepped first")
        first, prompt, ids = self._origin
        memory: PromptMemory = PromptMemory(self.context, self.max_pinned)
        memory.set_first(prompt)
        for n, rgb in enumerate(frames):
            if n >= first:
                raise ValueError(f"backward() got more than the {first} frames before frame {first}")
            self._check_rgb(rgb)
            out, p = segment_frame(self.stage, memory, ids, rgb, self.per_object)
            memory.push(p)
            yield out
