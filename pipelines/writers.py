"""Writer stages: per-frame DAVIS palette PNGs, a lossless mask video and an H.264 overlay video.

Every writer follows one protocol, :class:`FrameWriter`: ``write(frame, labels)``, ``close()`` and
``abort()``, so a caller hands each result to all its writers alike::

    for w in writers:
        w.write(frame, labels)      # frame: pipelines.sources.Frame, labels: (H, W) uint8

* Frames arrive in output order. ``frame.rgb`` is used by the overlay, ``frame.pts`` (seconds, or
  ``None``) by the videos; the PNG writer names its files by its own running count
  (``00000.png``, ``00001.png``, ...), not by ``frame.index``.
* ``close()`` finalises the output (waits for pending encodes, flushes the encoder, renames the
  temporary file to the final name); ``abort()`` removes what was written. Both are idempotent,
  and ``abort()`` after ``close()`` does nothing.
* As a context manager a writer calls ``close()`` when the block succeeds and ``abort()`` when it
  raises, so an interrupted run never leaves a file that looks finished.
* Video writers write to ``<stem>.tmp<suffix>`` next to the final path (the real extension is kept
  so FFmpeg picks the right muxer) and :func:`os.replace` it on ``close()``; PNGs are written with
  :func:`seggpt_model.files.atomic_write`.
* Constructors check that the output location can be written and raise
  :class:`~pipelines.errors.OutputError` (one line naming the path) otherwise; so do ``write`` and
  ``close`` when the disk or the encoder fails. Bad arguments (shapes, dtypes) raise ``ValueError``
  (a ``frame`` that is not a :class:`~pipelines.sources.Frame`: ``TypeError``).

Label maps are ``(H, W)`` ``uint8`` arrays (0 background, 1..254 objects, 255 void); frames are
``(H, W, 3)`` ``uint8`` RGB. The palette is passed in by the caller (``vos.davis.davis_palette()``)
so that ``pipelines`` does not import ``vos``. No torch here.

Speed (issue 15: at 45 frames/s a writer has ~22 ms per frame): PNGs are encoded by a small thread
pool (zlib and Pillow release the GIL), the overlay is blended only inside the labels' bounding box
and drawn straight into the encoder's frame buffer, and each video writer keeps one swscale context
for its colour conversion. ``benchmarks/bench_io.py`` measures the writers.
"""

from __future__ import annotations

import collections
import math
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from pipelines.errors import OutputError
from pipelines.sources import Frame
from seggpt_model.errors import one_line
from seggpt_model.files import atomic_write

__all__ = [
    "PNG_COMPRESS_LEVEL",
    "FrameWriter",
    "PalettePngWriter",
    "MaskVideoWriter",
    "OverlayVideoWriter",
    "overlay_masks",
    "temp_path_for",
]

#: zlib level of the palette PNGs. Measured on 480p DAVIS masks (854x480, Pillow, one core):
#: level 1: 0.8 ms, 4.1 KB per frame; 4: 1.4 ms, 2.4 KB; 6 (Pillow's default): 1.6 ms, 2.2 KB;
#: 9: 3.3 ms, 1.8 KB. Level 4 is near the default size for less time; all are far below model time.
PNG_COMPRESS_LEVEL = 4


