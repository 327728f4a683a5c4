"""``vos run`` end to end: I/O hidden behind the model, memory flat in the video's length, CLI start-up.

Three measurements, each ``vos run`` in a fresh process so that its peak RSS (``VmHWM``) is its own:

1. Memory against video length: generated videos of 100 and 1,000 frames (moving shapes, mp4),
   tiny random checkpoint; peak RSS of the whole process for each length, once with the mask on
   frame 0 (``--first-mask``) and once on frame ``n - 5`` (``--mask``: frames ``0..n-6`` are
   spilled to disk and segmented backward, so memory must stay flat in ``n`` as well).
2. End-to-end against model-only frames/s on the real DAVIS ``car-shadow`` frames with the ViT-L
   architecture (random weights): ``manifest.json`` reports the model stage's own frames/s and the
   wall-clock frames/s from first decode to last PNG written.
3. ``vos --help`` wall time (no torch / ray import at start).

Usage::

    python benchmarks/bench_run.py                 # all three, writes docs/benchmarks.md
    python benchmarks/bench_run.py --skip-large    # memory and start-up only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, measure_times, report, today  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"

_CHILD = r"""
import json, sys
from pathlib import Path
from vos.cli import main
rc = main(sys.argv[1:])
hwm = next(int(l.split()[1]) for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM:'))
print(json.dumps({"rc": rc, "peak_rss_mib": hwm / 1024}))
"""


def make_video(path: Path, frames: int, width: int = 320, height: int = 240) -> Path:
    """An mp4 of ``frames`` frames with a moving square (the object) on a textured background."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = background.copy()
            x = 40 + int(30 * np.sin(i / 10))
            img[80:140, x:x + 60] = (220, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def first_mask(path: Path, width: int = 320, height: int = 240) -> Path:
    import numpy as np
    from PIL import Image

    mask = np.zeros((height, width), np.uint8)
    mask[80:140, 40:100] = 1
    Image.fromarray(mask, mode="L").save(path)
    return path


def run_cli(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--skip-large", action="store_true", help="skip the ViT-L end-to-end run")
    ap.add_argument("--large-frames", type=int, default=12)
    ap.add_argument("--large-context", type=int, default=2)
    ap.add_argument("--large-dtype", default="bfloat16")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)

    from tests._reference import make_hf_model

    work = Path(tempfile.mkdtemp(prefix="bench_run_"))
    tiny = work / "tiny"
    make_hf_model(ROOT / "configs" / "seggpt-tiny.json", seed=0).save_pretrained(tiny)
    mask = first_mask(work / "mask.png")
    lines = [f"Machine: {machine()}. Date: {today()}.", ""]

    # 1. memory against length
    lines += ["Peak RSS of the whole `vos run` process (tiny random checkpoint, 320x240 mp4, context 2), "
              "mask on frame 0 and on frame n - 5 (backward pass over n - 5 frames spilled to disk):", "",
              "| frames | peak RSS, mask on 0 (MiB) | end-to-end fps | peak RSS, mask on n - 5 (MiB) "
              "| end-to-end fps |", "|---|---|---|---|---|"]
    for n in args.lengths:
        video = make_video(work / f"v{n}.mp4", n)
        row = [str(n)]
        for prompt in (["--first-mask", str(mask)], ["--mask", f"{max(n - 5, 0)}:{mask}"]):
            res = run_cli(["run", str(video), *prompt, "--checkpoint", str(tiny),
                           "--output", str(work / "out"), "--context", "2", "--quiet"])
            manifest = json.loads((work / "out" / f"v{n}" / "manifest.json").read_text())
            assert manifest["frames"] == n
            row += [f"{res['peak_rss_mib']:.0f}", f"{manifest['timings']['end_to_end_fps']:.2f}"]
        lines.append(f"| {' | '.join(row)} |")
        print(lines[-1], flush=True)

    # 2. end to end vs model only, ViT-L
    if not args.skip_large:
        import shutil

        large = work / "large"
        make_hf_model(ROOT / "configs" / "seggpt-vit-large.json", seed=0).save_pretrained(large)
        frames_dir = work / "car"
        frames_dir.mkdir()
        src = SHARED / "davis_sample" / "JPEGImages" / "480p" / "car-shadow"
        for f in sorted(src.glob("*.jpg"))[: args.large_frames]:
            shutil.copy(f, frames_dir / f.name)
        ann = SHARED / "davis_sample" / "Annotations" / "480p" / "car-shadow" / "00000.png"
        run_cli(["run", str(frames_dir), "--first-mask", str(ann), "--checkpoint", str(large),
                 "--output", str(work / "out"), "--context", str(args.large_context),
                 "--dtype", args.large_dtype, "--quiet", "--overlay", str(work / "o.mp4")])
        t = json.loads((work / "out" / "car" / "manifest.json").read_text())["timings"]
        n = args.large_frames
        lines += ["", f"`vos run` on {n} real DAVIS frames (854x480), ViT-L architecture, {args.large_dtype}, "
                  f"context {args.large_context}, PNGs + H.264 overlay: model stage {t['model_fps']:.3f} fps, "
                  f"end to end {t['end_to_end_fps']:.3f} fps: ratio {t['end_to_end_fps'] / t['model_fps']:.3f} "
                  f"(decode {t['decode_s']:.2f} s and write {t['write_s']:.2f} s ran in their own threads "
                  f"during {t['model_s']:.1f} s of model time).", ""]
        print(lines[-2], flush=True)

    # 3. CLI start-up
    times, _ = measure_times(lambda: subprocess.run(["vos", "--help"], capture_output=True, check=True), 5,
                             warmup=0)
    lines += [f"`vos --help`: {min(times):.2f} s (best of 5; torch, av and ray are imported only by the "
              "subcommands that need them)."]
    return report("bench_run", "vos run: end to end, memory, start-up", lines, write=not args.no_doc)


if __name__ == "__main__":
    sys.exit(main())
