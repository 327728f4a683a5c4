"""Typed errors of :mod:`seggpt_model`."""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found, read or loaded strictly into the model.

    The message names the file (or hub id) and lists missing, unexpected or mis-shaped keys.
    """