def temp_path_for(path: str | os.PathLike[str]) -> Path:
    """The temporary name a video writer uses for ``path``: ``dir/name.mp4`` -> ``dir/name.tmp.mp4``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.tmp{p.suffix}")


def _check_palette(palette: np.ndarray) -> np.ndarray:
    pal = np.asarray(palette)
    if pal.shape != (256, 3) or pal.dtype != np.uint8:
        raise ValueError(f"palette must be a (256, 3) uint8 array, got shape {pal.shape} {pal.dtype}")
    return np.ascontiguousarray(pal)


def _check_labels(labels: np.ndarray, shape: tuple[int, int] | None) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"labels must be a 2-D (H, W) array, got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"labels have shape {arr.shape}, expected (H, W) = {shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    elif arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"labels must be uint8 label ids, got dtype {arr.dtype}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise ValueError(f"labels must be in 0..255, got {int(arr.min())}..{int(arr.max())}")
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def _check_size(width: int, height: int) -> tuple[int, int]:
    w, h = int(width), int(height)
    if w <= 0 or h <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    return w, h


def _as_rate(fps: float | Fraction) -> Fraction:
    """A frame rate as a Fraction (floats such as 29.97003 become 30000/1001)."""
    if isinstance(fps, Fraction):
        rate = fps
    elif isinstance(fps, int):
        rate = Fraction(fps)
    else:
        f = float(fps)
        if not math.isfinite(f):
            raise ValueError(f"fps must be a positive finite number, got {fps!r}")
        rate = Fraction(f).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return rate


def _time_base_for(rate: Fraction) -> Fraction:
    """A time base in which both one frame at ``rate`` and ~11 µs are whole numbers of ticks.

    ``1 / lcm(90000, numerator)``: 1/90000 for 25, 30 and 30000/1001 fps, 1/360000 for
    24000/1001. Falls back to 1/90000 (frame durations rounded to a tick) for exotic rates.
    """
    ticks = math.lcm(90000, rate.numerator)
    return Fraction(1, ticks if ticks < 2**31 else 90000)


def _prepare_file(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Check (and create) the folder of ``path``; return (final path, temporary path)."""
    final = Path(path)
    if final.name in ("", ".", ".."):
        raise OutputError(f"{final}: not a file name")
    if final.is_dir():
        raise OutputError(f"{final}: is a directory, cannot write a video there")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{final}: cannot create its folder: {one_line(e)}") from None
    if not final.parent.is_dir():
        raise OutputError(f"{final}: its parent {final.parent} is not a directory")
    tmp = temp_path_for(final)
    if tmp.is_dir():
        raise OutputError(f"{tmp}: is a directory, cannot write a temporary file there")
    return final, tmp


def _remove(path: Path) -> None:
    """Delete ``path`` if it exists; errors are ignored (used on cleanup paths only)."""
    try:
        path.unlink()
    except OSError:
        pass


def _check_frame(frame: Frame) -> Frame:
    if not isinstance(frame, Frame):
        raise TypeError(f"frame must be a pipelines.sources.Frame, got {type(frame).__name__}")
    if frame.index < 0:
        raise ValueError(f"frame index must be >= 0, got {frame.index}")
    return frame


