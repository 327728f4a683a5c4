"""Video files decoded as a stream by PyAV: :class:`VideoFileSource` (corruption and truncation
checks, rotation; see :mod:`pipelines.sources`)."""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.stream import Disposition
from av.video.reformatter import VideoReformatter

from pipelines.errors import VideoDecodeError
from pipelines.sources.base import CorruptVideoError, Frame, FrameGapWarning, FrameSource, PartialVideoWarning
from seggpt_model.errors import one_line

__all__ = ["VideoFileSource"]

_IMAGE_DEMUXERS = frozenset({"image2", "tty"})


_TRUNCATION_TOLERANCE_S = 0.25


_TRUNCATION_TOLERANCE_FRAMES = 3


_REGULAR_RANGE = (0.75, 1.25)


_GAP_FACTOR = 2.5


def _orientation_from_matrix(m: np.ndarray) -> tuple[bool, bool, bool, float]:
    """``(transpose, flip_rows, flip_cols, angle)`` turning a frame upright.

    ``m`` is FFmpeg's 3x3 display matrix (9 ints, 16.16 fixed point, row major), which maps a
    stored pixel ``(x, y)`` to the displayed ``(x', y') = (a x + c y, b x + d y)`` with
    ``a, b, c, d = m[0], m[1], m[3], m[4]``.  For an axis-aligned matrix that is a transpose
    (when ``a = d = 0``) followed by flips given by the signs; other matrices are snapped to
    the nearest axis-aligned one.  ``angle`` is the counter-clockwise rotation in degrees.
    """
    a, b, c, d = (float(m[i]) for i in (0, 1, 3, 4))
    angle = math.degrees(math.atan2(b, a)) if (a or b) else 0.0
    if abs(a) + abs(d) < abs(b) + abs(c):
        return True, b < 0, c < 0, angle
    return False, d < 0, a < 0, angle


