"""Building blocks of SegGPT's ViT encoder: decomposed relative position, attention, MLP, block.

The attention is ViTDet/SAM-style global attention with the decomposed relative position bias of
MViTv2 (Li et al. 2022), as in ``baaivision/Painter`` ``SegGPT_inference/models_seggpt.py``
(``Attention``, ``util/vitdet_utils.add_decomposed_rel_pos``). Two implementations compute it:

* ``"sdpa"`` (default): the bias is folded into augmented queries and keys so that
  ``torch.nn.functional.scaled_dot_product_attention`` runs without an attention mask and no
  ``(B, heads, N, N)`` tensor is ever materialised (see :func:`augment_qkv_with_rel_pos`).
* ``"eager"``: the reference formula, softmax of ``q k^T * scale + bias`` computed explicitly; kept
  for tests and for returning attention probabilities.

Token layout: a canvas of ``Hg x Wg`` patches (56 x 28 for ViT-L) flattened row-major; the top half
(``Lp = Hg/2 * Wg`` tokens) is the prompt, the bottom half (``Lq`` tokens) the query.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SegGptConfig


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative position embeddings for every (query, key) coordinate pair along one axis.

    Args:
        q_size: query length along the axis.
        k_size: key length along the axis.
        rel_pos: ``(L, C)`` learned embeddings of relative distances; resized linearly when
            ``L != 2 * max(q_size, k_size) - 1``.

    Returns:
        ``(q_size, k_size, C)`` embeddings, entry ``[i, j]`` for relative distance ``i - j``.

    Source: ``get_rel_pos`` in ViTDet / segment-anything ``image_encoder.py``.
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
                                size=max_rel_dist, mode="linear")
        rel_pos = rel_pos.reshape(-1, max_rel_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative_coords.long()]


def rel_pos_terms(query: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor,
                  grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The two factors of the decomposed relative position bias.

    Args:
        query: ``(B, heads, Hg*Wg, C)`` unscaled queries.
        rel_h: ``(Hg, Hg, C)`` from :func:`get_rel_pos` for the height axis.
        rel_w: ``(Wg, Wg, C)`` for the width axis.
        grid: ``(Hg, Wg)``.

    Returns:
        ``(B, heads, Hg*Wg, Hg)`` and ``(B, heads, Hg*Wg, Wg)``: ``bias[n, m] = th[n, row(m)] +
        tw[n, col(m)]`` for query token ``n`` and key token ``m``.
    """
    batch, heads, _, channels = query.shape
    hg, wg = grid
    q = query.reshape(batch, heads, hg, wg, channels)                      # (B, h, Hg, Wg, C)
    term_h = torch.einsum("bnhwc,hkc->bnhwk", q, rel_h)                     # (B, h, Hg, Wg, Hg)
    term_w = torch.einsum("bnhwc,wkc->bnhwk", q, rel_w)                     # (B, h, Hg, Wg, Wg)
    return term_h.reshape(batch, heads, hg * wg, hg), term_w.reshape(batch, heads, hg * wg, wg)


