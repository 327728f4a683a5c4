"""One-shot CUDA check (issue 15): parity, forward speed, ``vos run`` end to end, compiled variants.

Run on a GPU machine that has only this repository: ``bash benchmarks/gpu_check.sh`` (which calls
this script with ``--compile``). Steps, each timed and reported:

0. **Install** (``--no-install`` skips it): if ``import torch`` with CUDA fails, ``pip install
   torch==2.13.0`` (the CUDA build on Linux x86_64); then only the runtime dependencies of
   ``pyproject.toml`` that this check imports and that are missing (numpy, pillow, av, safetensors,
   tqdm; not ray, which the check does not start), then ``pip install -e . --no-deps
   --no-build-isolation`` (a failure there only warns: every step runs the tree itself). pip reads
   ``PIP_FIND_LINKS`` / ``PIP_NO_INDEX`` for a folder of carried wheels.
1. **Model**: the SegGPT architecture of ``--config`` (default ViT-L) with seeded random weights of
   healthy magnitude (``tests/_reference.randomize_``, the weights ``bench_model.py`` uses; the
   std-0.02 :meth:`~seggpt_model.SegGptForImageSegmentation.init_weights` makes every label
   background, which would make the label check vacuous), saved in hub layout
   (:func:`seggpt_model.save_pretrained`) in a temporary folder. Nothing is downloaded.
2. **Parity**: ``segment`` (1 query frame, N prompts, feature ensemble) on the device in bf16,
   fp16 and fp32 against the CPU fp32 forward on the same inputs (the clip's frames, prompts
   painted with its first mask), N in ``--prompts`` (1 and 8). Gates: label agreement (nearest
   palette colour, as ``vos run`` decodes) >= 99.5 % for bf16/fp16, max abs difference of the
   normalised prediction <= 1e-3 for fp32 on CUDA with torch's default TF32 settings; fp32 with
   TF32 off is reported beside it, not gated. A reference whose labels are all one class fails
   (the check would prove nothing). With ``--device cpu`` the device rows are CPU bf16 (and
   whatever ``--dtypes`` adds) against CPU fp32.
3. **Speed**: bf16 forward at context 1, 4 and 8 (``--contexts``): median of ``--repeat`` timed
   calls after ``--warmup`` untimed ones, timed with CUDA events (CPU: wall clock). Frames/s and
   the fraction of the card's dense bf16 peak, from the analytic FLOP count of
   ``benchmarks/bench_model.py::analytic_flops`` and :data:`PEAK_BF16_TFLOPS` (or
   ``--peak-tflops``).
4. **End to end**: ``vos run`` in a fresh process on the clip (``--frames DIR --first-mask PNG``;
   without them a synthetic 854x480 clip of 40 frames with two moving shapes is generated, and the
   report says so), bf16, context 8; its manifest's end-to-end and model-stage frames/s against
   step 3's forward-only frames/s.
5. **Compile** (``--compile``): eager against ``torch.compile`` (inductor), ``torch.compile(mode=
   "reduce-overhead")`` (inductor + CUDA graphs) and a CUDA graph captured from the eager forward,
   bf16, context 8, each in its own process with ``--compile-timeout``; a variant that fails or
   times out is skipped with the reason printed.

Results: the section between ``<!-- gpu_check:start -->`` and ``<!-- gpu_check:end -->`` of
``--docs`` (default ``docs/benchmarks.md``), the same text in ``$OUT/gpu_check.md`` when ``$OUT``
is set, and a JSON file (``--json``, default ``$OUT/gpu_check.json`` when ``$OUT`` is set),
rewritten after every step (``"complete": false`` until the end). Exit status: 0 when every gate
passed and ``vos run`` finished, 1 otherwise, 2 for bad arguments or inputs (one line names the
file and the problem).

CPU smoke test (what ``tests/test_gpu_check.py`` runs, well under a minute)::

    python benchmarks/gpu_check.py --device cpu --config configs/seggpt-tiny.json --no-install \\
        --docs /tmp/x.md --peak-tflops 1 --frames DIR --first-mask PNG
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import DOC, machine, measure_times, today, write_section  # noqa: E402
from seggpt_model.errors import one_line  # noqa: E402

SECTION = "gpu_check"
TITLE = "CUDA check: parity, speed, end to end (issue 15)"
AGREEMENT_MIN = 0.995    # bf16 / fp16 labels equal to the CPU fp32 labels
FP32_MAX_ABS = 1e-3      # fp32 on CUDA: max abs difference of the normalised prediction
TORCH_SPEC = "torch==2.13.0"

#: Dense (no sparsity) bf16 tensor-core peak in TFLOP/s, from NVIDIA's datasheets: H100 SXM5 and
#: H200 SXM 989 (1,979 "with sparsity"), A100 312, L40S 362, GeForce RTX 4090 165 (FP32
#: accumulate, Ada whitepaper). Matched on the device name; PCIe and NVL variants of H100/H200
#: have lower peaks and are not listed (pass ``--peak-tflops``).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}

#: Runtime dependencies (pyproject distribution name -> import name) that this check imports.
CHECK_DEPENDENCIES = {"numpy": "numpy", "pillow": "PIL", "av": "av", "safetensors": "safetensors",
                      "tqdm": "tqdm"}

#: ``--compile`` variants, in the order they run.
COMPILE_VARIANTS = ("inductor", "inductor-cudagraphs", "cuda-graph")


class CheckError(Exception):
    """Bad arguments, inputs or environment: reported as ``gpu_check: error: ...``, exit 2."""


# ----------------------------------------------------------------------------------------------
# step 0: install
# ----------------------------------------------------------------------------------------------

def declared_dependencies(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """``{normalised distribution name: requirement string}`` of ``[project] dependencies``."""
    import tomllib

    reqs = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    out = {}
    for req in reqs:
        name = re.match(r"[A-Za-z0-9_.\-]+", req).group(0)
        out[re.sub(r"[-_.]+", "-", name).lower()] = req
    return out


def _torch_status() -> tuple[bool, bool, str]:
    """(torch importable, CUDA available, version) probed in a child process, so that this one
    imports torch only after a possible install."""
    code = "import torch; print(torch.__version__, int(torch.cuda.is_available()))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        return False, False, ""
    version, cuda = proc.stdout.split()[-2:]
    return True, cuda == "1", version


def _pip(args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--retries", "1", "--timeout", "30", *args]
    print(f"[install] {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise CheckError(f"pip could not install {what} (exit {proc.returncode}); without network put "
                         f"the wheels in a folder and set PIP_FIND_LINKS=DIR PIP_NO_INDEX=1")


def install(device: str, torch_spec: str = TORCH_SPEC) -> list[str]:
    """Make the check runnable here: torch (CUDA build unless ``device`` is ``cpu``), the missing
    dependencies of :data:`CHECK_DEPENDENCIES`, then this project (editable, no deps).

    Returns:
        What was done, one line each (for the report).

    Raises:
        CheckError: pip failed for torch or a dependency, or torch still has no CUDA.
    """
    done = []
    has_torch, has_cuda, version = _torch_status()
    if not has_torch or (device != "cpu" and not has_cuda):
        _pip([torch_spec], torch_spec)
        done.append(f"installed {torch_spec} ({'no torch' if not has_torch else f'torch {version} had no CUDA'})")
        has_torch, has_cuda, version = _torch_status()
        if device != "cpu" and not has_cuda:
            raise CheckError(f"torch {version or '(none)'} was installed but CUDA is not available: "
                             "no GPU or driver on this machine")
    else:
        done.append(f"torch {version} already importable{' with CUDA' if has_cuda else ''}")
    declared = declared_dependencies()
    missing = [declared.get(dist, dist) for dist, module in CHECK_DEPENDENCIES.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        _pip(missing, ", ".join(missing))
        done.append(f"installed {', '.join(missing)}")
    try:
        import importlib.metadata as md

        md.distribution("seggpt-vos")
        done.append("seggpt-vos already installed")
    except Exception:
        try:
            _pip(["-e", str(ROOT), "--no-deps", "--no-build-isolation"], "seggpt-vos")
            done.append("installed seggpt-vos (editable, --no-deps)")
        except CheckError as exc:
            print(f"[install] warning: {exc}; the check runs the tree through PYTHONPATH", flush=True)
            done.append("seggpt-vos not installed (pip failed); the tree runs through PYTHONPATH")
    return done


# ----------------------------------------------------------------------------------------------
# inputs, model
# ----------------------------------------------------------------------------------------------

def make_synthetic_clip(folder: Path, frames: int = 40, width: int = 854, height: int = 480,
                        seed: int = 0) -> tuple[Path, Path]:
    """A clip of two moving shapes on a smooth textured background, and its first mask.

    Frames are JPEGs ``folder/frames/00000.jpg ...`` (quality 90, like DAVIS); the first mask is a
    DAVIS palette PNG with object 1 (a disc moving right) and object 2 (a rectangle moving down
    and left).

    Returns:
        ``(frames folder, first-mask PNG)``.
    """
    import numpy as np
    from PIL import Image

    from vos.labels import write_label_png

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([90 + 60 * np.sin(xx / 97.0), 110 + 50 * np.cos(yy / 61.0),
                     120 + 40 * np.sin((xx + yy) / 143.0)], axis=-1)
    background = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    out = folder / "frames"
    out.mkdir(parents=True)
    first = None
    for i in range(frames):
        labels = np.zeros((height, width), np.uint8)
        cx, cy = 150 + 12 * i, 240 + 40 * np.sin(i / 6.0)
        labels[(xx - cx) ** 2 + (yy - cy) ** 2 < 70 ** 2] = 1
        x0, y0 = 640 - 6 * i, 60 + 5 * i
        labels[y0:y0 + 110, x0:x0 + 150] = 2
        img = background.copy()
        img[labels == 1] = (230, 60, 40)
        img[labels == 2] = (40, 90, 220)
        Image.fromarray(img).save(out / f"{i:05d}.jpg", quality=90)
        if first is None:
            first = labels
    mask = folder / "first_mask.png"
    write_label_png(mask, first)
    return out, mask


def load_clip(frames: Path, first_mask: Path, count: int):
    """The first ``count`` frames (cycled when the clip is shorter) and the first mask.

    Returns:
        ``(rgb list of (H, W, 3) uint8, (H, W) uint8 labels 0..K contiguous, K, number of frames
        in the clip)``.

    Raises:
        CheckError: unreadable frames or mask (the message names the file).
    """
    import numpy as np

    from pipelines.errors import PipelineError
    from pipelines.sources import open_source
    from vos.labels import read_first_mask
    from vos.errors import UserError

    try:
        with open_source(frames) as src:
            rgb = []
            total = 0
            for frame in src:
                if len(rgb) < count:
                    rgb.append(frame.rgb)
                total += 1
            mask = read_first_mask(first_mask, frame_size=(src.width, src.height))
    except (PipelineError, UserError, OSError, ValueError) as exc:
        raise CheckError(one_line(exc)) from None
    if not rgb:
        raise CheckError(f"{frames}: no frames")
    if not mask.object_ids:
        raise CheckError(f"{first_mask}: no object in the first mask")
    lut = np.zeros(256, np.uint8)
    lut[list(mask.object_ids)] = np.arange(1, len(mask.object_ids) + 1)
    rgb = [rgb[i % len(rgb)] for i in range(count)]
    return rgb, lut[mask.labels], len(mask.object_ids), total


def build_checkpoint(config: Path, seed: int, folder: Path):
    """Random-weight SegGPT of ``config`` (seeded ``tests._reference.randomize_``: weights with std
    ``1/sqrt(fan_in)``, LayerNorm gains near 1, tokens and biases near 0.5), saved in hub layout.

    Returns:
        ``(SegGptConfig, folder)``.

    Raises:
        CheckError: unreadable or invalid config file.
    """
    import torch

    from seggpt_model import SegGptConfig, SegGptForImageSegmentation, save_pretrained
    from tests._reference import randomize_

    try:
        cfg = SegGptConfig.from_dict(json.loads(config.read_text()), source=str(config))
    except (OSError, ValueError) as exc:
        raise CheckError(f"{config}: {one_line(exc)}") from None
    with torch.device("meta"):  # every parameter is drawn below: skip the default init
        model = SegGptForImageSegmentation(cfg)
    model = model.to_empty(device="cpu").eval()
    randomize_(model, seed)
    save_pretrained(model, folder)
    return cfg, folder


def make_inputs(rgb: list, labels, num_labels: int, n: int):
    """CPU fp32 model inputs: query = frame ``len(rgb) - 1``, prompts = frames ``0..n-1`` each
    painted with the first mask's labels.

    Returns:
        ``pixel_values (1, 3, 448, 448)``, ``prompt_pixel_values (n, 3, 448, 448)``,
        ``prompt_masks (n, 3, 448, 448)``, all ImageNet-normalised float32.
    """
    import torch

    from seggpt_model import processing as P

    def tensor(frames):
        return torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in frames])

    query = P.preprocess_images(tensor(rgb[-1:]))
    prompts = P.preprocess_images(tensor(rgb[:n]))
    lab = torch.from_numpy(labels).long()[None].expand(n, -1, -1)
    masks = P.preprocess_label_masks(lab, P.build_palette(num_labels))
    return query, prompts, masks


# ----------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------

def forward_times(fn, repeat: int, warmup: int, cuda: bool) -> list[float]:
    """Seconds of each of ``repeat`` calls of ``fn()`` after ``warmup`` untimed ones.

    CUDA: a pair of CUDA events around each call, launched back to back, read after one final
    synchronise (GPU time per call, host launch gaps included). CPU:
    :func:`benchmarks._common.measure_times` (wall clock).
    """
    if not cuda:
        return measure_times(fn, repeat, warmup)[0]
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(repeat)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / 1e3 for start, end in events]


def compare(pred, ref, palette) -> dict:
    """Metrics of a prediction against the CPU fp32 one, both ``(1, 3, 448, 448)`` normalised.

    Returns:
        ``label_agreement`` (fraction of pixels whose nearest palette label is equal),
        ``max_abs_diff`` and ``mean_abs_diff`` (normalised units), ``finite`` (bool).
    """
    import torch

    from seggpt_model.processing import postprocess_masks

    pred = pred.float().cpu()
    diff = (pred - ref).abs()
    return {"label_agreement": float((postprocess_masks(pred, palette) == postprocess_masks(ref, palette))
                                     .float().mean()),
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "finite": bool(torch.isfinite(pred).all())}


class _StrictFp32:
    """Context: full-precision fp32 matmuls and cuDNN ops on CUDA (TF32 off), restored after.

    Only torch's newer ``fp32_precision`` flags are used (mixing them with the legacy
    ``allow_tf32`` ones makes torch raise); cuDNN conv and RNN are set together so that a legacy
    read stays consistent."""

    _FLAGS = (("cuda", "matmul"), ("cudnn", "conv"), ("cudnn", "rnn"))

    def __enter__(self):
        import torch

        self.saved = [getattr(getattr(torch.backends, a), b).fp32_precision for a, b in self._FLAGS]
        for a, b in self._FLAGS:
            getattr(getattr(torch.backends, a), b).fp32_precision = "ieee"

    def __exit__(self, *exc):
        import torch

        for (a, b), value in zip(self._FLAGS, self.saved):
            getattr(getattr(torch.backends, a), b).fp32_precision = value


def parity(ckpt: Path, inputs: dict, num_labels: int, device, dtypes: list[str]) -> dict:
    """Step 2: device forwards against the CPU fp32 forward (see the module docstring).

    Returns:
        ``{"passed": bool, "reference_foreground": {N: fraction}, "rows": [...]}``; each row has
        ``dtype``, ``prompts``, ``tf32``, the :func:`compare` metrics, ``metric``, ``threshold``,
        ``gate`` (whether it counts) and ``passed``.
    """
    import torch

    from seggpt_model import from_pretrained
    from seggpt_model.processing import build_palette, postprocess_masks

    palette = build_palette(num_labels)
    cpu = from_pretrained(ckpt)
    refs = {}
    with torch.inference_mode():
        for n, (q, p, m) in inputs.items():
            refs[n] = cpu.segment(q, p, m).float()
    del cpu
    ref_labels = {n: postprocess_masks(r, palette) for n, r in refs.items()}
    foreground = {n: float((lab > 0).float().mean()) for n, lab in ref_labels.items()}
    cuda = device.type == "cuda"
    runs = [(d, "default") for d in dtypes if not (d == "float32" and not cuda)]
    if cuda and "float32" in dtypes:
        runs.append(("float32", "off"))
    rows = []
    for dname, tf32 in runs:
        model = from_pretrained(ckpt, device=device, dtype=getattr(torch, dname))
        for n, (q, p, m) in inputs.items():
            args = [t.to(device=device, dtype=model.dtype) for t in (q, p, m)]
            with torch.inference_mode(), (_StrictFp32() if tf32 == "off" else contextlib.nullcontext()):
                pred = model.segment(*args)
            row = {"dtype": dname, "prompts": n, "tf32": tf32 if dname == "float32" and cuda else None,
                   **compare(pred, refs[n], palette)}
            if dname == "float32":
                row.update(metric="max_abs_diff", threshold=FP32_MAX_ABS, gate=tf32 == "default",
                           passed=row["finite"] and row["max_abs_diff"] <= FP32_MAX_ABS)
            else:
                row.update(metric="label_agreement", threshold=AGREEMENT_MIN, gate=True,
                           passed=row["finite"] and row["label_agreement"] >= AGREEMENT_MIN)
            if ref_labels[n].unique().numel() < 2:  # a check that could not fail
                row.update(passed=False, note="reference labels are all one class")
            rows.append(row)
            print(f"[parity] {_parity_line(row)}", flush=True)
        del model
        if cuda:
            torch.cuda.empty_cache()
    return {"passed": all(r["passed"] for r in rows if r["gate"]), "reference_foreground": foreground,
            "rows": rows}


def _parity_line(r: dict) -> str:
    tf32 = f" (TF32 {r['tf32']})" if r["tf32"] else ""
    return (f"{r['dtype']}{tf32} N={r['prompts']}: labels {100 * r['label_agreement']:.3f}% = fp32, "
            f"max abs {r['max_abs_diff']:.2e}: {'PASS' if r['passed'] else 'FAIL'}"
            f"{'' if r['gate'] else ' (not gated)'}{' ' + r['note'] if r.get('note') else ''}")


def lookup_peak(name: str) -> tuple[float | None, str]:
    """Dense bf16 peak (TFLOP/s) of a device from :data:`PEAK_BF16_TFLOPS` by its name.

    Returns:
        ``(tflops, source)``, or ``(None, why)`` when the name is not in the table.
    """
    upper = name.upper()
    if "H100" in upper or "H200" in upper:
        if "PCIE" in upper or "NVL" in upper:
            return None, f"{name}: PCIe/NVL variant, not in the table (pass --peak-tflops)"
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key.upper() in upper:
            return tflops, f"{key} dense bf16, NVIDIA datasheet"
    return None, f"{name} is not in the peak table (pass --peak-tflops)"


def speed(ckpt: Path, cfg, inputs: dict, device, repeat: int, warmup: int, peak: float | None) -> list[dict]:
    """Step 3: bf16 forward time per context N. Rows: ``context``, ``median_s``, ``times_s``,
    ``fps``, ``tflops`` (analytic FLOPs / median), ``peak_fraction`` (None without a peak)."""
    import torch

    from benchmarks.bench_model import analytic_flops
    from seggpt_model import from_pretrained

    model = from_pretrained(ckpt, device=device, dtype=torch.bfloat16)
    rows = []
    for n, (q, p, m) in inputs.items():
        args = [t.to(device=device, dtype=torch.bfloat16) for t in (q, p, m)]
        with torch.inference_mode():
            times = forward_times(lambda: model.segment(*args), repeat, warmup, device.type == "cuda")
        median = statistics.median(times)
        tflops = analytic_flops(cfg, n) / median / 1e12
        rows.append({"context": n, "median_s": median, "times_s": times, "fps": 1 / median,
                     "tflops": tflops, "peak_fraction": tflops / peak if peak else None})
        print(f"[speed] N={n}: {1e3 * median:.2f} ms, {1 / median:.2f} frames/s, {tflops:.1f} TFLOP/s", flush=True)
    return rows


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def end_to_end(ckpt: Path, frames: Path, first_mask: Path, out: Path, device: str, dtype: str,
               context: int) -> dict:
    """Step 4: ``vos run`` in a fresh process. Returns the manifest's timings, the PNG count, the
    process's wall time and ``passed`` (exit 0 and one PNG per frame); ``error`` on failure."""
    cmd = [sys.executable, "-m", "vos.cli", "run", str(frames), "--first-mask", str(first_mask),
           "--checkpoint", str(ckpt), "--output", str(out), "--name", "clip", "--context", str(context),
           "--device", device, "--dtype", dtype, "--quiet"]
    print(f"[vos run] {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(), cwd=ROOT)
    wall = time.perf_counter() - t0
    result = {"command": ["vos", *cmd[3:]], "context": context, "dtype": dtype, "process_wall_s": wall,
              "returncode": proc.returncode}
    if proc.returncode != 0:
        return {**result, "passed": False,
                "error": one_line(RuntimeError(proc.stderr or proc.stdout or "no output"), last=True)}
    manifest = json.loads((out / "clip" / "manifest.json").read_text())
    pngs = len(list((out / "clip").glob("*.png")))
    timings = manifest.get("timings", {})
    return {**result, "frames": manifest.get("frames"), "pngs": pngs, "timings": timings,
            "model_fps": timings.get("model_fps"), "end_to_end_fps": timings.get("end_to_end_fps"),
            "passed": pngs == manifest.get("frames") and pngs > 0}


# ----------------------------------------------------------------------------------------------
# step 5: compiled variants, one process each
# ----------------------------------------------------------------------------------------------

def compile_worker(variant: str, job: Path, result: Path) -> int:
    """Child process of step 5: eager against ``variant`` on the inputs in ``job`` (torch.save'd
    dict: checkpoint, device, q, p, m, palette, repeat, warmup); writes ``result`` JSON with
    ``status`` ``ok`` (times, speed-up, first-call seconds, label agreement with eager) or
    ``skipped`` and the reason."""
    import torch

    from seggpt_model import from_pretrained
    from seggpt_model.processing import postprocess_masks

    spec = torch.load(job)
    out = {"variant": variant}
    try:
        device = torch.device(spec["device"])
        cuda = device.type == "cuda"
        model = from_pretrained(spec["checkpoint"], device=device, dtype=torch.bfloat16)
        args = [t.to(device=device, dtype=torch.bfloat16) for t in (spec["q"], spec["p"], spec["m"])]
        with torch.inference_mode():
            eager_times = forward_times(lambda: model.segment(*args), spec["repeat"], spec["warmup"], cuda)
            eager = model.segment(*args).float().cpu()
            t0 = time.perf_counter()
            fn = _compiled(variant, model, args)
            first = fn().float().cpu()
            if cuda:
                torch.cuda.synchronize()
            first_s = time.perf_counter() - t0
            times = forward_times(fn, spec["repeat"], spec["warmup"], cuda)
        palette = spec["palette"]
        eager_s, compiled_s = statistics.median(eager_times), statistics.median(times)
        out.update(status="ok", eager_s=eager_s, compiled_s=compiled_s, speedup=eager_s / compiled_s,
                   first_call_s=first_s, max_abs_diff=float((first - eager).abs().max()),
                   label_agreement=float((postprocess_masks(first, palette) == postprocess_masks(eager, palette))
                                         .float().mean()))
    except Exception as exc:  # any failure skips the variant, with its reason
        out.update(status="skipped", reason=one_line(exc, with_type=True))
    result.write_text(json.dumps(out))
    return 0


def _compiled(variant: str, model, args):
    """A zero-argument callable running ``model.segment(*args)`` through ``variant``."""
    import torch

    if variant in ("inductor", "inductor-cudagraphs"):
        mode = "reduce-overhead" if variant == "inductor-cudagraphs" else None
        fn = torch.compile(model.segment, mode=mode, dynamic=False)
        return lambda: fn(*args)
    if variant == "cuda-graph":
        if args[0].device.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up (allocator, cuBLAS handles) outside the capture
            for _ in range(3):
                model.segment(*args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = model.segment(*args)

        def replay():
            graph.replay()
            return static_out
        return replay
    raise ValueError(f"unknown compile variant {variant!r} (use {', '.join(COMPILE_VARIANTS)})")


def compiled_variants(ckpt: Path, inputs: tuple, num_labels: int, device, variants: list[str], repeat: int,
                      warmup: int, timeout: float, work: Path) -> list[dict]:
    """Step 5: each variant in a fresh process (own compile caches and CUDA memory), killed with
    its process group after ``timeout`` seconds. Rows as :func:`compile_worker` writes them."""
    import torch

    from seggpt_model.processing import build_palette

    job = work / "compile_job.pt"
    q, p, m = inputs
    torch.save({"checkpoint": str(ckpt), "device": str(device), "q": q, "p": p, "m": m,
                "palette": build_palette(num_labels), "repeat": repeat, "warmup": warmup}, job)
    rows = []
    for variant in variants:
        result = work / f"compile_{variant}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--compile-worker", variant, str(job), str(result)]
        env = _child_env()
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(work / "inductor_cache"))
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
            row = (json.loads(result.read_text()) if result.is_file() else
                   {"variant": variant, "status": "skipped", "reason": one_line(
                       RuntimeError(output or f"worker exited {proc.returncode}"), last=True)})
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            row = {"variant": variant, "status": "skipped", "reason": f"timed out after {timeout:.0f} s"}
        rows.append(row)
        if row["status"] == "ok":
            print(f"[compile] {variant}: eager {1e3 * row['eager_s']:.2f} ms, compiled {1e3 * row['compiled_s']:.2f} ms "
                  f"({row['speedup']:.2f}x), first call {row['first_call_s']:.1f} s", flush=True)
        else:
            print(f"[compile] {variant}: skipped: {row['reason']}", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------

def device_info(device) -> dict:
    """Name, versions and precision settings of the device the check ran on."""
    import torch

    info = {"type": device.type, "machine": machine(), "torch": torch.__version__,
            "cuda_runtime": torch.version.cuda, "date": today()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        driver = None
        if shutil.which("nvidia-smi"):
            proc = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader",
                                   f"--id={device.index or 0}"], capture_output=True, text=True)
            driver = proc.stdout.strip() or None
        info.update(name=torch.cuda.get_device_name(device), capability=f"{props.major}.{props.minor}",
                    memory_gib=props.total_memory / 2**30, driver=driver,
                    cudnn=torch.backends.cudnn.version(),
                    tf32={"matmul": torch.backends.cuda.matmul.fp32_precision,
                          "cudnn_conv": torch.backends.cudnn.conv.fp32_precision})
    else:
        info.update(name=f"CPU ({machine()})")
    return info


