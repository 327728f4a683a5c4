"""A contiguous range of another source's frames (``vos run --frames START:STOP``)."""

from __future__ import annotations

from typing import Iterator

from pipelines.sources.base import Frame, FrameSource


def parse_frame_range(text: str) -> tuple[int, int | None]:
    """``"START:STOP"`` -> ``(START, STOP)``: a Python slice of the decoded frames, 0-based, STOP
    excluded. ``START`` may be left out (0), ``STOP`` too (to the end: ``None``).

    Raises:
        ValueError: not ``START:STOP`` with integers ``0 <= START < STOP`` (one line, naming the text).
    """
    start_text, sep, stop_text = str(text).strip().partition(":")
    start_text, stop_text = start_text.strip(), stop_text.strip()
    if not sep or not all(t == "" or t.isdigit() for t in (start_text, stop_text)):
        raise ValueError(f"--frames {text!r}: expected START:STOP, 0-based frame indices with STOP "
                         f"excluded (e.g. 0:10, 25:, :50)")
    start = int(start_text) if start_text else 0
    stop = int(stop_text) if stop_text else None
    if stop is not None and stop <= start:
        raise ValueError(f"--frames {text!r}: STOP must be greater than START (no frame in the range)")
    return start, stop


class FrameRange(FrameSource):
    """The frames ``start <= index < stop`` of ``source``, with their own indices and timestamps.

    Frames before ``start`` are decoded and dropped (a stream cannot seek exactly); decoding
    stops after frame ``stop - 1`` (the inner iterator is closed, so a video file is released at
    once). Every other attribute (``path``, ``name``, ``width``, ``height``, ``fps``, a folder's
    ``files``...) is the source's; ``num_frames`` is the range's length when the source's count is
    known. A range that starts beyond the video's end yields nothing.

    Args:
        source: any :class:`FrameSource` (closed by :meth:`close`).
        start: first frame index (>= 0).
        stop: index after the last frame, or ``None`` for the end of the video.

    Raises:
        ValueError: ``start < 0`` or ``stop <= start``.
    """

    def __init__(self, source: FrameSource, start: int = 0, stop: int | None = None) -> None:
        if start < 0 or (stop is not None and stop <= start):
            raise ValueError(f"bad frame range {start}:{stop if stop is not None else ''}")
        self.source, self.start, self.stop = source, int(start), None if stop is None else int(stop)
        n = source.num_frames
        if n is None:
            self.num_frames = None
        else:
            self.num_frames = max(0, (n if self.stop is None else min(n, self.stop)) - self.start)

    def __getattr__(self, name: str):
        if name == "source":            # not set yet (unpickling, or a failed __init__)
            raise AttributeError(name)
        return getattr(self.source, name)

    def __iter__(self) -> Iterator[Frame]:
        frames = iter(self.source)
        try:
            for frame in frames:
                if self.stop is not None and frame.index >= self.stop:
                    break
                if frame.index >= self.start:
                    yield frame
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        self.source.close()

    def __repr__(self) -> str:
        return f"FrameRange({self.source!r}, {self.start}:{'' if self.stop is None else self.stop})"
