"""SegGPT forward against transformers' SegGptForImageSegmentation and the original ensemble semantics."""

from __future__ import annotations

import pytest
import torch

from seggpt_model import SegGptForImageSegmentation, from_pretrained
from seggpt_model.config import SegGptConfig
from tests._reference import make_hf_model, painter_ensemble_reference

ATOL = 1e-4


def _inputs(n: int, seed: int, same_query: bool = False):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(1 if same_query else n, 3, 448, 448, generator=g)
    return (query, torch.randn(n, 3, 448, 448, generator=g), torch.randn(n, 3, 448, 448, generator=g))


@pytest.fixture(scope="module")
def tiny_pair(tiny_hf_dir):
    from transformers import SegGptForImageSegmentation as HfModel

    return HfModel.from_pretrained(tiny_hf_dir).eval(), from_pretrained(tiny_hf_dir)


@pytest.mark.parametrize("embedding_type", ["instance", "semantic"])
@torch.no_grad()
def test_one_prompt_matches_transformers(tiny_pair, embedding_type):
    hf, ours = tiny_pair
    pv, ppv, pm = _inputs(2, seed=1)
    ref = hf(pv, ppv, pm, embedding_type=embedding_type).pred_masks
    out = ours(pv, ppv, pm, embedding_type=embedding_type).pred_masks
    assert out.shape == (2, 3, 896, 448)
    assert ref.std() > 0.5  # the random weights give a non-degenerate output
    assert (out - ref).abs().max() <= ATOL
    other = ours(pv, ppv, pm, embedding_type="semantic" if embedding_type == "instance" else "instance")
    assert (other.pred_masks - out).abs().max() > 1e-3  # the type token matters


@torch.no_grad()
def test_eager_and_sdpa_attention_agree(tiny_pair):
    _, ours = tiny_pair
    pv, ppv, pm = _inputs(1, seed=2)
    sdpa = ours(pv, ppv, pm).pred_masks
    ours.set_attn_implementation("eager")
    try:
        eager = ours(pv, ppv, pm).pred_masks
    finally:
        ours.set_attn_implementation("sdpa")
    assert (sdpa - eager).abs().max() <= 1e-5


@torch.no_grad()
def test_bare_model_outputs_match_transformers(tiny_pair):
    hf, ours = tiny_pair
    pv, ppv, pm = _inputs(1, seed=3)
    ref = hf.model(pv, ppv, pm, output_hidden_states=True)
    out = ours.model(pv, ppv, pm, output_hidden_states=True)
    assert out.last_hidden_state.shape == (1, 56, 28, 32)
    assert (out.last_hidden_state - ref.last_hidden_state).abs().max() <= ATOL
    assert len(out.hidden_states) == len(ref.hidden_states)
    for a, b in zip(out.hidden_states, ref.hidden_states):
        assert a.shape == b.shape and (a - b).abs().max() <= ATOL
    for a, b in zip(out.intermediate_hidden_states, ref.intermediate_hidden_states):
        assert (a - b).abs().max() <= ATOL


@torch.no_grad()
def test_feature_ensemble_follows_original_semantics(tiny_pair):
    hf, ours = tiny_pair
    query, ppv, pm = _inputs(3, seed=4, same_query=True)
    pv = query.expand(3, -1, -1, -1).contiguous()
    painter = painter_ensemble_reference(hf, pv, ppv, pm)[:1]
    out = ours(pv, ppv, pm, feature_ensemble=True).pred_masks
    assert out.shape == (1, 3, 896, 448)          # only the first pair is decoded
    assert (out - painter).abs().max() <= ATOL

    # The documented difference: transformers averages both streams together at layer merge_index.
    hf_out = hf(pv, ppv, pm, feature_ensemble=True).pred_masks[:1]
    diff = (hf_out - out)[:, :, 448:]
    assert diff.abs().max() > 1e-2                 # the semantics really differ ...
    # ... but only through one layer's averaging: bounded well below the prediction's own spread.
    assert diff.abs().mean() < 0.5 * out[:, :, 448:].std()
    # The prompt half of the first canvas is untouched by the ensemble in both implementations
    # up to the merge layer's difference, which also reaches it through attention.
    assert torch.isfinite(diff).all()


@torch.no_grad()
def test_one_prompt_ensemble_is_identity(tiny_pair):
    """Original semantics: averaging over one prompt changes nothing (transformers' does change)."""
    hf, ours = tiny_pair
    pv, ppv, pm = _inputs(1, seed=5)
    plain = ours(pv, ppv, pm).pred_masks
    ens = ours(pv, ppv, pm, feature_ensemble=True).pred_masks
    assert (plain - ens).abs().max() <= 1e-5
    hf_plain = hf(pv, ppv, pm).pred_masks
    hf_ens = hf(pv, ppv, pm, feature_ensemble=True).pred_masks
    assert (hf_plain - hf_ens).abs().max() > 1e-3


@torch.no_grad()
def test_segment_decodes_only_the_query(tiny_pair):
    hf, ours = tiny_pair
    query, ppv, pm = _inputs(3, seed=6, same_query=True)
    full = ours(query.expand(3, -1, -1, -1).contiguous(), ppv, pm, feature_ensemble=True).pred_masks
    seg = ours.segment(query, ppv, pm)
    assert seg.shape == (1, 3, 448, 448)
    assert (seg - full[:, :, 448:]).abs().max() <= 1e-5
    # shared-query fast path equals the general path (different batch layout, same maths)
    painter = painter_ensemble_reference(hf, query.expand(3, -1, -1, -1), ppv, pm)[:1, :, 448:]
    assert (seg - painter).abs().max() <= ATOL
    with pytest.raises(ValueError):
        ours.segment(torch.randn(2, 3, 448, 448), ppv[:2], pm[:2])


