"""Per-frame DAVIS palette PNGs, encoded by a small thread pool: :class:`PalettePngWriter`."""

from __future__ import annotations

import collections
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipelines.errors import OutputError
from pipelines.sources import Frame
from pipelines.writers.base import (
    PNG_COMPRESS_LEVEL,
    _check_frame,
    _check_labels,
    _check_palette,
    _remove,
    _Writer,
    save_label_png,
)
from seggpt_model.errors import one_line

__all__ = ["PalettePngWriter", "default_png_workers"]


def default_png_workers() -> int:
    """Threads :class:`PalettePngWriter` encodes with by default: ``min(4, os.cpu_count())``."""
    return max(1, min(4, os.cpu_count() or 1))


class PalettePngWriter(_Writer):
    """One palette-mode PNG per frame: ``out_dir/00000.png``, ``out_dir/00001.png``, ...

    The files are what DAVIS tools read: mode ``P``, 8-bit, pixel values = label ids, with the given
    256-colour palette. The ``n``-th frame given to :meth:`write` (counting from 0) becomes
    ``{n:05d}.png``, unless ``name_of`` gives each frame's file name (``vos run`` on a frame folder
    names each result after its input frame: ``00005.jpg`` -> ``00005.png``); :attr:`written` lists
    the paths in order. Each file is written with :func:`seggpt_model.files.atomic_write`
    (temporary name in the same folder, then a rename), so a file with the final name is always
    complete; the whole folder is meant to be a temporary folder that the caller renames when the
    run succeeds, which is why the per-file ``fsync`` is off by default.

    Encoding runs on a small thread pool (zlib and Pillow release the GIL), at most
    ``2 * workers`` frames behind :meth:`write`. An encoding or disk error of a frame is raised as
    :class:`~pipelines.errors.OutputError` from a later :meth:`write` or from :meth:`close`, which
    then removes every PNG written; :meth:`abort` cancels pending frames, waits for the running
    ones and removes every PNG.

    Args:
        out_dir: the folder to write into; created (with parents) if missing.
        palette: ``(256, 3)`` ``uint8`` RGB colours (``vos.labels.davis_palette()`` for DAVIS).
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
        try:
            save_label_png(final, data, size, self._palette, compress_level=self.compress_level,
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
