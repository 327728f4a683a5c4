"""SegGPT ("SegGPT: Segmenting Everything In Context", Wang et al. 2023) in plain PyTorch.

Public API (imported lazily, so ``import seggpt_model`` does not import torch)::

    from seggpt_model import DEFAULT_CHECKPOINT, SegGptForImageSegmentation, SegGptModel, from_pretrained
    model = from_pretrained(DEFAULT_CHECKPOINT, device="cuda", dtype=torch.bfloat16)

The documented ``transformers`` API works with only the import line changed (``checkpoint`` is
the hub id, :data:`DEFAULT_CHECKPOINT` for the public ViT-L)::

    from seggpt_model import SegGptImageProcessor, SegGptForImageSegmentation
    processor = SegGptImageProcessor.from_pretrained(checkpoint)
    model = SegGptForImageSegmentation.from_pretrained(checkpoint)
    inputs = processor(images=image, prompt_images=prompt, prompt_masks=mask, return_tensors="pt")
    outputs = model(**inputs)
    labels = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]

Modules, each importing only those listed before it (the package is the lowest layer of
``seggpt_model`` <- ``pipelines`` <- ``vos``; see ``docs/architecture.md``): ``errors``, ``files``
and ``config`` (torch-free: typed errors, atomic writes, the config dataclass with the hub
config.json fields and :data:`DEFAULT_CHECKPOINT`), ``threads`` (CPU work on torch's threads),
``native`` (the bf16 softmax C kernel of ``csrc/``, compiled at first use and cached), ``layers``
(attention kernels with decomposed relative position and their one dispatch rule, MLP, block),
``weights`` (checkpoint I/O and key conversion against a model it is handed,
``save_pretrained``), ``loss``, ``model`` (embeddings, encoder with stream merge and feature
ensemble, decoder), ``build`` (``from_pretrained``: checkpoint -> model class -> weights ->
device/dtype), ``processing`` (resize, normalise, palettes, post-processing), ``image_processor``
(``SegGptImageProcessor``, the documented processor API on top of ``processing``).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SegGptConfig": "config",
    "SegGptModel": "model",
    "SegGptForImageSegmentation": "model",
    "SegGptEncoderOutput": "model",
    "SegGptImageSegmentationOutput": "model",
    "from_pretrained": "build",
    "save_pretrained": "weights",
    "convert_painter_state_dict": "weights",
    "DEFAULT_CHECKPOINT": "config",
    "CheckpointError": "errors",
    "one_line": "errors",
    "atomic_write": "files",
    "build_palette": "processing",
    "SegGptImageProcessor": "image_processor",
    "BatchFeature": "image_processor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
