"""The native bf16 softmax kernel (``seggpt_model/native.py``, ``csrc/biased_softmax.c``): its
numbers against the formula in float64, its build cache, the torch fallback where no compiler
works, and ``vos run --dtype bfloat16`` through it end to end."""

from __future__ import annotations

import subprocess
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from seggpt_model import native
from seggpt_model.layers import chunked_softmax_attention
from tests._reference import random_attention
from vos.cli import main as vos_main

needs_kernel = pytest.mark.skipif(native.biased_softmax() is None, reason="no C compiler on this machine")


def _block(m: int, n: int, grid: tuple[int, int], first_row: int, first_key_row: int, seed: int = 0):
    """Raw bf16 logits of an (m, n) block, position products as the chunked kernel lays them out,
    and the formula's float64 logits with their bias."""
    hg, wg = grid
    nt = 2 * hg - 1 + 2 * wg - 1
    g = torch.Generator().manual_seed(seed)
    raw = (torch.randn(m, n, generator=g) * 6).bfloat16()
    products = (torch.randn(m, nt, generator=g) * 2).bfloat16()
    scale = 0.125
    t = torch.arange(m)
    k = torch.arange(n)
    h_index = hg - 1 - first_row + first_key_row - (t // wg)[:, None] + (k // wg)[None, :]
    w_index = 2 * hg - 1 + wg - 1 - (t % wg)[:, None] + (k % wg)[None, :]
    bias = products.double().gather(1, h_index) + products.double().gather(1, w_index)
    x = scale * raw.double() + bias
    return raw, products, scale, x


@needs_kernel
@pytest.mark.parametrize("m, n, grid, first_row, first_key_row", [
    (28 * 28, 56 * 28, (56, 28), 0, 0),     # SegGPT: prompt rows against all keys (wg = 28 path)
    (28 * 28, 28 * 28, (56, 28), 28, 0),    # query rows against prompt keys
    (28 * 28, 28 * 28, (56, 28), 28, 28),   # query rows against their own keys
    (3 * 5, 8 * 5, (8, 5), 2, 1),           # another width: the generic loop, a tail below a vector
    (4 * 19, 6 * 19, (6, 19), 0, 0),
])
def test_kernel_matches_the_formula_in_float64(m, n, grid, first_row, first_key_row):
    raw, products, scale, x = _block(m, n, grid, first_row, first_key_row)
    logits = raw.clone()
    lse, row = torch.empty(m), torch.empty(n)
    native.biased_softmax()(logits, products, grid[0] - 1 - first_row + first_key_row,
                            2 * grid[0] - 1 + grid[1] - 1, grid[1], scale, lse, row)
    ref_lse = torch.logsumexp(x, dim=1)
    ref = torch.softmax(x, dim=1)
    assert (lse.double() - ref_lse).abs().max() <= 2e-6 * ref_lse.abs().max()
    # one bf16 rounding of a value within fp32 accuracy: at most half a bf16 ulp (2^-8 relative)
    err = (logits.double() - ref).abs() - ref * 2.0 ** -8
    assert err.max() <= 1e-7
    assert logits.dtype == torch.bfloat16
    again = raw.clone()                                             # lse is optional
    native.biased_softmax()(again, products, grid[0] - 1 - first_row + first_key_row,
                            2 * grid[0] - 1 + grid[1] - 1, grid[1], scale, None, row)
    assert torch.equal(again, logits)


@needs_kernel
@pytest.mark.parametrize("flags", [("-march=x86-64-v3",), ()], ids=["avx2", "baseline"])
def test_kernel_built_for_other_isa_levels_gives_the_same_numbers(flags, tmp_path):
    """The C code is portable across the levels :func:`native.isa_flags` picks: built for AVX2 and
    for the compiler's baseline (SSE2 on x86-64), it matches the formula like the host's build."""
    if flags and native.isa_flags() == ():
        pytest.skip("not an x86-64 CPU with AVX2")
    kernel = native.BiasedSoftmax(native.build(directory=tmp_path, flags=flags))
    m, n, grid = 28 * 6, 56 * 28, (56, 28)
    raw, products, scale, x = _block(m, n, grid, 28, 0, seed=4)
    logits, lse, row = raw.clone(), torch.empty(m), torch.empty(n)
    kernel(logits, products, 55 - 28, 2 * 56 - 1 + 27, 28, scale, lse, row)
    ref = torch.softmax(x, dim=1)
    assert (lse.double() - torch.logsumexp(x, dim=1)).abs().max() <= 2e-6 * x.abs().max()
    assert ((logits.double() - ref).abs() - ref * 2.0 ** -8).max() <= 1e-7


@needs_kernel
def test_kernel_refuses_arguments_that_do_not_fit():
    kernel = native.biased_softmax()
    raw, products, scale, _ = _block(28, 56, (2, 28), 0, 0)
    ok = dict(h_offset=1, w_offset=3 + 27, grid_width=28, scale=scale, lse=torch.empty(28), row=torch.empty(56))
    kernel(raw.clone(), products, **ok)  # fits
    bad = [dict(logits=raw.float()), dict(logits=raw.t().contiguous().t()), dict(products=products.float()),
           dict(h_offset=-1), dict(h_offset=57), dict(w_offset=26),
           dict(w_offset=31), dict(grid_width=27), dict(row=torch.empty(55)),
           dict(lse=torch.empty(28, dtype=torch.float64)), dict(lse=torch.empty(27)), dict(products=products[:27])]
    for change in bad:
        args = dict(logits=raw.clone(), products=products, **ok)
        args.update(change)
        with pytest.raises(ValueError, match="biased softmax kernel"):
            kernel(**args)


@needs_kernel
def test_loading_the_kernel_keeps_subnormal_floats():
    """Built without -ffast-math: loading it must not switch the process to flush-to-zero."""
    native.biased_softmax()
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    assert (tiny / 2).item() > 0


def _attention():
    g = torch.Generator().manual_seed(5)
    attn = random_attention(2, 32, True, g)
    prompts = torch.randn(3, 28 * 28, 32, generator=g)
    queries = torch.randn(1, 28 * 28, 32, generator=g)
    return attn, prompts, queries


@needs_kernel
def test_bf16_chunked_attention_native_and_torch_paths_agree(monkeypatch):
    """The chunked kernel in bf16 with the C kernel, and with it turned off
    (``SEGGPT_NATIVE_KERNELS=0``: the torch ops), both within the bf16 eager formula's error of
    the fp32 formula; the C path, which keeps the bias and softmax in fp32, is not worse."""
    attn, prompts, queries = _attention()
    low = _attention()[0].to(torch.bfloat16)
    with torch.no_grad():
        ref_p, ref_q, _ = attn(prompts, queries, 1, output_attentions=True)
        eager_p, eager_q, _ = low(prompts.bfloat16(), queries.bfloat16(), 1, output_attentions=True)
        bf16_error = max((eager_p.float() - ref_p).abs().max(), (eager_q.float() - ref_q).abs().max())
        errors = {}
        for setting in ("1", "0"):
            monkeypatch.setenv("SEGGPT_NATIVE_KERNELS", setting)
            assert (native.biased_softmax() is None) == (setting == "0")
            out_p, out_q, _ = low(prompts.bfloat16(), queries.bfloat16(), 1, kernel=chunked_softmax_attention)
            errors[setting] = max((out_p.float() - ref_p).abs().max(), (out_q.float() - ref_q).abs().max())
    assert errors["0"] <= 2 * bf16_error
    assert errors["1"] <= 2 * bf16_error
    assert errors["1"] <= errors["0"] * 1.25


def test_build_is_cached_and_written_whole(tmp_path, monkeypatch):
    if native.biased_softmax() is None:
        pytest.skip("no C compiler on this machine")
    first = native.build(directory=tmp_path)
    assert first.parent == tmp_path and first.suffix == ".so"
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no temporary left behind

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again")
    monkeypatch.setattr(subprocess, "run", no_compiler)
    assert native.build(directory=tmp_path) == first                     # cached: no compiler call
    monkeypatch.undo()
    assert native.build(directory=tmp_path, flags=()) != first          # other flags: another file


def test_compile_errors_name_the_file(tmp_path):
    if native.biased_softmax() is None:
        pytest.skip("no C compiler on this machine")
    source = tmp_path / "broken.c"
    source.write_text("int f(void) { return }\n")
    with pytest.raises(RuntimeError, match=r"failed on broken\.c: .*error"):
        native.build(source, directory=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []                   # nothing half-written


def test_without_a_compiler_the_model_runs_on_torch_ops_and_says_so_once(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("SEGGPT_KERNEL_CACHE", str(tmp_path / "cache"))
    native.reset()
    try:
        with pytest.warns(RuntimeWarning, match=r"native softmax kernel is not available \(no C compiler"):
            assert native.biased_softmax() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")                              # said once, not again
            assert native.biased_softmax() is None
        attn, prompts, queries = _attention()
        low = _attention()[0].to(torch.bfloat16)
        with torch.no_grad():
            ref_p, _, _ = attn(prompts, queries, 1, output_attentions=True)
            out_p, _, _ = low(prompts.bfloat16(), queries.bfloat16(), 1, kernel=chunked_softmax_attention)
        assert (out_p.float() - ref_p).abs().max() <= 0.05 * ref_p.abs().max()
    finally:
        native.reset()


def test_isa_flags_follow_torch_dispatch_level():
    assert native.isa_flags("AVX512", "x86_64") == ("-march=x86-64-v4", "-mprefer-vector-width=512")
    assert native.isa_flags("AVX2", "x86_64") == ("-march=x86-64-v3",)
    assert native.isa_flags("DEFAULT", "x86_64") == ()
    assert native.isa_flags("SVE256", "aarch64") == ()


@pytest.mark.slow  # three runs of five frames
def test_vos_run_in_bf16_on_cpu_uses_the_kernel_end_to_end(tiny_hf_dir, shared_data, tmp_path, monkeypatch):
    """`vos run --dtype bfloat16` on CPU through the C kernel: the run succeeds without the
    fallback warning, and its label maps agree with the fp32 run's as closely as the torch-op bf16
    run's do (same frames, same prompts; the tiny model's own bf16 rounding is the error)."""
    if native.biased_softmax() is None:
        pytest.skip("no C compiler on this machine")
    frames = shared_data / "davis_sample" / "JPEGImages" / "480p" / "car-shadow"
    mask = shared_data / "davis_sample" / "Annotations" / "480p" / "car-shadow" / "00000.png"
    runs = {}
    for name, dtype, setting in (("fp32", "float32", "1"), ("kernel", "bfloat16", "1"), ("torch", "bfloat16", "0")):
        monkeypatch.setenv("SEGGPT_NATIVE_KERNELS", setting)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            rc = vos_main(["run", str(frames), "--first-mask", str(mask), "--checkpoint", str(tiny_hf_dir),
                           "--device", "cpu", "--dtype", dtype, "--frames", "0:5", "--context", "2",
                           "--output", str(tmp_path / name), "--quiet"])
        assert rc == 0
        runs[name] = np.stack([np.array(Image.open(p)) for p in sorted((tmp_path / name / "car-shadow").glob("*.png"))])
    assert runs["kernel"].shape == runs["fp32"].shape == (5, 480, 854)
    kernel = (runs["kernel"] == runs["fp32"]).mean()
    torch_ops = (runs["torch"] == runs["fp32"]).mean()
    print(f"labels equal to fp32: C kernel {kernel:.5f}, torch ops {torch_ops:.5f}")
    assert kernel >= min(torch_ops, 0.999) - 0.002