@runtime_checkable
class FrameWriter(Protocol):
    """The protocol of every writer stage (and of anything else a caller loops over as a writer).

    Methods:
        write(frame, labels): append one result. ``frame`` is the
            :class:`~pipelines.sources.Frame` the labels belong to (``index``, ``pts`` in seconds or
            ``None``, ``rgb`` ``(H, W, 3)`` uint8); ``labels`` is its ``(H, W)`` ``uint8`` label map
            (0 background, 1..254 objects, 255 void; bool or in-range integer arrays are
            converted). Frames arrive in output order. Returns ``None``. Raises ``ValueError``
            (shapes, dtypes), ``TypeError`` (``frame`` not a ``Frame``),
            :class:`~pipelines.errors.OutputError` (the output cannot be written; possibly for an
            earlier frame when encoding runs in the background), ``RuntimeError`` (already closed
            or aborted).
        close(): finish the output so it appears under its final name; raises ``OutputError``
            when that fails (and then leaves nothing behind). Idempotent.
        abort(): remove everything written so far (also pending work). Idempotent; does
            nothing after a successful ``close()``.
    """

    def write(self, frame: Frame, labels: np.ndarray) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class _Writer:
    """Shared close/abort/context-manager code of the writers in this module."""

    _closed = False
    _aborted = False

    def __enter__(self):  # noqa: ANN204 (returns the concrete writer)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def finished(self) -> bool:
        """True once :meth:`close` or :meth:`abort` has run."""
        return self._closed or self._aborted

    def _check_open(self) -> None:
        if self._closed or self._aborted:
            raise RuntimeError(f"{type(self).__name__} is already {'closed' if self._closed else 'aborted'}")

    def write(self, frame: Frame, labels: np.ndarray) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def abort(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# palette PNGs
# ----------------------------------------------------------------------------------------------


def default_png_workers() -> int:
    """Threads :class:`PalettePngWriter` encodes with by default: ``min(4, os.cpu_count())``."""
    return max(1, min(4, os.cpu_count() or 1))


class PalettePngWriter(_Writer):
    """One palette-mode PNG per frame: ``out_dir/00000.png``, ``out_dir/00001.png``, ...

    The files are what DAVIS tools read: mode ``P``, 8-bit, pixel values = label ids, with the given
    256-colour palette. The ``n``-th frame given to :meth:`write` (counting from 0) becomes
    ``{n:05d}.png``, unless ``name_of`` gives each frame's file name (``vos run`` on a frame folder
    names each result after its input frame: ``00005.jpg`` -> ``00005.png``). Each file is written with :func:`seggpt_model.files.atomic_write` (temporary
    name in the same folder, then a rename), so a file with the final name is always complete; the
    whole folder is meant to be a temporary folder that the caller renames when the run succeeds,
    which is why the per-file ``fsync`` is off by default.

    Encoding runs on a small thread pool (zlib and Pillow release the GIL), at most
    ``2 * workers`` frames behind :meth:`write`. An encoding or disk error of a frame is raised as
    :class:`~pipelines.errors.OutputError` from a later :meth:`write` or from :meth:`close`, which
    then removes every PNG written; :meth:`abort` cancels pending frames, waits for the running
    ones and removes every PNG.

    Args:
        out_dir: the folder to write into; created (with parents) if missing.
        palette: ``(256, 3)`` ``uint8`` RGB colours (``vos.davis.davis_palette()`` for DAVIS).
        compress_level: zlib level 0..9 (default :data:`PNG_COMPRESS_LEVEL`).
        workers: encoding threads; ``None``: :func:`default_png_workers`; ``0``: encode inside
            :meth:`write` (an error is then raised by the ``write`` of that frame).
        fsync: flush each PNG to disk before its rename (off by default, see above).
        name_of: ``frame -> file name`` (``"00005.png"``), or None for ``{n:05d}.png``.

    Raises:
        OutputError: ``out_dir`` cannot be created or written (e.g. a parent is a regular file).
        ValueError: ``palette`` is not ``(256, 3)`` uint8, or a bad level or worker count.
    """

    def __init__(self, out_dir: str | os.PathLike[str], palette: np.ndarray,
                 compress_level: int = PNG_COMPRESS_LEVEL, *, workers: int | None = None,
                 fsync: bool = False, name_of=None) -> None:
        self.out_dir = Path(out_dir)
        self._name_of = name_of
        self._palette = _check_palette(palette).tobytes()
        if not 0 <= int(compress_level) <= 9:
            raise ValueError(f"compress_level must be in 0..9, got {compress_level}")
        self.compress_level = int(compress_level)
        self.workers = default_png_workers() if workers is None else int(workers)
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.fsync = bool(fsync)
        self._created_dir = not self.out_dir.exists()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.out_dir}: cannot create output folder: {one_line(e)}") from None
        if not self.out_dir.is_dir():
            raise OutputError(f"{self.out_dir}: exists and is not a folder")
        try:
            with tempfile.TemporaryFile(dir=self.out_dir):
                pass
        except OSError as e:
            raise OutputError(f"{self.out_dir}: output folder is not writable: {one_line(e)}") from None
        self._shape: tuple[int, int] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: collections.deque[Future] = collections.deque()
        self._error: OutputError | None = None
        #: The PNG paths accepted so far, in frame order (those still being encoded included).
        self.written: list[Path] = []

    @property
    def count(self) -> int:
        """Number of frames accepted by :meth:`write` so far."""
        return len(self.written)

    def path_for(self, index: int) -> Path:
        """``out_dir / f"{index:05d}.png"``."""
        return self.out_dir / f"{int(index):05d}.png"

    def _save(self, final: Path, data: bytes, size: tuple[int, int]) -> None:
        """Encode one label map (``data``: its ``H * W`` bytes, ``size``: ``(W, H)``) to ``final``."""
        im = Image.frombuffer("P", size, data, "raw", "P", 0, 1)
        im.putpalette(self._palette)
        try:
            atomic_write(final, lambda f: im.save(f, format="PNG", compress_level=self.compress_level),
                         fsync=self.fsync)
        except OSError as e:
            raise OutputError(f"{final}: cannot write: {one_line(e)}") from None

    def _raise_error(self) -> None:
        if self._error is not None:
            raise OutputError(str(self._error))

    def _collect(self, future: Future) -> None:
        """Wait for ``future``; keep its OutputError as the writer's first error."""
        try:
            future.result()
        except OutputError as e:
            if self._error is None:
                self._error = e

    def write(self, frame: Frame, labels: np.ndarray) -> None:
        """Write the next label map to ``out_dir/{count:05d}.png`` (or ``out_dir/name_of(frame)``).

        Args:
            frame: the :class:`~pipelines.sources.Frame` the labels belong to (used for the file
                name only with ``name_of``; otherwise the name follows the order of the calls).
            labels: ``(H, W)`` ``uint8`` label ids 0..255 (bool or other integer dtypes in range are
                converted); every frame must have the shape of the first. Copied, so the caller may
                reuse the array at once.

        Raises:
            ValueError: bad shape or dtype, or a negative ``frame.index``. TypeError: ``frame`` is
                not a ``Frame``.
            OutputError: this frame's file, or that of an earlier frame still being encoded, cannot
                be written.
            RuntimeError: the writer was already closed or aborted.
        """
        self._check_open()
        _check_frame(frame)
        self._raise_error()
        arr = _check_labels(labels, self._shape)
        self._shape = arr.shape  # type: ignore[assignment]
        final = self.path_for(len(self.written)) if self._name_of is None else self.out_dir / self._name_of(frame)
        job = (final, arr.tobytes(), (arr.shape[1], arr.shape[0]))
        if self.workers == 0:
            self._save(*job)
            self.written.append(final)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="png-writer")
        self._pending.append(self._pool.submit(self._save, *job))
        self.written.append(final)
        while self._pending and (self._pending[0].done() or len(self._pending) > 2 * self.workers):
            self._collect(self._pending.popleft())
        self._raise_error()

    def _drain(self, cancel: bool) -> None:
        """Finish (or with ``cancel``, drop) the pending encodes and stop the threads."""
        while self._pending:
            future = self._pending.popleft()
            if not (cancel and future.cancel()):
                if cancel:
                    future.exception()  # wait; the file is removed anyway
                else:
                    self._collect(future)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def close(self) -> None:
        """Wait until every PNG is written.

        Raises:
            OutputError: a PNG could not be written; every PNG written is then removed (as by
                :meth:`abort`).
        """
        if self._closed or self._aborted:
            return
        self._drain(cancel=False)
        if self._error is not None:
            self.abort()
            self._raise_error()
        self._closed = True

    def abort(self) -> None:
        """Drop pending frames and remove every PNG this writer wrote, and ``out_dir`` if it created
        it and it is empty."""
        if self._closed or self._aborted:
            return
        self._aborted = True
        self._drain(cancel=True)
        for p in self.written:
            _remove(p)
        if self._created_dir:
            try:
                self.out_dir.rmdir()
            except OSError:
                pass


