"""Frames and frame sources: the types every source yields and the errors and warnings they raise
(the package docstring of :mod:`pipelines.sources` describes the behaviour)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pipelines.errors import VideoDecodeError

__all__ = ["IMAGE_EXTENSIONS", "CorruptVideoError", "PartialVideoWarning", "FrameGapWarning", "Frame", "FrameSource", "natural_sort_key"]

#: File name extensions (lower case) recognised as frames in a frame folder.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})


class CorruptVideoError(VideoDecodeError):
    """A video (or frame folder) that became undecodable after ``good_frames`` good frames.

    Raised by the iterator of a source opened with ``allow_partial=False``; ``good_frames``
    frames (indices ``0 .. good_frames - 1``) were yielded before it.
    """

    def __init__(self, message: str, good_frames: int) -> None:
        super().__init__(message)
        self.good_frames = good_frames


class PartialVideoWarning(RuntimeWarning):
    """Issued (once per iteration) when ``allow_partial=True`` stops a corrupt source early."""


class FrameGapWarning(RuntimeWarning):
    """Issued (once per iteration) when a constant-rate video's timestamps jump: frames are missing.

    Not an error: the frames after the gap are still yielded (they may show artefacts until
    the next key frame).
    """


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based position in presentation order.
        pts: presentation time in seconds (``pts * time_base`` of the frame, so variable
            frame rate is preserved; not necessarily starting at 0).  For a frame without a
            timestamp it is extrapolated from the previous frame and the average rate.
            ``None`` for frames of a folder.
        rgb: ``(H, W, 3)`` ``uint8`` RGB image, upright (rotation metadata applied),
            C-contiguous and writeable.
    """

    index: int
    pts: float | None
    rgb: np.ndarray

    def __repr__(self) -> str:
        return f"Frame(index={self.index}, pts={self.pts}, rgb={self.rgb.dtype}{tuple(self.rgb.shape)})"


class FrameSource:
    """Base class of frame sources: an iterable of :class:`Frame` and a context manager.

    Attributes:
        path: the video file or frame folder.
        name: the video's stem, or the folder's name.
        width, height: size in pixels of the upright frames (every frame has this size).
        fps: average frame rate of the source in frames per second (``None`` when unknown:
            folders unless given one).
        num_frames: best estimate of the number of frames, for progress bars (``None`` when
            unknown; the real count may differ for damaged or edit-listed files).

    Iterating yields frames in presentation order, decoded lazily; a source may be iterated
    again (a video is then re-opened).  Iteration raises :class:`CorruptVideoError` for damage
    found on the way unless the source was opened with ``allow_partial=True``.
    """

    path: Path
    name: str
    width: int
    height: int
    fps: float | None
    num_frames: int | None

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the file handles held by the source (idempotent)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, {self.width}x{self.height}, "
            f"fps={self.fps}, num_frames={self.num_frames})"
        )


def natural_sort_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers, so ``"2.jpg" < "10.jpg"`` (case-insensitive)."""
    parts = re.split(r"(\d+)", name)
    return (tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), name)