def key_position_onehots(grid: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """One-hot row and column codes of every key token: ``(Hg*Wg, Hg + Wg)``.

    ``[row(m) one-hot | col(m) one-hot]`` so that ``[th | tw] @ onehots^T`` is the relative
    position bias of :func:`rel_pos_terms`.
    """
    hg, wg = grid
    rows = torch.arange(hg, device=device).repeat_interleave(wg)             # (Hg*Wg,)
    cols = torch.arange(wg, device=device).repeat(hg)                        # (Hg*Wg,)
    onehots = torch.zeros(hg * wg, hg + wg, dtype=dtype, device=device)
    index = torch.arange(hg * wg, device=device)
    onehots[index, rows] = 1
    onehots[index, hg + cols] = 1
    return onehots


def augment_qkv_with_rel_pos(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             term_h: torch.Tensor, term_w: torch.Tensor, scale: float,
                             onehots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold the relative position bias into queries and keys for mask-free fused attention.

    ``q' = [q * scale | th | tw | 0]`` and ``k' = [k | onehot(row) | onehot(col) | 0]`` give
    ``q' . k' = scale * q . k + th[row(k)] + tw[col(k)]``: exactly the biased logits, so
    ``scaled_dot_product_attention(q', k', v', scale=1)`` needs no ``(N, N)`` bias tensor. Values
    are zero-padded to the same width (``v' = [v | 0]``) because the fused CPU and GPU kernels want
    equal head sizes; the width is rounded up to a multiple of 8. Take ``out[..., :C]``.

    Args:
        query, key, value: ``(B, heads, N, C)``.
        term_h, term_w: ``(B, heads, N, Hg)`` and ``(B, heads, N, Wg)`` from :func:`rel_pos_terms`.
        scale: softmax scale ``C ** -0.5``.
        onehots: ``(N, Hg + Wg)`` from :func:`key_position_onehots`.

    Returns:
        ``(B, heads, N, C')`` augmented queries, keys and values, ``C' >= C + Hg + Wg``.
    """
    batch, heads, n, c = key.shape
    extra = onehots.shape[1]
    width = -(-(c + extra) // 8) * 8
    pad = width - c - extra
    zeros = query.new_zeros(batch, heads, n, pad) if pad else None
    q_parts = [query * scale, term_h, term_w] + ([zeros] if pad else [])
    k_parts = [key, onehots.to(key.dtype).expand(batch, heads, n, extra)] + ([zeros] if pad else [])
    v_aug = torch.cat([value, value.new_zeros(batch, heads, n, width - c)], dim=-1)
    return torch.cat(q_parts, dim=-1), torch.cat(k_parts, dim=-1), v_aug


class SegGptAttention(nn.Module):
    """Global multi-head attention with decomposed relative position bias.

    Weights: ``qkv`` (D -> 3D, bias per ``config.qkv_bias``), ``proj`` (D -> D), ``rel_pos_h``
    ``(2*Hg-1, C)`` and ``rel_pos_w`` ``(2*Wg-1, C)``. Names follow the hub checkpoint.
    """

    def __init__(self, config: SegGptConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim ** -0.5
        self.grid = config.grid_size
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.use_rel_pos = config.use_relative_position_embeddings
        if self.use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * self.grid[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * self.grid[1] - 1, self.head_dim))
        self.attn_implementation = "sdpa"

    def _split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, n, _ = qkv.shape
        qkv = qkv.reshape(batch, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, N, C)
        return qkv[0], qkv[1], qkv[2]

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention of full canvas sequences.

        Args:
            query, key, value: ``(B, heads, N, C)`` with ``N = Hg * Wg`` tokens in row-major order.
            output_attentions: also return the ``(B, heads, N, N)`` probabilities (eager path).

        Returns:
            ``(B, heads, N, C)`` attention output (before ``proj``) and the probabilities or None.
        """
        if self.attn_implementation == "eager" or output_attentions:
            logits = (query * self.scale) @ key.transpose(-2, -1)                  # (B, h, N, N)
            if self.use_rel_pos:
                term_h, term_w = rel_pos_terms(query, *self._rel_tables(query), self.grid)
                hg, wg = self.grid
                b, h, n, _ = logits.shape
                logits = (logits.view(b, h, n, hg, wg) + term_h[..., :, None]
                          + term_w[..., None, :]).view(b, h, n, n)
            probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
            return probs @ value, (probs if output_attentions else None)
        if self.use_rel_pos:
            term_h, term_w = rel_pos_terms(query, *self._rel_tables(query), self.grid)
            onehots = key_position_onehots(self.grid, key.dtype, key.device)
            q_aug, k_aug, v_aug = augment_qkv_with_rel_pos(query, key, value, term_h, term_w,
                                                           self.scale, onehots)
            out = F.scaled_dot_product_attention(q_aug, k_aug, v_aug, scale=1.0)
            return out[..., :value.shape[-1]], None
        return F.scaled_dot_product_attention(query, key, value, scale=self.scale), None

    def _rel_tables(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rel_h = get_rel_pos(self.grid[0], self.grid[0], self.rel_pos_h).to(like.dtype)  # (Hg, Hg, C)
        rel_w = get_rel_pos(self.grid[1], self.grid[1], self.rel_pos_w).to(like.dtype)  # (Wg, Wg, C)
        return rel_h, rel_w

    def forward(self, prompt_tokens: torch.Tensor, query_tokens: torch.Tensor,
                output_attentions: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Attention over canvases whose query halves may be shared between sequences.

        Args:
            prompt_tokens: ``(S, Lp, D)`` normalised tokens of the top halves of ``S`` canvases.
            query_tokens: ``(Sq, Lq, D)`` normalised tokens of the bottom halves; ``Sq == S``, or
                ``S % Sq == 0`` when groups of ``S // Sq`` consecutive canvases share one query half
                (feature ensemble over identical query images).

        Returns:
            ``(S, Lp, D)`` and ``(S, Lq, D)``: projected attention outputs of both halves for every
            canvas, and the ``(S, heads, N, N)`` probabilities when ``output_attentions``.
        """
        s, lp, d = prompt_tokens.shape
        sq, lq, _ = query_tokens.shape
        qkv_p = self.qkv(prompt_tokens)                                         # (S, Lp, 3D)
        qkv_q = self.qkv(query_tokens)                                          # (Sq, Lq, 3D)
        if sq != s:
            qkv_q = qkv_q.repeat_interleave(s // sq, dim=0)                     # (S, Lq, 3D)
        query, key, value = self._split_heads(torch.cat([qkv_p, qkv_q], dim=1))  # (S, h, N, C) each
        out, probs = self.attend(query, key, value, output_attentions)          # (S, h, N, C)
        out = out.transpose(1, 2).reshape(s, lp + lq, d)                        # (S, N, D)
        out = self.proj(out)
        return out[:, :lp], out[:, lp:], probs


class SegGptMlp(nn.Module):
    """Two-layer MLP ``lin2(gelu(lin1(x)))``, D -> mlp_dim -> D."""

    def __init__(self, config: SegGptConfig) -> None:
        super().__init__()
        self.lin1 = nn.Linear(config.hidden_size, config.mlp_dim)
        self.lin2 = nn.Linear(config.mlp_dim, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(..., D) -> (..., D)``."""
        return self.lin2(F.gelu(self.lin1(hidden_states)))


class SegGptLayer(nn.Module):
    """Pre-norm transformer block with SegGPT's feature ensemble.

    ``x = x + ensemble(attn(ln1(x)))``; ``x = x + mlp(ln2(x))``. The ensemble (Painter
    ``models_seggpt.py`` ``Block.forward``, ``merge > 0``) replaces the query-half rows of the
    attention output by their mean over the canvases of each group, after attention and before the
    residual add.
    """

    def __init__(self, config: SegGptConfig) -> None:
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = SegGptAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SegGptMlp(config)

    def forward(self, prompt_tokens: torch.Tensor, query_tokens: torch.Tensor,
                ensemble_groups: int | None, output_attentions: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One block.

        Args:
            prompt_tokens: ``(S, Lp, D)``.
            query_tokens: ``(Sq, Lq, D)``, ``Sq`` = ``S`` or the number of groups (shared query).
            ensemble_groups: ``None`` for independent canvases, else ``G``: the ``S`` canvases form
                ``G`` groups of ``S // G`` consecutive canvases whose query-half attention outputs are
                averaged. Shared query halves (``Sq < S``) require ``G == Sq``.

        Returns:
            Updated ``(S, Lp, D)`` and ``(Sq, Lq, D)`` tokens and optional attention probabilities.
        """
        s = prompt_tokens.shape[0]
        sq = query_tokens.shape[0]
        attn_p, attn_q, probs = self.attention(self.layernorm_before(prompt_tokens),
                                               self.layernorm_before(query_tokens), output_attentions)
        if ensemble_groups is not None:
            g = ensemble_groups
            attn_q = attn_q.reshape(g, s // g, *attn_q.shape[1:]).mean(dim=1)    # (G, Lq, D)
            if sq == s:
                attn_q = attn_q.repeat_interleave(s // g, dim=0)                 # (S, Lq, D)
        elif sq != s:
            raise ValueError("shared query halves need feature ensemble")
        prompt_tokens = prompt_tokens + attn_p
        query_tokens = query_tokens + attn_q
        prompt_tokens = prompt_tokens + self.mlp(self.layernorm_after(prompt_tokens))
        query_tokens = query_tokens + self.mlp(self.layernorm_after(query_tokens))
        return prompt_tokens, query_tokens, probs
