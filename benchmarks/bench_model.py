"""SegGPT forward: ours against transformers' on the same inputs, in one process.

Measures, for each dtype and prompt count N (1 query frame, N prompts, feature ensemble):

* seconds per query frame of ``SegGptForImageSegmentation.segment`` (ours, the VOS operating
  point) and of the reference (transformers' ``SegGptForImageSegmentation``: a plain forward for
  N = 1, and for N > 1 transformers' layers run with the original ensemble rule,
  ``tests/_reference.painter_ensemble_reference``, which costs exactly a transformers ensemble
  forward and computes the same numbers as ours);
* the speed ratio, the max abs difference of the query prediction (fp32) or the label agreement
  with our fp32 labels (bf16/fp16), and the peak RSS added by one forward;
* achieved FLOP/s from an analytic FLOP count (:func:`analytic_flops`), against the machine's
  measured dense matmul rate;
* load time of the weights against reading the safetensors file.

Results go to ``docs/benchmarks.md`` (section ``bench_model``). Random weights (hub layout
written by transformers' ``save_pretrained``): speed does not depend on the values.

Usage::

    python benchmarks/bench_model.py                      # ViT-L, fp32 + bf16, N = 1 and 8
    python benchmarks/bench_model.py --prompts 1 3 8 --dtypes float32 --repeat 2
    python benchmarks/bench_model.py --config configs/seggpt-tiny.json --no-doc   # smoke test
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, measure_times, peak_rss_mib, reset_peak_rss, rss_mib, report, today  # noqa: E402
from seggpt_model import SegGptConfig, from_pretrained  # noqa: E402
from seggpt_model.processing import build_palette, postprocess_masks  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def analytic_flops(cfg: SegGptConfig, n: int, shared_query: bool = True) -> float:
    """FLOPs (2 per multiply-add) of one query frame with ``n`` prompts.

    With ``d`` = hidden size, ``m`` = MLP width, ``L`` = tokens per half image (784), ``T = 2L``,
    and per layer ``S`` canvases (``2n`` up to and including the merge layer, ``n`` after it):

    * linear layers: ``2 (4 d^2 + 2 d m)`` per token and layer; ``S * T`` tokens per layer for the
      reference, ``S * L + Sq * L`` with the query half shared (ours; ``Sq`` = 2 query halves up to
      the merge, 1 after it);
    * attention: ``4 d`` per (query token, key token) pair (``QK^T`` and ``AV``), plus the
      decomposed relative-position terms ``2 d (Hg + Wg)`` per query token. The reference has
      ``S * T`` query tokens, each against ``T`` keys. Ours: ``S * L`` prompt tokens against ``T``
      keys, and each shared query half against the query keys once (``Sq * L * L`` pairs) and
      against the prompt keys of each of its canvases (``S * L * L`` pairs), with ``S * L + Sq * L``
      query tokens for the position terms;
    * patch embedding: ``2 * 3 p^2 d`` per embedded token;
    * decoder: ``2 * 4d * p^2 Dd`` per decoded token, ``2 * 9 Dd^2 + 2 * 3 Dd`` per output pixel;
      ours decodes one query half plus one patch row, the reference ``n`` whole canvases.

    Only the mathematically required products count: the zero and one-hot columns of the augmented
    attention, which the kernels also multiply, are not credited.
    """
    d, m = cfg.hidden_size, cfg.mlp_dim
    hg, wg = cfg.grid_size
    p, dd = cfg.patch_size, cfg.decoder_hidden_size
    half = hg // 2 * wg
    t = 2 * half
    before = cfg.merge_index + 1
    after = cfg.num_hidden_layers - before
    per_token = 2 * (4 * d * d + 2 * d * m)
    position = 2 * d * (hg + wg)
    total = 0
    for layers, s, sq in ((before, 2 * n, 2), (after, n, 1)):
        if shared_query:
            tokens = s * half + sq * half
            pairs = s * half * t + sq * half * half + s * half * half
        else:
            tokens = s * t
            pairs = s * t * t
        total += layers * (per_token * tokens + 4 * d * pairs + position * tokens)
    embedded = 2 * n * half + half if shared_query else 2 * n * t
    decoded_tokens = half + wg if shared_query else n * t
    embed = embedded * 2 * 3 * p * p * d
    decoder = decoded_tokens * (2 * 4 * d * p * p * dd + p * p * (2 * 9 * dd * dd + 2 * 3 * dd))
    return float(total + embed + decoder)


def matmul_rate(dtype: torch.dtype, size: int = 4096, repeat: int = 3, device: str = "cpu") -> float:
    """Measured dense matmul FLOP/s of this machine for ``dtype`` (``size``-square GEMM)."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    times, _ = measure_times(lambda: a @ b, repeat, sync=torch.cuda.synchronize if device.startswith("cuda") else None)
    return 2 * size ** 3 / min(times)


