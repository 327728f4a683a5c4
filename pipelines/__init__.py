"""Streaming stages of seggpt-vos: frame sources (PyAV), the torch model stage, writers, the
bounded-queue runner and the Ray worker shell.

The middle layer: imports ``seggpt_model`` and never ``vos`` (see ``docs/architecture.md``).
Stages exchange numpy arrays or paths; torch stays inside :mod:`pipelines.model_stage`.
"""
