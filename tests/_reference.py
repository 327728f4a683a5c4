"""Test-only references built on ``transformers`` (an independent implementation of SegGPT)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from seggpt_model.config import SegGptConfig
from seggpt_model.layers import SegGptAttention


def make_hf_model(config_json: Path | dict, seed: int = 0, **overrides):
    """A ``transformers`` SegGptForImageSegmentation with random weights of healthy magnitude.

    The default initialisation (std 0.02) makes tiny models nearly constant; weights here are drawn
    with std ``1/sqrt(fan_in)``, LayerNorm gains around 1 and tokens/biases around 0.5 so that every
    part of the network (relative positions, ensembles, decoder) visibly changes the output.
    """
    from transformers import SegGptConfig, SegGptForImageSegmentation

    data = json.loads(Path(config_json).read_text()) if not isinstance(config_json, dict) else config_json
    data = {k: v for k, v in data.items() if k not in ("architectures", "model_type")}
    data.update(overrides)
    model = SegGptForImageSegmentation(SegGptConfig(**data)).eval()
    randomize_(model, seed)
    return model


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim >= 2 and p.shape[0] > 1 and "rel_pos" not in name and "position_embeddings" not in name:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
        elif p.ndim == 1 and name.endswith("weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.5 * torch.randn(p.shape, generator=g))


@torch.no_grad()
def random_attention(heads: int, hidden: int, qkv_bias: bool, generator: torch.Generator):
    """Our ``SegGptAttention`` of a one-layer config (grid 56 x 28), in eval mode, every parameter
    drawn from N(0, 1/16) by ``generator`` (which the caller goes on drawing inputs from)."""
    cfg = SegGptConfig(hidden_size=hidden, num_attention_heads=heads, qkv_bias=qkv_bias, mlp_dim=64,
                       num_hidden_layers=1, intermediate_hidden_state_indices=[0], merge_index=0)
    attn = SegGptAttention(cfg).eval()
    for p in attn.parameters():
        p.copy_(torch.randn(p.shape, generator=generator) / 4)
    return attn


@torch.no_grad()
def painter_ensemble_reference(hf_model, pixel_values, prompt_pixel_values, prompt_masks,
                               embedding_type=None):
    """Feature ensemble with the original (Painter) semantics, layer by layer on transformers' layers.

    Painter ``forward_encoder``: ``merge = 1 if merge_idx >= idx else 2``: per-stream averaging up to
    and including the merge layer, whole-batch averaging after it. transformers uses
    ``2 if merge_index > i else 1``, i.e. whole-batch averaging already at the merge layer. This
    reference re-runs transformers' own embeddings, layers and decoder with Painter's rule.
    """
    m = hf_model.model
    cfg = hf_model.config
    canvas = torch.cat((prompt_pixel_values, pixel_values), dim=2)
    mask_canvas = torch.cat((prompt_masks, prompt_masks), dim=2)
    n_patches = m.embeddings.patch_embeddings.num_patches
    bool_masked_pos = torch.zeros(1, n_patches, dtype=torch.bool)
    bool_masked_pos[:, n_patches // 2:] = True
    x = m.embeddings(canvas, mask_canvas, embedding_type=embedding_type, bool_masked_pos=bool_masked_pos)
    feats = []
    for i, layer in enumerate(m.encoder.layers):
        ensemble_cond = 2 if i <= cfg.merge_index else 1
        x = layer(x, ensemble_cond, True, False)[0]
        if i == cfg.merge_index:
            x = (x[: x.shape[0] // 2] + x[x.shape[0] // 2:]) * 0.5
        if i in cfg.intermediate_hidden_state_indices:
            feats.append(m.encoder.layernorm(x))
    return hf_model.decoder(torch.cat(feats, dim=-1))