def timed(fn, repeat: int, warmup: int = 1, sync=None) -> tuple[float, object]:
    """(median seconds over ``repeat`` runs after ``warmup``, last result); ``sync`` waits for the
    device (CUDA) before each clock read."""
    with torch.inference_mode():
        times, out = measure_times(fn, repeat, warmup, sync)
    return statistics.median(times), out


def worker(ckpt: Path, impl: str, dname: str, n: int, repeat: int, out: Path, device: str = "cpu",
           allocator: str = "tuned") -> None:
    """One measurement in a fresh process, so that its peak memory is its own.

    ``allocator``: ``"tuned"`` applies :func:`pipelines.allocator.keep_freed_memory` first (as
    ``vos run`` does when it loads the model), ``"default"`` leaves glibc's defaults.

    Peak memory is ``VmHWM`` minus the RSS after loading the model and making the inputs (CPU), or
    the CUDA allocator's peak minus its use after loading (GPU): the working memory of one forward
    (weights excluded).
    """
    dtype = DTYPES[dname]
    if allocator == "tuned":
        from pipelines.allocator import keep_freed_memory

        keep_freed_memory()
    if impl == "ours":
        model = from_pretrained(ckpt, dtype=dtype, device=device)
    else:
        from transformers import SegGptForImageSegmentation

        model = SegGptForImageSegmentation.from_pretrained(ckpt).to(device=device, dtype=dtype).eval()
    with torch.no_grad():  # page in memory-mapped weights so they do not count as working memory
        for t in model.state_dict().values():
            t.reshape(-1)[::512].sum()
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 3, 448, 448, generator=g).to(device=device, dtype=dtype)
    pr = torch.randn(n, 3, 448, 448, generator=g).to(device=device, dtype=dtype)
    mk = torch.randn(n, 3, 448, 448, generator=g).to(device=device, dtype=dtype)
    gc.collect()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = rss_mib()
        reset_peak_rss()
    if impl == "ours":
        fn = lambda: model.segment(q, pr, mk)  # noqa: E731
    elif n == 1:
        fn = lambda: model(q, pr, mk).pred_masks[:1, :, 448:]  # noqa: E731
    else:
        from tests._reference import painter_ensemble_reference

        qn = q.expand(n, -1, -1, -1)
        fn = lambda: painter_ensemble_reference(model, qn, pr, mk)[:1, :, 448:]  # noqa: E731
    seconds, pred = timed(fn, repeat, sync=torch.cuda.synchronize if cuda else None)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mib()) - base
    rate = matmul_rate(dtype, device=device)  # in the same process and minute as the forward
    torch.save({"seconds": seconds, "peak_mib": peak, "pred": pred.float().cpu(), "rate": rate}, out)


