"""Start-up time of ``vos --help`` and ``vos eval --help`` (and of importing each command's module)
at a git revision and in the working tree, in one run.

Each measurement is a fresh ``python -m vos.cli ...`` process with ``PYTHONPATH`` set to one tree;
the two versions alternate so that the machine's load hits both alike. The figure is the median
wall time. Results go to ``docs/benchmarks.md`` (section ``bench_startup``).

Usage::

    python benchmarks/bench_startup.py --base 88d31b0
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, report, today  # noqa: E402

CASES = {
    "vos --help": ["-m", "vos.cli", "--help"],
    "vos eval --help": ["-m", "vos.cli", "eval", "--help"],
    "vos run --help": ["-m", "vos.cli", "run", "--help"],
}


def _once(tree: Path, args: list[str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, *args], cwd=tree, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"{args} in {tree} failed:\n{res.stderr[-2000:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision to compare the working tree with")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)
    base = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for name, cmd in CASES.items():
                times: dict[str, list[float]] = {"base": [], "tree": []}
                for _ in range(args.rounds):
                    for key, tree in (("base", old), ("tree", ROOT)):
                        times[key].append(_once(tree, cmd))
                mb, mt = statistics.median(times["base"]), statistics.median(times["tree"])
                rows.append(f"| `{name}` | {mb:.3f} | {mt:.3f} |")
                print(rows[-1], flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    lines = [f"{today()}, {machine()}; median wall time of {args.rounds} fresh processes per version, "
             f"versions alternating (`python -m vos.cli ...`).", "",
             f"| command | s at {base} | s now |", "|---|---|---|", *rows]
    return report("bench_startup", f"CLI start-up: working tree vs {base}", lines, write=not args.no_doc)


if __name__ == "__main__":
    sys.exit(main())
