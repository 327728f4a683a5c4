"""Batch on Ray: many videos, one task each, on actors that each hold one model.

Modules, each importing only those listed before it: ``worker`` (the video worker and its record,
Ray-free), ``pool`` (the retrying actor pool), ``cluster`` (the Ray session, actor planning, ``vos
run --address``), ``log`` (the JSONL manifest and ``--resume``), ``runner`` (``run_batch``). Jobs
come from :mod:`vos.datasets`; each video runs :func:`vos.engine.video.run_video` on its actor.
"""

import os

# Ray reads this when it is imported (ray._private.ray_constants): a driver started with `uv run`
# must not make Ray re-run every worker through uv (it would try to reach the package index).
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
