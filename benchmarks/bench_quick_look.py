"""The README's first command (a quick look: a few frames, a small context) timed on this machine.

The real ``BAAI/seggpt-vit-large`` weights cannot be downloaded here, so the ViT-L architecture
(``configs/seggpt-vit-large.json``) is built by ``seggpt_model`` with random weights (no download),
saved in hub layout and passed with ``--checkpoint``; the forward costs the same as with the real
weights. The command is then run as a user runs it, in a fresh process::

    vos run car-shadow --first-mask 00000.png --frames 0:N --context C --device cpu --checkpoint RANDOM_VIT_L

and the report gives the command's wall time (interpreter start to exit, model load included,
download excluded), the model stage's seconds per segmented frame (``manifest.json`` timings) and
the estimate line ``vos run`` prints on a CPU after the first segmented frame.

Usage::

    python benchmarks/bench_quick_look.py                  # --frames 0:6 --context 2, writes docs/benchmarks.md
    python benchmarks/bench_quick_look.py --frames 0:3 --no-doc
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, report, today  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
SEQUENCE = "car-shadow"


def random_vit_large(folder: Path, seed: int = 0) -> Path:
    """Save the ViT-L SegGPT (``configs/seggpt-vit-large.json``) with random weights in hub layout."""
    import torch

    from seggpt_model import SegGptConfig, save_pretrained
    from seggpt_model.build import model_class_for
    from tests._reference import randomize_

    data = json.loads((ROOT / "configs" / "seggpt-vit-large.json").read_text())
    config = SegGptConfig.from_dict(data, source="configs/seggpt-vit-large.json")
    torch.manual_seed(seed)
    model = model_class_for(data["architectures"][0])(config).eval()
    randomize_(model, seed)     # weights of healthy magnitude, so masks do not collapse to background
    return save_pretrained(model, folder)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", default="0:6", help="--frames of the quick look (default 0:6)")
    ap.add_argument("--context", type=int, default=2, help="--context of the quick look (default 2)")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench_quick_look_"))
    t0 = time.perf_counter()
    checkpoint = random_vit_large(work / "vit-large-random")
    print(f"random ViT-L saved in {time.perf_counter() - t0:.1f} s", flush=True)
    frames = SHARED / "davis_sample" / "JPEGImages" / "480p" / SEQUENCE
    mask = SHARED / "davis_sample" / "Annotations" / "480p" / SEQUENCE / "00000.png"
    argv = [sys.executable, "-m", "vos.cli", "run", str(frames), "--first-mask", str(mask),
            "--frames", args.frames, "--context", str(args.context), "--device", "cpu",
            "--checkpoint", str(checkpoint), "--output", str(work / "out")]
    load_before = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    load = max(load_before, os.getloadavg()[0])
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    manifest = json.loads((work / "out" / SEQUENCE / "manifest.json").read_text())
    t = manifest["timings"]
    segmented = manifest["frames"] - 1             # frame 0 is the given mask: no forward
    per_frame = t["model_s"] / segmented
    estimate = next((ln.strip() for ln in proc.stderr.splitlines() if ln.strip().startswith("about ")), "(none)")
    lines = [
        f"Machine: {machine()}. Date: {today()}. Model: `configs/seggpt-vit-large.json` with random "
        "weights (built by `seggpt_model`, no download; the forward costs what the real weights cost), "
        "float32 on the CPU.", "",
        f"`vos run {SEQUENCE} --first-mask 00000.png --frames {args.frames} --context {args.context} "
        f"--device cpu` ({manifest['frames']} real DAVIS frames, 854x480, {segmented} segmented): "
        f"{wall:.0f} s for the whole command (model load {t['model_load_s']:.1f} s, model stage "
        f"{t['model_s']:.0f} s: {per_frame:.1f} s a segmented frame). CPU time of the command "
        f"{cpu:.0f} s (user + system, all threads; {cpu / (os.cpu_count() or 1):.0f} s of wall on "
        f"{os.cpu_count()} otherwise idle cores); load average {load:.1f} while it ran (the machine "
        f"is shared: wall times above that core count are stretched).", "",
        f"Its estimate line after the first segmented frame: `{estimate}`.",
    ]
    return report("bench_quick_look", "The README's quick look on a CPU", lines, write=not args.no_doc)


if __name__ == "__main__":
    sys.exit(main())
