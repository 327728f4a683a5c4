"""Folders of images as frame sources: :class:`FrameFolderSource` and :func:`load_image`."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps

from pipelines.errors import VideoDecodeError
from pipelines.sources.base import (IMAGE_EXTENSIONS, CorruptVideoError, Frame, FrameSource, PartialVideoWarning,
                                    natural_sort_key)
from seggpt_model.errors import one_line

__all__ = ["FrameFolderSource", "load_image"]

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

