"""Job discovery (``vos batch ROOT``'s driver side) on a generated split of 3,500 videos per layout.

For each layout a split is generated in a temporary folder with the layout's folders and meta files
and empty frame / annotation files (readers never open an image: they read ``meta.json`` and folder
listings), then :func:`vos.datasets.discover.discover_jobs` (detection + reader) is timed: the
median of ``--repeat`` runs, the file system's cache warm after generation. Results go to
``docs/benchmarks.md`` (section ``bench_discovery``).

Per video: ``--frames`` frames (SA-V: that many 24 fps frames and every 4th annotated, two
objects); YouTube-VOS: two objects, the second starting on the 3rd frame; LVOS: two objects,
first-appearance PNGs; MOSE and DAVIS: one first-frame PNG.

Usage::

    python benchmarks/bench_discovery.py [--videos 3500] [--frames 20] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, report, today  # noqa: E402
from vos.datasets.discover import discover_jobs  # noqa: E402


def _touch(folder: Path, names: list[str]) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).touch()
    return len(names)


def generate(root: Path, layout: str, videos: int, frames: int) -> tuple[Path, int]:
    """A split of ``layout`` under ``root``; returns it and its number of files."""
    split = root / layout
    files = 0
    names = [f"{i:010x}" for i in range(videos)]
    if layout == "davis":
        for v in names:
            files += _touch(split / "JPEGImages" / "480p" / v, [f"{k:05d}.jpg" for k in range(frames)])
            files += _touch(split / "Annotations" / "480p" / v, ["00000.png"])
        (split / "ImageSets" / "2017").mkdir(parents=True)
        (split / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    elif layout == "youtube-vos":
        meta = {"videos": {}}
        stems = [f"{5 * k:05d}" for k in range(frames)]
        for v in names:
            files += _touch(split / "JPEGImages" / v, [f"{s}.jpg" for s in stems])
            files += _touch(split / "Annotations" / v, [f"{stems[0]}.png", f"{stems[2]}.png"])
            meta["videos"][v] = {"objects": {"1": {"category": "x", "frames": stems},
                                             "3": {"category": "y", "frames": stems[2:]}}}
        (split / "meta.json").write_text(json.dumps(meta))
    elif layout == "mose":
        for v in names:
            files += _touch(split / "JPEGImages" / v, [f"{k:05d}.jpg" for k in range(frames)])
            files += _touch(split / "Annotations" / v, ["00000.png"])
    elif layout == "sa-v":
        for v in names:
            files += _touch(split / "JPEGImages_24fps" / v, [f"{k:05d}.jpg" for k in range(frames)])
            for obj in ("000", "001"):
                files += _touch(split / "Annotations_6fps" / v / obj, [f"{k:05d}.png" for k in range(0, frames, 4)])
        (split / "sav_val.txt").write_text("\n".join(names) + "\n")
    elif layout == "lvos":
        meta = {"videos": {}}
        stems = [f"{k + 1:08d}" for k in range(frames)]
        for v in names:
            files += _touch(split / "JPEGImages" / v, [f"{s}.jpg" for s in stems])
            files += _touch(split / "Annotations" / v, [f"{stems[0]}.png", f"{stems[3]}.png"])
            meta["videos"][v] = {"objects": {
                "1": {"frame_range": {"start": 1, "end": frames, "frame_nums": frames}},
                "2": {"frame_range": {"start": stems[3], "end": frames, "frame_nums": frames - 3}}}}
        (split / "valid_meta.json").write_text(json.dumps(meta))
    return split, files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=3500)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_discovery-") as tmp:
        for layout in ("davis", "youtube-vos", "mose", "sa-v", "lvos"):
            t0 = time.perf_counter()
            split, files = generate(Path(tmp), layout, args.videos, args.frames)
            gen_s = time.perf_counter() - t0
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                jobs, kind = discover_jobs(split)
                times.append(time.perf_counter() - t0)
            assert kind == layout and len(jobs) == args.videos, (kind, len(jobs))
            med = statistics.median(times)
            rows.append(f"| {layout} | {args.videos} | {files} | {med:.3f} | {args.videos / med:,.0f} | "
                        f"{gen_s:.1f} |")
            print(rows[-1], file=sys.stderr, flush=True)
    lines = [f"{today()}, {machine()}; `python benchmarks/bench_discovery.py --videos {args.videos} "
             f"--frames {args.frames}`: median of {args.repeat} runs of `discover_jobs(ROOT)` (layout "
             f"detection + reader: meta files and folder listings, no image opened), page cache warm.",
             "",
             "| layout | videos | files | discovery s | videos/s | generating the split, s |",
             "|---|---|---|---|---|---|", *rows]
    return report("bench_discovery", "Job discovery on a 3,500-video split (bench_discovery)", lines,
                  write=not args.no_write)


if __name__ == "__main__":
    raise SystemExit(main())
