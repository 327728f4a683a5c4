"""What ``vos batch SOURCE`` reads: a dataset root (by its layout) or a job manifest."""

from __future__ import annotations

import os
from pathlib import Path

from vos.datasets.davis import read_davis_root
from vos.datasets.job import Job, check_unique
from vos.datasets.manifest import read_job_manifest
from vos.errors import UserError

__all__ = ["discover_jobs"]


def discover_jobs(source: str | os.PathLike) -> tuple[list[Job], str]:
    """Jobs of SOURCE and its kind: ``"davis"`` (a DAVIS root) or ``"manifest"`` (JSONL / CSV).

    Raises:
        UserError: missing SOURCE, a folder that is not a DAVIS root, or a bad manifest.
    """
    p = Path(source)
    if not p.exists():
        raise UserError(f"{p}: no such file or directory")
    if p.is_dir():
        if not (p / "Annotations" / "480p").is_dir():
            raise UserError(f"{p}: not a DAVIS root (no Annotations/480p folder); give a DAVIS root "
                            f"or a .jsonl / .csv manifest")
        return check_unique(read_davis_root(p)), "davis"
    return read_job_manifest(p), "manifest"