# ----------------------------------------------------------------------------------------------
# videos
# ----------------------------------------------------------------------------------------------


class _VideoWriter(_Writer):
    """Opens ``<stem>.tmp<suffix>``, encodes frames with timestamps, renames on close."""

    def _open(self, path: str | os.PathLike[str], codec: str, width: int, height: int,
              fps: float | Fraction, pix_fmt: str, codec_options: dict[str, str],
              container_options: dict[str, str]) -> None:
        self.path, self.tmp_path = _prepare_file(path)
        self.rate = _as_rate(fps)
        self.time_base = _time_base_for(self.rate)
        self._frame_ticks = self.rate.denominator * self.time_base.denominator / self.rate.numerator
        self._last_ticks: int | None = None
        self._first_pts: float | None = None
        self.frames_written = 0
        try:
            self._container = av.open(str(self.tmp_path), mode="w", options=container_options)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            _remove(self.tmp_path)
            raise OutputError(f"{self.path}: cannot open for writing: {one_line(e)}") from None
        try:
            stream = self._container.add_stream(codec, rate=self.rate, options=codec_options)
            stream.width = width
            stream.height = height
            stream.pix_fmt = pix_fmt
            stream.time_base = self.time_base
            stream.codec_context.time_base = self.time_base
            self._stream = stream
        except (av.error.FFmpegError, ValueError) as e:
            self._discard()
            raise OutputError(f"{self.path}: cannot set up the {codec} encoder: {one_line(e)}") from None

    def _next_ticks(self, pts: float | None) -> int:
        """Timestamp of the next frame in ticks of :attr:`time_base`.

        ``pts=None``: one frame duration after the previous frame (0 for the first). Otherwise
        ``pts`` seconds relative to the first given pts (so the video starts at 0); a timestamp
        that is not after the previous frame's is moved to one tick after it.
        """
        if pts is None:
            ticks = 0 if self._last_ticks is None else round(self._last_ticks + self._frame_ticks)
        else:
            p = float(pts)
            if not math.isfinite(p):
                raise ValueError(f"pts must be a finite number of seconds, got {pts!r}")
            if self._first_pts is None:
                self._first_pts = p if self._last_ticks is None else p - float(
                    self._last_ticks * self.time_base) - float(1 / self.rate)
            ticks = round((p - self._first_pts) / self.time_base)
        if self._last_ticks is not None and ticks <= self._last_ticks:
            ticks = self._last_ticks + 1
        self._last_ticks = ticks
        return ticks

    def _encode(self, frame: av.VideoFrame | None) -> None:
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"{self.path}: cannot write video: {one_line(e)}") from None

    def _write_frame(self, frame: av.VideoFrame, pts: float | None) -> None:
        frame.pts = self._next_ticks(pts)
        frame.time_base = self.time_base
        self._encode(frame)
        self.frames_written += 1

    def _discard(self) -> None:
        container = getattr(self, "_container", None)
        self._container = None
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass
        _remove(self.tmp_path)

    def close(self) -> None:
        """Flush the encoder, finish the file and rename it to its final name.

        Raises:
            OutputError: no frame was written (nothing is left behind: an empty video is not a
                result), or flushing or renaming failed (the temporary file is removed).
        """
        if self._closed or self._aborted:
            return
        if self.frames_written == 0:
            self._aborted = True
            self._discard()
            raise OutputError(f"{self.path}: no frames were written; no video created")
        try:
            self._encode(None)
            self._container.close()
            self._container = None
            os.replace(self.tmp_path, self.path)
        except (OutputError, av.error.FFmpegError, OSError) as e:
            self._aborted = True
            self._discard()
            if isinstance(e, OutputError):
                raise
            raise OutputError(f"{self.path}: cannot finish video: {one_line(e)}") from None
        self._closed = True

    def abort(self) -> None:
        """Stop encoding and delete the temporary file; the final path is not touched."""
        if self._closed or self._aborted:
            return
        self._aborted = True
        self._discard()


