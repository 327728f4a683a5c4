"""SegGPT's training loss: smooth-L1 over the masked patches (Painter ``SegGPT.forward_loss``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import SegGptConfig


def seggpt_loss(prompt_masks: torch.Tensor, pred_masks: torch.Tensor, labels: torch.Tensor,
                bool_masked_pos: torch.Tensor, config: SegGptConfig) -> torch.Tensor:
    """Mean smooth-L1 loss (``beta = config.beta``) over the pixels of masked patches.

    Args:
        prompt_masks: ``(B, 3, S, S)`` normalised prompt masks (top half of the target canvas).
        pred_masks: ``(B, 3, 2S, S)`` predicted canvases.
        labels: ``(B, 3, S, S)`` normalised ground-truth query masks (bottom half of the target).
        bool_masked_pos: ``(B or 1, (2S/p) * (S/p))`` bool, True for patches whose pixels count.
        config: gives ``patch_size`` and ``beta``.

    Returns:
        Scalar tensor: ``sum(loss * mask) / sum(mask)``.

    Source: Painter ``models_seggpt.py`` ``forward_loss`` with ``loss_func="smoothl1"``.
    """
    target = torch.cat([prompt_masks, labels], dim=2)                           # (B, 3, 2S, S)
    p = config.patch_size
    b, _, h, w = target.shape
    mask = bool_masked_pos.reshape(-1, h // p, w // p).to(pred_masks.dtype)      # (B|1, h/p, w/p)
    mask = mask.repeat_interleave(p, dim=1).repeat_interleave(p, dim=2)          # (B|1, 2S, S)
    mask = mask[:, None].expand(b, 3, h, w)
    loss = F.smooth_l1_loss(pred_masks, target, reduction="none", beta=config.beta)
    return (loss * mask).sum() / mask.sum()
