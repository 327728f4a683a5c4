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
``(H, W, 3)`` ``uint8`` RGB. The palette is passed in by the caller (``vos.labels.davis_palette()``)
so that ``pipelines`` does not import ``vos``. No torch here.

Speed (issue 15: at 45 frames/s a writer has ~22 ms per frame): PNGs are encoded by a small thread
pool (zlib and Pillow release the GIL), the overlay is blended only inside the labels' bounding box
and drawn straight into the encoder's frame buffer, and each video writer keeps one swscale context
for its colour conversion. ``benchmarks/bench_io.py`` measures the writers.
"""

from pipelines.writers.base import PNG_COMPRESS_LEVEL, FrameWriter, save_label_png, temp_path_for
from pipelines.writers.png import PalettePngWriter, default_png_workers
from pipelines.writers.video import MaskVideoWriter, OverlayVideoWriter, overlay_masks

__all__ = [
    "PNG_COMPRESS_LEVEL",
    "FrameWriter",
    "MaskVideoWriter",
    "OverlayVideoWriter",
    "PalettePngWriter",
    "default_png_workers",
    "overlay_masks",
    "save_label_png",
    "temp_path_for",
]
