"""What the evaluation protocols share: reading label-map PNGs, the worker processes and the
output helpers (:mod:`vos.evaluation.davis2017`, :mod:`vos.evaluation.sav`).

The work of a protocol is a list of *units* (a sequence, an SA-V object folder), each with a
``name`` (unique), ``frames`` (the stems to score, in order) and ``n_objects`` (a work weight). Every
frame is scored independently, so :func:`map_chunks` cuts the units into chunks of frames, runs them
over worker processes and hands each unit's outputs back in frame order; the protocol then reduces
them in the parent, so that no number depends on the number of workers.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from seggpt_model.errors import one_line
from seggpt_model.files import atomic_write
from vos.errors import EvalError
from vos.evaluation import metrics

__all__ = [
    "EvalWarning",
    "LABEL_MODES",
    "png_stems",
    "read_label_map",
    "default_workers",
    "mp_context",
    "split_chunks",
    "map_chunks",
    "table",
    "write_text",
]

#: PIL modes of single-channel PNGs whose pixel values are object ids.
LABEL_MODES = frozenset({"P", "L", "1", "I", "I;16", "I;16B", "I;16L"})


class EvalWarning(UserWarning):
    """Something the evaluation works around (missing image set list, result ids above the number
    of objects, an object with nothing to score); the CLI prints each as one line on stderr."""


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------


def png_stems(folder: str | os.PathLike) -> list[str]:
    """Sorted stems of the ``*.png`` files of a folder (hidden files left out); ``[]`` when the
    folder cannot be listed."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(n[:-4] for n in names if n.endswith(".png") and not n.startswith("."))


def read_label_map(path: str, role: str) -> np.ndarray:
    """Read a single-channel PNG of object ids as an ``(H, W)`` integer array.

    Args:
        path: the PNG.
        role: what it is, for the error message (``"sequence bike: result"``).

    Returns:
        The stored values: palette indices (``P``), grey levels (``L``, ``I;16``...), 0/1 for a
        ``1`` image; ``uint8`` for 8-bit images.

    Raises:
        EvalError: the file is missing, unreadable or not a single-channel (palette or grayscale) PNG.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in LABEL_MODES:
                raise EvalError(
                    f"{role} {path}: {im.mode} PNG; label maps must be single-channel palette (P) or "
                    f"grayscale PNGs whose pixel values are object ids, not colours")
            arr = np.asarray(im)
    except EvalError:
        raise
    except FileNotFoundError:
        raise EvalError(f"{role} {path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise EvalError(f"{role} {path}: cannot read PNG ({exc})") from None
    if arr.dtype == bool:
        arr = arr.view(np.uint8)
    return arr


# --------------------------------------------------------------------------------------------------
# worker processes
# --------------------------------------------------------------------------------------------------


def worker_init() -> None:
    """Initializer of the worker processes: OpenCV on one thread (one process per core already)."""
    cv2 = metrics._get_cv2()
    if cv2:
        cv2.setNumThreads(1)


#: Modules whose native thread pools make a forked child hang: torch and ray, and OpenCV, whose
#: pool (started at import) cannot be resized or used in a forked child (``cv2.setNumThreads`` there
#: waits forever in ``pthread_cond_destroy``, seen with OpenCV 5.1 after the parent called
#: ``cv2.dilate``).
_FORK_UNSAFE = ("torch", "ray", "cv2")


def mp_context():
    """``fork`` where it is safe and cheapest (Linux, no other Python thread, none of torch, ray or
    OpenCV loaded, so no lock or thread pool can be inherited half-way); otherwise ``forkserver`` on
    Linux and the platform default elsewhere. The ``vos eval`` command plans from folder listings and
    loads OpenCV only in its workers, so it forks."""
    methods = mp.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods:
        if threading.active_count() == 1 and not any(m in sys.modules for m in _FORK_UNSAFE):
            return mp.get_context("fork")
        if "forkserver" in methods:
            return mp.get_context("forkserver")
    return None


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def split_chunks(units: Sequence[Any], workers: int) -> list[tuple[Any, int, int]]:
    """Split the work into ``(unit, start, stop)`` tasks over ``unit.frames``: whole units for one
    worker, else pieces of about ``total / (4 * workers)`` frames (at least 8) so that all workers
    stay busy to the end, the longest (frames times ``unit.n_objects``) first."""
    if workers <= 1:
        return [(u, 0, len(u.frames)) for u in units]
    total = sum(len(u.frames) for u in units)
    size = max(8, math.ceil(total / (4 * workers)))
    tasks = []
    for u in units:
        n = len(u.frames)
        pieces = max(1, round(n / size))
        bounds = np.linspace(0, n, pieces + 1).round().astype(int)
        tasks += [(u, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    # longest tasks first, so that the last ones to finish are short
    return sorted(tasks, key=lambda t: -(t[2] - t[1]) * max(1, t[0].n_objects))


def map_chunks(fn: Callable[[Any, int, int], Any], units: Sequence[Any],
               workers: int) -> dict[str, list]:
    """Run ``fn(unit, start, stop)`` over the chunks of :func:`split_chunks`, in this process for
    one worker or one task, else over ``workers`` processes.

    Args:
        fn: a module-level function (it is pickled), scoring ``unit.frames[start:stop]``.
        units: the work, with unique ``name``\\ s.
        workers: processes, >= 1.

    Returns:
        ``{unit.name: [fn's outputs for its chunks, in frame order]}`` (units with no frame get
        ``[]``).

    Raises:
        Whatever ``fn`` raises: of the tasks that fail, the first in unit and frame order (the
        others are cancelled).
    """
    tasks = split_chunks(units, workers)
    n_proc = min(workers, len(tasks))
    if n_proc <= 1:
        outs = [fn(*t) for t in tasks]
    else:
        order = {u.name: i for i, u in enumerate(units)}
        ex = ProcessPoolExecutor(max_workers=n_proc, mp_context=mp_context(), initializer=worker_init)
        try:
            futures = [ex.submit(fn, *t) for t in tasks]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            if any(fut.exception() is not None for fut in done):
                ex.shutdown(wait=True, cancel_futures=True)
                failed = [(order[t[0].name], t[1], i) for i, (t, fut) in enumerate(zip(tasks, futures))
                          if fut.done() and not fut.cancelled() and fut.exception() is not None]
                raise futures[min(failed)[2]].exception()
            outs = [fut.result() for fut in futures]
        except BaseException:
            ex.shutdown(wait=True, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
    parts: dict[str, list] = {u.name: [] for u in units}
    for (u, a, _), out in zip(tasks, outs):
        parts[u.name].append((a, out))
    return {name: [out for _, out in sorted(p, key=lambda x: x[0])] for name, p in parts.items()}


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------


def table(headers: tuple[str, ...], rows: list[tuple], fmt: str = "{:.6f}") -> str:
    """A right-aligned text table; numbers formatted with ``fmt``, strings as they are."""
    cells = [[c if isinstance(c, str) else fmt.format(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = [" ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines += [" ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def write_text(path: Path, text: str) -> None:
    """:func:`seggpt_model.files.atomic_write` of ``text`` (UTF-8, newlines as given).

    Raises:
        EvalError: the file cannot be written.
    """
    try:
        atomic_write(path, text)
    except OSError as exc:
        raise EvalError(f"cannot write {path}: {one_line(exc)}") from None
