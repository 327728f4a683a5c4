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
from pathlib import Path

from pipelines.errors import VideoDecodeError
from pipelines.sources.base import (IMAGE_EXTENSIONS, CorruptVideoError, Frame, FrameGapWarning, FrameSource,
                                    PartialVideoWarning, natural_sort_key)
from pipelines.sources.folder import FrameFolderSource, load_image
from pipelines.sources.video import VideoFileSource

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
