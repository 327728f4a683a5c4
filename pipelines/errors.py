"""Typed errors of the streaming stages."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of errors caused by bad input or output locations (reported as one line)."""


class VideoDecodeError(PipelineError):
    """A video or frame folder that is missing, unreadable, empty, corrupt or has no video stream."""


class OutputError(PipelineError):
    """An output location that cannot be written."""
