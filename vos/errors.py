"""Typed errors of the ``vos`` layer.

Every error a user can cause by giving bad input is an instance of :class:`UserError` (or one of the
typed errors of the other packages listed in :data:`USER_ERRORS`); the CLI prints such an error as one
line and exits with code 2.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or environment the user can fix (the message names the file and the problem)."""


class MaskError(UserError, ValueError):
    """A first-frame mask that is missing, unreadable, empty or of the wrong size or depth."""


class EvalError(UserError, ValueError):
    """A results or ground-truth folder that cannot be evaluated (missing frames, wrong sizes...)."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types the CLI reports as one line with exit code 2.

    Imported lazily so that ``vos --help`` does not import torch.
    """
    from pipelines.errors import PipelineError
    from seggpt_model.errors import CheckpointError

    return (UserError, PipelineError, CheckpointError)
