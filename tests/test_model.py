"""SegGPT forward against transformers' SegGptForImageSegmentation and the original ensemble semantics."""

from __future__ import annotations

import copy

import pytest
import torch

from seggpt_model import SegGptForImageSegmentation, from_pretrained
from seggpt_model.config import SegGptConfig
from tests._reference import make_hf_model, painter_ensemble_reference, random_attention

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
@pytest.mark.slow  # several full forwards
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
@pytest.mark.slow  # float16 and bfloat16 forwards on the CPU
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


@pytest.mark.parametrize("heads, hidden, qkv_bias", [pytest.param(2, 40, True, marks=pytest.mark.slow),  # the larger one
                                              (2, 32, False)])
def test_split_attention_equals_eager_formula(heads, hidden, qkv_bias):
    """The CPU inference kernels against the explicit softmax of the reference formula, for every
    layout the model uses: the chunked kernel (fp32, blocks on two threads) and the flash kernel
    with keys split by half (fp32 here), and both in bf16 (the default there by the CPU: split with
    AMX, chunked without) within twice the bf16 eager formula's own error, both merging by
    log-sum-exp with shared query halves broadcast. Head width 20 needs zero padding of the
    augmented width of the flash kernel (20 + 28 + 28 = 76 -> 80)."""
    from seggpt_model.layers import chunked_softmax_attention, split_flash_attention

    g = torch.Generator().manual_seed(3)
    attn = random_attention(heads, hidden, qkv_bias, g)
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
            split_p, split_q, _ = attn(prompts, queries, groups, kernel=split_flash_attention)  # flash
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
    low = copy.deepcopy(attn).to(torch.bfloat16)
    with torch.no_grad():
        # the eager formula in bf16: the rounding error any bf16 kernel may have
        eager_p, eager_q, _ = low(prompts.bfloat16(), queries.bfloat16(), 1, output_attentions=True)
        bf16_error = max((eager_p.float() - ref_p).abs().max(), (eager_q.float() - ref_q).abs().max())
        assert 0 < bf16_error <= 0.05 * ref_p.abs().max()
        for kernel, keys in ((split_flash_attention, {"split_attention", "rel_pos"}),
                             (chunked_softmax_attention, {"chunked_attention", "attention_scratch", "rel_pos"})):
            workspace = {}
            for _ in range(2):  # the second call reuses the buffers of the first
                low_p, low_q, _ = low(prompts.bfloat16(), queries.bfloat16(), 1, workspace=workspace,
                                      kernel=kernel)
                assert low_p.dtype == low_q.dtype == torch.bfloat16
                assert (low_p.float() - ref_p).abs().max() <= 2 * bf16_error, kernel.__name__
                assert (low_q.float() - ref_q).abs().max() <= 2 * bf16_error, kernel.__name__
            assert {key[0] for key in workspace} <= keys, kernel.__name__