class MaskVideoWriter(_VideoWriter):
    """Lossless video of label maps: FFV1, ``gray`` pixels, any size (odd sizes included).

    Every label value 0..255 is stored exactly (decode with PyAV's ``to_ndarray(format="gray")``
    and you get the label map back). The stream is intra-only (every frame a key frame) and tagged
    full range. Use a ``.mkv`` path (Matroska; ``.nut``/``.avi`` also carry FFV1).

    Args:
        path: final file name, e.g. ``out/masks.mkv``; the folder is created if missing.
        width: frame width ``W`` (> 0).
        height: frame height ``H`` (> 0).
        fps: frame rate (int, float or Fraction), used when ``write`` gets no ``pts``.

    Raises:
        OutputError: the location cannot be written.
        ValueError: non-positive size or fps.
    """

    def __init__(self, path: str | os.PathLike[str], width: int, height: int,
                 fps: float | Fraction) -> None:
        self.width, self.height = _check_size(width, height)
        self._open(path, "ffv1", self.width, self.height, fps, "gray",
                   codec_options={"level": "3", "g": "1", "slicecrc": "1"},
                   container_options={})
        self._stream.codec_context.color_range = 2  # AVCOL_RANGE_JPEG: full range, no scaling
        self._stream.codec_context.thread_count = 0  # FFV1 level 3 encodes slices in parallel

    def write(self, frame: Frame, labels: np.ndarray) -> None:
        """Append one label map.

        Args:
            frame: the :class:`~pipelines.sources.Frame` the labels belong to; its ``pts``
                (seconds, or ``None``: one frame interval after the previous frame) times the video
                frame, so variable frame rate timing is kept. ``frame.rgb`` is not used.
            labels: ``(H, W)`` ``uint8`` label ids 0..255, ``H, W = height, width``.

        Raises:
            ValueError: wrong shape or dtype. TypeError: ``frame`` is not a ``Frame``.
            OutputError: encoding or writing failed.
            RuntimeError: the writer was already closed or aborted.
        """
        self._check_open()
        _check_frame(frame)
        arr = _check_labels(labels, (self.height, self.width))
        self._write_frame(av.VideoFrame.from_ndarray(arr, format="gray"), frame.pts)


