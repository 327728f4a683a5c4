"""``OUTPUT/batch_manifest.jsonl``: the per-video result log of ``vos batch``, and the resume check.

The log is rewritten atomically (:func:`seggpt_model.files.atomic_write`) at the start and the
end of a batch, and appended in between: one ``os.write`` of a whole line, then ``fsync``, so a
driver killed at any moment leaves whole lines (at most a torn last one, skipped when read back).
Its lines are :class:`vos.batch.worker.VideoRecord` dicts (fields listed in ``docs/ray_cluster.md``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from seggpt_model.files import atomic_write
from vos.datasets.job import BATCH_MANIFEST, Job
from vos.errors import UserError

__all__ = ["BATCH_MANIFEST", "BatchLog", "read_batch_manifest", "output_complete", "now"]


def now() -> str:
    """The current UTC time as ISO 8601 with seconds (``finished_at``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_batch_manifest(path: str | os.PathLike) -> dict[str, dict]:
    """Entries of a ``batch_manifest.jsonl`` by video name (the last entry of a name wins).

    Lines that are not JSON objects with a ``name`` (a line torn by a killed job) are skipped.
    A missing file gives ``{}``.

    Raises:
        UserError: the file exists but cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    entries: dict[str, dict] = {}
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            entries.pop(obj["name"], None)
            entries[obj["name"]] = obj
    return entries


class BatchLog:
    """An open ``batch_manifest.jsonl``: rewritten with ``entries`` when opened, then appended.

    Raises:
        OSError: the file cannot be written.
    """

    def __init__(self, path: Path, entries: list[dict]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.rewrite(entries)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    @staticmethod
    def _lines(entries: list[dict]) -> str:
        return "".join(json.dumps(e, default=str) + "\n" for e in entries)

    def append(self, entry: dict) -> None:
        """Add one line (a single ``write``, then ``fsync``)."""
        os.write(self._fd, self._lines([entry]).encode("utf-8"))
        os.fsync(self._fd)

    def rewrite(self, entries: list[dict]) -> None:
        """Replace the whole file atomically with ``entries`` (one line each)."""
        atomic_write(self.path, self._lines(entries))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _prompt_of_entry(entry: dict) -> dict[str, Any]:
    return {k: entry[k] for k in ("first_mask", "masks", "text", "classes", "stem_masks", "mask_objects",
                                  "object_masks", "write_stems", "backward") if entry.get(k) is not None}


def output_complete(job: Job, entry: dict | None, output: Path, settings: dict[str, Any]) -> bool:
    """Whether ``output/job.name`` is a finished result of ``job`` with these settings.

    True when the log entry says ``ok`` and has the job's prompt (``first_mask``, ``masks``,
    ``text``, ``classes``: a changed prompt runs again), and the folder's ``manifest.json`` names
    the same video, has the entry's frame count and the same ``settings`` (``checkpoint``,
    ``context``, ``per_object``), and every file of its ``frame_list`` exists.
    """
    if not entry or entry.get("status") != "ok" or _prompt_of_entry(entry) != job.prompt():
        return False
    folder = output / job.name
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("video") != str(Path(job.video).resolve()):
        return False
    frames = manifest.get("frames")
    if not isinstance(frames, int) or frames < 1 or frames != entry.get("frames"):
        return False
    got = manifest.get("settings") or {}
    if any(got.get(k) != v for k, v in settings.items()):
        return False
    files = [r.get("file") for r in manifest.get("frame_list") or [] if isinstance(r, dict)]
    return len(files) == frames and all(isinstance(f, str) and (folder / f).is_file() for f in files)