class VideoFileSource(FrameSource):
    """Frames of a video file, decoded lazily with PyAV (FFmpeg) and converted to RGB.

    Prefer :func:`open_source`, which documents the arguments and errors.  Decoding uses
    FFmpeg's own threads (``thread_type = "AUTO"``: frame and slice threads; frames still come
    out in order and are never shared between threads once returned); only the frames the
    decoder needs for reordering are held inside FFmpeg.  Conversion to RGB (and a size change,
    see below) is one swscale call through a :class:`~av.video.reformatter.VideoReformatter`
    kept for the whole iteration, followed by at most one copy (a row-wise ``memcpy`` removing
    FFmpeg's line padding, or the rotation).  The first video stream that is not cover art is
    used; if its resolution changes mid-stream, later frames are scaled to the first
    frame's size so that every frame has ``(height, width)``.
    """

    def __init__(self, path: Path, *, allow_partial: bool = False, fps: float | None = None) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        self.allow_partial = allow_partial
        self._warned_snap = False
        self._reformatter = None  # av VideoReformatter: one swscale context for all frames
        self._pending: tuple | None = None  # (container, stream, decode iterator, first Frame)
        self._open_handles: set = set()
        state = self._open()
        container, stream, _, first = state
        self._pending = state
        self.height, self.width = first.rgb.shape[:2]
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else (float(fps) if fps else None)
        self.num_frames = self._estimate_frames(container, stream)

    # ------------------------------------------------------------------ opening

    def _open(self):
        path = self.path
        if not os.access(path, os.R_OK):
            raise VideoDecodeError(f"{path}: cannot read the file (permission denied)")
        if path.stat().st_size == 0:
            raise VideoDecodeError(f"{path}: not a video (the file is empty)")
        try:
            container = av.open(str(path), mode="r")
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(f"{path}: not a readable video ({one_line(exc)})") from None
        except OSError as exc:
            raise VideoDecodeError(f"{path}: cannot read the file ({one_line(exc)})") from None
        try:
            fmt = container.format.name
            if fmt == "tty":
                raise VideoDecodeError(f"{path}: not a video (FFmpeg reads it as a text file)")
            if fmt in _IMAGE_DEMUXERS or fmt.endswith("_pipe"):
                kind = fmt[: -len("_pipe")] if fmt.endswith("_pipe") else fmt
                raise VideoDecodeError(
                    f"{path}: not a video (FFmpeg reads it as a single {kind} image); "
                    "put image frames in a folder instead"
                )
            stream = self._video_stream(container)
            stream.thread_type = "AUTO"
            self._transform = (False, False, False)
            frames = self._decode(container, stream)
            first_raw = None
            try:
                first_raw = next(frames)
            except StopIteration:
                pass
            except av.error.FFmpegError as exc:
                raise VideoDecodeError(f"{path}: cannot decode the first frame ({one_line(exc)})") from None
            if first_raw is None:
                raise VideoDecodeError(f"{path}: the video stream has no decodable frames")
            if first_raw.is_corrupt:
                raise VideoDecodeError(f"{path}: the first frame is corrupt")
            self._transform = self._orientation(stream, first_raw)
            self._size = (first_raw.width, first_raw.height)
            first = Frame(0, self._pts(first_raw, None, stream), self._to_rgb(first_raw))
            del first_raw
        except BaseException:
            container.close()
            raise
        self._open_handles.add(container)
        return container, stream, frames, first

    def _video_stream(self, container):
        videos = [
            s
            for s in container.streams.video
            if not (s.disposition & Disposition.attached_pic)  # skip cover art
        ]
        if not videos:
            kinds = sorted({"cover art" if s.type == "video" else s.type for s in container.streams})
            raise VideoDecodeError(f"{self.path}: no video stream (streams: {', '.join(kinds) or 'none'})")
        return videos[0]

    @staticmethod
    def _decode(container, stream):
        # A plain generator so the caller can close it; av.error.* propagate to the caller.
        yield from container.decode(stream)

    def _orientation(self, stream, frame) -> tuple[bool, bool, bool]:
        matrix = None
        if frame is not None:
            try:
                # inside the try: PyAV versions without this side-data API fall back below
                from av.sidedata.sidedata import Type

                sd = frame.side_data.get(Type.DISPLAYMATRIX)
                if sd is not None:
                    matrix = np.frombuffer(bytes(sd), dtype=np.int32)[:9]
            except Exception:  # side data API differences: fall back below
                matrix = None
            if matrix is None:
                rot = getattr(frame, "rotation", 0) or 0
                if rot:
                    matrix = self._rotation_matrix(rot)
        if matrix is None:
            tag = stream.metadata.get("rotate")
            try:
                cw = float(tag) if tag is not None else 0.0
            except ValueError:
                cw = 0.0
            matrix = self._rotation_matrix(-cw)
        transpose, flip_rows, flip_cols, angle = _orientation_from_matrix(matrix)
        snapped = (angle / 90.0) - round(angle / 90.0)
        if abs(snapped) * 90.0 > 1.0 and not self._warned_snap:
            self._warned_snap = True
            warnings.warn(
                f"{self.path}: rotation of {angle:.1f} degrees snapped to the nearest multiple of 90",
                stacklevel=3,
            )
        return transpose, flip_rows, flip_cols

    @staticmethod
    def _rotation_matrix(ccw_degrees: float) -> np.ndarray:
        t = math.radians(ccw_degrees)
        cos, sin = round(math.cos(t) * 65536), round(math.sin(t) * 65536)
        return np.array([cos, -sin, 0, sin, cos, 0, 0, 0, 1 << 30], dtype=np.int64)

    def _estimate_frames(self, container, stream) -> int | None:
        declared = stream.frames if stream.frames and stream.frames > 0 else None
        span = self._declared_duration(container, stream)
        estimate = round(span * self.fps) if span and self.fps else None
        if declared and estimate:
            return min(declared, max(estimate, 1))
        return declared or estimate

    @staticmethod
    def _declared_duration(container, stream) -> float | None:
        """Duration (s) the container declares for the video stream, or ``None``."""
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        tag = VideoFileSource._duration_tag(stream)
        if tag is not None:
            return tag
        if container.duration and len(container.streams) == 1:
            return container.duration / 1_000_000
        return None

    @staticmethod
    def _duration_tag(stream) -> float | None:
        """The Matroska/WebM per-track ``DURATION`` tag ("HH:MM:SS.nnnnnnnnn") in seconds."""
        tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
        if not tag:
            return None
        m = re.fullmatch(r"\s*(\d+):(\d+):(\d+(?:\.\d*)?)\s*", tag)
        if not m:
            return None
        return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))

    # ------------------------------------------------------------------ decoding

    def _to_rgb(self, frame) -> np.ndarray:
        """``(height, width, 3)`` uint8 RGB of a decoded frame, upright, C-contiguous, writeable."""
        w, h = self._size
        if self._reformatter is None:
            self._reformatter = VideoReformatter()
        # one size for every frame (a resolution change mid-stream is scaled to the first size)
        arr = self._reformatter.reformat(frame, format="rgb24", width=w, height=h).to_ndarray()
        transpose, flip_rows, flip_cols = self._transform
        if transpose:
            arr = arr.transpose(1, 0, 2)
        if flip_rows:
            arr = arr[::-1]
        if flip_cols:
            arr = arr[:, ::-1]
        if not (arr.flags.c_contiguous and arr.flags.writeable):
            if not (transpose or flip_rows or flip_cols) and arr.strides[1:] == (3, 1):
                # only line padding: copy whole rows (numpy copies 3-byte pixels one by one)
                rows, cols = arr.shape[0], arr.shape[1] * 3
                arr = arr.reshape(rows, cols).copy().reshape(arr.shape)
            else:
                arr = np.array(arr, order="C", copy=True)
        return arr

    def _pts(self, frame, previous: float | None, stream) -> float | None:
        if frame.pts is not None and frame.time_base is not None:
            return float(frame.pts * frame.time_base)
        if previous is not None:
            rate = stream.average_rate or stream.guessed_rate
            if rate:
                return previous + 1.0 / float(rate)
        return None

    def _problem(self, good: int, reason: str) -> None:
        """Raise CorruptVideoError, or warn when allow_partial (the caller then stops)."""
        if self.allow_partial:
            warnings.warn(
                f"{self.path}: corrupt after frame {good} ({reason}); keeping the first {good} frames",
                PartialVideoWarning,
                stacklevel=3,
            )
            return
        raise CorruptVideoError(
            f"{self.path}: video is corrupt after frame {good} ({reason}); "
            f"allow_partial keeps the first {good} frames",
            good,
        )

    def __iter__(self) -> Iterator[Frame]:
        if self._pending is not None:
            state, self._pending = self._pending, None
        else:
            state = self._open()
        container, stream, frames, first = state
        del state
        try:
            tb = stream.time_base
            start = float(stream.start_time * tb) if stream.start_time is not None and tb else None
            last_pts = first.pts
            last_dur = None
            good = 1
            nominal = 1.0 / self.fps if self.fps else None
            regular = nominal is not None  # until an irregular interval shows a VFR stream
            yield first
            del first
            while True:
                try:
                    raw = next(frames)
                except StopIteration:
                    break
                except av.error.FFmpegError as exc:
                    self._problem(good, f"decoding failed: {one_line(exc)}")
                    return
                if raw.is_corrupt:
                    self._problem(good, "the decoder flagged a damaged frame")
                    return
                pts = self._pts(raw, last_pts, stream)
                if regular and pts is not None and last_pts is not None:
                    step = (pts - last_pts) / nominal
                    if step > _GAP_FACTOR and good >= 3:
                        warnings.warn(
                            f"{self.path}: timestamps jump from {last_pts:.3f} s to {pts:.3f} s after "
                            f"frame {good}: about {round(step) - 1} frames are missing (damaged file?)",
                            FrameGapWarning,
                            stacklevel=2,
                        )
                        regular = False
                    elif not _REGULAR_RANGE[0] <= step <= _REGULAR_RANGE[1]:
                        regular = False
                rgb = self._to_rgb(raw)
                if raw.duration and raw.time_base is not None:
                    last_dur = float(raw.duration * raw.time_base)
                del raw
                frame = Frame(good, pts, rgb)
                del rgb
                last_pts = pts
                good += 1
                yield frame
                del frame
            self._check_end(container, stream, start, last_pts, last_dur, good)
        finally:
            self._open_handles.discard(container)
            try:
                frames.close()
                container.close()
            except Exception:  # already closed by close()
                pass

    def _check_end(self, container, stream, start, last_pts, last_dur, good) -> None:
        declared = self._declared_duration(container, stream)
        if not declared or last_pts is None:
            return
        interval = 1.0 / self.fps if self.fps else 0.0
        decoded_end = last_pts + (last_dur if last_dur else interval)
        if stream.duration:
            expected_end = declared + (start or 0.0)
        elif self._duration_tag(stream) is not None:
            expected_end = declared  # the Matroska tag is already the end timestamp
        else:
            expected_end = declared + (container.start_time or 0) / 1_000_000
        tolerance = max(_TRUNCATION_TOLERANCE_S, _TRUNCATION_TOLERANCE_FRAMES * interval)
        if expected_end - decoded_end > tolerance:
            self._problem(
                good,
                f"frames end at {decoded_end:.2f} s but the container declares {expected_end:.2f} s; truncated?",
            )

    def close(self) -> None:
        """Close the container held since opening (idempotent).

        Call it after iteration has finished (or from the thread that iterates): a running
        iteration closes its own container when it ends or when its generator is closed.
        """
        pending, self._pending = self._pending, None
        if pending is not None:
            pending[2].close()
            pending[0].close()
        for container in list(self._open_handles):
            self._open_handles.discard(container)
            try:
                container.close()
            except Exception:
                pass

