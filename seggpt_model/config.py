"""SegGPT configuration: the field names and defaults of the config.json of the public checkpoint
:data:`DEFAULT_CHECKPOINT`."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

#: Names accepted by ``set_attn_implementation`` (and ``--attn``): ``"sdpa"`` (default) picks the
#: fastest kernel for the call (see :func:`seggpt_model.layers.select_attention_kernel`),
#: ``"eager"`` the reference formula; ``"fused"``, ``"split"``, ``"chunked"`` and ``"flex"`` force
#: one kernel (``"flex"`` is chosen on CUDA by the record that ``benchmarks/gpu_check.py`` writes,
#: read by ``pipelines.kernel_record``). Torch-free, so the CLI can list them.
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "fused", "split", "chunked", "flex")

#: Hub id of the public SegGPT checkpoint used when none is given (importable without torch).
DEFAULT_CHECKPOINT = "BAAI/seggpt-vit-large"

# Keys that transformers writes into config.json but that describe no architecture: accepted silently.
_BOOKKEEPING_KEYS = frozenset({
    "architectures", "model_type", "dtype", "torch_dtype", "transformers_version", "_name_or_path",
    "output_attentions", "output_hidden_states", "return_dict", "use_return_dict", "id2label",
    "label2id", "problem_type", "chunk_size_feed_forward", "is_encoder_decoder", "tie_word_embeddings",
    "_attn_implementation_autoset", "_commit_hash", "name_or_path",
})

_SUPPORTED_ACTIVATIONS = ("gelu",)


@dataclass
class SegGptConfig:
    """Architecture of a SegGPT model (Wang et al. 2023, "SegGPT: Segmenting Everything In Context").

    Field names and defaults are those of the ``config.json`` of :data:`DEFAULT_CHECKPOINT` (ViT-L,
    896x448 canvas of a prompt image stacked above the query image, 16x16 patches), so a hub config
    loads with :meth:`from_dict` and :meth:`to_dict` writes one that ``transformers`` reads back.

    Attributes:
        hidden_size: token width D of the ViT encoder.
        num_hidden_layers: number of transformer blocks.
        num_attention_heads: attention heads; must divide ``hidden_size``.
        hidden_act: activation of the MLP and the decoder head (only ``"gelu"``, exact erf form).
        hidden_dropout_prob, drop_path_rate, initializer_range, beta: training-time settings kept for
            round trips (dropout and drop path are not used at inference; ``beta`` is the smooth-L1
            loss parameter).
        layer_norm_eps: epsilon of every LayerNorm.
        image_size: ``[height, width]`` of the canvas in pixels (two square images stacked: 2W x W).
        patch_size: patch side in pixels; divides both canvas sides.
        num_channels: input channels (3).
        qkv_bias: bias on the fused qkv projection.
        mlp_dim: MLP hidden width (default ``4 * hidden_size``).
        pretrain_image_size: side of the square grid the absolute position embeddings were trained on.
        decoder_hidden_size: channels of the pixel decoder.
        use_relative_position_embeddings: decomposed relative position bias in every attention.
        merge_index: layer after which the image stream and the mask stream are averaged into one.
        intermediate_hidden_state_indices: layers whose LayerNorm'd outputs feed the decoder.

    Raises:
        ValueError: from :meth:`validate` (called on construction) for impossible values.
    """

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-6
    image_size: list[int] = field(default_factory=lambda: [896, 448])
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    mlp_dim: int | None = None
    drop_path_rate: float = 0.1
    pretrain_image_size: int = 224
    decoder_hidden_size: int = 64
    use_relative_position_embeddings: bool = True
    merge_index: int = 2
    intermediate_hidden_state_indices: list[int] = field(default_factory=lambda: [5, 11, 17, 23])
    beta: float = 0.01

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int):
            self.image_size = [self.image_size, self.image_size]
        self.image_size = [int(s) for s in self.image_size]
        if isinstance(self.patch_size, (list, tuple)):
            if len(set(self.patch_size)) != 1:
                raise ValueError(f"patch_size must be square, got {self.patch_size}")
            self.patch_size = int(self.patch_size[0])
        if isinstance(self.pretrain_image_size, (list, tuple)):
            if len(set(self.pretrain_image_size)) != 1:
                raise ValueError(f"pretrain_image_size must be square, got {self.pretrain_image_size}")
            self.pretrain_image_size = int(self.pretrain_image_size[0])
        self.intermediate_hidden_state_indices = [int(i) for i in self.intermediate_hidden_state_indices]
        if self.mlp_dim is None:
            self.mlp_dim = 4 * self.hidden_size
        self.validate()

    # ------------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        """Channels per attention head."""
        return self.hidden_size // self.num_attention_heads

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid of the canvas ``(H/p, W/p)``: (56, 28) for ViT-L."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def query_image_size(self) -> int:
        """Side in pixels of one square image of the canvas (448 for ViT-L)."""
        return self.image_size[1]

    def validate(self) -> None:
        """Check that the values describe a buildable SegGPT.

        Raises:
            ValueError: naming the field, for non-positive sizes, a hidden size not divisible by the
                head count, a canvas that is not two stacked squares or not divisible by the patch
                size, out-of-range or unordered layer indices, a merge after the first decoder
                feature, or an unsupported activation.
        """
        positive = ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size",
                    "num_channels", "mlp_dim", "pretrain_image_size", "decoder_hidden_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_attention_heads ({self.num_attention_heads})")
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ValueError(f"image_size must be [height, width] with positive sides, got {self.image_size}")
        height, width = self.image_size
        if height != 2 * width:
            raise ValueError(f"image_size must be two square images stacked (height = 2 * width), "
                             f"got {self.image_size}")
        if width % self.patch_size or (width // self.patch_size) < 1:
            raise ValueError(f"image_size {self.image_size} must be divisible by patch_size {self.patch_size}")
        if self.pretrain_image_size % self.patch_size:
            raise ValueError(f"pretrain_image_size ({self.pretrain_image_size}) must be divisible by "
                             f"patch_size ({self.patch_size})")
        if self.hidden_act not in _SUPPORTED_ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported (use one of {_SUPPORTED_ACTIVATIONS})")
        indices = self.intermediate_hidden_state_indices
        if not indices:
            raise ValueError("intermediate_hidden_state_indices must not be empty")
        if any(i < 0 or i >= self.num_hidden_layers for i in indices):
            raise ValueError(f"intermediate_hidden_state_indices {indices} must lie in "
                             f"[0, num_hidden_layers={self.num_hidden_layers})")
        if sorted(set(indices)) != list(indices):
            raise ValueError(f"intermediate_hidden_state_indices {indices} must be strictly increasing")
        if not 0 <= self.merge_index < self.num_hidden_layers:
            raise ValueError(f"merge_index ({self.merge_index}) must lie in [0, num_hidden_layers)")
        if self.merge_index > min(indices):
            raise ValueError(f"merge_index ({self.merge_index}) must not exceed the first intermediate "
                             f"index ({min(indices)}): the decoder reads merged features")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps}")
        for name in ("hidden_dropout_prob", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> SegGptConfig:
        """Build a config from a ``config.json`` dictionary.

        Keys that transformers writes for bookkeeping (``architectures``, ``model_type``, ``dtype``...)
        are ignored silently; any other unknown key is ignored with a :class:`UserWarning` naming it.

        Raises:
            ValueError: for a ``model_type`` other than ``"seggpt"`` or impossible values.
        """
        model_type = data.get("model_type", "seggpt")
        if model_type != "seggpt":
            raise ValueError(f"{source}: model_type is {model_type!r}, expected 'seggpt'")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in data if k not in names and k not in _BOOKKEEPING_KEYS)
        if unknown:
            warnings.warn(f"{source}: ignoring unknown config keys {unknown}", UserWarning, stacklevel=2)
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` dictionary (hub layout, readable by ``transformers.SegGptConfig``)."""
        data = dataclasses.asdict(self)
        data["model_type"] = "seggpt"
        data["architectures"] = ["SegGptForImageSegmentation"]
        return data
