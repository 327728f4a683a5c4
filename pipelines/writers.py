"""Writer stages: per-frame DAVIS palette PNGs, a lossless mask video and an H.264 overlay video.

Every writer is a plain class with ``write(...)``, ``close()`` and ``abort()``:

* ``close()`` finalises the output (flushes the encoder, renames the temporary file to the final
  name); ``abort()`` removes what was written. Both are idempotent, and ``abort()`` after
  ``close()`` does nothing.
* As a context manager a writer calls ``close()`` when the block succeeds and ``abort()`` when it
  raises, so an interrupted run never leaves a file that looks finished.
* Video writers write to ``<stem>.tmp<suffix>`` next to the final path (the real extension is kept
  so FFmpeg picks the right muxer) and :func:`os.replace` it on ``close()``.
* Constructors check that the output location can be written and raise
  :class:`~pipelines.errors.OutputError` (one line naming the path) otherwise; so do ``write`` and
  ``close`` when the disk or the encoder fails. Bad arguments (shapes, dtypes) raise ``ValueError``.

Label maps are ``(H, W)`` ``uint8`` arrays (0 background, 1..254 objects, 255 void); frames are
``(H, W, 3)`` ``uint8`` RGB. The palette is passed in by the caller (``vos.davis.davis_palette()``)
so that ``pipelines`` does not import ``vos``. No torch here.
"""

from __future__ import annotations

import math
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from PIL import Image

from pipelines.errors import OutputError

