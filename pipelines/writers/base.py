"""The writer protocol and what every writer shares: output checks, temporary names, the label-PNG
encoder (see :mod:`pipelines.writers`)."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from pipelines.errors import OutputError
from pipelines.sources import Frame
from seggpt_model.errors import one_line
from seggpt_model.files import atomic_write

__all__ = ["PNG_COMPRESS_LEVEL", "FrameWriter", "save_label_png", "temp_path_for"]

#: zlib level of the palette PNGs. Measured on 480p DAVIS masks (854x480, Pillow, one core):
#: level 1: 0.8 ms, 4.1 KB per frame; 4: 1.4 ms, 2.4 KB; 6 (Pillow's default): 1.6 ms, 2.2 KB;
#: 9: 3.3 ms, 1.8 KB. Level 4 is near the default size for less time; all are far below model time.
PNG_COMPRESS_LEVEL = 4


def save_label_png(path: str | os.PathLike[str], data: bytes, size: tuple[int, int], palette: bytes, *,
                   compress_level: int = PNG_COMPRESS_LEVEL, fsync: bool = True) -> None:
    """Encode one label map as a palette-mode (``P``) PNG, atomically: the one PNG encoder of label
    maps (:class:`PalettePngWriter` and ``vos.labels.write_label_png`` call it).

    Args:
        path: destination ``.png``; its folder must exist.
        data: the label map's ``H * W`` uint8 bytes, row-major (the ids are the palette indices,
            written as they are: no quantisation).
        size: ``(W, H)``.
        palette: the ``(256, 3)`` uint8 palette as its 768 bytes.
        compress_level: zlib level 0..9.
        fsync: flush the file to disk before the rename (:func:`seggpt_model.files.atomic_write`).

    Raises:
        OSError: the file cannot be written (nothing is left behind).
    """
    im = Image.frombuffer("P", size, data, "raw", "P", 0, 1)
    im.putpalette(palette)
    atomic_write(path, lambda f: im.save(f, format="PNG", compress_level=compress_level), fsync=fsync)


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