def measure(ckpt: Path, impl: str, dname: str, n: int, repeat: int, threads: int | None,
            device: str = "cpu", allocator: str = "tuned") -> dict:
    import subprocess

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "result.pt"
        cmd = [sys.executable, __file__, "--worker", str(ckpt), impl, dname, str(n), str(repeat), str(out),
               allocator, "--device", device]
        if threads:
            cmd += ["--threads", str(threads)]
        subprocess.run(cmd, check=True)
        return torch.load(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "seggpt-vit-large.json"))
    ap.add_argument("--prompts", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=sorted(DTYPES))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-reference", action="store_true", help="time only our model")
    ap.add_argument("--reference-dtypes", nargs="+", default=["float32"], choices=sorted(DTYPES))
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (GPU: bf16 peak reported too)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense peak for the dtype in TFLOP/s (e.g. 990 for H100 bf16); "
                         "default: the measured matmul rate")
    ap.add_argument("--reference-allocators", nargs="+", default=["default", "tuned"], choices=["default", "tuned"],
                    help="run the reference with glibc's default allocator settings, with the tuned "
                         "ones that ours uses (pipelines.allocator), or both")
    ap.add_argument("--worker", nargs=7, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        ckpt, impl, dname, n, repeat, out, allocator = args.worker
        worker(Path(ckpt), impl, dname, int(n), int(repeat), Path(out), args.device, allocator)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from tests._reference import make_hf_model

    cfg_dict = json.loads(Path(args.config).read_text())
    cfg = SegGptConfig.from_dict(cfg_dict)
    tmp = Path(tempfile.mkdtemp(prefix="bench_model_"))
    hf = make_hf_model(cfg_dict, seed=0)
    hf.save_pretrained(tmp)
    weights = tmp / "model.safetensors"

    # load time vs reading the file (page cache warm in both)
    weights.read_bytes()
    t0 = time.perf_counter()
    weights.read_bytes()
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    loaded = from_pretrained(tmp)
    with torch.no_grad():  # safetensors maps the file lazily: touch every page of every tensor
        for t in loaded.state_dict().values():
            t.reshape(-1)[::512].sum()
    load_s = time.perf_counter() - t0
    del loaded
    del hf
    gc.collect()
    print(f"load {load_s:.2f} s vs read {read_s:.2f} s ({weights.stat().st_size / 2**20:.0f} MiB)", flush=True)

    palette = build_palette(1)
    rows = []
    fp32_pred: dict[int, torch.Tensor] = {}
    for dname in args.dtypes:
        for n in args.prompts:
            ours = measure(tmp, "ours", dname, n, args.repeat, args.threads, args.device)
            pred = ours["pred"]
            row = {"dtype": dname, "prompts": n, "ours_s": ours["seconds"], "ours_mem": ours["peak_mib"],
                   "ours_tflops": analytic_flops(cfg, n) / ours["seconds"] / 1e12,
                   "rate": (args.peak_tflops * 1e12 if args.peak_tflops else ours["rate"]) / 1e12}
            if dname == "float32":
                fp32_pred[n] = pred
            elif n in fp32_pred:
                a = postprocess_masks(pred, palette)
                b = postprocess_masks(fp32_pred[n], palette)
                row["label_agreement"] = float((a == b).float().mean())
            if not args.no_reference and dname in args.reference_dtypes:
                for alloc in args.reference_allocators:
                    ref = measure(tmp, "ref", dname, n, args.repeat, args.threads, args.device, alloc)
                    row.update({f"ref_{alloc}_s": ref["seconds"], f"ref_{alloc}_mem": ref["peak_mib"],
                                f"speedup_{alloc}": ref["seconds"] / ours["seconds"],
                                f"ref_{alloc}_tflops": analytic_flops(cfg, n, shared_query=False)
                                / ref["seconds"] / 1e12})
                    if dname == "float32":
                        row["max_abs_diff"] = max(row.get("max_abs_diff", 0.0),
                                                  float((ref["pred"] - pred).abs().max()))
            rows.append(row)
            print(json.dumps(row), flush=True)

    # bf16 ours against the fp32 reference (the headline ratio of issue 6)
    for r in rows:
        if r["dtype"] == "float32":
            continue
        for alloc in args.reference_allocators:
            ref = [x for x in rows if x["dtype"] == "float32" and x["prompts"] == r["prompts"]
                   and f"ref_{alloc}_s" in x]
            if ref:
                r[f"speedup_{alloc}_vs_fp32_ref"] = ref[0][f"ref_{alloc}_s"] / r["ours_s"]

    allocs = args.reference_allocators
    lines = [
        f"Machine: {machine()}. Date: {today()}. Model: `{Path(args.config).name}` with random weights; "
        f"1 query frame, N prompts, feature ensemble; median of {args.repeat} after 1 warm-up. Ours runs "
        "with the allocator settings that `vos run` applies (`pipelines/allocator.py`); the reference "
        "(transformers) with glibc's defaults (`default`) and with the same settings (`tuned`).",
        "",
        f"Weights: `from_pretrained` of the {weights.stat().st_size / 2**20:.0f} MiB safetensors file, every "
        f"page of every tensor touched, took {load_s:.2f} s; reading the file took {read_s:.2f} s "
        f"(ratio {load_s / max(read_s, 1e-9):.2f}; page cache warm in both).",
        "",
        (f"Peak: {args.peak_tflops} TFLOP/s as given." if args.peak_tflops else
         "Dense matmul rate: a 4096-square GEMM in the dtype, best of 3, measured in each worker process "
         "right after its forward passes (the machine's speed drifts over a run): "
         + ", ".join(f"{r['dtype']} N={r['prompts']}: {1000 * r['rate']:.0f} GFLOP/s" for r in rows) + "."),
        "",
        f"| dtype | N | ours s/frame | reference s/frame ({' / '.join(allocs)}) | speed-up ({' / '.join(allocs)}) "
        "| ours TFLOP/s (of matmul rate) | ref TFLOP/s | max abs diff / label agreement "
        f"| peak working memory ours / ref {allocs[0]} (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        has_ref = all(f"ref_{a}_s" in r for a in allocs)
        ref_s = " / ".join(f"{r[f'ref_{a}_s']:.2f}" for a in allocs) if has_ref else "-"
        if has_ref:
            speed = " / ".join(f"{r[f'speedup_{a}']:.2f}x" for a in allocs)
        elif all(f"speedup_{a}_vs_fp32_ref" in r for a in allocs):
            speed = " / ".join(f"{r[f'speedup_{a}_vs_fp32_ref']:.2f}x" for a in allocs) + " vs fp32 ref"
        else:
            speed = "-"
        acc = (f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r
               else f"{100 * r['label_agreement']:.2f}% labels = fp32" if "label_agreement" in r else "-")
        mem = f"{r['ours_mem']:.0f} / {r[f'ref_{allocs[0]}_mem']:.0f}" if has_ref else f"{r['ours_mem']:.0f} / -"
        ref_tf = " / ".join(f"{r[f'ref_{a}_tflops']:.3f}" for a in allocs) if has_ref else "-"
        lines.append(f"| {r['dtype']} | {r['prompts']} | {r['ours_s']:.2f} | {ref_s} | {speed} | "
                     f"{r['ours_tflops']:.3f} ({100 * r['ours_tflops'] / r['rate']:.0f}%) | {ref_tf} | {acc} | {mem} |")
    lines += ["", "FLOPs are counted analytically (`benchmarks/bench_model.py::analytic_flops`, formula in its "
              "docstring): ours counts the work of the shared-query formulation (each query half once per "
              "layer, its attention to its own keys once), the reference's its own (N full canvases "
              "through every layer, N canvases decoded)."]
    return report("bench_model", "SegGPT forward: ours vs transformers", lines, write=not args.no_doc)


if __name__ == "__main__":
    sys.exit(main())