__all__ = [
    "PNG_COMPRESS_LEVEL",
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


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


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
        raise OutputError(f"{final}: cannot create its folder: {_one_line(e)}") from None
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


class _Writer:
    """Shared close/abort/context-manager protocol."""

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

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def abort(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# palette PNGs
# ----------------------------------------------------------------------------------------------


class PalettePngWriter(_Writer):
    """One palette-mode PNG per frame: ``out_dir/00000.png``, ``out_dir/00001.png``, ...

    The files are what DAVIS tools read: mode ``P``, 8-bit, pixel values = label ids, with the given
    256-colour palette. Each file is written to ``NNNNN.tmp.png`` and renamed, so a file with the
    final name is always complete; the whole folder is meant to be a temporary folder that the caller
    renames when the run succeeds.

    Args:
        out_dir: the folder to write into; created (with parents) if missing.
        palette: ``(256, 3)`` ``uint8`` RGB colours (``vos.davis.davis_palette()`` for DAVIS).
        compress_level: zlib level 0..9 (default :data:`PNG_COMPRESS_LEVEL`).

    Raises:
        OutputError: ``out_dir`` cannot be created or written (e.g. a parent is a regular file).
        ValueError: ``palette`` is not ``(256, 3)`` uint8.
    """

    def __init__(self, out_dir: str | os.PathLike[str], palette: np.ndarray,
                 compress_level: int = PNG_COMPRESS_LEVEL) -> None:
        self.out_dir = Path(out_dir)
        self._palette = _check_palette(palette).tobytes()
        if not 0 <= int(compress_level) <= 9:
            raise ValueError(f"compress_level must be in 0..9, got {compress_level}")
        self.compress_level = int(compress_level)
        self._created_dir = not self.out_dir.exists()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.out_dir}: cannot create output folder: {_one_line(e)}") from None
        if not self.out_dir.is_dir():
            raise OutputError(f"{self.out_dir}: exists and is not a folder")
        try:
            with tempfile.TemporaryFile(dir=self.out_dir):
                pass
        except OSError as e:
            raise OutputError(f"{self.out_dir}: output folder is not writable: {_one_line(e)}") from None
        self._shape: tuple[int, int] | None = None
        self.written: list[Path] = []

    @property
    def count(self) -> int:
        """Number of frames written so far."""
        return len(self.written)

    def path_for(self, index: int) -> Path:
        """``out_dir / f"{index:05d}.png"``."""
        return self.out_dir / f"{int(index):05d}.png"

    def write(self, index: int, labels: np.ndarray) -> Path:
        """Write frame ``index``'s label map to ``out_dir/{index:05d}.png``.

        Args:
            index: frame number, ``>= 0``.
            labels: ``(H, W)`` ``uint8`` label ids 0..255 (bool or other integer dtypes in range are
                converted); every frame must have the shape of the first.

        Returns:
            the path written.

        Raises:
            ValueError: bad index, shape or dtype.
            OutputError: the file cannot be written.
            RuntimeError: the writer was already closed or aborted.
        """
        self._check_open()
        if int(index) < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        arr = _check_labels(labels, self._shape)
        self._shape = arr.shape  # type: ignore[assignment]
        final = self.path_for(index)
        tmp = final.with_name(f"{final.stem}.tmp.png")
        im = Image.frombuffer("P", (arr.shape[1], arr.shape[0]), arr.tobytes(), "raw", "P", 0, 1)
        im.putpalette(self._palette)
        try:
            im.save(tmp, format="PNG", compress_level=self.compress_level)
            os.replace(tmp, final)
        except OSError as e:
            _remove(tmp)
            raise OutputError(f"{final}: cannot write: {_one_line(e)}") from None
        self.written.append(final)
        return final

    def close(self) -> None:
        """Finish (the PNGs are already complete; nothing is renamed here)."""
        if not self._aborted:
            self._closed = True

    def abort(self) -> None:
        """Remove every PNG this writer wrote, and ``out_dir`` if it created it and it is empty."""
        if self._closed or self._aborted:
            return
        self._aborted = True
        for p in self.written:
            _remove(p)
            _remove(p.with_name(f"{p.stem}.tmp.png"))
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
            raise OutputError(f"{self.path}: cannot open for writing: {_one_line(e)}") from None
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
            raise OutputError(f"{self.path}: cannot set up the {codec} encoder: {_one_line(e)}") from None

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
            raise OutputError(f"{self.path}: cannot write video: {_one_line(e)}") from None

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
            raise OutputError(f"{self.path}: cannot finish video: {_one_line(e)}") from None
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

    def write(self, labels: np.ndarray, pts: float | None = None) -> None:
        """Append one label map.

        Args:
            labels: ``(H, W)`` ``uint8`` label ids 0..255, ``H, W = height, width``.
            pts: presentation time in seconds (optional; keeps variable frame rate timing).

        Raises:
            ValueError: wrong shape or dtype. OutputError: encoding or writing failed.
            RuntimeError: the writer was already closed or aborted.
        """
        self._check_open()
        arr = _check_labels(labels, (self.height, self.width))
        self._write_frame(av.VideoFrame.from_ndarray(arr, format="gray"), pts)


def overlay_masks(rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5,
                  contours: bool = True) -> np.ndarray:
    """Blend coloured masks onto a frame.

    Every pixel with a non-zero label (void 255 included) becomes
    ``(1 - alpha) * rgb + alpha * palette[label]``; with ``contours`` the pixels on the border of
    each labelled region (a 4-neighbour has another label) are drawn in the opaque palette colour.

    Args:
        rgb: ``(H, W, 3)`` ``uint8`` frame.
        labels: ``(H, W)`` ``uint8`` label ids.
        palette: ``(256, 3)`` ``uint8`` colours.
        alpha: mask opacity in 0..1.
        contours: draw region borders opaque.

    Returns:
        a new ``(H, W, 3)`` ``uint8`` array.

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
    a = int(round(float(alpha) * 256))
    out = img.copy()
    mask = lab != 0
    if mask.any():
        colour = pal[lab[mask]].astype(np.uint16)
        out[mask] = ((img[mask].astype(np.uint16) * (256 - a) + colour * a + 128) >> 8).astype(np.uint8)
        if contours:
            edge = np.zeros_like(mask)
            dv = lab[1:, :] != lab[:-1, :]
            dh = lab[:, 1:] != lab[:, :-1]
            edge[1:, :] |= dv
            edge[:-1, :] |= dv
            edge[:, 1:] |= dh
            edge[:, :-1] |= dh
            edge &= mask
            out[edge] = pal[lab[edge]]
    return out


class OverlayVideoWriter(_VideoWriter):
    """H.264 video of the frames with their masks blended in colour, for people to look at.

    libx264, ``yuv420p`` (BT.709, limited range, tagged), CRF 20, preset ``veryfast``; in an
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
                   codec_options={"crf": str(int(crf)), "preset": "veryfast"},
                   container_options=container_options)
        cc = self._stream.codec_context
        cc.colorspace = 1  # AVCOL_SPC_BT709
        cc.color_primaries = 1  # AVCOL_PRI_BT709
        cc.color_trc = 1  # AVCOL_TRC_BT709
        cc.color_range = 1  # AVCOL_RANGE_MPEG (limited)

    def write(self, rgb: np.ndarray, labels: np.ndarray, pts: float | None = None) -> None:
        """Blend ``labels`` onto ``rgb`` (see :func:`overlay_masks`) and append the frame.

        Args:
            rgb: ``(H, W, 3)`` ``uint8`` frame, ``H, W = height, width``.
            labels: ``(H, W)`` ``uint8`` label ids.
            pts: presentation time in seconds (optional). Given for every frame, the source's
                (possibly variable) timing is kept, shifted so the first frame is at 0.

        Raises:
            ValueError: wrong shapes or dtypes. OutputError: encoding or writing failed.
            RuntimeError: the writer was already closed or aborted.
        """
        self._check_open()
        img = np.asarray(rgb)
        if img.shape != (self.height, self.width, 3):
            raise ValueError(f"rgb has shape {img.shape}, expected (H, W, 3) = "
                             f"({self.height}, {self.width}, 3)")
        out = overlay_masks(img, labels, self.palette, self.alpha, self.contours)
        ew, eh = self.encoded_size
        if (ew, eh) != (self.width, self.height):
            out = np.pad(out, ((0, eh - self.height), (0, ew - self.width), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(out, format="rgb24")
        frame = frame.reformat(format="yuv420p", src_colorspace="itu709", dst_colorspace="itu709",
                               src_color_range="JPEG", dst_color_range="MPEG")
        self._write_frame(frame, pts)
