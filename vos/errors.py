"""Typed errors of the ``vos`` layer and the checks every entry point shares.

Every error a user can cause by giving bad input is an instance of :class:`UserError` (or one of the
typed errors of the lower packages, :func:`user_errors`); the CLI prints such an error as one line
and exits with code 2.

Torch-free (``vos --help`` imports this module): :mod:`pipelines.devices` parses device and dtype
strings without torch, and resolves them on the machine only when asked.
"""

from __future__ import annotations

from typing import Any

from pipelines.devices import check_device_dtype as _resolve_device_dtype
from pipelines.devices import parse_device, parse_dtype
from pipelines.errors import PipelineError
from seggpt_model.errors import CheckpointError


class UserError(Exception):
    """Bad input or environment the user can fix (the message names the file and the problem)."""


class MaskError(UserError, ValueError):
    """A first-frame mask that is missing, unreadable, empty or of the wrong size or depth."""


class EvalError(UserError, ValueError):
    """A results or ground-truth folder that cannot be evaluated (missing frames, wrong sizes...)."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types the CLI reports as one line with exit code 2."""
    return (UserError, PipelineError, CheckpointError)


def check_device_dtype(device: str | None, dtype: str | None, *, resolve: bool = True) -> tuple[str, str]:
    """``--device`` and ``--dtype`` checked before any input or weight is read.

    The one place the ``vos`` layer turns :mod:`pipelines.devices`' ``ValueError`` into a
    :class:`UserError`.

    Args:
        device, dtype: the option values (None means ``auto``).
        resolve: also resolve them on this machine (a CUDA device must exist). False on a Ray
            driver, which may have no GPU of its own: the actors resolve them.

    Returns:
        The normalised strings (:func:`pipelines.devices.parse_device` / ``parse_dtype``).

    Raises:
        UserError: unknown device or dtype, or (``resolve``) a CUDA device that is not available.
    """
    try:
        out = parse_device(device), parse_dtype(dtype)
        if resolve:
            _resolve_device_dtype(device, dtype)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return out


def check_positive(key: str, value: Any) -> None:
    """UserError unless ``value`` (option ``--KEY``, ``_`` for ``-``) is an integer >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"--{key.replace('_', '-')} must be a positive integer, got {value!r}")
