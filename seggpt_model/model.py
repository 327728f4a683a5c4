"""SegGPT (Wang et al. 2023) in plain PyTorch: embeddings, encoder with stream merge and feature
ensemble, pixel decoder.

Module and parameter names follow the public hub checkpoint
(:data:`~seggpt_model.config.DEFAULT_CHECKPOINT`, the layout ``transformers``'
``SegGptForImageSegmentation`` writes), so its ``model.safetensors`` loads without renaming. The
computation follows the original release, ``baaivision/Painter``
``SegGPT/SegGPT_inference/models_seggpt.py``.

Canvas convention (paper Sec. 3.1): each prompt/query pair is one ``(3, 896, 448)`` canvas with the
prompt image on top of the query image (image stream) and the prompt mask on top of a masked
(mask-token) query half (mask stream). Both streams run through the first ``merge_index + 1``
layers as separate batch entries and are then averaged into one.

Feature ensemble (paper Sec. 3.3, Painter ``Block.forward`` with ``merge > 0``): with N prompts
for one query image, in every layer the query-half rows of the attention output are replaced by
their mean over the N canvases, per stream in layers ``<= merge_index`` and over all canvases after
the merge. ``transformers`` differs at layer ``merge_index`` (it averages the query rows of both
streams together there) and applies that average even to a single prompt; this module follows the
original, so with one prompt ``feature_ensemble`` changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from . import weights
from .config import DEFAULT_CHECKPOINT, SegGptConfig
from .layers import ATTENTION_IMPLEMENTATIONS, SegGptLayer, cached_from_params
from .loss import seggpt_loss

EMBEDDING_TYPES = ("instance", "semantic")


class _ModelOutput:
    """Key and index access on the output dataclasses, as ``transformers``' ``ModelOutput`` offers.

    ``out["pred_masks"]`` equals ``out.pred_masks``; keys are the fields that are not None, in field
    order; ``out[0]`` / ``out.to_tuple()`` index those values. A field that is None is not a key
    (``KeyError``), as in ``transformers``.
    """

    def keys(self) -> list[str]:
        """Names of the fields that are not None, in field order."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple[str, object]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> tuple:
        """The values of :meth:`keys`, in order."""
        return tuple(self.values())

    def get(self, key: str, default=None):
        return getattr(self, key) if key in self.keys() else default

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __getitem__(self, key):
        """``out["name"]`` (KeyError when absent or None) or ``out[i]`` / ``out[a:b]`` over :meth:`to_tuple`."""
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]


