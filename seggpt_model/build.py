"""The model builder: checkpoint -> config -> model class -> strictly loaded weights on a device.

This is ``seggpt_model.from_pretrained``, the one entry point that knows both the model classes
(:mod:`seggpt_model.model`) and the loader (:mod:`seggpt_model.weights`, which imports no model
class), in the manner of SAM 2's ``build_sam`` or timm's ``build_model_with_cfg``. The
``from_pretrained`` class methods of the model classes go to the loader directly with their own
class.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from . import weights
from .config import DEFAULT_CHECKPOINT, SegGptConfig
from .model import SegGptForImageSegmentation, SegGptModel

#: ``architectures`` names of ``config.json`` -> model class.
MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "SegGptForImageSegmentation": SegGptForImageSegmentation,
    "SegGptModel": SegGptModel,
}


def model_class_for(architecture: str | type[nn.Module] | None) -> type[nn.Module]:
    """The model class of an ``architectures`` name (a class is returned as it is).

    ``None`` gives :class:`SegGptForImageSegmentation`, the model with the decoder that
    ``segment`` and the pipelines need.

    Raises:
        ValueError: a name that is not in :data:`MODEL_CLASSES`.
    """
    if architecture is None:
        return SegGptForImageSegmentation
    if isinstance(architecture, type):
        return architecture
    if architecture not in MODEL_CLASSES:
        raise ValueError(f"unknown SegGPT architecture {architecture!r}; expected one of {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[architecture]


def from_pretrained(name_or_path: str | os.PathLike = DEFAULT_CHECKPOINT,
                    device: str | torch.device | None = None, dtype: torch.dtype | None = None, *,
                    config: SegGptConfig | None = None, revision: str | None = None,
                    cache_dir: str | None = None, local_files_only: bool = False,
                    model_class: str | type[nn.Module] | None = None) -> nn.Module:
    """Load a SegGPT model strictly, in eval mode.

    Args:
        name_or_path: hub repo id (default :data:`~seggpt_model.config.DEFAULT_CHECKPOINT`),
            hub-layout folder, ``.safetensors`` file or Painter ``.pth``.
        device: where to put the weights (default CPU). The caller chooses.
        dtype: parameter dtype (default: as stored, float32 for the public checkpoint).
        config: overrides the checkpoint's ``config.json``.
        revision, cache_dir, local_files_only: passed to ``huggingface_hub`` for repo ids.
        model_class: :class:`SegGptForImageSegmentation` (default) or :class:`SegGptModel` (bare
            encoder), as a class or its ``architectures`` name (:func:`model_class_for`).

    Returns:
        The model on ``device`` in ``dtype``, ``eval()`` mode.

    Raises:
        CheckpointError: as :func:`seggpt_model.weights.load_pretrained` (not found, offline,
            corrupt, a bare checkpoint for the full model, wrong keys or shapes).
        ValueError: an unknown ``model_class`` name.
    """
    return weights.load_pretrained(model_class_for(model_class), name_or_path, device=device, dtype=dtype,
                                   config=config, revision=revision, cache_dir=cache_dir,
                                   local_files_only=local_files_only)