@torch.no_grad()
def test_forward_hooks_fire_once_per_layer(tiny_pair):
    """The block calls its attention and MLP modules, so their forward hooks see every layer once,
    and what they see is what the block computes (the MLP's output is the layer's output)."""
    _, ours = tiny_pair
    pv, ppv, pm = _inputs(2, seed=8)
    plain = ours.model(pv, ppv, pm, output_hidden_states=True)
    calls: list[tuple[str, int, tuple]] = []
    handles = []
    for i, layer in enumerate(ours.model.encoder.layers):
        for name in ("attention", "mlp"):
            handles.append(getattr(layer, name).register_forward_hook(
                lambda module, args, output, name=name, i=i: calls.append((name, i, output))))
    try:
        hooked = ours.model(pv, ppv, pm, output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    layers = ours.config.num_hidden_layers
    assert [(name, i) for name, i, _ in calls] == [(n, i) for i in range(layers) for n in ("attention", "mlp")]
    assert torch.equal(hooked.last_hidden_state, plain.last_hidden_state)
    mlp_out = {i: out for name, i, out in calls if name == "mlp"}
    for i in range(layers):
        if i == ours.config.merge_index:
            continue  # the streams are averaged after this layer's MLP
        prompt, query = mlp_out[i]
        canvas = torch.cat([prompt, query], dim=1).reshape(plain.hidden_states[i + 1].shape)
        assert torch.equal(canvas, plain.hidden_states[i + 1])


@pytest.mark.parametrize("name", ["fused", "split", "chunked", "flex"])
@torch.no_grad()
def test_every_attention_implementation_agrees_with_eager(tiny_pair, name):
    _, ours = tiny_pair
    pv, ppv, pm = _inputs(3, seed=9, same_query=True)
    ours.set_attn_implementation("eager")
    try:
        eager = ours.segment(pv, ppv, pm)
        ours.set_attn_implementation(name)
        forced = ours.segment(pv, ppv, pm)
    finally:
        ours.set_attn_implementation("sdpa")
    assert (forced - eager).abs().max() <= 1e-5
    assert eager.std() > 0.1
    with pytest.raises(ValueError, match="attn_implementation"):
        ours.set_attn_implementation("flash")


def _cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (Linux), an independent reading of the CPU's features;
    empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def test_attention_kernel_dispatch_rule():
    from seggpt_model import layers as L

    def pick(implementation="sdpa", device="cpu", dtype=torch.float32, grad=False, rel=True, halves=True,
             attentions=False, amx=None):
        return L.select_attention_kernel(implementation, device=torch.device(device), dtype=dtype,
                                         grad_enabled=grad, use_rel_pos=rel, even_halves=halves,
                                         output_attentions=attentions, amx=amx)

    assert pick() is pick(amx=True) is pick(amx=False) is L.chunked_softmax_attention
    # bf16 on CPU by the CPU's matrix units: the flash split with AMX (Xeon), the explicit softmax
    # blocks with AVX512-BF16 only (Zen 4); fp16 keeps the flash split
    assert pick(dtype=torch.bfloat16, amx=True) is L.split_flash_attention
    assert pick(dtype=torch.bfloat16, amx=False) is L.chunked_softmax_attention
    assert pick(dtype=torch.float16, amx=True) is pick(dtype=torch.float16, amx=False) is L.split_flash_attention
    assert pick(dtype=torch.bfloat16) is pick(dtype=torch.bfloat16, amx=L.CPU_HAS_AMX)  # this host's
    flags = _cpu_flags()
    if flags:  # Linux: the flag torch's cpuid reading must agree with
        assert L.CPU_HAS_AMX == ("amx_tile" in flags)
    for kw in ({"grad": True}, {"device": "cuda"}, {"halves": False}):
        assert pick(dtype=torch.bfloat16, amx=False, **kw) is L.fused_sdpa_attention
    assert pick("split", dtype=torch.bfloat16, amx=False) is L.split_flash_attention
    assert pick("chunked", dtype=torch.bfloat16, amx=True) is L.chunked_softmax_attention
    assert pick(grad=True) is pick(device="cuda") is pick(halves=False) is L.fused_sdpa_attention
    assert pick(attentions=True) is pick("eager") is pick("chunked", attentions=True) is L.eager_attention
    assert pick(rel=False) is pick("chunked", rel=False) is L.plain_sdpa_attention
    assert pick("fused") is pick("fused", grad=True) is L.fused_sdpa_attention
    assert pick("split") is L.split_flash_attention
    assert pick("chunked", dtype=torch.bfloat16) is L.chunked_softmax_attention
    for kw in ({}, {"device": "cuda"}, {"grad": True}, {"dtype": torch.bfloat16}, {"halves": False}):
        assert pick("flex", **kw) is L.flex_attention_kernel
    assert pick("flex", attentions=True) is L.eager_attention and pick("flex", rel=False) is L.plain_sdpa_attention
    for forced in ("split", "chunked"):
        with pytest.raises(ValueError, match="inference on CPU"):
            pick(forced, grad=True)
    with pytest.raises(ValueError, match="attn_implementation"):
        pick("flash_attention_2")


@torch.no_grad()
def test_no_relative_position_plain_sdpa_equals_eager_formula(tiny_pair):
    """Without relative position the kernel is one plain SDPA call; it equals the explicit formula.
    (transformers cannot build a SegGPT without relative position: its weight init reads
    ``rel_pos_h``.)"""
    from seggpt_model.layers import plain_sdpa_attention

    config = SegGptConfig.from_dict({**tiny_pair[1].config.to_dict(), "use_relative_position_embeddings": False})
    torch.manual_seed(13)
    ours = SegGptForImageSegmentation(config).eval()
    ours.init_weights(std=0.2)
    attention = ours.model.encoder.layers[0].attention
    assert not hasattr(attention, "rel_pos_h")
    tokens = torch.zeros(2, 28 * 28, config.hidden_size)
    assert attention.select_kernel(tokens, tokens[:1]) is plain_sdpa_attention
    pv, ppv, pm = _inputs(2, seed=14)
    out = ours(pv, ppv, pm).pred_masks
    assert out.std() > 0.01
    ours.set_attn_implementation("eager")
    assert (ours(pv, ppv, pm).pred_masks - out).abs().max() <= 1e-5


@pytest.mark.slow  # backward through ours and transformers' model
def test_gradients_match_transformers(tiny_hf_dir):
    """Training: the loss backpropagates (fused attention, differentiable residual adds) and every
    parameter's gradient equals transformers'."""
    from transformers import SegGptForImageSegmentation as HfModel

    hf, ours = HfModel.from_pretrained(tiny_hf_dir).eval(), from_pretrained(tiny_hf_dir)
    g = torch.Generator().manual_seed(15)
    pv, ppv, pm, labels = (torch.randn(2, 3, 448, 448, generator=g) for _ in range(4))
    masked = torch.rand(2, 56 * 28, generator=g) < 0.5
    loss = ours(pv, ppv, pm, labels=labels, bool_masked_pos=masked).loss
    ref = hf(pv, ppv, pm, labels=labels, bool_masked_pos=masked).loss
    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-6)
    loss.backward()
    ref.backward()
    hf_params = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        expected = hf_params[name].grad
        if p.grad is None:  # unused here (the semantic type token): zero in transformers, if any
            assert expected is None or not expected.any(), name
            continue
        assert (p.grad - expected).abs().max() <= 1e-4 * (1 + expected.abs().max()), name
    assert ours.model.encoder.layers[0].attention.qkv.weight.grad.abs().max() > 0
