"""Tests of pipelines.runner.run_pipeline: order, errors from each stage, no deadlock, stats."""

from __future__ import annotations

import itertools
import random
import threading
import time
import traceback
import weakref

import numpy as np
import pytest

from pipelines.runner import PipelineStats, run_pipeline


def runner_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pipeline-")]


def call_with_deadline(fn, seconds: float = 10.0):
    """Run ``fn`` in a helper thread; fail (instead of hanging the suite) if it deadlocks."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"run_pipeline did not return within {seconds} s (deadlock?)"
    if "error" in box:
        raise box["error"]
    return box.get("result")


class Boom(Exception):
    pass


@pytest.fixture(autouse=True)
def no_leaked_threads():
    yield
    deadline = time.monotonic() + 2
    while runner_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not runner_threads(), runner_threads()


# --------------------------------------------------------------------------- normal runs


@pytest.mark.parametrize("read_ahead, write_behind", [(1, 1), (4, 4), (2, 16)])
def test_order_is_kept_with_jittery_stages(read_ahead, write_behind):
    rng = random.Random(0)
    delays = [rng.random() * 0.002 for _ in range(3 * 150)]
    out = []

    def source():
        for i in range(150):
            time.sleep(delays[i])
            yield i

    def process(x):
        time.sleep(delays[150 + x])
        return x * 2

    def sink(y):
        time.sleep(delays[300 + y // 2])
        out.append(y)

    stats = call_with_deadline(
        lambda: run_pipeline(source(), process, sink, read_ahead=read_ahead, write_behind=write_behind)
    )
    assert out == [2 * i for i in range(150)]
    assert (stats.items_read, stats.items_processed, stats.items_written) == (150, 150, 150)


def test_runs_process_in_the_calling_thread_and_stages_in_others():
    seen = {}
    caller = threading.current_thread()

    def source():
        seen["source"] = threading.current_thread()
        yield 1

    def process(x):
        seen["process"] = threading.current_thread()
        return x

    def sink(x):
        seen["sink"] = threading.current_thread()

    run_pipeline(source(), process, sink)
    assert seen["process"] is caller
    assert seen["source"] is not caller and seen["sink"] is not caller
    assert seen["source"] is not seen["sink"]


def test_empty_source():
    calls = []
    stats = run_pipeline([], calls.append, calls.append)
    assert calls == [] and stats.items_written == 0
    assert stats.model_fps is None and stats.end_to_end_fps is None
    assert "0 frames" in stats.summary()


def test_none_items_pass_through():
    out = []
    run_pipeline([None, 0, None], lambda x: x, out.append, read_ahead=1, write_behind=1)
    assert out == [None, 0, None]


def test_queue_sizes_are_validated():
    for kw in ({"read_ahead": 0}, {"write_behind": 0}):
        with pytest.raises(ValueError):
            run_pipeline([1], lambda x: x, lambda y: None, **kw)


# --------------------------------------------------------------------------- errors


def _assert_raised_from(exc: BaseException, function_name: str) -> None:
    names = [fs.name for fs in traceback.extract_tb(exc.__traceback__)]
    assert function_name in names, names


@pytest.mark.parametrize("read_ahead, write_behind", [(1, 1), (4, 4)])
def test_source_error_is_reraised_with_its_traceback(read_ahead, write_behind):
    out = []

    def failing_source():
        for i in range(5):
            yield i
        raise Boom("source broke")

    with pytest.raises(Boom, match="source broke") as ei:
        call_with_deadline(
            lambda: run_pipeline(failing_source(), lambda x: x, out.append,
                                 read_ahead=read_ahead, write_behind=write_behind)
        )
    _assert_raised_from(ei.value, "failing_source")
    assert out == list(range(len(out))) and len(out) <= 5


@pytest.mark.parametrize("read_ahead, write_behind", [(1, 1), (4, 4)])
def test_process_error_stops_an_infinite_source_and_closes_it(read_ahead, write_behind):
    closed = threading.Event()

    def endless():
        try:
            yield from itertools.count()
        finally:
            closed.set()

    def failing_process(x):
        if x == 7:
            raise Boom("model broke")
        return x

    out = []
    with pytest.raises(Boom, match="model broke") as ei:
        call_with_deadline(
            lambda: run_pipeline(endless(), failing_process, out.append,
                                 read_ahead=read_ahead, write_behind=write_behind)
        )
    _assert_raised_from(ei.value, "failing_process")
    assert closed.is_set(), "the source generator was not closed"
    assert out == list(range(len(out))) and len(out) <= 7


@pytest.mark.parametrize("read_ahead, write_behind", [(1, 1), (4, 4)])
def test_sink_error_stops_the_model_and_an_infinite_source(read_ahead, write_behind):
    processed = []

    def failing_sink(y):
        if y == 3:
            raise OSError("disk full")

    def process(x):
        processed.append(x)
        return x

    stats = PipelineStats()
    with pytest.raises(OSError, match="disk full") as ei:
        call_with_deadline(
            lambda: run_pipeline(itertools.count(), process, failing_sink,
                                 read_ahead=read_ahead, write_behind=write_behind, stats=stats)
        )
    _assert_raised_from(ei.value, "failing_sink")
    # The model stops soon after: at most the queued results plus one in flight.
    assert len(processed) <= 4 + write_behind + 2
    assert stats.items_written == 3 and stats.wall_s > 0


def test_error_in_iter_itself():
    class BadIterable:
        def __iter__(self):
            raise Boom("cannot start")

    with pytest.raises(Boom, match="cannot start"):
        call_with_deadline(lambda: run_pipeline(BadIterable(), lambda x: x, lambda y: None))


def test_keyboard_interrupt_in_the_caller_stops_the_threads():
    closed = threading.Event()
    written = []

    def endless():
        try:
            yield from itertools.count()
        finally:
            closed.set()

    def process(x):
        if x == 20:
            raise KeyboardInterrupt
        return x

    with pytest.raises(KeyboardInterrupt):
        call_with_deadline(lambda: run_pipeline(endless(), process, written.append, read_ahead=2, write_behind=2))
    assert closed.is_set()
    assert written == list(range(len(written)))


def test_first_error_wins_when_two_stages_fail():
    def source():
        yield 1
        yield 2
        raise Boom("source")

    def sink(y):
        time.sleep(0.2)
        raise ValueError("sink")

    def process(x):
        time.sleep(0.05)
        return x

    with pytest.raises(Boom):  # the source fails first; the sink is still sleeping
        call_with_deadline(lambda: run_pipeline(source(), process, sink, read_ahead=1, write_behind=1))


def test_slow_blocked_stages_are_released_on_error():
    """Reader blocked on a full queue and writer blocked on an empty one both exit."""

    def process(x):
        time.sleep(0.05)
        raise Boom("late failure")

    t0 = time.perf_counter()
    with pytest.raises(Boom):
        call_with_deadline(lambda: run_pipeline(itertools.count(), process, lambda y: None,
                                                read_ahead=1, write_behind=1))
    assert time.perf_counter() - t0 < 2.0


# --------------------------------------------------------------------------- memory and stats


def test_items_alive_are_bounded():
    alive = set()
    peak = 0
    lock = threading.Lock()

    class Item:
        def __init__(self, i):
            self.i = i
            self.payload = np.zeros(1000, np.uint8)

    def track(obj):
        nonlocal peak
        with lock:
            alive.add(id(obj))
            peak = max(peak, len(alive))
        weakref.finalize(obj, lambda k=id(obj): alive.discard(k))

    def source():
        for i in range(300):
            item = Item(i)
            track(item)
            yield item

    def process(item):
        result = Item(item.i)
        track(result)
        return result

    def sink(result):
        time.sleep(0.0005)

    read_ahead, write_behind = 3, 2
    run_pipeline(source(), process, sink, read_ahead=read_ahead, write_behind=write_behind)
    # queued items + one held by each stage, counting inputs and results separately
    assert peak <= read_ahead + write_behind + 6, peak


def test_timing_stats_and_summary():
    def source():
        for i in range(20):
            time.sleep(0.002)
            yield i

    def process(x):
        time.sleep(0.01)
        return x

    def sink(y):
        time.sleep(0.001)

    stats = run_pipeline(source(), process, sink)
    assert stats.items_written == 20
    assert stats.process_s >= 0.19
    assert stats.read_s >= 0.035 and stats.write_s >= 0.015
    assert stats.wall_s >= stats.process_s
    assert 10 < stats.model_fps <= 101
    assert stats.end_to_end_fps <= stats.model_fps
    line = stats.summary()
    assert "20 frames" in line and "model" in line and "end-to-end" in line and "fps" in line
    assert "\n" not in line


def test_stats_show_the_bottleneck():
    def slow_source():
        for i in range(10):
            time.sleep(0.02)
            yield i

    stats = run_pipeline(slow_source(), lambda x: x, lambda y: None)
    assert stats.wait_input_s > 0.1  # the model starved for input
    assert stats.wait_output_s < 0.1
