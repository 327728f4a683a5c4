"""The GPU path on CPU (issue 21): the FlexAttention kernel against the eager formula, weight-derived
tables built once, the measured kernel record, device mapping and the sync-free label check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seggpt_model import SegGptForImageSegmentation
from seggpt_model.config import SegGptConfig
from tests.conftest import CONFIGS


def _attention(hidden=32, heads=2, seed=3):
    from seggpt_model.layers import SegGptAttention

    cfg = SegGptConfig(hidden_size=hidden, num_attention_heads=heads, mlp_dim=64, num_hidden_layers=1,
                       intermediate_hidden_state_indices=[0], merge_index=0)
    attn = SegGptAttention(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / 4)
    return attn, g


def _eager_formula(attn, prompts, queries, groups):
    """The reference written out here, independently of the kernels: whole canvases, logits
    ``scale q k^T + Rh[row(q) - row(k)] . q + Rw[col(q) - col(k)] . q``, softmax, values; query
    halves averaged over each group (Painter ``add_decomposed_rel_pos`` + ``Block`` ensemble)."""
    s, lp, d = prompts.shape
    h, c = attn.num_heads, attn.head_dim
    hg, wg = attn.grid
    if queries.shape[0] != s:
        queries = queries.repeat_interleave(s // queries.shape[0], dim=0)
    x = torch.cat([prompts, queries], dim=1)
    q, k, v = attn.qkv(x).view(s, -1, 3, h, c).permute(2, 0, 3, 1, 4)
    rows = torch.arange(hg).repeat_interleave(wg)
    cols = torch.arange(wg).repeat(hg)
    rh = attn.rel_pos_h[(rows[:, None] - rows[None, :]) + hg - 1]            # (N, N, C)
    rw = attn.rel_pos_w[(cols[:, None] - cols[None, :]) + wg - 1]
    bias = torch.einsum("shnc,nmc->shnm", q, rh) + torch.einsum("shnc,nmc->shnm", q, rw)
    probs = torch.softmax(q @ k.transpose(-1, -2) * attn.scale + bias, dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(s, -1, d)
    out_p, out_q = out[:, :lp], out[:, lp:]
    if groups is not None:
        out_q = out_q.reshape(groups, s // groups, -1, d).mean(dim=1)
    return out_p, out_q


@pytest.mark.parametrize("sq, groups", [(4, None), (4, 2), (1, 1), (2, 2)])
def test_flex_kernel_equals_eager_formula(sq, groups):
    """FlexAttention with the bias in its score_mod: the reference's numbers in fp32 (1e-5), for
    independent canvases, ensemble groups and shared query halves."""
    from seggpt_model.layers import flex_attention_kernel

    attn, g = _attention()
    half = 28 * 28
    prompts = torch.randn(4, half, 32, generator=g)
    queries = torch.randn(sq, half, 32, generator=g)
    with torch.no_grad():
        ref_p, ref_q = _eager_formula(attn, prompts, queries, groups)
        out_p, out_q, probs = attn(prompts, queries, groups, kernel=flex_attention_kernel)
        proj_p, proj_q = attn.proj(ref_p), attn.proj(ref_q)
    assert probs is None and out_q.shape == proj_q.shape
    assert ref_p.std() > 0.05
    assert (out_p - proj_p).abs().max() <= 1e-5
    assert (out_q - proj_q).abs().max() <= 1e-5


def test_flex_selected_by_name_on_the_whole_model():
    torch.manual_seed(0)
    model = SegGptForImageSegmentation(SegGptConfig.from_dict(json.loads((CONFIGS / "seggpt-tiny.json").read_text())))
    model.eval().init_weights(std=0.2)
    g = torch.Generator().manual_seed(2)
    q, p, m = torch.randn(1, 3, 448, 448, generator=g), torch.randn(3, 3, 448, 448, generator=g), \
        torch.randn(3, 3, 448, 448, generator=g)
    with torch.inference_mode():
        model.set_attn_implementation("eager")
        eager = model.segment(q, p, m)
        model.set_attn_implementation("flex")
        flex = model.segment(q, p, m)
    assert eager.std() > 0.05 and (flex - eager).abs().max() <= 1e-5


def test_weight_derived_tables_are_built_once_and_follow_the_weights():
    """Relative-position tables and the position grid are built once per weights (no per-layer,
    per-frame rebuild), and rebuilt when the weights change in place or the dtype changes."""
    from seggpt_model import layers as L

    attn, _ = _attention()
    with torch.no_grad():
        first = L._rel_tables(attn, torch.float32)
        assert L._rel_tables(attn, torch.float32)[0] is first[0]          # cached
        ref_h = L.get_rel_pos(56, 56, attn.rel_pos_h)
        assert torch.equal(first[0], ref_h)
        attn.rel_pos_h.mul_(2)                                             # in-place change
        second = L._rel_tables(attn, torch.float32)
        assert second[0] is not first[0] and torch.equal(second[0], 2 * ref_h)
        rev = L._reversed_rel_tables(attn, torch.float32)
        assert L._reversed_rel_tables(attn, torch.float32) is rev
    with torch.inference_mode():                                          # cached values are normal tensors
        assert not L._rel_tables(attn, torch.bfloat16)[0].is_inference()
    # with autograd recording, the tables are built in the graph (gradients reach rel_pos)
    out = L._rel_tables(attn, torch.float32)[0]
    assert out.requires_grad and out is not L._rel_tables(attn, torch.float32)[0]
    with torch.inference_mode():                                          # weights made under inference mode:
        frozen, _ = _attention()                                          # built each call, no version counter read
        assert frozen.rel_pos_h.is_inference()
        assert torch.equal(L._rel_tables(frozen, torch.float32)[0], L.get_rel_pos(56, 56, frozen.rel_pos_h))
    onehots = L.key_position_onehots((4, 3), torch.float32, torch.device("cpu"))
    assert onehots is L.key_position_onehots((4, 3), torch.float32, torch.device("cpu"))
    assert onehots.sum(1).eq(2).all() and onehots[5, 5 // 3] == 1 and onehots[5, 4 + 5 % 3] == 1

    model = SegGptForImageSegmentation(SegGptConfig.from_dict(json.loads((CONFIGS / "seggpt-tiny.json").read_text())))
    emb = model.model.embeddings
    with torch.no_grad():
        grid = emb.position_grid()
        assert emb.position_grid() is grid and torch.equal(grid, emb._position_grid())
        emb.position_embeddings.add_(1)
        assert torch.equal(emb.position_grid(), grid + 1) or torch.allclose(emb.position_grid(), grid + 1, atol=1e-5)
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        assert emb.position_grid().dtype == torch.bfloat16


def test_kernel_record(tmp_path, monkeypatch):
    from pipelines import kernel_record as K

    path = tmp_path / "rec.json"
    monkeypatch.setenv("VOS_ATTENTION_RECORD", str(path))
    assert K.record_path() == path
    assert K.cuda_attention_choice() == "sdpa"                            # no record: today's kernel
    rec = K.write_record({"sdpa": 60.0, "flex": 45.0}, device="GPU X", torch_version="t", date="d",
                         dtype="bfloat16", context=8, label_agreement=0.9999)
    assert rec["winner"] == "flex" and json.loads(path.read_text())["winner"] == "flex"
    assert K.cuda_attention_choice() == "flex"
    K.write_record({"sdpa": 40.0, "flex": 45.0}, device="GPU X", torch_version="t", date="d",
                   dtype="bfloat16", context=8, label_agreement=1.0)
    assert K.cuda_attention_choice() == "sdpa"
    # faster but wrong labels cannot win
    K.write_record({"sdpa": 60.0, "flex": 10.0}, device="GPU X", torch_version="t", date="d",
                   dtype="bfloat16", context=8, label_agreement=0.9)
    assert K.cuda_attention_choice() == "sdpa"
    path.write_text("{not json")
    assert K.read_record() is None and K.cuda_attention_choice() == "sdpa"
    path.write_text(json.dumps({"winner": "mystery"}))
    assert K.cuda_attention_choice() == "sdpa"
    with pytest.raises(ValueError, match="sdpa"):
        K.write_record({"flex": 1.0}, device="x", torch_version="t", date="d", dtype="b", context=1,
                       label_agreement=None)


def test_load_stage_attention_and_compile_options(tmp_path, monkeypatch):
    """load_stage: attn 'auto' is 'sdpa' on CPU whatever the record says (the record is for CUDA),
    a name is applied to every layer, an unknown name fails before any weight is read."""
    from pipelines import model_stage
    from seggpt_model import save_pretrained

    monkeypatch.setenv("VOS_ATTENTION_RECORD", str(tmp_path / "rec.json"))
    (tmp_path / "rec.json").write_text(json.dumps({"winner": "flex"}))
    model = SegGptForImageSegmentation(SegGptConfig.from_dict(json.loads((CONFIGS / "seggpt-tiny.json").read_text())))
    save_pretrained(model, tmp_path / "ckpt")
    stage = model_stage.load_stage(str(tmp_path / "ckpt"), "cpu", "float32")
    assert {layer.attention.attn_implementation for layer in stage.model.model.encoder.layers} == {"sdpa"}
    assert stage._compiled is None and not stage.compiled
    stage = model_stage.load_stage(str(tmp_path / "ckpt"), "cpu", "float32", attn="flex")
    assert {layer.attention.attn_implementation for layer in stage.model.model.encoder.layers} == {"flex"}
    with pytest.raises(ValueError, match="unknown attention kernel 'flash'"):
        model_stage.load_stage(str(tmp_path / "missing"), "cpu", "float32", attn="flash")
    calls = []
    monkeypatch.setattr(model_stage, "compiled_segment", lambda m: calls.append(m) or m.segment)
    stage = model_stage.load_stage(str(tmp_path / "ckpt"), "cpu", "float32", compile=True)
    assert stage.compiled and calls == [stage.model]


def test_map_to_visible_cuda():
    from pipelines.devices import map_to_visible_cuda

    assert map_to_visible_cuda("cuda:1", 1) == "cuda:0"      # a Ray actor with one GPU
    assert map_to_visible_cuda("cuda:1", 2) == "cuda:1"
    assert map_to_visible_cuda("cuda:0", 1) == "cuda:0"
    assert map_to_visible_cuda("cuda", 1) == "cuda" and map_to_visible_cuda("cpu", 0) == "cpu"
    assert map_to_visible_cuda("cuda:3", 0) == "cuda:3"      # no GPU: left for the load to report
    with pytest.raises(ValueError, match="unknown device"):
        map_to_visible_cuda("tpu", 1)


def test_stage_checks_labels_on_the_host_without_device_reads(tmp_path, monkeypatch):
    """The per-frame path reads no device value for the label range check: the prompt's host
    labels carry their maximum; an out-of-range prompt label still fails with ValueError."""
    from pipelines.model_stage import load_stage
    from seggpt_model import processing as P
    from seggpt_model import save_pretrained

    model = SegGptForImageSegmentation(SegGptConfig.from_dict(json.loads((CONFIGS / "seggpt-tiny.json").read_text())))
    save_pretrained(model, tmp_path / "ckpt")
    stage = load_stage(str(tmp_path / "ckpt"), "cpu", "float32")
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    labels = np.zeros((40, 50), np.uint8)
    labels[5:20, 5:30] = 2
    prompt = stage.prompt(rgb, labels)
    assert prompt.max_label == 2
    query = stage.query(rgb)
    seen = []
    real = P.labels_to_rgb

    def spy(labels, palette, check_range=True):
        seen.append(check_range)
        return real(labels, palette, check_range)

    monkeypatch.setattr(P, "labels_to_rgb", spy)
    out = stage.segment(query, [prompt], 2)
    assert out.shape == (448, 448) and seen == [False]
    with pytest.raises(ValueError, match="labels must lie in"):
        stage.segment(query, [prompt], 1)
    with pytest.raises(ValueError, match="labels must lie in"):    # the public function still checks
        real(torch.full((1, 2, 2), 3), P.build_palette(2))


@pytest.mark.slow
def test_compiled_segment_equals_eager():
    """``--compile`` (pipelines.model_stage.compiled_segment, inductor on CPU) on the fused kernel
    that CUDA runs: the compiled forward gives the eager forward's numbers (inductor reorders sums)."""
    from pipelines.model_stage import compiled_segment
    from tests._reference import randomize_

    model = SegGptForImageSegmentation(SegGptConfig.from_dict(json.loads((CONFIGS / "seggpt-tiny.json").read_text())))
    model.eval()
    randomize_(model, seed=0)
    model.set_attn_implementation("fused")
    g = torch.Generator().manual_seed(1)
    q, p, m = (torch.randn(k, 3, 448, 448, generator=g) for k in (1, 2, 2))
    fn = compiled_segment(model)
    with torch.inference_mode():
        eager = model.segment(q, p, m)
        compiled = fn(q, p, m)
    assert eager.std() > 0.05 and (compiled - eager).abs().max() <= 1e-4
