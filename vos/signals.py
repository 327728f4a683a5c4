"""Stopping: SIGTERM (what Ray, Kubernetes and Slurm send) is handled like Ctrl-C.

:func:`terminate_on_sigterm` makes SIGTERM raise :class:`Terminated` in the main thread. It is a
:class:`KeyboardInterrupt`, so every cleanup path that already handles Ctrl-C (temporary result
folders removed, reader and writer threads stopped, actors and the local Ray cluster shut down,
the batch log left whole) runs for SIGTERM too; the CLI then prints one line
``vos <cmd>: terminated`` and exits with 143 (128 + 15, the shell's code for SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: Exit code of a command stopped by SIGTERM (128 + signal number, as shells report it).
EXIT_TERMINATED = 128 + signal.SIGTERM
#: Exit code of a command stopped by Ctrl-C (SIGINT).
EXIT_INTERRUPTED = 128 + signal.SIGINT


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


#: Signal numbers received by the handler since it was last installed (a library
#: that catches the handler's exception may re-raise it as a plain KeyboardInterrupt: ``ray.wait``
#: and ``ray.get`` do; :func:`sigterm_received` still tells a SIGTERM from Ctrl-C then).
_received: list[int] = []


def _raise_terminated(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    _received.append(signum)
    raise Terminated(f"received signal {signum}")


def sigterm_received() -> bool:
    """Whether SIGTERM arrived since the handler was last installed, even when the
    exception it raised reached the caller as a plain ``KeyboardInterrupt``."""
    return bool(_received)


def install_sigterm_handler() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (no-op in other threads).

    Call it again after a library that installs its own SIGTERM handler (``ray.init`` does in the
    driver) has started.
    """
    if threading.current_thread() is threading.main_thread():
        _received.clear()
        signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated`; the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    install_sigterm_handler()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