@dataclass
class SegGptEncoderOutput(_ModelOutput):
    """Output of :class:`SegGptModel`.

    Attributes:
        last_hidden_state: ``(B', Hg, Wg, D)`` tokens after the last layer (``B'`` canvases after the
            merge: ``B``, or 1 with a shared query half).
        hidden_states: per-layer inputs plus the final output, each ``(S, Hg, Wg, D)`` (``S = 2B``
            before the merge), when requested.
        attentions: per-layer ``(S, heads, N, N)`` probabilities, when requested.
        intermediate_hidden_states: LayerNorm'd outputs of the layers in
            ``config.intermediate_hidden_state_indices``, each ``(B', Hg, Wg, D)``.
    """

    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    intermediate_hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class SegGptImageSegmentationOutput(_ModelOutput):
    """Output of :class:`SegGptForImageSegmentation`.

    Attributes:
        pred_masks: ``(B', 3, 896, 448)`` float, predicted canvases in ImageNet-normalised space;
            the bottom half is the prediction for the query image. ``B' = B`` without feature
            ensemble, ``B' = 1`` (the first pair) with it.
        loss: smooth-L1 loss over the masked patches when ``labels`` were given.
        hidden_states, attentions: as in :class:`SegGptEncoderOutput`, when requested.
    """

    pred_masks: torch.Tensor
    loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def default_bool_masked_pos(config: SegGptConfig, device: torch.device | None = None) -> torch.Tensor:
    """Inference mask ``(1, Hg*Wg)`` bool: False on the prompt half, True on the query half."""
    hg, wg = config.grid_size
    n = hg * wg
    mask = torch.zeros(1, n, dtype=torch.bool, device=device)
    mask[:, n // 2:] = True
    return mask


class SegGptPatchEmbeddings(nn.Module):
    """Non-overlapping ``p x p`` patches to tokens: ``(B, 3, H, W) -> (B, H/p, W/p, D)``."""

    def __init__(self, config: SegGptConfig) -> None:
        super().__init__()
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size,
                                    kernel_size=config.patch_size, stride=config.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Raises ValueError when the channel count differs from the config."""
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError(f"expected {self.num_channels} channels, got {tuple(pixel_values.shape)}")
        return self.projection(pixel_values).permute(0, 2, 3, 1)


class SegGptEmbeddings(nn.Module):
    """Patch, segment, position and type embeddings of the image and mask streams.

    Parameters (hub names): ``mask_token``, ``segment_token_input`` (image stream),
    ``segment_token_prompt`` (mask stream), ``type_token_semantic``, ``type_token_instance``, each
    ``(1, 1, 1, D)``; ``position_embeddings`` ``(1, (pretrain/p)^2 + 1, D)`` with a leading unused
    CLS slot, resized bicubically (``align_corners=False``) to the canvas grid.
    """

    def __init__(self, config: SegGptConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.config = config
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, d))
        self.segment_token_input = nn.Parameter(torch.zeros(1, 1, 1, d))
        self.segment_token_prompt = nn.Parameter(torch.zeros(1, 1, 1, d))
        self.type_token_semantic = nn.Parameter(torch.zeros(1, 1, 1, d))
        self.type_token_instance = nn.Parameter(torch.zeros(1, 1, 1, d))
        self.patch_embeddings = SegGptPatchEmbeddings(config)
        num_positions = (config.pretrain_image_size // config.patch_size) ** 2 + 1
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_positions, d))

    def position_grid(self) -> torch.Tensor:
        """Absolute position embeddings at the canvas grid: ``(1, Hg, Wg, D)``.

        The bicubic resize runs once per weights (:func:`~seggpt_model.layers.cached_from_params`),
        not once per frame, outside autograd; the result is read-only."""
        return cached_from_params(self, ("position_grid",), (self.position_embeddings,), self._position_grid)

    def _position_grid(self) -> torch.Tensor:
        hg, wg = self.config.grid_size
        pos = self.position_embeddings[:, 1:]
        side = int(round(pos.shape[1] ** 0.5))
        pos = pos.reshape(1, side, side, -1)
        if (side, side) == (hg, wg):
            return pos
        pos = F.interpolate(pos.permute(0, 3, 1, 2), size=(hg, wg), mode="bicubic", align_corners=False)
        return pos.permute(0, 2, 3, 1)

    def type_token(self, embedding_type: str | None) -> torch.Tensor:
        """``(1, 1, 1, D)`` type token. Raises ValueError for an unknown ``embedding_type``."""
        embedding_type = embedding_type or "instance"
        if embedding_type == "instance":
            return self.type_token_instance
        if embedding_type == "semantic":
            return self.type_token_semantic
        raise ValueError(f"embedding_type must be one of {EMBEDDING_TYPES}, got {embedding_type!r}")

    def forward(self, image_canvas: torch.Tensor, mask_canvas: torch.Tensor,
                bool_masked_pos: torch.Tensor, embedding_type: str | None = None) -> torch.Tensor:
        """Embed full canvases (general path, also used for training).

        Args:
            image_canvas: ``(B, 3, 2S, S)`` prompt images above query images.
            mask_canvas: ``(B, 3, 2S, S)`` prompt masks above query masks (or labels).
            bool_masked_pos: ``(B or 1, Hg*Wg)`` bool, True where the mask stream gets the mask token.
            embedding_type: ``"instance"`` (default) or ``"semantic"``.

        Returns:
            ``(2B, Hg, Wg, D)``: image-stream canvases, then mask-stream canvases.
        """
        image = self.patch_embeddings(image_canvas)                                # (B, Hg, Wg, D)
        mask = self.patch_embeddings(mask_canvas)                                  # (B, Hg, Wg, D)
        b, hg, wg, _ = image.shape
        w = bool_masked_pos.reshape(-1, hg, wg, 1).to(mask.dtype)                  # (B|1, Hg, Wg, 1)
        mask = mask * (1 - w) + self.mask_token.expand(b, hg, wg, -1) * w
        pos = self.position_grid()
        type_token = self.type_token(embedding_type)
        image = image + self.segment_token_input + pos + type_token
        mask = mask + self.segment_token_prompt + pos + type_token
        return torch.cat([image, mask], dim=0)

    def forward_shared_query(self, query_image: torch.Tensor, prompt_images: torch.Tensor,
                             prompt_masks: torch.Tensor, embedding_type: str | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed N prompt halves and one query half shared by all N canvases (feature ensemble).

        Equal to :meth:`forward` on N canvases with the same query image and the default
        ``bool_masked_pos``, without embedding the query half N times (the masked query half of the
        mask stream is the mask token everywhere).

        Args:
            query_image: ``(1, 3, S, S)``.
            prompt_images, prompt_masks: ``(N, 3, S, S)``.

        Returns:
            ``(2N, Hg/2, Wg, D)`` prompt halves (image stream, then mask stream) and
            ``(2, Hg/2, Wg, D)`` query halves (image stream, mask stream).
        """
        pos = self.position_grid()
        half = pos.shape[1] // 2
        pos_top, pos_bottom = pos[:, :half], pos[:, half:]
        type_token = self.type_token(embedding_type)
        n = prompt_images.shape[0]
        prompts = self.patch_embeddings(torch.cat([prompt_images, prompt_masks], dim=0))  # (2N, Hg/2, Wg, D)
        query = self.patch_embeddings(query_image)                                         # (1, Hg/2, Wg, D)
        segment = torch.cat([self.segment_token_input.expand(n, -1, -1, -1),
                             self.segment_token_prompt.expand(n, -1, -1, -1)], dim=0)      # (2N, 1, 1, D)
        prompts = prompts + segment + pos_top + type_token
        query_image_half = query + self.segment_token_input + pos_bottom + type_token
        query_mask_half = (self.mask_token.expand_as(query) + self.segment_token_prompt + pos_bottom
                           + type_token)
        return prompts, torch.cat([query_image_half, query_mask_half], dim=0)


class SegGptEncoder(nn.Module):
    """The ViT blocks, the stream merge after ``merge_index`` and the final LayerNorm (``layernorm``)
    applied to the decoder features."""

    def __init__(self, config: SegGptConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(SegGptLayer(config) for _ in range(config.num_hidden_layers))
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, prompt_tokens: torch.Tensor, query_tokens: torch.Tensor, feature_ensemble: bool,
                output_hidden_states: bool = False, output_attentions: bool = False):
        """Run all layers on split canvases.

        Args:
            prompt_tokens: ``(2B, Lp, D)`` top halves, image stream then mask stream.
            query_tokens: ``(2B, Lq, D)`` bottom halves, or ``(2, Lq, D)`` when shared (requires
                ``feature_ensemble``).
            feature_ensemble: average query-half attention outputs (Painter semantics, see module doc).

        Returns:
            ``(prompt_tokens, query_tokens, features, hidden_states, attentions)`` where ``features``
            lists the ``(prompt, query)`` token pairs of the intermediate layers (``(B, Lp, D)`` and
            ``(B or 1, Lq, D)``) before ``layernorm``, which the consumer applies to the tokens it
            uses (it acts per token).
        """
        merge_index = self.config.merge_index
        indices = set(self.config.intermediate_hidden_state_indices)
        features: list[tuple[torch.Tensor, torch.Tensor]] = []
        hidden_states: list[tuple[torch.Tensor, torch.Tensor]] = []
        attentions: list[torch.Tensor] = []
        workspace: dict = {}  # attention buffers reused by every layer of this forward
        # each layer's attention kernel, chosen once for this forward (the one rule:
        # seggpt_model.layers.select_attention_kernel)
        kernels = [layer.attention.select_kernel(prompt_tokens, query_tokens, output_attentions)
                   for layer in self.layers]
        for i, (layer, kernel) in enumerate(zip(self.layers, kernels)):
            if output_hidden_states:
                hidden_states.append((prompt_tokens, query_tokens))
            groups = None
            if feature_ensemble:
                groups = 2 if i <= merge_index else 1      # per stream up to the merge, then all
            prompt_tokens, query_tokens, probs = layer(prompt_tokens, query_tokens, groups,
                                                       output_attentions, workspace, kernel)
            if output_attentions:
                attentions.append(probs)
            if i == merge_index:
                half_p, half_q = prompt_tokens.shape[0] // 2, query_tokens.shape[0] // 2
                prompt_tokens = (prompt_tokens[:half_p] + prompt_tokens[half_p:]) * 0.5
                query_tokens = (query_tokens[:half_q] + query_tokens[half_q:]) * 0.5
            if i in indices:  # normalised by the consumer, on the tokens it needs
                features.append((prompt_tokens, query_tokens))
        if output_hidden_states:
            hidden_states.append((prompt_tokens, query_tokens))
        return prompt_tokens, query_tokens, features, hidden_states, attentions


class SegGptDecoder(nn.Module):
    """Pixel decoder: linear to ``p*p*Dd`` per token, pixel shuffle, 3x3 conv, channels-first
    LayerNorm, GELU, 1x1 conv to RGB (Painter ``forward_decoder``)."""

    def __init__(self, config: SegGptConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.decoder_hidden_size = config.decoder_hidden_size
        in_features = config.hidden_size * len(config.intermediate_hidden_state_indices)
        self.decoder_embed = nn.Linear(in_features, config.patch_size ** 2 * config.decoder_hidden_size)
        self.decoder_pred = SegGptDecoderHead(config)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, h, w, 4D)`` concatenated features -> ``(B, 3, h*p, w*p)`` normalised RGB."""
        b, h, w, _ = features.shape
        p, c = self.patch_size, self.decoder_hidden_size
        x = self.decoder_embed(features)                                   # (B, h, w, p*p*Dd)
        x = x.reshape(b, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)         # (B, Dd, h, p, w, p)
        x = x.reshape(b, c, h * p, w * p)                                  # (B, Dd, h*p, w*p)
        return self.decoder_pred(x)


class SegGptDecoderHead(nn.Module):
    """``conv`` 3x3 -> ``layernorm`` over channels -> GELU -> ``head`` 1x1 to 3 channels."""

    def __init__(self, config: SegGptConfig) -> None:
        super().__init__()
        c = config.decoder_hidden_size
        self.conv = nn.Conv2d(c, c, kernel_size=3, padding=1)
        self.layernorm = nn.LayerNorm(c, eps=config.layer_norm_eps)
        self.head = nn.Conv2d(c, 3, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Dd, H, W) -> (B, 3, H, W)``."""
        x = self.conv(x)
        x = self.layernorm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(F.gelu(x))


def _canvas(tokens_p: torch.Tensor, tokens_q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Reassemble ``(S, Lp, D)`` + ``(Sq, Lq, D)`` halves into ``(S, Hg, Wg, D)`` canvases."""
    s = tokens_p.shape[0]
    if tokens_q.shape[0] != s:  # a shared query half serves each group of s // Sq canvases
        tokens_q = tokens_q.repeat_interleave(s // tokens_q.shape[0], dim=0)
    return torch.cat([tokens_p, tokens_q], dim=1).reshape(s, grid[0], grid[1], -1)


class SegGptModel(nn.Module):
    """Bare SegGPT encoder (embeddings + encoder) returning :class:`SegGptEncoderOutput`.

    Parameter names are the hub checkpoint's without the ``model.`` prefix (the layout
    ``transformers``' ``SegGptModel.save_pretrained`` writes). :meth:`from_pretrained` also reads a
    full :class:`SegGptForImageSegmentation` checkpoint (its decoder weights are ignored).
    """

    def __init__(self, config: SegGptConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = SegGptEmbeddings(config)
        self.encoder = SegGptEncoder(config)

    @property
    def dtype(self) -> torch.dtype:
        return self.embeddings.patch_embeddings.projection.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embeddings.position_embeddings.device

    @classmethod
    def from_pretrained(cls, name_or_path=DEFAULT_CHECKPOINT, device=None, dtype=None, **kwargs):
        """Load the bare encoder strictly, from a bare checkpoint or from a full
        ``SegGptForImageSegmentation`` one (``model.`` prefix stripped, ``decoder.`` keys ignored);
        see :func:`seggpt_model.weights.load_pretrained` for arguments and errors."""
        return weights.load_pretrained(cls, name_or_path, device=device, dtype=dtype, **kwargs)

    def save_pretrained(self, save_directory):
        """Write the hub layout of a bare model (keys without ``model.``, ``architectures``
        ``["SegGptModel"]``); see :func:`seggpt_model.weights.save_pretrained`."""
        return weights.save_pretrained(self, save_directory)

    def set_attn_implementation(self, name: str) -> None:
        """Choose the attention kernel rule of every layer.

        ``"sdpa"`` (default): the fastest kernel for each forward (explicit softmax blocks for fp32
        CPU inference, the CPU flash kernel on split keys for bf16/fp16 CPU inference, one fused
        ``scaled_dot_product_attention`` call with autograd or off CPU); ``"eager"``: the explicit
        reference formula (for tests); ``"fused"``, ``"split"``, ``"chunked"``: force one kernel;
        ``"flex"``: FlexAttention with the bias in a ``score_mod`` (compiled on CUDA). The rule is
        :func:`seggpt_model.layers.select_attention_kernel`.

        Raises ValueError for another name.
        """
        if name not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, got {name!r}")
        for layer in self.encoder.layers:
            layer.attention.attn_implementation = name

    def _check_inputs(self, **tensors: torch.Tensor | None) -> None:
        side = self.config.query_image_size
        for name, t in tensors.items():
            if t is None:
                continue
            if t.ndim != 4 or t.shape[1] != self.config.num_channels or tuple(t.shape[2:]) != (side, side):
                raise ValueError(f"{name} must have shape (B, {self.config.num_channels}, {side}, {side}), "
                                 f"got {tuple(t.shape)}")

    def encode(self, pixel_values: torch.Tensor, prompt_pixel_values: torch.Tensor,
               prompt_masks: torch.Tensor, *, bool_masked_pos: torch.Tensor | None = None,
               feature_ensemble: bool = False, embedding_type: str | None = None,
               labels: torch.Tensor | None = None, output_hidden_states: bool = False,
               output_attentions: bool = False):
        """Embed and encode; returns the raw split-token results of :meth:`SegGptEncoder.forward`.

        Uses the shared-query path (each layer computes the query half once instead of N times)
        when ``feature_ensemble`` is set, no ``labels`` or custom ``bool_masked_pos`` are given and
        ``pixel_values`` holds one query image (batch 1, or N equal images).
        """
        self._check_inputs(pixel_values=pixel_values, prompt_pixel_values=prompt_pixel_values,
                           prompt_masks=prompt_masks, labels=labels)
        dtype = self.dtype
        pixel_values = pixel_values.to(dtype)
        prompt_pixel_values = prompt_pixel_values.to(dtype)
        prompt_masks = prompt_masks.to(dtype)
        n = prompt_pixel_values.shape[0]
        if prompt_masks.shape[0] != n or pixel_values.shape[0] not in (1, n):
            raise ValueError(f"batch sizes differ: pixel_values {pixel_values.shape[0]}, "
                             f"prompt_pixel_values {n}, prompt_masks {prompt_masks.shape[0]}")
        grid = self.config.grid_size
        lp = grid[0] // 2 * grid[1]
        shared = (feature_ensemble and labels is None and bool_masked_pos is None
                  and (pixel_values.shape[0] == 1 or bool((pixel_values == pixel_values[:1]).all())))
        if shared:
            prompts, queries = self.embeddings.forward_shared_query(
                pixel_values[:1], prompt_pixel_values, prompt_masks, embedding_type)
            prompt_tokens = prompts.flatten(1, 2)                                 # (2N, Lp, D)
            query_tokens = queries.flatten(1, 2)                                  # (2, Lq, D)
        else:
            if pixel_values.shape[0] != n:
                pixel_values = pixel_values.expand(n, -1, -1, -1)
            if bool_masked_pos is None:
                bool_masked_pos = default_bool_masked_pos(self.config, pixel_values.device)
            image_canvas = torch.cat([prompt_pixel_values, pixel_values], dim=2)   # (N, 3, 2S, S)
            lower = prompt_masks if labels is None else labels.to(dtype)
            mask_canvas = torch.cat([prompt_masks, lower], dim=2)                  # (N, 3, 2S, S)
            tokens = self.embeddings(image_canvas, mask_canvas, bool_masked_pos, embedding_type)
            tokens = tokens.flatten(1, 2)                                          # (2N, Hg*Wg, D)
            prompt_tokens, query_tokens = tokens[:, :lp], tokens[:, lp:]
        return self.encoder(prompt_tokens, query_tokens, feature_ensemble,
                            output_hidden_states=output_hidden_states, output_attentions=output_attentions)

    def forward(self, pixel_values: torch.Tensor, prompt_pixel_values: torch.Tensor,
                prompt_masks: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                feature_ensemble: bool | None = None, embedding_type: str | None = None,
                labels: torch.Tensor | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None):
        """Encode prompt/query canvases.

        Args:
            pixel_values: ``(B, 3, 448, 448)`` query images, ImageNet-normalised float.
            prompt_pixel_values: ``(B, 3, 448, 448)`` prompt images.
            prompt_masks: ``(B, 3, 448, 448)`` prompt masks as normalised RGB.
            bool_masked_pos: ``(B or 1, Hg*Wg)`` bool; default masks the query half.
            feature_ensemble: treat the B pairs as N prompts for one query (see module doc).
            embedding_type: ``"instance"`` (default) or ``"semantic"``.
            labels: ``(B, 3, 448, 448)`` ground-truth query masks placed under the prompt masks.

        Returns:
            :class:`SegGptEncoderOutput` (or a tuple when ``return_dict=False``).

        Raises:
            ValueError: for wrong shapes, batch sizes or embedding types.
        """
        grid = self.config.grid_size
        p, q, features, hidden, attentions = self.encode(
            pixel_values, prompt_pixel_values, prompt_masks, bool_masked_pos=bool_masked_pos,
            feature_ensemble=bool(feature_ensemble), embedding_type=embedding_type, labels=labels,
            output_hidden_states=bool(output_hidden_states), output_attentions=bool(output_attentions))
        out = SegGptEncoderOutput(
            last_hidden_state=_canvas(p, q, grid),
            hidden_states=tuple(_canvas(a, b, grid) for a, b in hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            intermediate_hidden_states=tuple(_canvas(self.encoder.layernorm(a), self.encoder.layernorm(b), grid)
                                             for a, b in features),
        )
        if return_dict is False:
            return tuple(v for v in (out.last_hidden_state, out.hidden_states, out.attentions,
                                     out.intermediate_hidden_states) if v is not None)
        return out


class SegGptForImageSegmentation(nn.Module):
    """SegGPT with its pixel decoder: in-context segmentation of query images from prompt pairs.

    ``model`` is the :class:`SegGptModel`, ``decoder`` the :class:`SegGptDecoder`; parameter names
    equal the hub checkpoint's. Weights come in through :mod:`seggpt_model.weights`
    (:meth:`from_pretrained`); a new instance has random weights (:meth:`init_weights`).
    """

    def __init__(self, config: SegGptConfig) -> None:
        super().__init__()
        self.config = config
        self.model = SegGptModel(config)
        self.decoder = SegGptDecoder(config)
        self.init_weights()

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.embeddings.position_embeddings.device

    def set_attn_implementation(self, name: str) -> None:
        """See :meth:`SegGptModel.set_attn_implementation`."""
        self.model.set_attn_implementation(name)

    @classmethod
    def from_pretrained(cls, name_or_path=DEFAULT_CHECKPOINT, device=None, dtype=None, **kwargs):
        """Load weights strictly; see :func:`seggpt_model.weights.load_pretrained`. A bare
        ``SegGptModel`` checkpoint (no decoder) raises :class:`~seggpt_model.errors.CheckpointError`."""
        return weights.load_pretrained(cls, name_or_path, device=device, dtype=dtype, **kwargs)

    def save_pretrained(self, save_directory):
        """Write the hub layout; see :func:`seggpt_model.weights.save_pretrained`."""
        return weights.save_pretrained(self, save_directory)

    @torch.no_grad()
    def init_weights(self, std: float | None = None) -> None:
        """Random initialisation as in the original training code: truncated normal (std 0.02) for
        linear, conv, position and relative position weights, normal for the special tokens, zero
        biases, unit LayerNorms."""
        std = self.config.initializer_range if std is None else std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        emb = self.model.embeddings
        nn.init.trunc_normal_(emb.position_embeddings, std=std)
        for token in (emb.mask_token, emb.segment_token_input, emb.segment_token_prompt,
                      emb.type_token_semantic, emb.type_token_instance):
            nn.init.normal_(token, std=std)
        for layer in self.model.encoder.layers:
            if layer.attention.use_rel_pos:
                nn.init.trunc_normal_(layer.attention.rel_pos_h, std=std)
                nn.init.trunc_normal_(layer.attention.rel_pos_w, std=std)

    def _decode(self, features: list[tuple[torch.Tensor, torch.Tensor]], canvases: int | None,
                query_only: bool) -> torch.Tensor:
        grid = self.config.grid_size
        wg = grid[1]
        norm = self.model.encoder.layernorm
        parts_p = [p[:canvases] for p, _ in features]                       # (B', Lp, D) each
        parts_q = [q[:canvases] for _, q in features]                       # (B'|1, Lq, D) each
        if query_only:  # the decoder needs only the last prompt patch row (see below)
            parts_p = [p[:, -wg:] for p in parts_p]
        feats_p = norm(torch.cat(parts_p, dim=-1).unflatten(-1, (len(parts_p), -1))).flatten(-2)
        feats_q = norm(torch.cat(parts_q, dim=-1).unflatten(-1, (len(parts_q), -1))).flatten(-2)
        if not query_only:
            return self.decoder(_canvas(feats_p, feats_q, grid))
        # The 3x3 conv of the first query pixel row reads the last prompt pixel row: decode the last
        # prompt patch row with the query half, then drop its p pixel rows.
        if feats_q.shape[0] != feats_p.shape[0]:
            feats_q = feats_q.expand(feats_p.shape[0], -1, -1)
        rows = torch.cat([feats_p, feats_q], dim=1)                           # (B, Wg + Lq, 4D)
        rows = rows.reshape(rows.shape[0], grid[0] // 2 + 1, wg, -1)
        return self.decoder(rows)[:, :, self.config.patch_size:]

    def forward(self, pixel_values: torch.Tensor, prompt_pixel_values: torch.Tensor,
                prompt_masks: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                feature_ensemble: bool | None = None, embedding_type: str | None = None,
                labels: torch.Tensor | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None):
        """Predict masks for the query images (same inputs as ``transformers``).

        Args:
            pixel_values: ``(B, 3, 448, 448)`` ImageNet-normalised query images (with
                ``feature_ensemble`` also ``(1, 3, 448, 448)``: one query for all prompts).
            prompt_pixel_values: ``(B, 3, 448, 448)`` normalised prompt images.
            prompt_masks: ``(B, 3, 448, 448)`` normalised RGB prompt masks (see
                :func:`seggpt_model.processing.preprocess_masks`).
            bool_masked_pos: ``(B or 1, 1568)`` bool; default masks the query half of the mask stream.
            feature_ensemble: N prompts for one query image (Painter semantics, see module doc);
                only the first pair's canvas is decoded.
            embedding_type: ``"instance"`` (default) or ``"semantic"``.
            labels: ``(B, 3, 448, 448)`` ground-truth masks; adds the smooth-L1 loss over masked
                patches (``beta = config.beta``).

        Returns:
            :class:`SegGptImageSegmentationOutput` with ``pred_masks`` ``(B', 3, 896, 448)``
            (``B' = 1`` with ensemble), or a tuple when ``return_dict=False``.

        Raises:
            ValueError: wrong shapes, batch sizes or embedding type.
        """
        ensemble = bool(feature_ensemble)
        _, _, features, hidden, attentions = self.model.encode(
            pixel_values, prompt_pixel_values, prompt_masks, bool_masked_pos=bool_masked_pos,
            feature_ensemble=ensemble, embedding_type=embedding_type, labels=labels,
            output_hidden_states=bool(output_hidden_states), output_attentions=bool(output_attentions))
        canvases = 1 if ensemble and labels is None else None
        pred_masks = self._decode(features, canvases, query_only=False)
        loss = None
        if labels is not None:
            if bool_masked_pos is None:
                bool_masked_pos = default_bool_masked_pos(self.config, pred_masks.device)
            loss = seggpt_loss(prompt_masks.to(pred_masks.dtype), pred_masks, labels.to(pred_masks.dtype),
                               bool_masked_pos, self.config)
        grid = self.config.grid_size
        out = SegGptImageSegmentationOutput(
            pred_masks=pred_masks, loss=loss,
            hidden_states=tuple(_canvas(a, b, grid) for a, b in hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None)
        if return_dict is False:
            return tuple(v for v in (out.loss, out.pred_masks, out.hidden_states, out.attentions)
                         if v is not None)
        return out

    def segment(self, pixel_values: torch.Tensor, prompt_pixel_values: torch.Tensor,
                prompt_masks: torch.Tensor, embedding_type: str | None = None) -> torch.Tensor:
        """Inference for one query image from N prompt pairs, computing nothing that is discarded.

        The N canvases share one query half (each layer processes it once), feature ensemble
        combines the prompts (a no-op for N = 1), and only the query half of the first canvas is
        decoded. Equal to ``forward(..., feature_ensemble=True).pred_masks[:, :, 448:]``.

        Args:
            pixel_values: ``(1, 3, 448, 448)`` normalised query image.
            prompt_pixel_values: ``(N, 3, 448, 448)`` normalised prompt images.
            prompt_masks: ``(N, 3, 448, 448)`` normalised RGB prompt masks.
            embedding_type: ``"instance"`` (default) or ``"semantic"``.

        Returns:
            ``(1, 3, 448, 448)`` predicted query mask, ImageNet-normalised RGB, model dtype.

        Raises:
            ValueError: wrong shapes or batch sizes.
        """
        if pixel_values.shape[0] != 1:
            raise ValueError(f"segment() takes one query image, got pixel_values {tuple(pixel_values.shape)}")
        _, _, features, _, _ = self.model.encode(pixel_values, prompt_pixel_values, prompt_masks,
                                                 feature_ensemble=True, embedding_type=embedding_type)
        return self._decode(features, 1, query_only=True)