def _fmt(value, spec: str, scale: float = 1.0, none: str = "-") -> str:
    return none if value is None else format(value * scale, spec)


def markdown(res: dict) -> str:
    """The ``gpu_check`` section of ``docs/benchmarks.md`` from the results dict."""
    dev, inp = res["device"], res["inputs"]
    lines = []
    if dev["type"] == "cuda":
        lines.append(f"Device: **{dev['name']}** (compute capability {dev['capability']}, "
                     f"{dev['memory_gib']:.0f} GiB), driver {dev['driver'] or 'unknown'}, CUDA {dev['cuda_runtime']} "
                     f"(torch build), cuDNN {dev['cudnn']}, torch {dev['torch']}; fp32 precision settings: "
                     f"matmul `{dev['tf32']['matmul']}`, cuDNN conv `{dev['tf32']['cudnn_conv']}`.")
    else:
        lines.append(f"Device: **{dev['name']}**, torch {dev['torch']} (CPU smoke run of the CUDA check: "
                     "the device rows are CPU forwards).")
    lines += ["", f"Date: {dev['date']}. Command: `{res['command']}`; total {res['seconds'].get('total', 0):.0f} s "
              f"(install {res['seconds'].get('install', 0):.0f} s). Install: {'; '.join(res['install'])}.", ""]
    clip = ("a **synthetic** clip (no `--frames` given: 854x480, 40 JPEG frames, two moving shapes, "
            "generated in a temporary folder)" if inp["synthetic"] else f"`{inp['frames']}` with `{inp['first_mask']}`")
    lines += [f"Model: `{res['model']['config']}` with random weights (seed {res['model']['seed']}, "
              "`tests/_reference.randomize_`, as `bench_model.py`), hub layout in a temporary folder. Inputs: "
              f"{clip}, {inp['clip_frames']} frames of {inp['width']}x{inp['height']}, {inp['objects']} object(s); "
              f"1 query frame (index {inp['query_index']}), N prompts (the first N frames painted with the "
              "first mask), feature ensemble (`segment`).", ""]
    par = res.get("parity")
    if par:
        fg = ", ".join(f"N={n}: {100 * f:.1f}%" for n, f in par["reference_foreground"].items())
        lines += [f"### Parity against the CPU fp32 forward: {'PASS' if par['passed'] else 'FAIL'}", "",
                  f"Gates: label agreement >= {100 * AGREEMENT_MIN:.1f}% (bf16, fp16), max abs difference of the "
                  f"normalised prediction <= {FP32_MAX_ABS:g} (fp32, default TF32 settings). Foreground of the "
                  f"reference labels: {fg}.", "",
                  "| dtype on device | N | labels = CPU fp32 | max abs diff | mean abs diff | gate | result |",
                  "|---|---:|---:|---:|---:|---|---|"]
        for r in par["rows"]:
            name = r["dtype"] + (f", TF32 {r['tf32']}" if r["tf32"] else "")
            gate = (f"{r['metric']} {'>=' if r['metric'] == 'label_agreement' else '<='} {r['threshold']:g}"
                    if r["gate"] else "not gated")
            lines.append(f"| {name} | {r['prompts']} | {100 * r['label_agreement']:.3f}% | {r['max_abs_diff']:.2e} "
                         f"| {r['mean_abs_diff']:.2e} | {gate} | {'PASS' if r['passed'] else 'FAIL'}"
                         f"{' (' + r['note'] + ')' if r.get('note') else ''} |")
        lines.append("")
    sp = res.get("speed")
    if sp:
        lines += ["### Forward speed, bf16", "",
                  f"Median of {sp['repeat']} calls after {sp['warmup']} warm-up calls ({sp['timer']}; few "
                  "repetitions to stay within the 8-minute budget). Peak: "
                  + (f"{sp['peak_tflops']:g} TFLOP/s ({sp['peak_source']})." if sp["peak_tflops"] else
                     f"none ({sp['peak_source']})."), "",
                  "| context N | ms / frame | frames/s | TFLOP/s (analytic) | of peak |", "|---:|---:|---:|---:|---:|"]
        for r in sp["rows"]:
            lines.append(f"| {r['context']} | {1e3 * r['median_s']:.2f} | {r['fps']:.2f} | {r['tflops']:.2f} | "
                         f"{_fmt(r['peak_fraction'], '.1f', 100)}{'%' if r['peak_fraction'] is not None else ''} |")
        lines += ["", "FLOPs: `benchmarks/bench_model.py::analytic_flops` (shared-query formulation)."]
        lines.append("")
    e2e = res.get("end_to_end")
    if e2e:
        lines.append("### `vos run` end to end")
        lines.append("")
        if e2e["passed"]:
            fwd = e2e.get("forward_fps")
            lines.append(f"`{' '.join(e2e['command'][:2])} ... --context {e2e['context']} --dtype {e2e['dtype']}` on "
                         f"the {e2e['frames']} frames ({e2e['pngs']} PNGs written): end to end "
                         f"{e2e['end_to_end_fps']:.2f} frames/s (first decode to last PNG), model stage "
                         f"{e2e['model_fps']:.2f} frames/s (pre-processing, forward, post-processing), forward "
                         f"alone at context {e2e['context']} {_fmt(fwd, '.2f')} frames/s (step above); end to end / "
                         f"forward = {_fmt(e2e.get('ratio_to_forward'), '.2f')}. The first frames of a video "
                         f"have fewer than {e2e['context']} prompts. The process took {e2e['process_wall_s']:.1f} s "
                         f"with start-up and weight loading ({e2e['timings'].get('model_load_s', 0):.1f} s).")
        else:
            lines.append(f"FAILED (exit {e2e['returncode']}): {e2e.get('error', 'wrong PNG count')}.")
        lines.append("")
    comp = res.get("compile")
    if comp is not None:
        lines += ["### torch.compile / CUDA graphs, bf16, context 8", ""]
        if not comp:
            lines.append("Not run (no `--compile`).")
        else:
            lines += ["| variant | eager ms | compiled ms | speed-up | first call s | labels = eager |",
                      "|---|---:|---:|---:|---:|---:|"]
            for r in comp:
                if r["status"] == "ok":
                    lines.append(f"| {r['variant']} | {1e3 * r['eager_s']:.2f} | {1e3 * r['compiled_s']:.2f} | "
                                 f"{r['speedup']:.2f}x | {r['first_call_s']:.1f} | {100 * r['label_agreement']:.3f}% |")
                else:
                    lines.append(f"| {r['variant']} | skipped: {r['reason'].replace('|', '/')} | | | | |")
            lines += ["", "Each variant runs in its own process; eager is re-timed there. A compiled path is worth "
                      "a flag only where its speed-up is clearly above 1 at equal labels."]
        lines.append("")
    lines.append(f"Overall: {'PASS' if res.get('passed') else 'FAIL'}. Reproduce: `bash benchmarks/gpu_check.sh`; "
                 "JSON with every figure: `--json PATH` (default `$OUT/gpu_check.json`).")
    return "\n".join(lines)


