"""SegGPT forward of two code versions in one run: seconds per frame and equality of the outputs.

Checks that a refactor costs no speed and changes no number: the working tree's ``segment`` (1
query frame, N prompts, feature ensemble, the VOS operating point) against the same call at a git
revision (checked out with ``git worktree`` into a temporary folder), on the same random weights
(``tests._reference.randomize_``, seeded) and inputs. Each measurement runs in its own process
with ``PYTHONPATH`` set to one tree; the versions alternate round by round so that the machine's
drift hits both alike. Results go to ``docs/benchmarks.md`` (section ``bench_versions``).

Usage::

    python benchmarks/bench_versions.py --base 8d07a94            # ViT-L, fp32, N = 1 and 8
    python benchmarks/bench_versions.py --base HEAD~3 --config configs/seggpt-tiny.json --no-doc
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, report, today  # noqa: E402

WORKER = r"""
import json, sys, time
import torch
from seggpt_model import SegGptConfig, SegGptForImageSegmentation
from tests._reference import randomize_

config_path, n, dtype, repeat, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
torch.manual_seed(0)
cfg = SegGptConfig.from_dict(json.load(open(config_path)))
model = SegGptForImageSegmentation(cfg).eval()
randomize_(model, seed=0)
model = model.to(getattr(torch, dtype))
h = cfg.image_size[1]
g = torch.Generator().manual_seed(1)
query = torch.randn(1, 3, h, h, generator=g).to(model.dtype)
images = torch.randn(n, 3, h, h, generator=g).to(model.dtype)
masks = torch.randn(n, 3, h, h, generator=g).to(model.dtype)
times = []
with torch.inference_mode():
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        pred = model.segment(query, images, masks)
        if i:
            times.append(time.perf_counter() - t0)
torch.save(pred.float(), out)
print(json.dumps(times))
"""


def _run(tree: Path, config: Path, n: int, dtype: str, repeat: int, out: Path) -> list[float]:
    res = subprocess.run([sys.executable, "-c", WORKER, str(config), str(n), dtype, str(repeat), str(out)],
                         cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin",
                                        "HOME": str(Path.home())},
                         capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"worker in {tree} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision to compare the working tree with")
    ap.add_argument("--config", default=str(ROOT / "configs" / "seggpt-vit-large.json"))
    ap.add_argument("--prompts", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the two versions")
    ap.add_argument("--repeat", type=int, default=2, help="timed forwards per round (after one warm-up)")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)

    base = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            rows = []
            for n in args.prompts:
                times: dict[str, list[float]] = {"base": [], "tree": []}
                for _ in range(args.rounds):
                    for key, tree in (("base", old), ("tree", ROOT)):
                        times[key] += _run(tree, Path(args.config).resolve(), n, args.dtype, args.repeat,
                                           Path(tmp) / f"{key}.pt")
                a, b = torch.load(Path(tmp) / "base.pt"), torch.load(Path(tmp) / "tree.pt")
                diff = float((a - b).abs().max())
                mb, mt = statistics.median(times["base"]), statistics.median(times["tree"])
                rows.append(f"| {n} | {mb:.2f} | {mt:.2f} | {mt / mb:.3f} | {diff:.1e} |")
                print(rows[-1], flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    lines = [f"{today()}, {machine()}; `{Path(args.config).name}`, {args.dtype}, `segment` (1 query, N "
             f"prompts, feature ensemble), median of {args.rounds * args.repeat} forwards per version, "
             f"versions alternating in separate processes, same seeded weights and inputs.",
             "", f"| prompts | s/frame at {base} | s/frame now | now / base | max abs diff |",
             "|---|---|---|---|---|", *rows]
    return report("bench_versions", f"Before/after a change: working tree vs {base}", lines,
                  write=not args.no_doc)


if __name__ == "__main__":
    sys.exit(main())
