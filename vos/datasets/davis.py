"""The DAVIS layout: ``JPEGImages/480p/<seq>/00000.jpg ...``, ``Annotations/480p/<seq>/00000.png``
(the first frame's annotation is the prompt) and ``ImageSets/<year>/<set>.txt`` sequence lists.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.sources import natural_sort_key
from vos.datasets.job import Job, check_name
from vos.errors import UserError

__all__ = ["read_davis_root"]


def read_davis_root(root: str | os.PathLike, subset: str = "val", year: str = "2017") -> list[Job]:
    """Jobs of a DAVIS-layout root, one per sequence.

    Sequences come from ``ImageSets/<year>/<subset>.txt`` when it exists, else from every folder of
    ``Annotations/480p`` (sorted). Each sequence's video is ``JPEGImages/480p/<seq>`` and its prompt
    the first (by name) PNG of ``Annotations/480p/<seq>``. A sequence whose frames or annotation
    are missing still gives a job: it fails on its own, naming the missing path.

    Raises:
        UserError: no ``Annotations/480p`` folder, or an empty or unreadable sequence list.
    """
    root = Path(root).resolve()
    ann = root / "Annotations" / "480p"
    if not ann.is_dir():
        raise UserError(f"{root}: not a DAVIS root (no Annotations/480p folder)")
    list_file = root / "ImageSets" / str(year) / f"{subset}.txt"
    if list_file.is_file():
        try:
            names = [ln.strip() for ln in list_file.read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{list_file}: cannot read the sequence list ({exc})") from None
        if not names:
            raise UserError(f"{list_file}: lists no sequence")
        where = str(list_file)
    else:
        names = sorted(p.name for p in ann.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not names:
            raise UserError(f"{ann}: no sequence folders")
        where = str(ann)
    jobs = []
    for i, name in enumerate(dict.fromkeys(names)):
        loc = f"{where}:{i + 1}" if list_file.is_file() else f"{ann / name}"
        check_name(name, loc)
        pngs = sorted((p.name for p in (ann / name).glob("*.png") if not p.name.startswith(".")),
                      key=natural_sort_key) if (ann / name).is_dir() else []
        mask = ann / name / (pngs[0] if pngs else "00000.png")
        jobs.append(Job(name, str(root / "JPEGImages" / "480p" / name), str(mask), loc))
    return jobs


