"""What ``vos batch SOURCE`` reads: a dataset root (by its layout) or a job manifest."""

from __future__ import annotations

import os
from pathlib import Path

from vos.datasets.job import Job, check_unique
from vos.datasets.layouts import read_layout
from vos.datasets.manifest import read_job_manifest
from vos.errors import UserError

__all__ = ["discover_jobs"]


def discover_jobs(source: str | os.PathLike, layout: str | None = None,
                  all_frames: str | os.PathLike | None = None) -> tuple[list[Job], str]:
    """Jobs of SOURCE and its kind: a dataset layout (``"davis"``, ``"youtube-vos"``, ``"mose"``,
    ``"sa-v"``, ``"lvos"``: :func:`vos.datasets.layouts.read_layout`) or ``"manifest"`` (JSONL / CSV).

    Args:
        source: a dataset root or a manifest file.
        layout: the root's layout, or None to detect it from what the root holds.
        all_frames: ``--all-frames`` folder (youtube-vos, lvos).

    Raises:
        UserError: missing SOURCE, a folder of no (or an ambiguous) layout, a bad manifest or meta
            file, ``layout`` / ``all_frames`` given with a manifest.
    """
    p = Path(source)
    if not p.exists():
        raise UserError(f"{p}: no such file or directory")
    if p.is_dir():
        jobs, kind = read_layout(p, layout, all_frames)
        return check_unique(jobs), kind
    if layout is not None or all_frames is not None:
        raise UserError(f"{p}: --layout and --all-frames need a dataset root, not a manifest")
    return read_job_manifest(p), "manifest"
