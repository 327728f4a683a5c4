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


def test_dependencies_parse_without_tomllib(monkeypatch):
    """Python 3.10 has no tomllib: the hand parser reads the same requirement list."""
    from benchmarks import gpu_check

    text = (REPO / "pyproject.toml").read_text()
    expected = gpu_check._parse_dependencies(text)
    monkeypatch.setattr(gpu_check, "tomllib", None)
    assert gpu_check._parse_dependencies(text) == expected and "torch>=2.2" in expected
    assert gpu_check.declared_dependencies()["torch"] == "torch>=2.2"
    assert gpu_check._parse_dependencies('[project]\nname = "x"\ndependencies = [\n  "a>=1",  # c\n  \'b\',\n]\n'
                                         '[tool.x]\ndependencies = ["no"]\n') == ["a>=1", "b"]


def test_strict_fp32_turns_tf32_off_and_restores():
    import torch

    from benchmarks.gpu_check import _StrictFp32

    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    with _StrictFp32():
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == torch.backends.cudnn.rnn.fp32_precision == "ieee"
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == before


def test_cpu_torch_build_gets_the_cuda_build(monkeypatch):
    """A CPU build of torch (torch.version.cuda is None) is not taken for CUDA: the CUDA build is
    installed (here: in this interpreter, as when no venv can be made), and a CPU build coming back
    from pip fails in one line that says what to pass."""
    from benchmarks import gpu_check

    calls = []
    statuses = iter([{"importable": True, "version": "2.13.0+cpu", "cuda_build": None, "available": False,
                      "count": 0, "error": None}] * 2)
    monkeypatch.setenv(gpu_check.VENV_MARK, "1")                    # as inside the venv: no second venv
    monkeypatch.setattr(gpu_check, "driver_preflight", lambda: "GPU 0: fake")
    monkeypatch.setattr(gpu_check, "_torch_status", lambda *a: next(statuses))
    monkeypatch.setattr(gpu_check, "_pip", lambda args, what, python=None: calls.append(args))
    with pytest.raises(gpu_check.CheckError, match="CPU build.*--torch-index-url"):
        gpu_check.install("cuda")
    assert calls == [["--force-reinstall", "torch==2.13.0"]]
    # a CUDA build that sees no GPU fails at once, without installing anything
    calls.clear()
    monkeypatch.setattr(gpu_check, "_torch_status", lambda *a: {
        "importable": True, "version": "2.13.0+cu128", "cuda_build": "12.8", "available": False, "count": 0,
        "error": None})
    with pytest.raises(gpu_check.CheckError, match="sees no GPU"):
        gpu_check.install("cuda")
    assert calls == []


def test_no_driver_fails_in_one_line_within_a_minute(tmp_path):
    """On a machine without an NVIDIA driver the full check (install step included) stops in one
    line before downloading anything."""
    import shutil as sh
    import time

    if sh.which("nvidia-smi") or Path("/proc/driver/nvidia/version").exists():
        pytest.skip("this machine has an NVIDIA driver")
    t0 = time.perf_counter()
    proc = _run(["--docs", str(tmp_path / "x.md")], timeout=60)
    assert time.perf_counter() - t0 < 60
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["gpu_check: error: no NVIDIA driver on this machine (no nvidia-smi, no "
                     "/proc/driver/nvidia/version)"]
    assert not (tmp_path / "x.md").exists()


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
    (["--budget", "0"], "--budget must be positive"),
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
                env={"OUT": str(out), "TMPDIR": str(work), "VOS_ATTENTION_RECORD": str(tmp_path / "record.json")})
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
    assert comp["variant"] == "cuda-graph" and comp["status"] == "not measured"
    assert "CUDA graphs need a CUDA device" in comp["reason"] and comp["phase"] == "compiling"
    assert "[compile] cuda-graph: not measured: RuntimeError: CUDA graphs need a CUDA device" in proc.stdout

    # the attention comparison ran (flex against sdpa, bf16, largest context) but records nothing on CPU
    att = res["attention"]
    (flex,) = att["rows"]
    assert att["context"] == 2 and flex["variant"] == "attn-flex" and flex["status"] == "ok"
    assert flex["label_agreement"] >= 0.995 and flex["eager_s"] > 0 and flex["compiled_s"] > 0
    assert att["winner"] in ("sdpa", "flex") and att["record"] is None and "CPU run" in att["note"]
    assert not (tmp_path / "record.json").exists() and not (out / "attention_record.json").exists()
    # the bf16 figures are printed against their gate
    for r in rows:
        assert (f"gpu_check: bfloat16 N={r['prompts']}: labels {100 * r['label_agreement']:.3f}% = CPU fp32 "
                f"(gate 99.5%, margin") in proc.stdout

    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nOther text.") and text.rstrip().endswith("Tail.")
    assert "old figures" not in text and text.count("<!-- gpu_check:start -->") == 1
    section = text[text.index("<!-- gpu_check:start -->"):text.index("<!-- gpu_check:end -->")]
    assert section.strip().endswith(res["markdown"].strip())
    assert (out / "gpu_check.md").read_text().strip() == res["markdown"].strip()
    assert "Parity against the CPU fp32 forward: PASS" in section
    assert f"{100 * rows[0]['label_agreement']:.3f}%" in section
    assert "40 PNGs written" in section and "not measured: RuntimeError: CUDA graphs need a CUDA device" in section
    assert "Attention kernel: sdpa (fused, width 152) against flex" in section


@pytest.mark.slow
def test_budget_reports_steps_not_measured(shared_data, tmp_path):
    """A budget that runs out after the parity step: the report is still written, every later step
    says "not measured" with the reason, and the check fails (vos run did not run)."""
    seq = shared_data / "davis_sample"
    out = tmp_path / "out"
    out.mkdir()
    proc = _run(["--device", "cpu", "--config", str(CONFIGS / "seggpt-tiny.json"), "--no-install", "--no-doc",
                 "--frames", str(seq / "JPEGImages" / "480p" / "car-shadow"),
                 "--first-mask", str(seq / "Annotations" / "480p" / "car-shadow" / "00000.png"),
                 "--prompts", "1", "--contexts", "1", "--repeat", "1", "--warmup", "0", "--budget", "1",
                 "--compile", "--compile-variants", "inductor"], env={"OUT": str(out)})
    assert proc.returncode == 1, proc.stderr[-2000:]
    res = json.loads((out / "gpu_check.json").read_text())
    assert res["complete"] and not res["passed"] and res["parity"]["passed"]
    for step in ("speed", "end_to_end"):
        assert res[step]["not_measured"].startswith("time budget")
    assert [r["status"] for r in res["attention"]["rows"]] == ["not measured"]
    assert [(r["variant"], r["status"]) for r in res["compile"]] == [("inductor", "not measured")]
    assert "time budget" in res["compile"][0]["reason"]
    assert "Not measured: time budget" in res["markdown"]
