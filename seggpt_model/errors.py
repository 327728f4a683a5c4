"""Typed errors of :mod:`seggpt_model`, and the one formatter of errors as one line.

This module imports nothing heavy (no torch), so every layer (``pipelines``, ``vos``) uses
:func:`one_line` from here.
"""

from __future__ import annotations

#: Longest message :func:`one_line` returns (characters); longer ones end in ``...``.
MAX_LINE = 300


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found, read or loaded strictly into the model.

    The message names the file (or hub id) and lists missing, unexpected or mis-shaped keys.
    """


def one_line(exc: BaseException, *, last: bool = False, with_type: bool = False,
             limit: int = MAX_LINE) -> str:
    """An exception as one short line for a user-facing message or a result record.

    Args:
        exc: the exception. An ``OSError`` with a ``strerror`` gives that text (``"No such file or
            directory"``); anything else gives ``str(exc)``, or the type name when that is empty.
        last: keep only the last non-empty line of the text (Ray errors carry the remote
            traceback first and the cause last); otherwise all lines are joined.
        with_type: prefix ``"TypeName: "``.
        limit: longest result in characters (``...`` marks a cut).

    Returns:
        The text with every run of whitespace (newlines included) collapsed to one space.
    """
    text = getattr(exc, "strerror", None) or str(exc)
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if last and lines:
        lines = lines[-1:]
    line = " ".join(" ".join(lines).split()) or type(exc).__name__
    if with_type and line != type(exc).__name__:
        line = f"{type(exc).__name__}: {line}"
    return line if len(line) <= limit else line[: max(0, limit - 3)] + "..."
