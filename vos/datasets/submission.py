"""Submission zips: the results of a batch packed as each benchmark server wants them.

=============== ========================================= ==========================================
layout          zip entries                               server
=============== ========================================= ==========================================
``youtube-vos`` ``Annotations/VID/STEM.png``              YouTube-VOS CodaLab (2018 / 2019 valid)
``lvos``        ``Annotations/VID/STEM.png``              LVOS CodaLab (test)
``davis``       ``VID/STEM.png``                          DAVIS test-dev CodaLab
``mose``        ``VID/STEM.png``                          MOSE CodaLab (valid)
``sa-v``        ``VID/OBJ/STEM.png``                      none (ground truth is public: ``vos eval
                                                          --protocol sav``); packed for sharing
=============== ========================================= ==========================================

Only the PNGs are packed (``manifest.json`` files are left out), stored without recompression
(PNGs are compressed already). The zip is written under a temporary name in the target folder and
renamed when complete (:func:`seggpt_model.files.atomic_write`), so a file with the final name is
always a finished zip.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from seggpt_model.files import atomic_write
from vos.errors import UserError

__all__ = ["SUBMISSION_ROOTS", "submission_entries", "write_submission"]

#: Folder each layout's zip puts the video folders in ("" = the zip's root).
SUBMISSION_ROOTS = {"davis": "", "mose": "", "youtube-vos": "Annotations", "lvos": "Annotations",
                    "sa-v": ""}


def submission_entries(output: Path, names: list[str], layout: str) -> list[tuple[Path, str]]:
    """``(file, name in the zip)`` of every result PNG of ``names`` under ``output``, in name order.

    Raises:
        UserError: unknown layout, or a video without a finished result folder.
    """
    if layout not in SUBMISSION_ROOTS:
        raise UserError(f"no submission format for layout {layout!r} (known: {', '.join(SUBMISSION_ROOTS)})")
    prefix = SUBMISSION_ROOTS[layout]
    entries: list[tuple[Path, str]] = []
    missing = [n for n in names if not (output / n / "manifest.json").is_file()]
    if missing:
        raise UserError(f"{output}: cannot pack a submission, {len(missing)} of {len(names)} videos have "
                        f"no finished result (first: {missing[0]}); run them again (--resume)")
    for name in names:
        folder = output / name
        files = sorted(p for p in folder.rglob("*.png") if not any(part.startswith(".") for part in
                                                                   p.relative_to(folder).parts))
        for path in files:
            arc = "/".join(filter(None, (prefix, name, *path.relative_to(folder).parts)))
            entries.append((path, arc))
    return entries


def write_submission(output: str | os.PathLike, names: list[str], layout: str,
                     zip_path: str | os.PathLike) -> Path:
    """Pack the results ``output/NAME`` of ``names`` into ``zip_path`` in ``layout``'s server format.

    Args:
        output: the batch's output root.
        names: the videos (output folder names) to pack, all finished.
        layout: one of :data:`SUBMISSION_ROOTS`' keys.
        zip_path: the zip to write (its folder is created; an older file is replaced).

    Returns:
        ``zip_path`` as a :class:`~pathlib.Path`.

    Raises:
        UserError: see :func:`submission_entries`; an unwritable ``zip_path`` (no partial zip left).
    """
    output, zip_path = Path(output), Path(zip_path)
    entries = submission_entries(output, names, layout)

    def pack(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for path, arc in entries:
                zf.write(path, arc)

    try:
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(zip_path, pack)
    except OSError as exc:
        raise UserError(f"{zip_path}: cannot write the submission ({exc.strerror or exc})") from None