def overlay_masks(rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5,
                  contours: bool = True, out: np.ndarray | None = None) -> np.ndarray:
    """Blend coloured masks onto a frame.

    Every pixel with a non-zero label (void 255 included) becomes
    ``((256 - a) * rgb + a * palette[label] + 128) >> 8`` with ``a = round(256 * alpha)`` (that is
    ``(1 - alpha) * rgb + alpha * palette[label]``, rounded); with ``contours`` the pixels on the
    border of each labelled region (a 4-neighbour has another label) are drawn in the opaque palette
    colour. Background pixels are copied unchanged. Only the bounding box of the non-zero labels is
    computed.

    Args:
        rgb: ``(H, W, 3)`` ``uint8`` frame.
        labels: ``(H, W)`` ``uint8`` label ids.
        palette: ``(256, 3)`` ``uint8`` colours.
        alpha: mask opacity in 0..1.
        contours: draw region borders opaque.
        out: optional ``(H, W, 3)`` ``uint8`` array (may be strided, e.g. a video frame's plane) to
            draw into; every pixel of it is written. Must not overlap ``rgb``.

    Returns:
        ``out``, or a new ``(H, W, 3)`` ``uint8`` array.

    Raises:
        ValueError: shapes or dtypes do not match, or alpha outside 0..1.
    """
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"rgb must be an (H, W, 3) uint8 array, got {img.shape} {img.dtype}")
    lab = _check_labels(labels, img.shape[:2])
    pal = _check_palette(palette)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in 0..1, got {alpha}")
    if out is None:
        out = np.empty_like(img)
    elif out.shape != img.shape or out.dtype != np.uint8:
        raise ValueError(f"out must be an {img.shape} uint8 array, got {out.shape} {out.dtype}")
    out[...] = img
    rows = np.flatnonzero(lab.max(axis=1))
    if rows.size == 0:
        return out
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(lab[r0:r1].max(axis=0))
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    a = int(round(float(alpha) * 256))
    # Per label: weight of the frame pixel and the rounded palette term; label 0 keeps the pixel
    # exactly ((p * 256 + 128) >> 8 == p), so the box needs no mask. Max 255 * 256 + 128 < 2**16.
    weight = np.full(256, 256 - a, np.uint16)
    weight[0] = 256
    term = pal.astype(np.uint16) * a + 128
    term[0] = 128
    box = lab[r0:r1, c0:c1]
    blend = img[r0:r1, c0:c1].astype(np.uint16)
    blend *= weight[box][..., None]
    blend += term[box]
    blend >>= 8
    out[r0:r1, c0:c1] = blend
    if contours:
        # one pixel of margin: a border pixel's neighbour may lie just outside the box
        e0, e1 = max(r0 - 1, 0), min(r1 + 1, lab.shape[0])
        f0, f1 = max(c0 - 1, 0), min(c1 + 1, lab.shape[1])
        sub = lab[e0:e1, f0:f1]
        edge = np.zeros(sub.shape, dtype=bool)
        dv = sub[1:, :] != sub[:-1, :]
        dh = sub[:, 1:] != sub[:, :-1]
        edge[1:, :] |= dv
        edge[:-1, :] |= dv
        edge[:, 1:] |= dh
        edge[:, :-1] |= dh
        edge &= sub != 0
        out[e0:e1, f0:f1][edge] = pal[sub[edge]]
    return out


