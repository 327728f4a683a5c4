"""Video writers: the lossless FFV1 mask video and the H.264 overlay video (and :func:`overlay_masks`)."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from pipelines.errors import OutputError
from pipelines.sources import Frame
from seggpt_model.errors import one_line
from pipelines.writers.base import (_as_rate, _check_frame, _check_labels, _check_palette, _check_size,
                                    _prepare_file, _remove, _time_base_for, _Writer)

__all__ = ["MaskVideoWriter", "OverlayVideoWriter", "overlay_masks"]


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
        palette: ``(256, 3)`` ``uint8`` colours (``vos.labels.davis_palette()``).
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
