"""Frame sources: stream the frames of a video file or of a folder of images.

``open_source(path)`` returns a :class:`FrameSource` that yields :class:`Frame` objects
(``rgb``: ``(H, W, 3)`` ``uint8``, upright, C-contiguous) one at a time, in presentation
order.  Nothing is read ahead by the source itself and it keeps no reference to the frames
it has yielded, so memory does not grow with the length of the video (bounding the number
of frames alive is the job of the consumer, e.g. :func:`pipelines.runner.run_pipeline`).

Validation happens in :func:`open_source`, before any output is created: a missing or
unreadable path, a file that is not a video (text, a single image, an empty file), a
container without a video stream (audio only), a video without decodable frames and a
folder without images all raise :class:`~pipelines.errors.VideoDecodeError` with a one-line
message naming the path.  The first frame is decoded at open time and kept for the iterator.

Corrupt or truncated videos
---------------------------
FFmpeg hides much damage: demuxers resynchronise or stop quietly at garbage, decoders
conceal broken macroblocks.  While iterating, a video source detects:

1. a demux/decode error raised by FFmpeg (``av.error.FFmpegError``), e.g. garbage in the
   ``mdat`` of an mp4/mov (bad NAL lengths) or a truncated fast-start mp4;
2. a frame flagged corrupt by FFmpeg (``frame.is_corrupt``), seen with garbage or a cut in
   AVI (MPEG-4 part 2) and Matroska files;
3. an early end: the decoded frames stop well before the duration the container declares for
   the video stream (mp4/mov/avi stream duration, the Matroska/WebM per-track ``DURATION``
   tag, or the container duration when the video is its only stream).  This catches files
   truncated in the middle and Matroska/WebM files whose demuxer gives up at garbage.
   Tolerance: ``max(0.25 s, 3 frame intervals)``.

Not an error but a :class:`FrameGapWarning`: a timestamp jump of more than 2.5 frame
intervals in a stream whose timestamps were regular so far (frames dropped in the middle,
e.g. a Matroska demuxer skipping a damaged block group and resynchronising).  The frames after
the gap are still yielded, since stopping there would lose the rest of the video.

What is *not* detected: an mp4/mov truncated before its ``moov`` index (the default layout,
index at the end) cannot be opened at all, so :func:`open_source` rejects it whatever
``allow_partial`` says; damage the decoder conceals inside an otherwise intact container
(e.g. bit flips in one frame's payload of an mp4 or WebM) yields frames with artefacts and no
signal; a truncation that loses less than the tolerance above.  The count of frames declared
by the container (``stream.frames``) is deliberately *not* compared with the number decoded:
edit lists (e.g. a clip cut with ``ffmpeg -ss ... -c copy``) make mp4 files legitimately
decode fewer frames than they declare.

On detection the iterator raises :class:`CorruptVideoError` (a ``VideoDecodeError``) "...
corrupt after frame N ...", where N is the number of good frames already yielded; with
``allow_partial=True`` it instead issues one :class:`PartialVideoWarning` and stops cleanly
(a flagged-corrupt frame is not yielded; the last good frame may still carry artefacts the
decoder concealed when the garbage starts inside it).  A frame folder with an unreadable image behaves the
same way (the message names the image).

Rotation
--------
Video frames are turned upright from the display matrix FFmpeg attaches to decoded frames
(mp4/mov track matrix, Matroska/WebM projection pose, ...; read from the frame's ``DISPLAYMATRIX``
side data, falling back to a legacy ``rotate`` stream tag).  Rotations by multiples of 90
degrees and mirror flips are applied exactly like the ``ffmpeg`` command line's autorotate;
other angles are snapped to the nearest multiple of 90 degrees with a warning.  ``width`` and
``height`` describe the upright frames.  Images in frame folders are turned upright from
their EXIF orientation tag.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.stream import Disposition
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageOps

from pipelines.errors import VideoDecodeError
from seggpt_model.errors import one_line

__all__ = [
    "IMAGE_EXTENSIONS",
    "CorruptVideoError",
    "Frame",
    "FrameFolderSource",
    "FrameGapWarning",
    "FrameSource",
    "PartialVideoWarning",
    "VideoFileSource",
    "load_image",
    "natural_sort_key",
    "open_source",
]

#: File name extensions (lower case) recognised as frames in a frame folder.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})

# FFmpeg demuxers that read single images or text rather than video.
_IMAGE_DEMUXERS = frozenset({"image2", "tty"})

# Early-end tolerance of the truncation check (seconds, and frame intervals).
_TRUNCATION_TOLERANCE_S = 0.25
_TRUNCATION_TOLERANCE_FRAMES = 3
# Gap check: intervals within this factor of 1/fps count as regular; a jump of more than
# _GAP_FACTOR intervals after regular ones means missing frames.
_REGULAR_RANGE = (0.75, 1.25)
_GAP_FACTOR = 2.5


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


def open_source(path: str | os.PathLike, *, allow_partial: bool = False, fps: float | None = None) -> FrameSource:
    """Open a video file or a folder of frames, validating it eagerly.

    Args:
        path: a video file (any container/codec FFmpeg reads: mp4, mkv, webm, avi, mov, ...)
            or a folder of ``.jpg``/``.jpeg``/``.png`` frames (case-insensitive; other files
            and hidden files are ignored), taken in natural name order (``2`` before ``10``).
        allow_partial: when the video turns out corrupt or truncated while iterating, warn
            (:class:`PartialVideoWarning`) and stop after the good frames instead of raising
            :class:`CorruptVideoError`.
        fps: frame rate (frames per second) to report for a frame folder; for a video it is
            used only when the container declares no rate.

    Returns:
        A :class:`VideoFileSource` or :class:`FrameFolderSource`; its first frame has already
        been decoded.  Close it (or use it as a context manager).

    Raises:
        VideoDecodeError: missing or unreadable path; not a video (text, a single image, an
            empty file); no video stream; no decodable frame; a folder without images or
            whose first image cannot be read.  The message is one line naming the path.
        ValueError: ``fps`` is not a positive finite number.
    """
    if fps is not None and not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    p = Path(path)
    if not p.exists():
        raise VideoDecodeError(f"{p}: no such file or directory")
    if p.is_dir():
        return FrameFolderSource(p, allow_partial=allow_partial, fps=fps)
    return VideoFileSource(p, allow_partial=allow_partial, fps=fps)


# --------------------------------------------------------------------------- video files


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


# --------------------------------------------------------------------------- frame folders


def load_image(file: str | os.PathLike) -> np.ndarray:
    """Decode one image file as ``(H, W, 3)`` uint8 RGB, C-contiguous.

    Decoded by content (a ``.jpg`` that is really a PNG works), turned upright from its EXIF
    orientation, 16-bit gray scaled (not clipped) to 8 bits, other modes converted to RGB.

    Raises:
        OSError / PIL.UnidentifiedImageError: the file cannot be read as an image (callers wrap it).
        VideoDecodeError: an unexpected decoded layout.
    """
    with Image.open(file) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit gray: scale, don't clip
            gray = np.asarray(im, dtype=np.float32) / 257.0
            arr = np.repeat(np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
            return np.ascontiguousarray(arr)
        if im.mode != "RGB":
            im = im.convert("RGB")
        arr = np.array(im, dtype=np.uint8, order="C")
    if arr.ndim != 3 or arr.shape[2] != 3:  # pragma: no cover - defensive
        raise VideoDecodeError(f"{file}: unexpected image layout {arr.shape}")
    return arr


class FrameFolderSource(FrameSource):
    """Frames of a folder of ``.jpg``/``.jpeg``/``.png`` images, decoded lazily with Pillow.

    Files are taken in natural name order (:func:`natural_sort_key`); hidden files and other
    extensions are ignored.  Images are converted to RGB (16-bit gray scaled to 8 bits) and
    turned upright from their EXIF orientation.  Every image must have the size of the first one (otherwise
    :class:`~pipelines.errors.VideoDecodeError` naming the file, even with
    ``allow_partial``); an unreadable image raises :class:`CorruptVideoError` naming it, or
    with ``allow_partial`` warns and stops.  ``Frame.pts`` is ``None``.

    Prefer :func:`open_source`, which documents the arguments and errors.
    """

    def __init__(self, path: Path, *, allow_partial: bool = False, fps: float | None = None) -> None:
        self.path = Path(path)
        self.name = self.path.resolve().name or str(self.path)
        self.allow_partial = allow_partial
        self.fps = float(fps) if fps else None
        if not os.access(self.path, os.R_OK | os.X_OK):
            raise VideoDecodeError(f"{self.path}: cannot read the folder (permission denied)")
        try:
            entries = [e for e in os.scandir(self.path)]
        except OSError as exc:
            raise VideoDecodeError(f"{self.path}: cannot read the folder ({one_line(exc)})") from None
        names = [
            e.name
            for e in entries
            if not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
            and e.is_file()
        ]
        if not names:
            raise VideoDecodeError(
                f"{self.path}: folder has no frames (no .jpg/.jpeg/.png files)"
            )
        self.files = [self.path / n for n in sorted(names, key=natural_sort_key)]
        self.num_frames = len(self.files)
        try:
            first = load_image(self.files[0])
        except VideoDecodeError:
            raise
        except Exception as exc:
            raise VideoDecodeError(f"{self.files[0]}: cannot read the image ({one_line(exc)})") from None
        self.height, self.width = first.shape[:2]
        self._first: np.ndarray | None = first

    def __iter__(self) -> Iterator[Frame]:
        first, self._first = self._first, None
        for index, file in enumerate(self.files):
            if index == 0 and first is not None:
                rgb = first
                first = None
            else:
                try:
                    rgb = load_image(file)
                except Exception as exc:
                    reason = f"cannot read {file.name}: {one_line(exc)}"
                    if self.allow_partial:
                        warnings.warn(
                            f"{self.path}: corrupt after frame {index} ({reason}); "
                            f"keeping the first {index} frames",
                            PartialVideoWarning,
                            stacklevel=2,
                        )
                        return
                    raise CorruptVideoError(
                        f"{file}: corrupt frame after frame {index} ({one_line(exc)}); "
                        f"allow_partial keeps the first {index} frames",
                        index,
                    ) from None
            if rgb.shape[:2] != (self.height, self.width):
                raise VideoDecodeError(
                    f"{file}: frame size {rgb.shape[1]}x{rgb.shape[0]} differs from the first "
                    f"frame's {self.width}x{self.height}"
                )
            yield Frame(index, None, rgb)
            del rgb

    def close(self) -> None:
        """Drop the cached first frame (idempotent); folders hold no open files."""
        self._first = None