def _save(res: dict, json_path: Path | None) -> None:
    if json_path is not None:
        from seggpt_model.files import atomic_write

        json_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(json_path, json.dumps(res, indent=1, default=str) + "\n", fsync=False)


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (CPU smoke run) (default: cuda)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "seggpt-vit-large.json"),
                    help="model architecture (default: configs/seggpt-vit-large.json)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    ap.add_argument("--frames", default=None, metavar="DIR", help="frame folder or video (default: synthetic clip)")
    ap.add_argument("--first-mask", default=None, metavar="PNG", help="first-frame mask of --frames")
    ap.add_argument("--prompts", type=int, nargs="+", default=[1, 8], help="parity prompt counts")
    ap.add_argument("--dtypes", nargs="+", default=None, choices=["bfloat16", "float16", "float32"],
                    help="device dtypes of the parity step (default: all three on CUDA, bfloat16 on CPU)")
    ap.add_argument("--contexts", type=int, nargs="+", default=[1, 4, 8], help="speed-step prompt counts")
    ap.add_argument("--repeat", type=int, default=None, help="timed calls (default: 20 on CUDA, 2 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls first (default: 5 on CUDA, 1 on CPU)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense bf16 peak in TFLOP/s (default: looked up from the device name)")
    ap.add_argument("--run-context", type=int, default=8, help="vos run --context (default: 8)")
    ap.add_argument("--run-dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                    help="measure torch.compile / CUDA graphs against eager (bf16, context 8)")
    ap.add_argument("--compile-variants", nargs="+", default=list(COMPILE_VARIANTS), choices=COMPILE_VARIANTS)
    ap.add_argument("--compile-timeout", type=float, default=150.0, help="seconds per compile variant")
    ap.add_argument("--no-install", action="store_true", help="skip the pip install step")
    ap.add_argument("--torch-spec", default=TORCH_SPEC, help=f"what to pip install for torch ({TORCH_SPEC})")
    ap.add_argument("--docs", default=str(DOC), help="markdown file that gets the section (docs/benchmarks.md)")
    ap.add_argument("--no-doc", action="store_true", help="do not write the markdown file")
    ap.add_argument("--json", default=None, metavar="PATH", help="JSON results (default: $OUT/gpu_check.json)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (checkpoint, clip, outputs)")
    ap.add_argument("--compile-worker", nargs=3, default=None, help=argparse.SUPPRESS)
    return ap


def _check_args(args) -> None:
    from pipelines.devices import parse_device

    try:
        args.device = parse_device(args.device)
    except ValueError as exc:
        raise CheckError(str(exc)) from None
    if args.device == "auto":
        raise CheckError("--device auto is ambiguous here: use cuda, cuda:N or cpu")
    if (args.frames is None) != (args.first_mask is None):
        raise CheckError("--frames and --first-mask go together (neither: a synthetic clip is generated)")
    for flag, path in (("--frames", args.frames), ("--first-mask", args.first_mask), ("--config", args.config)):
        if path is not None and not Path(path).exists():
            raise CheckError(f"{path}: {flag} not found")
    for flag, values in (("--prompts", args.prompts), ("--contexts", args.contexts),
                         ("--run-context", [args.run_context])):
        if any(v < 1 for v in values):
            raise CheckError(f"{flag} must be positive integers, got {values}")
    for flag, value in (("--repeat", args.repeat), ("--warmup", args.warmup)):
        if value is not None and value < (1 if flag == "--repeat" else 0):
            raise CheckError(f"{flag} too small: {value}")


def run_check(args) -> int:
    """Steps 0-5 (see the module docstring); returns the exit status."""
    t_start = time.perf_counter()
    out_env = os.environ.get("OUT")
    json_path = Path(args.json) if args.json else (Path(out_env) / "gpu_check.json" if out_env else None)
    res: dict = {"complete": False, "passed": False, "seconds": {},
                 "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:])}
    install_log = ["skipped (--no-install)"]
    if not args.no_install:
        install_log = install(args.device, args.torch_spec)
    res["install"] = install_log
    res["seconds"]["install"] = time.perf_counter() - t_start

    import torch

    from pipelines.devices import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise CheckError(f"{exc} (torch {torch.__version__}, built for CUDA {torch.version.cuda})") from None
    cuda = device.type == "cuda"
    repeat = args.repeat or (20 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    dtypes = args.dtypes or (["bfloat16", "float16", "float32"] if cuda else ["bfloat16"])
    res["device"] = device_info(device)
    print(f"[device] {res['device']['name']}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        t = time.perf_counter()
        if args.frames is None:
            frames, first_mask = make_synthetic_clip(work / "clip")
        else:
            frames, first_mask = Path(args.frames), Path(args.first_mask)
        needed = max(args.prompts + args.contexts) + 1
        rgb, labels, num_labels, clip_frames = load_clip(frames, first_mask, needed)
        res["inputs"] = {"synthetic": args.frames is None, "frames": str(frames), "first_mask": str(first_mask),
                         "clip_frames": clip_frames, "width": int(rgb[0].shape[1]), "height": int(rgb[0].shape[0]),
                         "objects": num_labels, "query_index": needed - 1}
        cfg, ckpt = build_checkpoint(Path(args.config), args.seed, work / "checkpoint")
        res["model"] = {"config": Path(args.config).name, "seed": args.seed, "hidden_size": cfg.hidden_size,
                        "layers": cfg.num_hidden_layers}
        inputs = {n: make_inputs(rgb, labels, num_labels, n) for n in sorted(set(args.prompts + args.contexts))}
        res["seconds"]["model_and_inputs"] = time.perf_counter() - t
        _save(res, json_path)

        t = time.perf_counter()
        res["parity"] = parity(ckpt, {n: inputs[n] for n in args.prompts}, num_labels, device, dtypes)
        res["seconds"]["parity"] = time.perf_counter() - t
        _save(res, json_path)

        t = time.perf_counter()
        peak, source = ((args.peak_tflops, "given with --peak-tflops") if args.peak_tflops else
                        lookup_peak(res["device"]["name"]) if cuda else (None, "CPU: pass --peak-tflops"))
        res["speed"] = {"dtype": "bfloat16", "repeat": repeat, "warmup": warmup, "peak_tflops": peak,
                        "peak_source": source, "timer": "CUDA events" if cuda else "wall clock",
                        "rows": speed(ckpt, cfg, {n: inputs[n] for n in args.contexts}, device, repeat, warmup, peak)}
        res["seconds"]["speed"] = time.perf_counter() - t
        _save(res, json_path)

        t = time.perf_counter()
        e2e = end_to_end(ckpt, frames, first_mask, work / "out", args.device, args.run_dtype, args.run_context)
        fwd = {r["context"]: r["fps"] for r in res["speed"]["rows"]}.get(args.run_context)
        if fwd and args.run_dtype == "bfloat16" and e2e.get("end_to_end_fps"):
            e2e.update(forward_fps=fwd, ratio_to_forward=e2e["end_to_end_fps"] / fwd)
        res["end_to_end"] = e2e
        res["seconds"]["end_to_end"] = time.perf_counter() - t
        print(f"[vos run] {'ok' if e2e['passed'] else 'FAILED'}: " + (
            f"{e2e['pngs']} PNGs, end to end {e2e['end_to_end_fps']:.2f} fps, model {e2e['model_fps']:.2f} fps"
            if e2e["passed"] else e2e.get("error", "wrong PNG count")), flush=True)
        _save(res, json_path)

        t = time.perf_counter()
        res["compile"] = []
        if args.compile:
            n = max(args.contexts)
            res["compile"] = compiled_variants(ckpt, inputs[n], num_labels, device, args.compile_variants,
                                               repeat, warmup, args.compile_timeout, work)
        res["seconds"]["compile"] = time.perf_counter() - t
    finally:
        if args.keep:
            print(f"[keep] {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)

    res["passed"] = res["parity"]["passed"] and res["end_to_end"]["passed"]
    res["seconds"]["total"] = time.perf_counter() - t_start
    res["complete"] = True
    res["markdown"] = markdown(res)
    if not args.no_doc:
        write_section(SECTION, TITLE, res["markdown"], doc=Path(args.docs))
    if out_env:
        from seggpt_model.files import atomic_write

        atomic_write(Path(out_env) / "gpu_check.md", res["markdown"] + "\n", fsync=False)
    _save(res, json_path)
    print(res["markdown"])
    print(f"gpu_check: {'PASS' if res['passed'] else 'FAIL'} in {res['seconds']['total']:.0f} s", flush=True)
    return 0 if res["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.compile_worker:
        variant, job, result = args.compile_worker
        return compile_worker(variant, Path(job), Path(result))
    try:
        _check_args(args)
        return run_check(args)
    except CheckError as exc:
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpu_check: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
