"""SegGPT ("SegGPT: Segmenting Everything In Context", Wang et al. 2023) in plain PyTorch.

Public API (imported lazily, so ``import seggpt_model`` does not import torch)::

    from seggpt_model import SegGptConfig, SegGptForImageSegmentation, SegGptModel, from_pretrained
    model = from_pretrained("BAAI/seggpt-vit-large", device="cuda", dtype=torch.bfloat16)

Modules: ``config`` (dataclass with the hub config.json fields), ``layers`` (attention with
decomposed relative position, MLP, block), ``model`` (embeddings, encoder with stream merge and
feature ensemble, decoder), ``weights`` (the one loader and ``save_pretrained``), ``processing``
(resize, normalise, palettes, post-processing), ``loss``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SegGptConfig": "config",
    "SegGptModel": "model",
    "SegGptForImageSegmentation": "model",
    "SegGptEncoderOutput": "model",
    "SegGptImageSegmentationOutput": "model",
    "from_pretrained": "weights",
    "save_pretrained": "weights",
    "convert_painter_state_dict": "weights",
    "DEFAULT_CHECKPOINT": "weights",
    "CheckpointError": "errors",
    "build_palette": "processing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
