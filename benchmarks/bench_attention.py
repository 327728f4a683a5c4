"""Attention kernels at the VOS operating point: how close attention can get to the matmul rate.

One ViT-L attention layer after the stream merge with N prompts (``S = N`` canvases, one shared
query half, feature ensemble), 16 heads of width 64, in each dtype:

* ``plain flash, width 64``: PyTorch's fused CPU kernel on ``S`` whole canvases (1568 tokens)
  with no position bias at all. No implementation of SegGPT's attention can do less work with
  that kernel; its FLOP/s is the ceiling for attention.
* ``one call, width 152``: the whole canvas in one kernel call with the relative-position bias
  folded into queries and keys (``seggpt_model.layers.fused_sdpa_attention``, the kernel used
  with autograd and off CPU), with its buffer copies;
* ``split + log-sum-exp merge, width 120``: the flash inference kernel
  (``split_flash_attention``, the default in bf16) with its buffer copies, position terms and
  merges;
* ``chunked softmax blocks, width 64``: the explicit-softmax inference kernel
  (``chunked_softmax_attention``, the default in fp32: one block per head and half canvas, on all
  torch threads), with its copies, position terms and merges. In the last three rows the ``qkv``
  projection is timed separately and subtracted, as the first row starts from projected tensors.
  In bf16 its blocks use the C softmax kernel (``seggpt_model.native``) where it builds; the row
  ``..., torch ops`` times the same kernel with it off (``SEGGPT_NATIVE_KERNELS=0``).

FLOP/s count the useful attention work only: ``4 d`` per (query, key) pair, the pairs of each
formulation (whole canvases for the first two; the shared query half against its own keys once
for the split). The matmul rate is a 4096-square GEMM in the same dtype, best of 3.

Usage::

    python benchmarks/bench_attention.py            # writes docs/benchmarks.md
    python benchmarks/bench_attention.py --no-doc --prompts 2
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, measure_times, report, today  # noqa: E402
from benchmarks.bench_model import matmul_rate  # noqa: E402
from pipelines.allocator import keep_freed_memory  # noqa: E402
from seggpt_model import SegGptConfig, native  # noqa: E402
from seggpt_model.layers import (  # noqa: E402
    SegGptAttention,
    chunked_softmax_attention,
    fused_sdpa_attention,
    split_flash_attention,
)


def best_of(fn, repeat: int) -> float:
    """Minimum wall seconds of ``fn()`` over ``repeat`` runs after one warm-up."""
    return min(measure_times(fn, repeat)[0])


def time_kernels(cfg: SegGptConfig, dtype: torch.dtype, s: int, repeat: int) -> tuple[float | None, ...]:
    """Seconds of one attention layer with ``s`` canvases sharing one query half:
    ``(plain flash at width 64 without bias, one fused call at width 152, split path, chunked path,
    chunked path on torch ops)``; the last is None where the C kernel is not used (fp32) or not
    built."""
    h, c, d = cfg.num_attention_heads, cfg.head_dim, cfg.hidden_size
    hg, wg = cfg.grid_size
    half = hg // 2 * wg
    attn = SegGptAttention(cfg).eval().to(dtype)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.05)
    prompts = torch.randn(s, half, d, dtype=dtype)
    query = torch.randn(1, half, d, dtype=dtype)
    q, k, v = (torch.randn(s, h, 2 * half, c, dtype=dtype) for _ in range(3))
    split_ws: dict = {}
    chunked_ws: dict = {}
    with torch.inference_mode():
        plain = best_of(lambda: F.scaled_dot_product_attention(q, k, v), repeat)
        split = best_of(lambda: split_flash_attention(attn, prompts, query, 1, split_ws), repeat)
        chunked = best_of(lambda: chunked_softmax_attention(attn, prompts, query, 1, chunked_ws), repeat)
        chunked_torch = None
        if dtype == torch.bfloat16 and native.biased_softmax() is not None:
            os.environ["SEGGPT_NATIVE_KERNELS"] = "0"
            try:
                chunked_torch = best_of(lambda: chunked_softmax_attention(attn, prompts, query, 1, {}), repeat)
            finally:
                del os.environ["SEGGPT_NATIVE_KERNELS"]
        fused = best_of(lambda: fused_sdpa_attention(attn, prompts, query, 1, None), repeat)
        projection = best_of(lambda: (attn.qkv(prompts), attn.qkv(query)), repeat)
    return (plain, fused - projection, split - projection, chunked - projection,  # plain starts from q, k, v
            None if chunked_torch is None else chunked_torch - projection)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)
    keep_freed_memory()
    torch.manual_seed(0)
    cfg = SegGptConfig()
    d = cfg.hidden_size
    half = cfg.grid_size[0] // 2 * cfg.grid_size[1]
    t = 2 * half
    s = args.prompts
    whole_pairs = s * t * t
    split_pairs = s * half * t + half * half + s * half * half
    rows = []
    for dname in args.dtypes:
        dtype = getattr(torch, dname)
        plain, fused, split, chunked, chunked_torch = time_kernels(cfg, dtype, s, args.repeat)
        rate = matmul_rate(dtype)
        for name, seconds, pairs in (("plain flash, width 64, no bias (flash ceiling)", plain, whole_pairs),
                                     ("one call, width 152 (bias folded in)", fused, whole_pairs),
                                     ("split + log-sum-exp merge, width 120", split, split_pairs),
                                     ("chunked softmax blocks, width 64", chunked, split_pairs),
                                     ("chunked softmax blocks, width 64, torch ops", chunked_torch, split_pairs)):
            if seconds is None:
                continue
            flops = 4 * d * pairs
            rows.append((dname, name, seconds, flops / seconds / 1e9, 100 * flops / seconds / rate, rate / 1e9))
            print(rows[-1], flush=True)
    lines = [f"Machine: {machine()}. Date: {today()}. One ViT-L attention layer after the merge, "
             f"N = {s} prompts (one shared query half), best of {args.repeat}.", "",
             "| dtype | attention | s/layer | useful GFLOP/s | of matmul rate | matmul rate (GFLOP/s) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.0f} | {r[4]:.0f}% | {r[5]:.0f} |" for r in rows]
    lines += ["", "The split and chunked paths do fewer pairs than the two whole-canvas rows (the shared "
              "query half attends to its own keys once), so compare their seconds; the FLOP/s column "
              "credits each only with its own useful pairs. Buffer copies and position terms (and the "
              "merges of the split and chunked paths) are inside the times of the last three rows "
              "(the qkv projection is not), not in the first."]
    return report("bench_attention", "Attention kernels on CPU", lines, write=not args.no_doc)


if __name__ == "__main__":
    sys.exit(main())