class OverlayVideoWriter(_VideoWriter):
    """H.264 video of the frames with their masks blended in colour, for people to look at.

    libx264, ``yuv420p`` (BT.709, limited range, tagged), CRF 20, preset ``superfast`` (854x480 on
    2 CPU cores: 84 frames/s against 55 with ``veryfast``, ``benchmarks/bench_io.py``); in an
    ``.mp4`` the index is moved to the front (``movflags=+faststart``) so it plays while
    downloading. Plays in browsers, VLC, QuickTime and mpv.

    ``yuv420p`` needs even dimensions: an odd width or height is **padded** by one column / row
    that repeats the last one (no source pixel is lost), so the video is
    ``(W + W % 2) x (H + H % 2)``; see :attr:`encoded_size`.

    Args:
        path: final file name, e.g. ``out/overlay.mp4``; the folder is created if missing.
        width: frame width ``W`` of the frames given to ``write`` (> 0).
        height: frame height ``H`` (> 0).
        fps: source frame rate (int, float or Fraction), used when ``write`` gets no ``pts``.
        palette: ``(256, 3)`` ``uint8`` colours (``vos.davis.davis_palette()``).
        alpha: mask opacity in 0..1.
        contours: also draw each region's border in the opaque colour.
        crf: x264 constant rate factor (lower = better, 0..51).

    Raises:
        OutputError: the location cannot be written. ValueError: bad size, fps, palette or alpha.
    """

    def __init__(self, path: str | os.PathLike[str], width: int, height: int,
                 fps: float | Fraction, palette: np.ndarray, alpha: float = 0.5,
                 contours: bool = True, crf: int = 20) -> None:
        self.width, self.height = _check_size(width, height)
        self.palette = _check_palette(palette)
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in 0..1, got {alpha}")
        self.alpha = float(alpha)
        self.contours = bool(contours)
        self.encoded_size = (self.width + self.width % 2, self.height + self.height % 2)
        suffix = Path(path).suffix.lower()
        container_options = {"movflags": "+faststart"} if suffix in (".mp4", ".mov", ".m4v") else {}
        self._open(path, "libx264", self.encoded_size[0], self.encoded_size[1], fps, "yuv420p",
                   codec_options={"crf": str(int(crf)), "preset": "superfast"},
                   container_options=container_options)
        cc = self._stream.codec_context
        cc.colorspace = 1  # AVCOL_SPC_BT709
        cc.color_primaries = 1  # AVCOL_PRI_BT709
        cc.color_trc = 1  # AVCOL_TRC_BT709
        cc.color_range = 1  # AVCOL_RANGE_MPEG (limited)
        self._reformatter = VideoReformatter()  # one swscale context for every frame

    def write(self, frame: Frame, labels: np.ndarray) -> None:
        """Blend ``labels`` onto ``frame.rgb`` (see :func:`overlay_masks`) and append the frame.

        The overlay is drawn straight into the encoder's RGB frame (no intermediate copy) and
        converted to ``yuv420p`` by one swscale context kept for the whole video.

        Args:
            frame: the :class:`~pipelines.sources.Frame`: ``rgb`` ``(H, W, 3)`` ``uint8`` with
                ``H, W = height, width``; ``pts`` in seconds (or ``None``: one frame interval after
                the previous frame). Given for every frame, the source's (possibly variable) timing
                is kept, shifted so the first frame is at 0.
            labels: ``(H, W)`` ``uint8`` label ids.

        Raises:
            ValueError: wrong shapes or dtypes. TypeError: ``frame`` is not a ``Frame``.
            OutputError: encoding or writing failed.
            RuntimeError: the writer was already closed or aborted.
        """
        self._check_open()
        _check_frame(frame)
        img = np.asarray(frame.rgb)
        if img.shape != (self.height, self.width, 3):
            raise ValueError(f"rgb has shape {img.shape}, expected (H, W, 3) = "
                             f"({self.height}, {self.width}, 3)")
        ew, eh = self.encoded_size
        h, w = self.height, self.width
        rgb_frame = av.VideoFrame(ew, eh, "rgb24")
        canvas = rgb_frame.to_ndarray()  # a writable view of the frame's plane
        overlay_masks(img, labels, self.palette, self.alpha, self.contours, out=canvas[:h, :w])
        if ew != w:  # odd sizes: repeat the last column / row (edge padding)
            canvas[:h, w] = canvas[:h, w - 1]
        if eh != h:
            canvas[h, :] = canvas[h - 1, :]
        yuv = self._reformatter.reformat(rgb_frame, format="yuv420p", src_colorspace="itu709",
                                         dst_colorspace="itu709", src_color_range="JPEG",
                                         dst_color_range="MPEG")
        self._write_frame(yuv, frame.pts)
