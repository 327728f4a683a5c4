"""A small three-stage streaming runner: read ahead, process, write behind.

::

    source --(reader thread)--> [read_ahead queue] --> process (calling thread)
           --> [write_behind queue] --(writer thread)--> sink

The calling thread runs ``process`` (the model stage, which owns the device); a reader thread
pulls items from ``source`` and a writer thread hands results to ``sink`` in order.  Both
queues are bounded, so at most ``read_ahead + write_behind + 3`` items are alive at once
(one in each stage besides the queued ones), whatever the length of the stream.

Errors: the first exception raised by any stage (including ``KeyboardInterrupt`` in the
caller) sets a stop flag; blocked stages notice it within ~50 ms, the source iterator is
closed (in the reader thread, so a generator's ``finally`` runs), both threads are joined and
the exception is re-raised in the caller with its original type and traceback.  Work already
queued is discarded.  ``process`` itself cannot be interrupted: a failure elsewhere is noticed
when the current call returns.

Timing: :class:`PipelineStats` records the seconds each stage spent working and waiting, so
a caller can print e.g. ``stats.summary()`` → "120 frames in 10.0 s: model 14.8 fps,
end-to-end 12.0 fps (...)".
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, TypeVar

__all__ = ["PipelineStats", "run_pipeline"]

T = TypeVar("T")
U = TypeVar("U")

_POLL_S = 0.05  # how often a blocked stage re-checks the stop flag (seconds)
_END = object()  # end-of-stream marker
_STOPPED = object()  # returned by _get when the pipeline is stopping


@dataclass
class PipelineStats:
    """Counters and timings of one :func:`run_pipeline` call (all times in seconds).

    Attributes:
        items_read: items pulled from the source.
        items_processed: items ``process`` returned.
        items_written: items ``sink`` accepted (the pipeline's output count).
        read_s: time the reader spent inside the source's ``next()`` (decoding).
        process_s: time spent inside ``process`` (the model).
        write_s: time spent inside ``sink`` (encoding/writing).
        wait_input_s: time the calling thread waited for input (reader too slow).
        wait_output_s: time the calling thread waited for room in the write queue
            (writer too slow).
        reader_blocked_s: time the reader waited for room in the read-ahead queue.
        writer_idle_s: time the writer waited for results.
        wall_s: wall-clock duration of the whole call, start to threads joined.
    """

    items_read: int = 0
    items_processed: int = 0
    items_written: int = 0
    read_s: float = 0.0
    process_s: float = 0.0
    write_s: float = 0.0
    wait_input_s: float = 0.0
    wait_output_s: float = 0.0
    reader_blocked_s: float = 0.0
    writer_idle_s: float = 0.0
    wall_s: float = 0.0

    @property
    def model_fps(self) -> float | None:
        """Items per second of ``process`` time alone (``None`` if nothing was processed)."""
        if not self.items_processed or self.process_s <= 0:
            return None
        return self.items_processed / self.process_s

    @property
    def end_to_end_fps(self) -> float | None:
        """Items written per second of wall-clock time (``None`` if nothing was written)."""
        if not self.items_written or self.wall_s <= 0:
            return None
        return self.items_written / self.wall_s

    def summary(self, unit: str = "frames") -> str:
        """One line, e.g. "40 frames in 3.1 s: model 15.2 fps, end-to-end 12.9 fps (read 0.4 s, ...)"."""

        def fps(v: float | None) -> str:
            return f"{v:.1f} fps" if v is not None else "n/a"

        return (
            f"{self.items_written} {unit} in {self.wall_s:.1f} s: model {fps(self.model_fps)}, "
            f"end-to-end {fps(self.end_to_end_fps)} (read {self.read_s:.1f} s, model {self.process_s:.1f} s, "
            f"write {self.write_s:.1f} s; model waited {self.wait_input_s:.1f} s for input, "
            f"{self.wait_output_s:.1f} s for the writer)"
        )


@dataclass
class _Shared:
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
        self.stop.set()


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item``, waiting for room; ``False`` if the pipeline stopped first."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event) -> object:
    """Next item, waiting for one; ``_STOPPED`` if the pipeline stopped first."""
    while not stop.is_set():
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue
    return _STOPPED


def run_pipeline(
    source: Iterable[T],
    process: Callable[[T], U],
    sink: Callable[[U], None],
    *,
    read_ahead: int = 4,
    write_behind: int = 4,
    stats: PipelineStats | None = None,
) -> PipelineStats:
    """Stream ``source`` through ``process`` into ``sink`` with bounded queues and two threads.

    Args:
        source: iterable of items (e.g. a :class:`~pipelines.sources.FrameSource`); iterated
            in a reader thread, ``read_ahead`` items ahead of ``process``.  If its iterator
            has a ``close()`` method (generators) it is called, in the reader thread, when
            the pipeline ends early.  The caller stays responsible for closing the source
            object itself, after this function returns.
        process: called in the calling thread on each item, in order; its results go to
            ``sink``.
        sink: called in a writer thread on each result, in order, at most ``write_behind``
            results behind ``process``.
        read_ahead: capacity of the input queue (items, >= 1).
        write_behind: capacity of the output queue (items, >= 1).
        stats: a :class:`PipelineStats` to fill in place (useful to report partial progress
            when an exception escapes); a new one is created when omitted.

    Returns:
        The filled :class:`PipelineStats`.

    Raises:
        ValueError: ``read_ahead`` or ``write_behind`` is smaller than 1.
        BaseException: the first exception raised by the source, ``process`` or ``sink``
            (or a ``KeyboardInterrupt`` received while running), re-raised unchanged after
            the other stages stopped and the threads were joined.
    """
    if read_ahead < 1 or write_behind < 1:
        raise ValueError(f"read_ahead and write_behind must be >= 1, got {read_ahead} and {write_behind}")
    st = stats if stats is not None else PipelineStats()
    shared = _Shared()
    stop = shared.stop
    in_q: queue.Queue = queue.Queue(maxsize=read_ahead)
    out_q: queue.Queue = queue.Queue(maxsize=write_behind)
    clock = time.perf_counter
    t_start = clock()

    def reader() -> None:
        it = None
        try:
            it = iter(source)
            while not stop.is_set():
                t0 = clock()
                try:
                    item = next(it)
                except StopIteration:
                    break
                t1 = clock()
                st.read_s += t1 - t0
                st.items_read += 1
                ok = _put(in_q, item, stop)
                del item
                st.reader_blocked_s += clock() - t1
                if not ok:
                    return
            else:
                return
            _put(in_q, _END, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            shared.fail(exc)
        finally:
            close = getattr(it, "close", None)
            if close is not None and stop.is_set():
                try:
                    close()
                except BaseException as exc:  # noqa: BLE001
                    shared.fail(exc)

    def writer() -> None:
        try:
            while True:
                t0 = clock()
                result = _get(out_q, stop)
                t1 = clock()
                st.writer_idle_s += t1 - t0
                if result is _STOPPED or result is _END:
                    return
                sink(result)
                del result
                st.write_s += clock() - t1
                st.items_written += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            shared.fail(exc)

    threads = [
        threading.Thread(target=reader, name="pipeline-reader", daemon=True),
        threading.Thread(target=writer, name="pipeline-writer", daemon=True),
    ]
    try:
        for t in threads:
            t.start()
        while True:
            t0 = clock()
            item = _get(in_q, stop)
            t1 = clock()
            st.wait_input_s += t1 - t0
            if item is _STOPPED or item is _END:
                break
            result = process(item)
            del item
            t2 = clock()
            st.process_s += t2 - t1
            st.items_processed += 1
            ok = _put(out_q, result, stop)
            del result
            st.wait_output_s += clock() - t2
            if not ok:
                break
        if not stop.is_set():
            _put(out_q, _END, stop)
        _join(threads)
    except BaseException as exc:  # noqa: BLE001 - includes KeyboardInterrupt
        shared.fail(exc)
    finally:
        if shared.error is not None:
            stop.set()
        try:
            _join(threads)
        finally:
            st.wall_s = clock() - t_start
    error, shared.error = shared.error, None
    if error is not None:
        try:
            raise error
        finally:
            del error
    return st


def _join(threads: list[threading.Thread]) -> None:
    """Join threads with a timeout loop, so the caller stays responsive to Ctrl-C."""
    for t in threads:
        while t.is_alive():
            t.join(_POLL_S)
