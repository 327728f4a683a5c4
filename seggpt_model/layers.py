"""Building blocks of SegGPT's ViT encoder: decomposed relative position, attention, MLP, block.

The attention is ViTDet/SAM-style global attention with the decomposed relative position bias of
MViTv2 (Li et al. 2022), as in ``baaivision/Painter`` ``SegGPT_inference/models_seggpt.py``
(``Attention``, ``util/vitdet_utils.add_decomposed_rel_pos``). Six kernels compute it, each a
function of this module with the signature of :data:`AttentionKernel`:

* :func:`eager_attention`: the reference formula, softmax of ``q k^T * scale + bias`` computed
  explicitly over whole canvases; the only one that returns the attention probabilities.
* :func:`plain_sdpa_attention`: one ``scaled_dot_product_attention`` call over whole canvases, for
  models without relative position (there is no bias to fold in).
* :func:`fused_sdpa_attention`: one ``scaled_dot_product_attention`` call over whole canvases with
  the bias folded into augmented queries and keys (width ``C + Hg + Wg``); autograd and non-CPU.
* :func:`split_flash_attention`: PyTorch's CPU flash kernel on keys split into the prompt half and
  the query half (augmented width ``C + Hg/2 + Wg``), partial results merged by their log-sum-exp;
  inference on CPU in fp16, and in bf16 on CPUs with AMX.
* :func:`chunked_softmax_attention`: explicit softmax blocks of one head and one half canvas each,
  at head width ``C``, run in parallel on torch's threads (:mod:`seggpt_model.threads`), merged by
  log-sum-exp; inference on CPU in fp32, and in bf16 on CPUs without AMX. It uses no SDPA.
* :func:`flex_attention_kernel`: PyTorch's FlexAttention over whole canvases at head width ``C``,
  the decomposed bias added inside the attention loop by a ``score_mod``; compiled on CUDA (the
  candidate that avoids the fused kernel's padded width), unfused on CPU (tests).

:func:`select_attention_kernel` is the one rule that picks a kernel from the implementation name
(``set_attn_implementation`` of the models), device, dtype and grad mode. The encoder applies it
(:meth:`SegGptAttention.select_kernel`) once per forward, before the first layer runs, and hands
each layer its kernel; nothing is chosen inside a layer call. Measured reasons for each choice:
``docs/benchmarks.md`` (speed summary and the attention table of ``benchmarks/bench_attention.py``).

Token layout: a canvas of ``Hg x Wg`` patches (56 x 28 for ViT-L) flattened row-major; the top half
(``Lp = Hg/2 * Wg`` tokens) is the prompt, the bottom half (``Lq`` tokens) the query.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import flex_attention

from .config import ATTENTION_IMPLEMENTATIONS, SegGptConfig
from .native import BiasedSoftmax, biased_softmax
from .threads import run_parallel



def _cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Sapphire Rapids and later), read once at import from
    the CPU's feature bits (``cpuid`` through ``torch.cpu``; no file is read). False where this
    torch cannot tell."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if probe is not None else False


#: The host CPU has AMX matrix units: the default ``amx`` of :func:`select_attention_kernel`, which
#: decides the bf16 CPU kernel. Read once, at import.
CPU_HAS_AMX = _cpu_has_amx()


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
    rel_pos = resized_rel_pos(rel_pos, max(q_size, k_size))
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative_coords.long()]


def resized_rel_pos(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """The ``(2 * size - 1, C)`` table of relative distances ``-(size-1) .. size-1`` (row
    ``d + size - 1`` for distance ``d``), linearly resized as :func:`get_rel_pos` does when the
    learned table has another length."""
    length = 2 * size - 1
    if rel_pos.shape[0] == length:
        return rel_pos
    resized = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=length, mode="linear")
    return resized.reshape(-1, length).permute(1, 0)


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
    q = query.unflatten(2, (hg, wg))                                        # (B, h, Hg, Wg, C)
    term_h = torch.einsum("bnhwc,hkc->bnhwk", q, rel_h)                     # (B, h, Hg, Wg, Hg)
    term_w = torch.einsum("bnhwc,wkc->bnhwk", q, rel_w)                     # (B, h, Hg, Wg, Wg)
    return term_h.reshape(batch, heads, hg * wg, hg), term_w.reshape(batch, heads, hg * wg, wg)


def key_position_onehots(grid: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """One-hot row and column codes of every key token: ``(Hg*Wg, Hg + Wg)``.

    ``[row(m) one-hot | col(m) one-hot]`` so that ``[th | tw] @ onehots^T`` is the relative
    position bias of :func:`rel_pos_terms`. Built once per ``(grid, dtype, device)`` and shared
    (read-only: callers copy it, never write to it), so a forward launches nothing to make it.
    """
    return _key_position_onehots(tuple(grid), dtype, torch.device(device))


@functools.lru_cache(maxsize=32)
def _key_position_onehots(grid: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    hg, wg = grid
    with torch.inference_mode(False), torch.no_grad():   # a normal tensor, usable under autograd too
        rows = torch.arange(hg, device=device).repeat_interleave(wg)         # (Hg*Wg,)
        cols = torch.arange(wg, device=device).repeat(hg)                    # (Hg*Wg,)
        onehots = torch.zeros(hg * wg, hg + wg, dtype=dtype, device=device)
        index = torch.arange(hg * wg, device=device)
        onehots[index, rows] = 1
        onehots[index, hg + cols] = 1
    return onehots


def cached_from_params(module: nn.Module, key: tuple, params: tuple[torch.Tensor, ...],
                       build: Callable[[], object]):
    """``build()``, computed once and reused while ``params`` are unchanged.

    For tensors derived from weights alone (relative-position tables, the resized position grid)
    that a forward used to rebuild in every layer or frame. The cache lives on ``module``
    (``_param_cache``) and is dropped when any of ``params`` is written in place or replaced
    (``Tensor._version`` and ``data_ptr``; the entry keeps a reference to the source storage, so
    a freed address cannot come back under the same stamp). Not cached, and built as before, when
    autograd could need the graph (grad mode on and a parameter requires grad) or while
    ``torch.compile`` traces (the graph computes it), or for parameters made under inference mode
    (they have no version counter to watch). Cached values are built with inference mode
    and autograd off, so they are normal tensors usable in any mode; callers must not modify them.

    Args:
        module: owner of the cache.
        key: what is built (and its dtype / options).
        params: the parameters the value is derived from.
        build: zero-argument function computing the value.
    """
    if (torch.compiler.is_compiling() or any(p.is_inference() for p in params)  # no version counter
            or (torch.is_grad_enabled() and any(p.requires_grad for p in params))):
        return build()
    stamp = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
    cache = module.__dict__.setdefault("_param_cache", {})
    entry = cache.get(key)
    if entry is not None and entry[0] == stamp:
        return entry[2]
    if entry is not None or (cache and next(iter(cache.values()))[0] != stamp):
        cache.clear()                                   # the weights changed: every entry is stale
    with torch.inference_mode(False), torch.no_grad():
        value = build()
    cache[key] = (stamp, tuple(p.detach() for p in params), value)
    return value


#: ``kernel(attention, prompt_tokens, query_tokens, ensemble_groups, workspace)`` ->
#: ``(prompt_out, query_out, probs)``: attention of ``(S, Lp, D)`` prompt-half and ``(Sq, Lq, D)``
#: query-half tokens before the output projection, as ``(S, Lp, D)`` and ``(S or G, Lq, D)``, and
#: the ``(S, heads, N, N)`` probabilities (eager) or None. See :meth:`SegGptAttention.forward`.
AttentionKernel = Callable[["SegGptAttention", torch.Tensor, torch.Tensor, "int | None", "dict | None"],
                           tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]]


def select_attention_kernel(implementation: str, *, device: torch.device, dtype: torch.dtype,
                            grad_enabled: bool, use_rel_pos: bool, even_halves: bool,
                            output_attentions: bool = False, amx: bool | None = None) -> AttentionKernel:
    """The one dispatch rule of the attention kernels.

    * ``"eager"``, or ``output_attentions``: :func:`eager_attention` (the only kernel that forms the
      probabilities).
    * no relative position (``use_rel_pos`` False): :func:`plain_sdpa_attention`, whatever the name.
    * ``"sdpa"`` (default): for inference on CPU (``device.type == "cpu"``, grad mode off, prompt and
      query halves of ``Hg / 2`` rows each) :func:`chunked_softmax_attention` in fp32 and in bf16
      on a CPU without AMX (``amx`` False: AVX512-BF16 only, e.g. AMD Zen 4), and
      :func:`split_flash_attention` in bf16 with AMX and in fp16 (not measured without AMX);
      otherwise (autograd, other devices) :func:`fused_sdpa_attention`. Why: at 8 prompts one
      ViT-L layer's fp32 attention takes 0.44 s chunked against 0.59 s split and 0.91 s fused; in
      bf16 with AMX (Xeon) 0.19 s split against 0.27 s fused and 0.49 s chunked, where the AMX
      GEMMs cost less than the explicit softmax passes; in bf16 without AMX (2-core EPYC Zen 4)
      0.97 s chunked on torch's ops against 1.95 s split and 2.69 s fused (loaded machine), where
      the flash kernel's wider (augmented) GEMMs cost more, and on a quiet one 0.125 s chunked
      with the C softmax kernel of :mod:`seggpt_model.native` against 0.315 s on torch's ops and
      0.75 s split (``docs/benchmarks.md``, attention tables; the C kernel is not measured with
      AMX, so the split stays there). The split kernel needs the log-sum-exp that only PyTorch's
      CPU flash kernel returns; both write through ``out=`` ops, which autograd cannot record.
    * ``"fused"``, ``"split"``, ``"chunked"``: that kernel; the last two only where ``"sdpa"``
      could pick them (CPU inference with even halves).
    * ``"flex"``: :func:`flex_attention_kernel` on any device (on CPU the unfused reference
      implementation, inference only: exact, not fast). ``"sdpa"`` never picks it by
      itself: on CUDA the product picks it by name when the GPU check's record says it wins
      (``pipelines.kernel_record``), a measured choice, not a guess.

    Args:
        implementation: one of :data:`ATTENTION_IMPLEMENTATIONS`.
        device, dtype: of the tokens.
        grad_enabled: ``torch.is_grad_enabled()`` of the call.
        use_rel_pos: the model has the decomposed relative position bias.
        even_halves: the canvas splits into prompt and query halves of ``Hg / 2`` rows each.
        output_attentions: the probabilities are wanted.
        amx: the CPU has AMX matrix units; None: :data:`CPU_HAS_AMX` (this host). Decides only the
            ``"sdpa"`` choice for CPU inference in bf16.

    Returns:
        The kernel, an :data:`AttentionKernel`.

    Raises:
        ValueError: an unknown name, or ``"split"`` / ``"chunked"`` where they do not run.
    """
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, got {implementation!r}")
    if implementation == "eager" or output_attentions:
        return eager_attention
    if not use_rel_pos:
        return plain_sdpa_attention
    cpu_inference = device.type == "cpu" and not grad_enabled and even_halves
    if implementation == "sdpa":
        if not cpu_inference:
            return fused_sdpa_attention
        if dtype == torch.float32:
            return chunked_softmax_attention
        if dtype == torch.bfloat16 and not (CPU_HAS_AMX if amx is None else amx):
            return chunked_softmax_attention
        return split_flash_attention
    if implementation == "fused":
        return fused_sdpa_attention
    if implementation == "flex":
        return flex_attention_kernel
    if not cpu_inference:
        raise ValueError(f"the {implementation!r} attention kernel runs only for inference on CPU (no "
                         f"autograd) with prompt and query halves of Hg/2 rows; use 'sdpa' or 'fused'")
    return split_flash_attention if implementation == "split" else chunked_softmax_attention


class SegGptAttention(nn.Module):
    """Global multi-head attention with decomposed relative position bias.

    Weights: ``qkv`` (D -> 3D, bias per ``config.qkv_bias``), ``proj`` (D -> D), ``rel_pos_h``
    ``(2*Hg-1, C)`` and ``rel_pos_w`` ``(2*Wg-1, C)``. Names follow the hub checkpoint.
    ``attn_implementation`` (one of :data:`ATTENTION_IMPLEMENTATIONS`, default ``"sdpa"``) names the
    kernel rule of :meth:`select_kernel`.
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

    def select_kernel(self, prompt_tokens: torch.Tensor, query_tokens: torch.Tensor,
                      output_attentions: bool = False) -> AttentionKernel:
        """:func:`select_attention_kernel` for tokens like these (``(S, Lp, D)``, ``(Sq, Lq, D)``)
        under the current grad mode and :attr:`attn_implementation`.

        Raises:
            ValueError: as :func:`select_attention_kernel`.
        """
        hg, wg = self.grid
        half = hg // 2 * wg
        even_halves = hg % 2 == 0 and prompt_tokens.shape[1] == half and query_tokens.shape[1] == half
        return select_attention_kernel(self.attn_implementation, device=prompt_tokens.device,
                                       dtype=prompt_tokens.dtype, grad_enabled=torch.is_grad_enabled(),
                                       use_rel_pos=self.use_rel_pos, even_halves=even_halves,
                                       output_attentions=output_attentions)

    def forward(self, prompt_tokens: torch.Tensor, query_tokens: torch.Tensor,
                ensemble_groups: int | None = None, output_attentions: bool = False,
                workspace: dict | None = None, residual: tuple[torch.Tensor, torch.Tensor] | None = None,
                kernel: AttentionKernel | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Attention over canvases whose query halves may be shared, then the projection ``proj``.

        Args:
            prompt_tokens: ``(S, Lp, D)`` normalised tokens of the top halves of ``S`` canvases.
            query_tokens: ``(Sq, Lq, D)`` normalised tokens of the bottom halves; ``Sq == S``, or
                ``S % Sq == 0`` when groups of ``S // Sq`` consecutive canvases share one query half
                (feature ensemble over identical query images).
            ensemble_groups: ``None``, or ``G``: the query-half outputs are averaged over each group
                of ``S // G`` consecutive canvases (feature ensemble). The average is taken before
                ``proj``, which is affine, so it equals the original's average after it.
            output_attentions: also return the probabilities (selects :func:`eager_attention`).
            workspace: a dict that the layers of one forward share for their attention buffers
                (reused, so their pages stay mapped); None allocates them per call.
            residual: ``(S, Lp, D)`` and ``(Sq, Lq, D)`` tokens to add the output to, or None. The
                addition is fused into the ``proj`` GEMM (:func:`residual_linear`, a measured win:
                it saves a pass over the output); group means go back to every canvas of their
                group when ``Sq == S``.
            kernel: the kernel chosen by the caller (the encoder picks one per forward); None picks
                it here with :meth:`select_kernel`.

        Returns:
            ``(S, Lp, D)`` prompt-half and ``(S or G, Lq, D)`` query-half outputs (``G`` when
            averaged; with ``residual``, ``residual + output`` in the residual's shapes), and the
            ``(S, heads, N, N)`` probabilities when ``output_attentions``, else None.
        """
        if kernel is None:
            kernel = self.select_kernel(prompt_tokens, query_tokens, output_attentions)
        out_p, out_q, probs = kernel(self, prompt_tokens, query_tokens, ensemble_groups, workspace)
        probs = probs if output_attentions else None
        if residual is None:
            return self.proj(out_p), self.proj(out_q), probs
        residual_p, residual_q = residual
        if out_q.shape[0] != residual_q.shape[0]:  # one group mean for each canvas of its group
            out_q = out_q.repeat_interleave(residual_q.shape[0] // out_q.shape[0], dim=0)
        return residual_linear(residual_p, out_p, self.proj), residual_linear(residual_q, out_q, self.proj), probs


# ------------------------------------------------------------------------------------------------
# kernels over whole canvases: eager, plain SDPA, fused SDPA
# ------------------------------------------------------------------------------------------------

def _project(attention: SegGptAttention, tokens: torch.Tensor) -> torch.Tensor:
    """``qkv`` of ``(B, L, D)`` tokens as a ``(3, B, heads, L, C)`` view."""
    b, n, _ = tokens.shape
    return attention.qkv(tokens).view(b, n, 3, attention.num_heads, attention.head_dim).permute(2, 0, 3, 1, 4)


def _whole_canvases(attention: SegGptAttention, prompt_tokens: torch.Tensor,
                    query_tokens: torch.Tensor) -> torch.Tensor:
    """``(3, S, heads, N, C)`` queries, keys and values of whole canvases (shared query halves
    repeated for every canvas of their group)."""
    s, sq = prompt_tokens.shape[0], query_tokens.shape[0]
    qkv_p, qkv_q = _project(attention, prompt_tokens), _project(attention, query_tokens)
    if sq != s:
        qkv_q = qkv_q.repeat_interleave(s // sq, dim=1)
    return torch.cat([qkv_p, qkv_q], dim=3)


def _canvas_outputs(out: torch.Tensor, lp: int, ensemble_groups: int | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, heads, N, C)`` attention outputs of whole canvases as ``(S, Lp, D)`` prompt-half and
    ``(S or G, Lq, D)`` query-half outputs (query halves averaged over groups of ``S // G``)."""
    s, h, n, c = out.shape
    lq = n - lp
    out = out.transpose(1, 2)                                                   # (S, N, h, C)
    out_p = out[:, :lp].reshape(s, lp, h * c)
    out_q = out[:, lp:]                                                         # (S, Lq, h, C)
    if ensemble_groups is not None:
        g = ensemble_groups
        out_q = out_q.reshape(g, s // g, lq, h, c).mean(dim=1)                  # (G, Lq, h, C)
    return out_p, out_q.reshape(-1, lq, h * c)


def _rel_tables(attention: SegGptAttention, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Hg, Hg, C)`` and ``(Wg, Wg, C)`` relative position embeddings (:func:`get_rel_pos`),
    built once per weights and dtype (:func:`cached_from_params`)."""
    hg, wg = attention.grid

    def build():
        return (get_rel_pos(hg, hg, attention.rel_pos_h).to(dtype),
                get_rel_pos(wg, wg, attention.rel_pos_w).to(dtype))
    return cached_from_params(attention, ("rel_tables", dtype), (attention.rel_pos_h, attention.rel_pos_w), build)


def eager_attention(attention: SegGptAttention, prompt_tokens: torch.Tensor, query_tokens: torch.Tensor,
                    ensemble_groups: int | None = None, workspace: dict | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference formula: ``softmax(scale * q k^T + bias) v`` with the ``(S, heads, N, N)``
    logits materialised (Painter ``Attention.forward`` with ``add_decomposed_rel_pos``).

    Used for ``attn_implementation="eager"`` and whenever the probabilities are requested
    (``output_attentions``); it exists as the readable reference the other kernels are tested
    against. Softmax in fp32, probabilities cast back to the token dtype. Memory grows with
    ``S * heads * N^2`` (1.3 GB of fp32 logits per ViT-L layer at 8 prompts).

    Args and returns: see :data:`AttentionKernel`; ``workspace`` is not used. The third result is
    the ``(S, heads, N, N)`` probabilities.
    """
    lp = prompt_tokens.shape[1]
    qkv = _whole_canvases(attention, prompt_tokens, query_tokens)
    query, key, value = qkv[0], qkv[1], qkv[2]
    logits = (query * attention.scale) @ key.transpose(-2, -1)                 # (S, h, N, N)
    if attention.use_rel_pos:
        term_h, term_w = rel_pos_terms(query, *_rel_tables(attention, query.dtype), attention.grid)
        hg, wg = attention.grid
        b, h, n, _ = logits.shape
        logits = (logits.view(b, h, n, hg, wg) + term_h[..., :, None]
                  + term_w[..., None, :]).view(b, h, n, n)
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    return (*_canvas_outputs(probs @ value, lp, ensemble_groups), probs)


def plain_sdpa_attention(attention: SegGptAttention, prompt_tokens: torch.Tensor,
                         query_tokens: torch.Tensor, ensemble_groups: int | None = None,
                         workspace: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, None]:
    """One ``scaled_dot_product_attention`` call over whole canvases, without position bias.

    Used for every name but ``"eager"`` when the model has no relative position
    (``use_relative_position_embeddings=False``): with no bias there is nothing to fold in, and the
    fused kernel is PyTorch's fastest attention. Args and returns: see :data:`AttentionKernel`.
    """
    lp = prompt_tokens.shape[1]
    qkv = _whole_canvases(attention, prompt_tokens, query_tokens)
    out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=attention.scale)
    return (*_canvas_outputs(out, lp, ensemble_groups), None)


def fused_sdpa_attention(attention: SegGptAttention, prompt_tokens: torch.Tensor,
                         query_tokens: torch.Tensor, ensemble_groups: int | None = None,
                         workspace: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, None]:
    """One ``scaled_dot_product_attention`` call over whole canvases with the relative position
    bias folded into queries and keys.

    ``q' = [q * scale | th | tw | 0]`` and ``k' = [k | onehot(row) | onehot(col) | 0]`` give
    ``q' . k' = scale * q . k + th[row(k)] + tw[col(k)]``: exactly the biased logits, so
    ``scaled_dot_product_attention(q', k', v', scale=1)`` needs no ``(N, N)`` bias tensor.
    Values are zero-padded to the same width (``v' = [v | 0]``) because the fused CPU and GPU
    kernels want equal head sizes; the width ``C + Hg + Wg`` is rounded up to a multiple of 8 (152
    for ViT-L). q', k' and v' are written straight into one buffer, without concatenated copies.

    Used by ``"sdpa"`` with autograd and on devices other than CPU (PyTorch's kernels there do
    not return the log-sum-exp that the split kernel merges by); it works under autograd. On CPU
    inference it is the slowest of the three (0.91 s per ViT-L fp32 layer at 8 prompts against
    0.44 s chunked, ``docs/benchmarks.md``). Args and returns: see :data:`AttentionKernel`.
    """
    s, lp, _ = prompt_tokens.shape
    qkv_p = _project(attention, prompt_tokens)                                  # (3, S, h, Lp, C)
    qkv_q = _project(attention, query_tokens)                                   # (3, Sq, h, Lq, C)
    _, _, h, _, c = qkv_p.shape
    sq, lq = qkv_q.shape[1], qkv_q.shape[3]
    hg, wg = attention.grid
    extra = hg + wg
    width = -(-(c + extra) // 8) * 8
    buf = qkv_p.new_empty(3, s, h, lp + lq, width)                              # q', k', v'
    buf[:, :, :, :lp, :c] = qkv_p
    if sq == s:
        buf[:, :, :, lp:, :c] = qkv_q
    else:  # each shared query half serves a group of s // sq canvases
        buf[:, :, :, lp:, :c].unflatten(1, (sq, s // sq)).copy_(
            qkv_q.unsqueeze(2).expand(-1, -1, s // sq, -1, -1, -1))
    query = buf[0, ..., :c]                                                     # (S, h, N, C)
    # under autograd the position terms' backward needs the queries, which the writes below change
    unscaled = query.clone() if query.requires_grad else query
    term_h, term_w = rel_pos_terms(unscaled, *_rel_tables(attention, query.dtype), attention.grid)
    buf[0, ..., c:c + hg] = term_h
    buf[0, ..., c + hg:c + extra] = term_w
    query.mul_(attention.scale)
    buf[1, ..., c:c + extra] = key_position_onehots(attention.grid, buf.dtype, buf.device)
    buf[:2, ..., c + extra:] = 0
    buf[2, ..., c:] = 0
    out = F.scaled_dot_product_attention(buf[0], buf[1], buf[2], scale=1.0)[..., :c]
    return (*_canvas_outputs(out, lp, ensemble_groups), None)


#: FlexAttention compiled for CUDA, built on first use: compiling costs seconds, so it must not
#: happen at import or on CPU (where the unfused eager implementation is used).
_COMPILED_FLEX: list = []


def _flex_function(device: torch.device) -> Callable:
    """``flex_attention`` compiled once for CUDA devices (the fused kernel), eager elsewhere."""
    if device.type != "cuda" or torch.compiler.is_compiling():
        return flex_attention
    if not _COMPILED_FLEX:
        _COMPILED_FLEX.append(torch.compile(flex_attention, dynamic=False))
    return _COMPILED_FLEX[0]


def flex_attention_kernel(attention: SegGptAttention, prompt_tokens: torch.Tensor,
                          query_tokens: torch.Tensor, ensemble_groups: int | None = None,
                          workspace: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, None]:
    """PyTorch's FlexAttention over whole canvases at head width ``C``, the decomposed relative
    position bias added inside the attention loop.

    ``score_mod(score, b, h, q, k) = score + th[b, h, q, k // Wg] + tw[b, h, q, k % Wg]`` with
    ``score = scale * q . k`` and ``th``, ``tw`` the ``(S, heads, N, Hg)`` / ``(S, heads, N, Wg)``
    terms of :func:`rel_pos_terms` (MViTv2's ``add_decomposed_rel_pos``, Painter
    ``models_seggpt.py``): the logits of :func:`eager_attention` without an ``(N, N)`` tensor and
    without widening the head from 64 to 152 as :func:`fused_sdpa_attention` does (about 2.4x the
    attention FLOPs for ViT-L). On CUDA the function is compiled once
    (:func:`torch.compile` of ``torch.nn.attention.flex_attention``, the Triton kernel); on CPU
    it runs PyTorch's unfused reference implementation, which materialises the scores (for tests
    and as the exact-to-eager check). Shared query halves are repeated for every canvas of their
    group, as :func:`fused_sdpa_attention` does. Backward runs on CUDA only (PyTorch 2.13's CPU
    FlexAttention raises ``NotImplementedError`` for inputs that require grad).

    Selected by name (``set_attn_implementation("flex")``); ``pipelines.model_stage`` selects it on
    CUDA when the record of ``benchmarks/gpu_check.py`` says it is faster there.

    Args and returns: see :data:`AttentionKernel` (``(S, Lp, D)``, ``(S or G, Lq, D)``, None), any
    float dtype, any device; ``workspace`` is not used.
    """
    lp = prompt_tokens.shape[1]
    qkv = _whole_canvases(attention, prompt_tokens, query_tokens)
    query, key, value = qkv[0], qkv[1], qkv[2]
    term_h, term_w = rel_pos_terms(query, *_rel_tables(attention, query.dtype), attention.grid)
    wg = attention.grid[1]

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + term_h[b, h, q_idx, kv_idx // wg] + term_w[b, h, q_idx, kv_idx % wg]

    out = _flex_function(query.device)(query, key, value, score_mod=score_mod, scale=attention.scale)
    return (*_canvas_outputs(out, lp, ensemble_groups), None)


# ------------------------------------------------------------------------------------------------
# CPU inference kernels over half canvases, merged by log-sum-exp: split flash, chunked softmax
# ------------------------------------------------------------------------------------------------

def _reversed_rel_tables(attention: SegGptAttention, dtype: torch.dtype,
                         divide_by_scale: bool = True) -> torch.Tensor:
    """``(2Hg - 1 + 2Wg - 1, C)``: the height then the width table of relative distances in
    reversed order (row ``j`` of the height part is distance ``Hg - 1 - j``), divided by the
    attention scale by default: the flash kernel multiplies every augmented product by the
    scale, so the position terms enter divided by it."""
    hg, wg = attention.grid

    def build():
        table_h = resized_rel_pos(attention.rel_pos_h, hg).flip(0)
        table_w = resized_rel_pos(attention.rel_pos_w, wg).flip(0)
        tables = torch.cat([table_h, table_w])
        return (tables / attention.scale if divide_by_scale else tables).to(dtype)
    return cached_from_params(attention, ("reversed_rel_tables", dtype, divide_by_scale),
                              (attention.rel_pos_h, attention.rel_pos_w), build)


def _query_half_outputs(merged: torch.Tensor, ensemble_groups: int | None) -> torch.Tensor:
    """``(S, h, Lq, C)`` query-half attention outputs of the CPU inference kernels as
    ``(S, Lq, h, C)`` (a view), or averaged over each group of ``S // G`` consecutive canvases
    (feature ensemble) into a new ``(G, Lq, h, C)``."""
    if ensemble_groups is None:
        return merged.transpose(1, 2)
    s, h, lq, c = merged.shape
    g = ensemble_groups
    out = merged.new_empty(g, lq, h, c)
    torch.mean(merged.view(g, s // g, h, lq, c), dim=1, out=out.transpose(1, 2))
    return out


def _split_layout(attention: SegGptAttention) -> tuple[int, int, int, int]:
    """``(hh, pad, width, wq)``: rows per half, zero padding, augmented head width (a multiple
    of 8) and the width of the query buffers of :func:`split_flash_attention`."""
    hg, wg = attention.grid
    hh = hg // 2
    exact = attention.head_dim + hh + wg
    width = -(-exact // 8) * 8
    pad = width - exact
    return hh, pad, width, width + hh + pad


def _split_buffers(attention: SegGptAttention, workspace: dict | None, s: int, sq: int, half: int,
                   dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The augmented buffers of :func:`split_flash_attention` with their constant columns
    (one-hots, zeros) filled: ``qp (S, h, Lp, Wq)``, ``qq (Sq, h, Lq, Wq)``, ``kp, vp (S, h, Lp,
    W)``, ``kq, vq (Sq, h, Lq, W)``. Kept in ``workspace`` so that the layers of one forward reuse
    them (their pages stay mapped) and only rewrite the columns that change."""
    key = ("split_attention", s, sq, half, dtype, device)
    if workspace is not None and key in workspace:
        return workspace[key]
    h, c = attention.num_heads, attention.head_dim
    wg = attention.grid[1]
    hh, pad, width, wq = _split_layout(attention)
    qp = torch.zeros(s, h, half, wq, dtype=dtype, device=device)   # [th_lo | 0 | q | tw | th_hi | 0]
    qq = torch.zeros(sq, h, half, wq, dtype=dtype, device=device)
    kp = torch.zeros(s, h, half, width, dtype=dtype, device=device)  # [onehot row | 0 | k | onehot col]
    kq = torch.zeros(sq, h, half, width, dtype=dtype, device=device)  # [k | onehot col | onehot row | 0]
    vp = torch.zeros(s, h, half, width, dtype=dtype, device=device)  # [v | 0]
    vq = torch.zeros(sq, h, half, width, dtype=dtype, device=device)
    onehots = key_position_onehots((hh, wg), dtype, device)          # (Lp, hh + wg)
    kp[..., :hh] = onehots[:, :hh]
    kp[..., hh + pad + c:] = onehots[:, hh:]
    kq[..., c:c + wg] = onehots[:, hh:]
    kq[..., c + wg:c + wg + hh] = onehots[:, :hh]
    buffers = (qp, qq, kp, kq, vp, vq)
    if workspace is not None:
        workspace[key] = buffers
    return buffers


def _split_write_rel_pos(attention: SegGptAttention, buf: torch.Tensor, first_row: int,
                         tables: torch.Tensor, workspace: dict | None) -> None:
    """Fill the ``th / scale`` and ``tw / scale`` columns of a query buffer from its query columns.

    One GEMM ``g = q @ tables^T`` gives ``q . R[d]`` for every relative distance ``d``; the
    ``(Hg)`` height terms of query row ``r`` are ``g[:, Hg - 1 - r + k]`` for key rows ``k``,
    a strided window of ``g``, so they are read as ``as_strided`` views and copied straight
    into the buffer (the width terms likewise).
    """
    b, h, n, _ = buf.shape
    hg, wg = attention.grid
    hh, pad, _, _ = _split_layout(attention)
    c = attention.head_dim
    nt = tables.shape[0]
    key = ("rel_pos", b * h * n, nt, buf.dtype, buf.device)
    g = workspace.get(key) if workspace is not None else None
    if g is None:
        g = buf.new_empty(b * h * n, nt)
        if workspace is not None:
            workspace[key] = g
    q0 = hh + pad
    torch.mm(buf[..., q0:q0 + c].reshape(b * h * n, c), tables.t(), out=g)
    base = g.storage_offset()
    th = g.as_strided((b, h, hh, wg, hg), (h * n * nt, n * nt, wg * nt - 1, nt, 1),
                      base + hg - 1 - first_row)
    tw = g.as_strided((b, h, hh, wg, wg), (h * n * nt, n * nt, wg * nt, nt - 1, 1),
                      base + 2 * hg - 1 + wg - 1)
    grid = buf.unflatten(2, (hh, wg))                                     # (B, h, hh, Wg, Wq)
    grid[..., :hh].copy_(th[..., :hh])
    grid[..., q0 + c:q0 + c + wg].copy_(tw)
    grid[..., q0 + c + wg:q0 + c + wg + hh].copy_(th[..., hh:])


def _split_fill_qkv(attention: SegGptAttention, tokens: torch.Tensor, qbuf: torch.Tensor,
                    kbuf: torch.Tensor, vbuf: torch.Tensor, k_col: int) -> None:
    """Project ``tokens (B, L, D)`` and copy ``q``, ``k`` and ``v`` into their buffer columns."""
    c = attention.head_dim
    hh, pad, _, _ = _split_layout(attention)
    q0 = hh + pad
    parts = _project(attention, tokens)                                   # (3, B, h, L, C)
    qbuf[..., q0:q0 + c].copy_(parts[0])
    kbuf[..., k_col:k_col + c].copy_(parts[1])
    vbuf[..., :c].copy_(parts[2])


def split_flash_attention(attention: SegGptAttention, prompt_tokens: torch.Tensor,
                          query_tokens: torch.Tensor, ensemble_groups: int | None = None,
                          workspace: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, None]:
    """PyTorch's CPU flash kernel on keys split by half, partial attentions merged by log-sum-exp.

    The kernel (``torch.ops.aten._scaled_dot_product_flash_attention_for_cpu``, the one behind
    ``scaled_dot_product_attention`` on CPU, which also returns the log-sum-exp) computes
    ``softmax(scale * q' . k')`` with ``q' = [th / scale | q | tw / scale]`` and one-hot
    columns in ``k'``: the biased softmax of the reference. Each partial attention needs the
    relative-position one-hots of its own ``Hg / 2`` key rows only, so the augmented head width
    is ``C + Hg/2 + Wg`` (120 for ViT-L) instead of ``C + Hg + Wg`` (148, padded to 152) of
    :func:`fused_sdpa_attention`. Query buffers hold ``[th_lo | q | tw | th_hi]``: the first
    ``width`` columns pair with prompt keys ``[onehot(row) | k | onehot(col)]``, the last ``width``
    with query keys ``[k | onehot(col) | onehot(row - Hg/2)]``; no column is copied twice. With
    shared query halves (``Sq < S``), the query rows attend to their own keys once per query half
    instead of once per canvas, and key/value blocks shared between canvases are broadcast, not
    copied. With ``o_a, o_b`` the normalised partial outputs and ``l_a, l_b`` their log-sum-exps,
    the full softmax output is ``lerp(o_b, o_a, sigmoid(l_a - l_b))``.

    Used by ``"sdpa"`` for inference on CPU in fp16, and in bf16 with AMX: 0.19 s per ViT-L bf16 layer at 8
    prompts, against 0.27 s for :func:`fused_sdpa_attention` and 0.49 s for
    :func:`chunked_softmax_attention`, whose elementwise passes cost more than the AMX GEMMs in bf16
    (``docs/benchmarks.md``). Needs halves of ``Hg / 2`` rows and no autograd.

    Args:
        attention: the module (weights, grid, scale).
        prompt_tokens: ``(S, Lp, D)`` normalised prompt-half tokens.
        query_tokens: ``(Sq, Lq, D)`` normalised query-half tokens, ``S % Sq == 0``.
        ensemble_groups: as in :meth:`SegGptAttention.forward`.
        workspace: a dict shared by the layers of one forward (buffers are reused), or None.

    Returns:
        ``(S, Lp, D)`` and ``(G or S, Lq, D)`` attention outputs before ``proj``, and None.
    """
    s, lp, d = prompt_tokens.shape
    sq, lq, _ = query_tokens.shape
    r = s // sq
    h, c = attention.num_heads, attention.head_dim
    scale = attention.scale
    dtype, device = prompt_tokens.dtype, prompt_tokens.device
    hh, pad, width, _ = _split_layout(attention)
    a_cols = slice(0, width)                 # [th_lo | 0 | q | tw]: against prompt keys
    b_cols = slice(hh + pad, hh + pad + width)  # [q | tw | th_hi | 0]: against query keys
    qp, qq, kp, kq, vp, vq = _split_buffers(attention, workspace, s, sq, lp, dtype, device)
    _split_fill_qkv(attention, prompt_tokens, qp, kp, vp, hh + pad)
    _split_fill_qkv(attention, query_tokens, qq, kq, vq, 0)
    tables = _reversed_rel_tables(attention, dtype)
    _split_write_rel_pos(attention, qp, 0, tables, workspace)
    _split_write_rel_pos(attention, qq, hh, tables, workspace)

    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    # prompt rows against prompt keys; shared query rows against their own keys, once
    o_pp, l_pp = flash(qp[..., a_cols], kp, vp, 0.0, False, attn_mask=None, scale=scale)
    o_qq, l_qq = flash(qq[..., b_cols], kq, vq, 0.0, False, attn_mask=None, scale=scale)
    out_p = torch.empty(s, lp, h, c, dtype=dtype, device=device)
    merged_q = torch.empty(s, h, lq, c, dtype=dtype, device=device)
    # canvases and the query half they share: one group per query half, or all canvases at once
    # when each has its own (r == 1); n canvases per group
    groups = [(slice(t * r, (t + 1) * r), slice(t, t + 1)) for t in range(sq)] if r > 1 else [(slice(None),) * 2]
    n = r if r > 1 else s
    for cs, qs in groups:
        # query rows against prompt keys, prompt rows against query keys
        o_qp, l_qp = flash(qq[qs, ..., a_cols].expand(n, -1, -1, -1), kp[cs], vp[cs], 0.0, False,
                           attn_mask=None, scale=scale)
        o_pq, l_pq = flash(qp[cs, ..., b_cols], kq[qs].expand(n, -1, -1, -1), vq[qs].expand(n, -1, -1, -1),
                           0.0, False, attn_mask=None, scale=scale)
        weight = torch.sigmoid(l_pp[cs] - l_pq).to(dtype).unsqueeze(-1)
        torch.lerp(o_pq[..., :c], o_pp[cs, ..., :c], weight, out=out_p[cs].transpose(1, 2))
        weight = torch.sigmoid(l_qp - l_qq[qs]).to(dtype).unsqueeze(-1)
        torch.lerp(o_qq[qs, ..., :c].expand(n, -1, -1, -1), o_qp[..., :c], weight, out=merged_q[cs])
    out_q = _query_half_outputs(merged_q, ensemble_groups)
    return out_p.reshape(s, lp, d), out_q.reshape(-1, lq, d), None


def _chunked_buffers(attention: SegGptAttention, workspace: dict | None, s: int, sq: int, half: int,
                     dtype: torch.dtype, device: torch.device,
                     products_dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Head-major buffers of :func:`chunked_softmax_attention`, kept in ``workspace`` for the
    layers of one forward: queries ``qp (S, h, Lp, C)`` and ``qq (Sq, h, Lq, C)``; keys and values
    ``kv (2, S, h, Lp + Lq, C)``, each canvas's prompt half followed by a copy of its query half
    (so a canvas's keys are one contiguous matrix); position products ``gp (S, h, Lp, nt)`` and
    ``gq (Sq, h, Lq, nt)`` in ``products_dtype`` (see :func:`_chunked_block`)."""
    key = ("chunked_attention", s, sq, half, dtype, device, products_dtype)
    if workspace is not None and key in workspace:
        return workspace[key]
    h, c = attention.num_heads, attention.head_dim
    hg, wg = attention.grid
    nt = 2 * hg - 1 + 2 * wg - 1
    buffers = (torch.empty(s, h, half, c, dtype=dtype, device=device),
               torch.empty(sq, h, half, c, dtype=dtype, device=device),
               torch.empty(2, s, h, 2 * half, c, dtype=dtype, device=device),
               torch.empty(s, h, half, nt, dtype=products_dtype, device=device),
               torch.empty(sq, h, half, nt, dtype=products_dtype, device=device))
    if workspace is not None:
        workspace[key] = buffers
    return buffers


def _chunked_block(grid: tuple[int, int], scale: float, native: BiasedSoftmax | None, scratch: dict,
                   query: torch.Tensor, products: torch.Tensor, first_row: int, key: torch.Tensor,
                   value: torch.Tensor, first_key_row: int, out: torch.Tensor, lse: torch.Tensor | None) -> None:
    """Biased softmax attention of one head's query rows against a block of whole key rows,
    computed explicitly in a scratch buffer (single-threaded; see :func:`chunked_softmax_attention`).

    Args:
        grid: ``(Hg, Wg)``.
        scale: the attention scale ``C ** -0.5``.
        native: the C kernel of :mod:`seggpt_model.native` for bf16 blocks, or None. With it
            (:func:`_native_block`) the bias, the softmax and the log-sum-exp are one C call over
            the raw ``q k^T``, computed in fp32, instead of seven torch passes over the bf16 logits.
        scratch: per-thread dict for the ``(M, N)`` logits buffer.
        query: ``(M, C)`` unscaled queries of whole canvas rows, the first in row ``first_row``.
        products: ``(M, nt)`` ``query @ tables^T`` of :func:`_reversed_rel_tables` (undivided):
            bf16 for the C kernel (as the bf16 eager formula rounds them), else fp32. Without the
            C kernel in bf16/fp16, the two position terms are added in fp32 and the sum rounded
            once into the logits: torch's broadcast add of these strided terms runs about 4x faster
            in fp32 than in bf16, even with the conversion (measured on AVX512-BF16, Zen 4).
        key, value: ``(N, C)`` keys and values of whole canvas rows from ``first_key_row`` on.
        out: ``(M, C)`` receives the normalised output (any strides).
        lse: ``(M,)`` receives the log-sum-exp of the biased logits (fp32 with the C kernel), or
            None.
    """
    m, n = query.shape[0], key.shape[0]
    hg, wg = grid
    rows, key_rows = m // wg, n // wg
    flat = scratch.get("logits")
    if flat is None or flat.numel() < m * n:
        flat = scratch["logits"] = query.new_empty(m * n)
    logits = flat[:m * n].view(m, n)
    if native is not None:  # bf16 only: chunked_softmax_attention passes it for bf16 alone
        _native_block(native, grid, scale, scratch, logits, query, products, first_row, key, value,
                      first_key_row, out, lse)
        return
    # products[t, hg - 1 - row(t) + key_row] is the height term, products[t, 2hg - 1 + wg - 1 -
    # col(t) + key_col] the width term (see _split_write_rel_pos): strided windows, added in one pass
    st, base = products.stride(0), products.storage_offset()
    term_h = products.as_strided((rows, wg, key_rows, 1), (wg * st - 1, st, 1, 0),
                                 base + hg - 1 - first_row + first_key_row)
    term_w = products.as_strided((rows, wg, 1, wg), (wg * st, st - 1, 0, 1), base + 2 * hg - 1 + wg - 1)
    if logits.dtype == products.dtype:
        torch.add(term_h, term_w, out=logits.view(rows, wg, key_rows, wg))
    else:
        bias = scratch.get("bias")
        if bias is None or bias.numel() < m * n:
            bias = scratch["bias"] = products.new_empty(m * n)
        torch.add(term_h, term_w, out=bias[:m * n].view(rows, wg, key_rows, wg))
        logits.copy_(bias[:m * n].view(m, n))
    logits.addmm_(query, key.t(), alpha=scale)
    top = torch.amax(logits, dim=1, keepdim=True)
    logits.sub_(top).exp_()
    total = logits.sum(dim=1, keepdim=True)
    unnormalised = scratch.get("out")
    if unnormalised is None or unnormalised.shape != out.shape:
        unnormalised = scratch["out"] = out.new_empty(out.shape)
    torch.mm(logits, value, out=unnormalised)
    torch.div(unnormalised, total, out=out)
    if lse is not None:
        torch.add(top.view(m), total.view(m).log(), out=lse)


def _native_block(native: BiasedSoftmax, grid: tuple[int, int], scale: float, scratch: dict,
                  logits: torch.Tensor, query: torch.Tensor, products: torch.Tensor, first_row: int,
                  key: torch.Tensor, value: torch.Tensor, first_key_row: int, out: torch.Tensor,
                  lse: torch.Tensor | None) -> None:
    """:func:`_chunked_block` in bf16 with the C kernel: the raw ``q k^T`` GEMM, one call for bias,
    softmax and log-sum-exp (fp32 inside; ``products`` and ``out`` bf16, ``lse`` fp32), and the
    value GEMM straight into ``out``."""
    hg, wg = grid
    row = scratch.get("row")
    if row is None or row.numel() < logits.shape[1]:
        row = scratch["row"] = torch.empty(logits.shape[1], dtype=torch.float32)
    torch.mm(query, key.t(), out=logits)
    native(logits, products, hg - 1 - first_row + first_key_row, 2 * hg - 1 + wg - 1, wg, scale, lse, row)
    torch.mm(logits, value, out=out)


def chunked_softmax_attention(attention: SegGptAttention, prompt_tokens: torch.Tensor,
                              query_tokens: torch.Tensor, ensemble_groups: int | None = None,
                              workspace: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, None]:
    """Attention as explicit softmax blocks of one head and one half canvas each, run in parallel
    on torch's threads by :func:`~seggpt_model.threads.run_parallel`. Uses no SDPA.

    Each block writes the decomposed relative-position bias of its ``(M, N)`` logits with one
    broadcast add of the two strided position terms, accumulates ``scale * q k^T`` onto it with
    one GEMM, takes the softmax and multiplies by the values: GEMMs at head width ``C`` with
    nothing padded, and a logits buffer that stays in cache, instead of the flash kernel at the
    augmented width of :func:`split_flash_attention`. Blocks: the prompt rows of each canvas
    against all its keys (one softmax over ``Lp + Lq`` keys), each shared query half against its
    own keys once, and each query half against the prompt keys of each of its canvases; the last
    two are merged by their log-sum-exps as in :func:`split_flash_attention`. Each thread takes
    whole blocks and runs their ops single-threaded, instead of every small op being split
    between threads.

    In bf16 each block's bias, softmax and log-sum-exp are one call of the C kernel of
    :mod:`seggpt_model.native` where it builds (:func:`_native_block`; position products in bf16,
    log-sum-exps in fp32), else the torch ops of :func:`_chunked_block` (products in fp32).

    Used by ``"sdpa"`` for inference on CPU in fp32: 0.44 s per ViT-L fp32 layer at 8 prompts
    against 0.59 s split flash and 0.91 s fused; and in bf16 on CPUs without AMX: 0.125 s with
    the C kernel against 0.315 s on torch's ops, 0.75 s split and 1.20 s fused on a 2-core EPYC
    Zen 4 (``docs/benchmarks.md``). Needs halves of ``Hg / 2`` rows and no autograd (``out=``
    ops). Same arguments and returns as :func:`split_flash_attention`.
    """
    s, lp, d = prompt_tokens.shape
    sq, lq, _ = query_tokens.shape
    r = s // sq
    h, c = attention.num_heads, attention.head_dim
    hh = attention.grid[0] // 2
    dtype, device = prompt_tokens.dtype, prompt_tokens.device
    native = biased_softmax() if dtype == torch.bfloat16 else None
    # products and log-sum-exps: bf16 and fp32 for the C kernel, fp32 and dtype for torch's ops
    stats_dtype = torch.float32 if native is not None else dtype
    qp, qq, kv, gp, gq = _chunked_buffers(attention, workspace, s, sq, lp, dtype, device,
                                          dtype if native is not None else torch.float32)
    parts_p = _project(attention, prompt_tokens)                                     # (3, S, h, Lp, C)
    parts_q = _project(attention, query_tokens)                                      # (3, Sq, h, Lq, C)
    qp.copy_(parts_p[0])
    qq.copy_(parts_q[0])
    kv[:, :, :, :lp].copy_(parts_p[1:])
    kv[:, :, :, lp:].unflatten(1, (sq, r)).copy_(parts_q[1:].unsqueeze(2).expand(-1, -1, r, -1, -1, -1))
    tables = _reversed_rel_tables(attention, gp.dtype, divide_by_scale=False).t()     # (C, nt)
    if dtype == gp.dtype:
        torch.mm(qp.view(-1, c), tables, out=gp.view(-1, gp.shape[-1]))
        torch.mm(qq.view(-1, c), tables, out=gq.view(-1, gq.shape[-1]))
    else:  # bf16/fp16 queries, fp32 products (the position terms are added in fp32)
        torch.mm(qp.view(-1, c).to(gp.dtype), tables, out=gp.view(-1, gp.shape[-1]))
        torch.mm(qq.view(-1, c).to(gq.dtype), tables, out=gq.view(-1, gq.shape[-1]))
    out_p = torch.empty(s, lp, h, c, dtype=dtype, device=device)
    o_qq = torch.empty(sq, h, lq, c, dtype=dtype, device=device)
    l_qq = torch.empty(sq, h, lq, dtype=stats_dtype, device=device)
    o_qp = torch.empty(s, h, lq, c, dtype=dtype, device=device)
    l_qp = torch.empty(s, h, lq, dtype=stats_dtype, device=device)
    keys, values = kv[0], kv[1]
    # the largest blocks first, so that the last ones to finish are small
    blocks = [(qp[t, j], gp[t, j], 0, keys[t, j], values[t, j], 0, out_p[t, :, j], None)
              for t in range(s) for j in range(h)]
    blocks += [(qq[t // r, j], gq[t // r, j], hh, keys[t, j, :lp], values[t, j, :lp], 0, o_qp[t, j], l_qp[t, j])
               for t in range(s) for j in range(h)]
    blocks += [(qq[u, j], gq[u, j], hh, keys[u * r, j, lp:], values[u * r, j, lp:], hh, o_qq[u, j], l_qq[u, j])
               for u in range(sq) for j in range(h)]
    scratch = workspace if workspace is not None else {}
    grid, scale = attention.grid, attention.scale
    run_parallel(lambda worker, block: _chunked_block(
        grid, scale, native, scratch.setdefault(("attention_scratch", worker), {}), *block), blocks)
    weight = torch.sigmoid(l_qp.unflatten(0, (sq, r)) - l_qq.unsqueeze(1)).to(dtype).unsqueeze(-1)
    merged = torch.lerp(o_qq.unsqueeze(1), o_qp.unflatten(0, (sq, r)), weight)  # (Sq, r, h, Lq, C)
    out_q = _query_half_outputs(merged.view(s, h, lq, c), ensemble_groups)
    return out_p.reshape(s, lp, d), out_q.reshape(-1, lq, d), None


# ------------------------------------------------------------------------------------------------
# MLP and block
# ------------------------------------------------------------------------------------------------

def residual_linear(residual: torch.Tensor, inputs: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``residual + linear(inputs)`` with the matrix product accumulated into the sum.

    ``(..., D_out)``, ``(..., D_in)`` -> ``(..., D_out)``, a new tensor. Equal to the unfused
    expression (bias and product are added in another order); it saves the separate pass over the
    output that ``linear`` followed by ``+`` costs (a measured win, ``docs/benchmarks.md``). When
    autograd records the call (a tensor or weight requires grad), the same sum is computed by the
    differentiable ``torch.addmm`` instead, since ``out=`` and in-place products are not recorded;
    likewise under ``torch.compile`` (inductor fuses the add itself, and may give ``new_empty`` the
    residual's strides, which the in-place ``view`` cannot take).
    """
    bias = linear.bias
    if torch.compiler.is_compiling() or (torch.is_grad_enabled() and (
            residual.requires_grad or inputs.requires_grad or linear.weight.requires_grad
            or (bias is not None and bias.requires_grad))):
        start = residual if bias is None else residual + bias
        return torch.addmm(start.reshape(-1, start.shape[-1]), inputs.reshape(-1, inputs.shape[-1]),
                           linear.weight.t()).view(residual.shape)
    out = residual.new_empty(residual.shape)                                  # contiguous
    if linear.bias is None:
        out.copy_(residual)
    else:
        torch.add(residual, linear.bias, out=out)
    out.view(-1, out.shape[-1]).addmm_(inputs.reshape(-1, inputs.shape[-1]), linear.weight.t())
    return out


class SegGptMlp(nn.Module):
    """Two-layer MLP ``lin2(gelu(lin1(x)))``, D -> mlp_dim -> D, applied to a block's prompt-half
    and query-half tokens in one call."""

    def __init__(self, config: SegGptConfig) -> None:
        super().__init__()
        self.lin1 = nn.Linear(config.hidden_size, config.mlp_dim)
        self.lin2 = nn.Linear(config.mlp_dim, config.hidden_size)

    def _tokens(self, tokens: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        hidden = F.gelu(self.lin1(tokens))
        return self.lin2(hidden) if residual is None else residual_linear(residual, hidden, self.lin2)

    def forward(self, prompt_tokens: torch.Tensor, query_tokens: torch.Tensor,
                residual: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S, Lp, D)``, ``(Sq, Lq, D)`` -> the MLP of each, same shapes.

        ``residual``: tokens of the same shapes to add the outputs to, the addition fused into the
        ``lin2`` GEMM (:func:`residual_linear`, a measured win), or None.
        """
        residual_p, residual_q = (None, None) if residual is None else residual
        return self._tokens(prompt_tokens, residual_p), self._tokens(query_tokens, residual_q)


class SegGptLayer(nn.Module):
    """Pre-norm transformer block with SegGPT's feature ensemble.

    ``x = x + ensemble(attn(ln1(x)))``; ``x = x + mlp(ln2(x))``. The ensemble (Painter
    ``models_seggpt.py`` ``Block.forward``, ``merge > 0``) replaces the query-half rows of the
    attention output by their mean over the canvases of each group, after attention and before the
    residual add. The block calls its ``attention`` and ``mlp`` modules (so their forward hooks
    fire, once each per block), which add their outputs to the residual themselves.
    """

    def __init__(self, config: SegGptConfig) -> None:
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = SegGptAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SegGptMlp(config)

    def forward(self, prompt_tokens: torch.Tensor, query_tokens: torch.Tensor,
                ensemble_groups: int | None, output_attentions: bool = False,
                workspace: dict | None = None, kernel: AttentionKernel | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One block.

        Args:
            prompt_tokens: ``(S, Lp, D)``.
            query_tokens: ``(Sq, Lq, D)``, ``Sq`` = ``S`` or the number of groups (shared query).
            ensemble_groups: ``None`` for independent canvases, else ``G``: the ``S`` canvases form
                ``G`` groups of ``S // G`` consecutive canvases whose query-half attention outputs are
                averaged. Shared query halves (``Sq < S``) require ``G == Sq``.
            output_attentions: also return the attention probabilities.
            workspace: attention buffers shared by the layers of one forward, or None.
            kernel: the attention kernel (:func:`select_attention_kernel`); None lets the attention
                module pick it.

        Returns:
            Updated ``(S, Lp, D)`` and ``(Sq, Lq, D)`` tokens and optional attention probabilities.

        Raises:
            ValueError: shared query halves without feature ensemble.
        """
        s = prompt_tokens.shape[0]
        sq = query_tokens.shape[0]
        if ensemble_groups is None and sq != s:
            raise ValueError("shared query halves need feature ensemble")
        prompt_tokens, query_tokens, probs = self.attention(
            self.layernorm_before(prompt_tokens), self.layernorm_before(query_tokens), ensemble_groups,
            output_attentions, workspace, residual=(prompt_tokens, query_tokens), kernel=kernel)
        prompt_tokens, query_tokens = self.mlp(self.layernorm_after(prompt_tokens),
                                               self.layernorm_after(query_tokens),
                                               residual=(prompt_tokens, query_tokens))
        return prompt_tokens, query_tokens, probs
