"""run_parallel: every item once, on torch's thread count, errors and modes carried over."""

from __future__ import annotations

import threading

import pytest
import torch

from seggpt_model.threads import run_parallel


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_every_item_once_on_two_threads(two_threads):
    seen: list[tuple[int, int, str, int]] = []
    lock = threading.Lock()

    def fn(worker: int, item: int) -> None:
        x = torch.full((64, 64), float(item)) @ torch.eye(64)  # real torch work in the worker
        with lock:
            seen.append((worker, item, threading.current_thread().name, torch.get_num_threads()))
        assert float(x[0, 0]) == item

    run_parallel(fn, list(range(40)))
    assert sorted(item for _, item, _, _ in seen) == list(range(40))
    assert {worker for worker, *_ in seen} <= {0, 1}
    assert all(threads == 1 for *_, threads in seen)         # torch ops single-threaded inside
    names = {name for worker, _, name, _ in seen if worker == 0}
    assert names <= {threading.current_thread().name}         # worker 0 is the caller
    assert torch.get_num_threads() == 2                        # restored for the caller
    fresh: list[int] = []
    thread = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert fresh == [2]                                        # and for threads started later


def test_modes_follow_the_caller(two_threads):
    seen: set[tuple[bool, bool]] = set()

    def fn(worker: int, item: int) -> None:
        seen.add((torch.is_grad_enabled(), torch.is_inference_mode_enabled()))

    with torch.no_grad():
        run_parallel(fn, list(range(8)))
    assert seen == {(False, False)}
    seen.clear()
    with torch.inference_mode():
        run_parallel(fn, list(range(8)))
    assert seen == {(False, True)}
    seen.clear()
    run_parallel(fn, list(range(8)))
    assert seen == {(True, False)}


def test_first_error_is_raised_after_all_workers_stop(two_threads):
    done: list[int] = []

    def fn(worker: int, item: int) -> None:
        if item == 3:
            raise ValueError("bad block 3")
        done.append(item)

    with pytest.raises(ValueError, match="bad block 3"):
        run_parallel(fn, list(range(1000)))
    assert len(done) < 999  # the workers stopped taking items
    assert torch.get_num_threads() == 2
    assert not [t for t in threading.enumerate() if t.name.startswith("seggpt-worker")]


def test_one_thread_runs_inline():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        names: list[str] = []
        run_parallel(lambda worker, item: names.append(threading.current_thread().name), [1, 2, 3])
        assert names == [threading.current_thread().name] * 3
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