def test_bad_inputs_raise_value_error(tiny_pair):
    _, ours = tiny_pair
    with pytest.raises(ValueError, match="pixel_values"):
        ours(torch.randn(1, 3, 224, 224), torch.randn(1, 3, 448, 448), torch.randn(1, 3, 448, 448))
    with pytest.raises(ValueError, match="embedding_type"):
        ours(*_inputs(1, 0), embedding_type="panoptic")
    with pytest.raises(ValueError, match="batch"):
        ours(torch.randn(2, 3, 448, 448), torch.randn(3, 3, 448, 448), torch.randn(3, 3, 448, 448))


@torch.no_grad()
def test_half_precision_runs_and_stays_close(tiny_pair):
    _, ours = tiny_pair
    pv, ppv, pm = _inputs(2, seed=7, same_query=True)
    ref = ours.segment(pv, ppv, pm)
    for dtype in (torch.bfloat16, torch.float16):
        model = SegGptForImageSegmentation(ours.config)
        model.load_state_dict(ours.state_dict())
        model = model.to(dtype).eval()
        out = model.segment(pv.to(dtype), ppv.to(dtype), pm.to(dtype))
        assert out.dtype == dtype
        assert (out.float() - ref).abs().mean() < 0.05 * ref.abs().mean() + 0.05


@pytest.mark.slow
@torch.no_grad()
def test_vit_large_one_prompt_matches_transformers(tmp_path):
    """The full ViT-L configuration (random weights) saved by transformers and loaded by us."""
    hf = make_hf_model(SegGptConfig().to_dict(), seed=11)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path)
    assert ours.config == SegGptConfig()
    pv, ppv, pm = _inputs(1, seed=12)
    for embedding_type in ("instance", "semantic"):
        ref = hf(pv, ppv, pm, embedding_type=embedding_type).pred_masks
        out = ours(pv, ppv, pm, embedding_type=embedding_type).pred_masks
        assert (out - ref).abs().max() <= ATOL


@pytest.mark.parametrize("heads, hidden, qkv_bias", [(2, 40, True), (2, 32, False)])
def test_split_attention_equals_eager_formula(heads, hidden, qkv_bias):
    """The CPU inference kernels against the explicit softmax of the reference formula, for every
    layout the model uses: the chunked kernel (fp32, blocks on two threads) and the flash kernel
    with keys split by half (fp32 here, and bf16, which uses it by default), both merging by
    log-sum-exp with shared query halves broadcast. Head width 20 needs zero padding of the
    augmented width of the flash kernel (20 + 28 + 28 = 76 -> 80)."""
    from seggpt_model.layers import SegGptAttention

    cfg = SegGptConfig(hidden_size=hidden, num_attention_heads=heads, qkv_bias=qkv_bias, mlp_dim=64,
                       num_hidden_layers=1, intermediate_hidden_state_indices=[0], merge_index=0)
    attn = SegGptAttention(cfg).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / 4)
    half = 28 * 28
    prompts = torch.randn(4, half, hidden, generator=g)
    threads = torch.get_num_threads()
    workspace: dict = {}
    for sq, groups in ((4, None), (4, 2), (4, 1), (2, 2), (1, 1), (1, 1)):  # the last reuses buffers
        queries = torch.randn(sq, half, hidden, generator=g)
        with torch.no_grad():
            torch.set_num_threads(2)  # the chunked kernel's blocks run on two threads
            try:
                out_p, out_q, _ = attn(prompts, queries, groups, workspace=workspace)  # chunked (fp32)
                assert torch.get_num_threads() == 2
            finally:
                torch.set_num_threads(threads)
            split_p, split_q = (attn.proj(out.flatten(2)) for out in       # flash kernel
                                attn._attend_split(prompts, queries, groups, None))
            ref_p, ref_q, probs = attn(prompts, queries, groups, output_attentions=True)  # eager formula
        assert probs is not None
        assert out_q.shape == ref_q.shape == (groups or 4, half, hidden)
        assert (out_p - ref_p).abs().max() <= 3e-5
        assert (out_q - ref_q).abs().max() <= 3e-5
        assert (split_p - ref_p).abs().max() <= 3e-5
        assert (split_q - ref_q).abs().max() <= 3e-5
        fused_p, fused_q, _ = attn(prompts, queries, groups)                # autograd: one fused call
        assert fused_p.requires_grad
        assert (fused_p.detach() - ref_p).abs().max() <= 3e-5
        assert (fused_q.detach() - ref_q).abs().max() <= 3e-5
    assert {key[0] for key in workspace} == {"chunked_attention", "attention_scratch"}
    low = SegGptAttention(cfg).eval().to(torch.bfloat16)
    low.load_state_dict(attn.state_dict())
    with torch.no_grad():
        workspace = {}
        for _ in range(2):  # the second call reuses the buffers of the first
            low_p, low_q, _ = low(prompts.bfloat16(), queries.bfloat16(), 1, workspace=workspace)
            assert (low_p.float() - ref_p).abs().max() <= 0.05 * ref_p.abs().max()
            assert (low_q.float() - ref_q).abs().max() <= 0.05 * ref_q.abs().max()
        assert {key[0] for key in workspace} == {"split_attention", "rel_pos"}
