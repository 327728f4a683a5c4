"""benchmarks/gpu_check.py (issue 15) in its CPU mode: the whole flow on the real car-shadow frames
with the tiny model, its report (markdown section, JSON) and its argument errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import CONFIGS, REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _run(args, env=None, timeout=900):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_shell_script_parses():
    proc = subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_peak_table_matches_device_names():
    from benchmarks.gpu_check import lookup_peak

    assert lookup_peak("NVIDIA H200")[0] == 989.0
    assert lookup_peak("NVIDIA H100 80GB HBM3")[0] == 989.0
    assert lookup_peak("NVIDIA A100-SXM4-80GB")[0] == 312.0
    assert lookup_peak("NVIDIA L40S")[0] == 362.0
    assert lookup_peak("NVIDIA GeForce RTX 4090")[0] == 165.0
    for name in ("NVIDIA H100 PCIe", "NVIDIA H200 NVL", "Tesla T4"):
        tflops, why = lookup_peak(name)
        assert tflops is None and "--peak-tflops" in why


def test_install_step_finds_every_dependency_it_may_install():
    """The install step takes version bounds from pyproject.toml for each module it may install."""
    from benchmarks.gpu_check import CHECK_DEPENDENCIES, declared_dependencies

    declared = declared_dependencies()
    assert set(CHECK_DEPENDENCIES) <= set(declared)
    assert declared["torch"].startswith("torch")


def test_synthetic_clip(tmp_path):
    from benchmarks.gpu_check import make_synthetic_clip
    from vos.labels import read_first_mask

    frames, mask = make_synthetic_clip(tmp_path, frames=5)
    files = sorted(frames.iterdir())
    assert [f.name for f in files] == [f"{i:05d}.jpg" for i in range(5)]
    first = np.asarray(Image.open(files[0]).convert("RGB")).astype(int)
    assert first.shape == (480, 854, 3)
    m = read_first_mask(mask, frame_size=(854, 480))
    assert m.object_ids == (1, 2)
    # the mask marks the painted shapes of frame 0: red disc = 1, blue box = 2
    red = first[m.labels == 1].mean(axis=0)
    blue = first[m.labels == 2].mean(axis=0)
    assert red[0] > 180 and red[2] < 90 and blue[2] > 180 and blue[0] < 90
    # the disc moves right by 12 px a frame: 48 px from frame 0 to frame 4
    last = np.asarray(Image.open(files[-1]).convert("RGB")).astype(int)

    def red_x(img):
        return np.nonzero((img[..., 0] > 180) & (img[..., 2] < 90) & (img[..., 1] < 110))[1].mean()

    assert red_x(last) - red_x(first) == pytest.approx(48, abs=3)


@pytest.mark.parametrize("args, message", [
    (["--frames", "x"], "--frames and --first-mask go together"),
    (["--frames", "/nonexistent/frames", "--first-mask", "/nonexistent/m.png"], "/nonexistent/frames: --frames not found"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--contexts", "0"], "--contexts must be positive"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, tmp_path):
    proc = _run(["--device", "cpu", "--no-install", "--docs", str(tmp_path / "x.md"), *args], timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: error: ") and message in lines[0]
    assert not (tmp_path / "x.md").exists()


@pytest.mark.slow
def test_cpu_flow_on_car_shadow(shared_data, tmp_path):
    """The whole check on CPU: parity (CPU bf16 against fp32), speed, ``vos run`` on the 40 real
    frames, a compile variant that cannot run on CPU (skipped with its reason), the markdown
    section and the JSON in ``$OUT``. Prompt counts are kept small: the check's content, not its
    size, is under test."""
    seq = shared_data / "davis_sample"
    frames = seq / "JPEGImages" / "480p" / "car-shadow"
    mask = seq / "Annotations" / "480p" / "car-shadow" / "00000.png"
    doc = tmp_path / "bench.md"
    doc.write_text("# Benchmarks\n\nOther text.\n\n<!-- gpu_check:start -->\nold figures\n<!-- gpu_check:end -->\n\nTail.\n")
    out = tmp_path / "out"
    out.mkdir()
    work = tmp_path / "tmp"
    work.mkdir()
    proc = _run(["--device", "cpu", "--config", str(CONFIGS / "seggpt-tiny.json"), "--no-install",
                 "--docs", str(doc), "--peak-tflops", "2", "--frames", str(frames), "--first-mask", str(mask),
                 "--prompts", "1", "2", "--contexts", "1", "2", "--run-context", "2", "--run-dtype", "float32",
                 "--repeat", "1", "--warmup", "0", "--compile", "--compile-variants", "cuda-graph", "--keep"],
                env={"OUT": str(out), "TMPDIR": str(work)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    res = json.loads((out / "gpu_check.json").read_text())
    assert res["complete"] and res["passed"]
    assert {"device", "inputs", "model", "install", "parity", "speed", "end_to_end", "compile", "seconds",
            "markdown"} <= set(res)
    assert res["device"]["type"] == "cpu" and res["inputs"]["synthetic"] is False
    assert res["inputs"]["clip_frames"] == 40 and (res["inputs"]["width"], res["inputs"]["height"]) == (854, 480)

    rows = res["parity"]["rows"]
    assert [(r["dtype"], r["prompts"]) for r in rows] == [("bfloat16", 1), ("bfloat16", 2)]
    for r in rows:
        assert r["gate"] and r["passed"] and r["metric"] == "label_agreement"
        assert 0.995 <= r["label_agreement"] < 1.0          # bf16 differs from fp32, within the gate
        assert 0 < r["max_abs_diff"] < 0.5 and r["finite"]
    assert all(0.05 < f < 0.95 for f in res["parity"]["reference_foreground"].values())

    sp = res["speed"]
    assert [r["context"] for r in sp["rows"]] == [1, 2] and sp["peak_tflops"] == 2
    for r in sp["rows"]:
        assert r["fps"] == pytest.approx(1 / r["median_s"])
        assert r["peak_fraction"] == pytest.approx(r["tflops"] / 2)

    e2e = res["end_to_end"]
    assert e2e["passed"] and e2e["frames"] == 40 and e2e["pngs"] == 40
    assert e2e["model_fps"] > 0 and e2e["end_to_end_fps"] > 0
    # the PNGs themselves: 40 label maps at frame size, labels 0/1 only
    (kept,) = list(work.glob("gpu_check_*"))
    pngs = sorted((kept / "out" / "clip").glob("*.png"))
    assert len(pngs) == 40
    for p in pngs[::13]:
        labels = np.asarray(Image.open(p))
        assert labels.shape == (480, 854) and set(np.unique(labels)) <= {0, 1}

    (comp,) = res["compile"]
    assert comp["variant"] == "cuda-graph" and comp["status"] == "skipped"
    assert "CUDA graphs need a CUDA device" in comp["reason"]
    assert "[compile] cuda-graph: skipped: RuntimeError: CUDA graphs need a CUDA device" in proc.stdout

    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nOther text.") and text.rstrip().endswith("Tail.")
    assert "old figures" not in text and text.count("<!-- gpu_check:start -->") == 1
    section = text[text.index("<!-- gpu_check:start -->"):text.index("<!-- gpu_check:end -->")]
    assert section.strip().endswith(res["markdown"].strip())
    assert (out / "gpu_check.md").read_text().strip() == res["markdown"].strip()
    assert "Parity against the CPU fp32 forward: PASS" in section
    assert f"{100 * rows[0]['label_agreement']:.3f}%" in section
    assert "40 PNGs written" in section and "skipped: RuntimeError: CUDA graphs need a CUDA device" in section
