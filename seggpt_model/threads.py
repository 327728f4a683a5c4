"""Run many small pieces of CPU work on torch's threads, one piece per thread at a time.

Some CPU kernels of the model (:func:`seggpt_model.layers.chunked_softmax_attention`) are
sequences of small torch ops on independent blocks (one attention head of one canvas). Run one
after the other with torch's intra-op threads, every op would split a few hundred microseconds of
work between threads and synchronise them; here each thread takes whole blocks instead and runs
their ops single-threaded. Torch releases the GIL inside its ops, so the threads compute in
parallel.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def run_parallel(fn: Callable[[int, T], None], items: Sequence[T]) -> None:
    """Call ``fn(worker, item)`` for every item, on ``torch.get_num_threads()`` threads.

    The calling thread is worker 0; ``min(torch.get_num_threads(), len(items)) - 1`` threads are
    started for the others and joined before returning. Items are handed out in order, each to
    the next free worker, so ``fn`` must not depend on the order in which they run; ``worker``
    (``0 .. n-1``) lets it keep per-worker scratch buffers. Inside a worker, torch ops run on one
    thread (``torch.set_num_threads(1)``, which is thread-local for OpenMP and MKL), with the
    caller's grad and inference modes. The caller's thread count is restored on return; it is
    also torch's default for threads that start torch work later, which the workers change while
    they run.

    Args:
        fn: the work for one item; its return value is ignored.
        items: the items, processed each exactly once.

    Raises:
        The first exception raised by ``fn`` (after all workers stopped; a worker stops taking
        items once any has failed).
    """
    threads_before = torch.get_num_threads()
    n = min(threads_before, len(items))
    if n <= 1:
        for item in items:
            fn(0, item)
        return
    grad = torch.is_grad_enabled()
    inference = torch.is_inference_mode_enabled()
    order = itertools.count()  # next() on it is atomic under the GIL
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        torch.set_num_threads(1)
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                while not errors:
                    i = next(order)
                    if i >= len(items):
                        break
                    fn(worker, items[i])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    others = [threading.Thread(target=work, args=(w,), name=f"seggpt-worker-{w}", daemon=True)
              for w in range(1, n)]
    try:
        for thread in others:
            thread.start()
        work(0)
    finally:
        for thread in others:
            thread.join()
        torch.set_num_threads(threads_before)
    if errors:
        raise errors[0]
