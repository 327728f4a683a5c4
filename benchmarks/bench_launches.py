"""Operator launches and host syncs per SegGPT frame, counted on CPU with the PyTorch profiler.

A GPU runs one kernel (or a few) for each aten operator that computes something; views,
reshapes and allocations launch nothing. At 1 or 2 prompts a ViT-L forward is short enough that
the host's launch rate, not the GPU, bounds the frame rate, so the number of computing operators
per forward is the figure to bring down (issue 21). This script counts them on CPU, where no GPU is
needed: every leaf aten operator of one ``segment`` call (1 query, N prompts, feature ensemble) in
the profiler's tree, minus the operators that only make views or allocate (:data:`NO_KERNEL`). It
also counts the host syncs of the per-frame path of ``pipelines.model_stage.SegGptStage.segment``
(``aten::_local_scalar_dense``: an ``int()`` / ``.item()`` of a tensor, a device-to-host wait on
CUDA), outside the one intended sync, :meth:`SegGptStage.to_frame`.

The attention kernel is forced by name: ``fused`` (default) is what ``sdpa`` runs on CUDA today;
``sdpa`` on CPU runs the CPU kernels (per-head blocks on threads, not a GPU path) and ``flex`` on
CPU its unfused eager form, neither of which is what a GPU launches. The counts of ``fused`` do
not depend on the widths or the number of heads (every operator covers all heads), so
``--narrow`` (default) keeps the ViT-L structure (24 layers, 56x28 grid, 4 decoder features) at
hidden size 64 with 2 heads, to count in seconds; ``--no-narrow`` runs the real ViT-L.

Usage::

    python benchmarks/bench_launches.py                      # this tree
    python benchmarks/bench_launches.py --tree /tmp/main     # another checkout (before/after)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: aten operators that launch no device kernel: views, metadata changes and allocations.
NO_KERNEL = frozenset(f"aten::{name}" for name in (
    "view", "reshape", "_reshape_alias", "_unsafe_view", "permute", "transpose", "t", "expand",
    "expand_as", "slice", "select", "unsqueeze", "squeeze", "as_strided", "unflatten", "flatten",
    "detach", "alias", "empty", "empty_strided", "empty_like", "split", "split_with_sizes", "chunk",
    "unbind", "narrow", "lift_fresh", "resolve_conj", "resolve_neg", "view_as", "movedim",
    "_local_scalar_dense", "item", "is_nonzero", "result_type", "numpy_T", "contiguous", "to", "_to_copy_noop",
    "diagonal", "indices", "values", "set_", "resize_", "as_strided_", "detach_", "new_empty",
    "new_empty_strided"))


def leaf_ops(prof) -> list[str]:
    """Names of the profiled aten operators that compute and call no computing aten operator
    themselves (an operator whose sub-operators only make views or allocate counts as one
    launch; one that dispatches to computing sub-operators is counted through them), plus every
    ``_local_scalar_dense`` (a host sync)."""
    memo: dict[int, bool] = {}

    def computes_below(event) -> bool:
        key = id(event)
        if key not in memo:
            memo[key] = any(child.name.startswith("aten::") and
                            (child.name not in NO_KERNEL or computes_below(child))
                            for child in event.cpu_children)
        return memo[key]

    names = []
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        if event.name == "aten::_local_scalar_dense" or (event.name not in NO_KERNEL and not computes_below(event)):
            names.append(event.name)
    return names


def count(names: list[str]) -> dict:
    """``{"launches": computing leaf operators, "syncs": _local_scalar_dense calls, "top": ...}``."""
    launches = [n for n in names if n not in NO_KERNEL]
    top: dict[str, int] = {}
    for n in launches:
        top[n] = top.get(n, 0) + 1
    return {"launches": len(launches), "syncs": names.count("aten::_local_scalar_dense"),
            "top": dict(sorted(top.items(), key=lambda kv: -kv[1])[:12])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", default=str(ROOT), help="checkout whose seggpt_model/pipelines are counted")
    ap.add_argument("--prompts", type=int, nargs="+", default=[1])
    ap.add_argument("--kernels", nargs="+", default=["fused"])
    ap.add_argument("--narrow", action=argparse.BooleanOptionalAction, default=True,
                    help="ViT-L structure at hidden size 64 (same operator counts, seconds to run)")
    ap.add_argument("--json", default=None, help="write the counts here")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(args.tree).resolve()))

    # imported after the tree is chosen: the counted code is the --tree's
    import numpy as np
    import torch

    from pipelines.model_stage import SegGptStage
    from seggpt_model import SegGptConfig, SegGptForImageSegmentation

    cfg = json.loads((ROOT / "configs" / "seggpt-vit-large.json").read_text())
    if args.narrow:
        cfg.update(hidden_size=64, num_attention_heads=2, mlp_dim=256, decoder_hidden_size=8)
    torch.manual_seed(0)
    model = SegGptForImageSegmentation(SegGptConfig.from_dict(cfg)).eval()
    side = model.config.query_image_size
    results = {"tree": str(Path(args.tree).resolve()), "narrow": args.narrow, "rows": []}
    for kernel in args.kernels:
        model.set_attn_implementation(kernel)
        for n in args.prompts:
            g = torch.Generator().manual_seed(n)
            q, p, m = (torch.randn(k, 3, side, side, generator=g) for k in (1, n, n))
            with torch.inference_mode():
                model.segment(q, p, m)                                   # warm (caches, allocator)
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    model.segment(q, p, m)
            row = {"kernel": kernel, "prompts": n, **count(leaf_ops(prof))}
            results["rows"].append(row)
            print(f"{kernel:6s} N={n}: {row['launches']} computing operators per forward, {row['syncs']} host syncs",
                  flush=True)
    # the stage's per-frame path (pre-processing of the query and prompts, forward, label decoding)
    model.set_attn_implementation("fused")
    stage = SegGptStage(model)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (480, 854, 3), dtype=np.uint8)
    labels = np.zeros((480, 854), np.uint8)
    labels[100:300, 200:500] = 1
    prompts = [stage.prompt(rgb, labels)]
    query = stage.query(rgb)
    stage.segment(query, prompts, 1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = stage.segment(query, prompts, 1)
    row = {"kernel": "stage.segment (fused)", "prompts": 1, **count(leaf_ops(prof))}
    results["rows"].append(row)
    print(f"stage.segment N=1: {row['launches']} computing operators, {row['syncs']} host syncs "
          f"(labels {tuple(out.shape)})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
