"""SegGPT pre- and post-processing in torch, batched, on whatever device the inputs are on.

Conventions: images are ``(B, 3, H, W)`` uint8 RGB (or float in [0, 255]); label maps are
``(B, H, W)`` integer class/object ids; model inputs and outputs are ``(B, 3, 448, 448)`` float in
ImageNet-normalised space ``(x / 255 - mean) / std``.

Equivalence with ``transformers``' ``SegGptImageProcessor`` (PIL backend):

* images: bicubic resize with antialiasing (PIL's filter, a = -0.5), done like PIL in two separable
  passes (width, then height) each rounded to uint8, then rescaled and normalised. PIL computes
  with fixed-point filter weights, so 0.01-1% of values differ, by one uint8 level (rarely two):
  at most ``2 / 255 / 0.224 ~= 0.035`` in normalised units; all other values are equal.
* masks: nearest resize with pixel-centre sampling (PIL ``NEAREST`` = torch ``nearest-exact``):
  identical.
* post-processing: nearest resize (torch ``nearest``, as the reference) and nearest palette
  colour: identical label maps.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_palette(num_labels: int) -> torch.Tensor:
    """SegGPT's label palette: ``(num_labels + 1, 3)`` uint8 RGB, row 0 = background black.

    Label ``k >= 1`` (``location = k - 1``) gets, with ``base = floor(num_labels ** (1/3)) + 1`` and
    ``margin = 256 // base``::

        R = 255 - (location // base**2) * margin
        G = 255 - ((location % base**2) // base) * margin
        B = 255 - (location % base) * margin

    i.e. the labels walk a ``base^3`` lattice of the RGB cube from white downwards, so colours are at
    least ``margin`` apart per channel. One label gives white on black, as in SegGPT's examples.

    Source: Painter ``data/coco_semseg/gen_color_coco_panoptic_segm.py`` (as used by
    ``transformers``' ``SegGptImageProcessor.get_palette``).

    Raises:
        ValueError: ``num_labels < 1``.
    """
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    base = int(num_labels ** (1 / 3)) + 1
    margin = 256 // base
    location = torch.arange(num_labels)
    r = 255 - (location // base ** 2) * margin
    g = 255 - ((location % base ** 2) // base) * margin
    b = 255 - (location % base) * margin
    colours = torch.stack([r, g, b], dim=1)
    return torch.cat([torch.zeros(1, 3, dtype=torch.long), colours]).to(torch.uint8)


@functools.lru_cache(maxsize=16)
def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as ``(1, 3, 1, 1)`` float32 on ``device``, made once per device
    (a ``torch.tensor(..., device=cuda)`` is a host-to-device copy per call). Read-only."""
    with torch.inference_mode(False), torch.no_grad():
        return (torch.tensor(IMAGENET_MEAN, device=device, dtype=torch.float32).view(1, 3, 1, 1),
                torch.tensor(IMAGENET_STD, device=device, dtype=torch.float32).view(1, 3, 1, 1))


def _normalize(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(B, 3, H, W)`` in [0, 255] -> ImageNet-normalised ``dtype``."""
    mean, std = _imagenet_stats(x.device)
    return ((x.float() / 255.0 - mean) / std).to(dtype)


def preprocess_images(images: torch.Tensor, size: int = 448, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Resize and normalise RGB images for SegGPT.

    Args:
        images: ``(B, 3, H, W)`` uint8 (or float in [0, 255]) RGB.
        size: output side (448 for the public model).
        dtype: output dtype.

    Returns:
        ``(B, 3, size, size)`` ImageNet-normalised ``dtype``. Bicubic with antialiasing, two passes
        rounded to uint8 levels (PIL ``BICUBIC`` semantics; see module doc for the tolerance).

    Raises:
        ValueError: not a ``(B, 3, H, W)`` tensor.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    x = images.float()
    height, width = x.shape[-2:]
    # PIL resamples uint8 images in two separable passes (width, then height) and rounds to uint8
    # after each; doing the same keeps us within one level of it on ~0.1% of pixels.
    if width != size:
        x = F.interpolate(x, size=(height, size), mode="bicubic", align_corners=False, antialias=True)
        x = x.round_().clamp_(0, 255)
    if height != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        x = x.round_().clamp_(0, 255)
    return _normalize(x, dtype)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest resize of ``(B, H, W)`` label maps with pixel-centre sampling (PIL ``NEAREST``)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    dtype = labels.dtype
    x = labels[:, None].to(torch.float32)  # ids < 2^24 are exact in float32
    return F.interpolate(x, size=tuple(size), mode="nearest-exact")[:, 0].to(dtype)


def labels_to_rgb(labels: torch.Tensor, palette: torch.Tensor, check_range: bool = True) -> torch.Tensor:
    """Paint label maps with a palette.

    Args:
        labels: ``(B, H, W)`` integer ids in ``[0, len(palette))``.
        palette: ``(K, 3)`` uint8 RGB, e.g. :func:`build_palette`.
        check_range: check the ids (reading their minimum and maximum, a host sync when the labels
            are on a GPU). Callers that know the range already (``pipelines.model_stage`` checks
            the host label maps before they go to the device) pass False and skip the sync; an id
            outside the palette is then an indexing error of the device.

    Returns:
        ``(B, 3, H, W)`` uint8 RGB.

    Raises:
        ValueError: a label outside the palette (with ``check_range``).
    """
    labels = labels.long()
    if check_range and labels.numel() and (int(labels.max()) >= palette.shape[0] or int(labels.min()) < 0):
        raise ValueError(f"labels must lie in [0, {palette.shape[0]}), got [{int(labels.min())}, "
                         f"{int(labels.max())}]")
    return palette.to(labels.device)[labels].permute(0, 3, 1, 2).contiguous()


def preprocess_masks(masks: torch.Tensor, size: int = 448, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Prompt masks for SegGPT: RGB masks used as they are, nearest-resized and normalised.

    Args:
        masks: ``(B, 3, H, W)`` uint8 RGB masks (e.g. from :func:`labels_to_rgb`, or SegGPT-style
            colour masks).
        size: output side.
        dtype: output dtype.

    Returns:
        ``(B, 3, size, size)`` ImageNet-normalised ``dtype``.
    """
    if masks.ndim != 4 or masks.shape[1] != 3:
        raise ValueError(f"masks must be (B, 3, H, W), got {tuple(masks.shape)}")
    x = masks
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="nearest-exact")
    return _normalize(x, dtype)


def preprocess_label_masks(labels: torch.Tensor, palette: torch.Tensor, size: int = 448,
                           dtype: torch.dtype = torch.float32, check_range: bool = True) -> torch.Tensor:
    """Label maps to normalised RGB prompt masks: nearest resize, then palette colours.

    Equal to ``preprocess_masks(labels_to_rgb(labels, palette))`` but resizes the one-channel map.

    Args:
        labels: ``(B, H, W)`` integer ids.
        palette: ``(K, 3)`` uint8.
        check_range: as in :func:`labels_to_rgb` (False: no host sync).

    Returns:
        ``(B, 3, size, size)`` ImageNet-normalised ``dtype``.

    Raises:
        ValueError: a label outside the palette (with ``check_range``).
    """
    return _normalize(labels_to_rgb(resize_labels(labels, (size, size)), palette, check_range), dtype)


def denormalize_masks(pred_masks: torch.Tensor) -> torch.Tensor:
    """``(B, 3, h, w)`` normalised predictions -> float32 RGB in [0, 255] (clipped)."""
    mean, std = _imagenet_stats(pred_masks.device)
    return ((pred_masks.float() * std + mean) * 255).clamp_(0, 255)


def palette_distances(rgb: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Squared RGB distance of every pixel to every palette colour.

    Args:
        rgb: ``(B, 3, h, w)`` float RGB in [0, 255] (from :func:`denormalize_masks`).
        palette: ``(K, 3)`` uint8.

    Returns:
        ``(B, K, h, w)`` float32.
    """
    pal = palette.to(device=rgb.device, dtype=torch.float32)                     # (K, 3)
    diff = rgb[:, None] - pal[None, :, :, None, None]                            # (B, K, 3, h, w)
    return diff.pow_(2).sum(dim=2)


def postprocess_masks(pred_masks: torch.Tensor, palette: torch.Tensor,
                      target_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Predicted query masks to label maps by nearest palette colour.

    Args:
        pred_masks: ``(B, 3, h, w)`` normalised predictions of the query images (the bottom half
            of ``pred_masks`` canvases, or the output of ``SegGptForImageSegmentation.segment``).
        palette: ``(K, 3)`` uint8 colours of labels ``0..K-1``.
        target_size: ``(H, W)`` output size; nearest resize as in ``transformers``'
            ``post_process_semantic_segmentation`` (torch ``nearest``); None keeps ``(h, w)``.

    Returns:
        ``(B, H, W)`` int64 labels in ``[0, K)``. Identical to the reference processor's maps.
    """
    labels = palette_distances(denormalize_masks(pred_masks), palette).argmin(dim=1)   # (B, h, w)
    if target_size is not None and tuple(target_size) != tuple(labels.shape[-2:]):
        # nearest picks source pixels, so argmin-then-resize equals resize-then-argmin
        labels = F.interpolate(labels[:, None].float(), size=tuple(target_size), mode="nearest")[:, 0].long()
    return labels


def foreground_scores(pred_masks: torch.Tensor, target_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Foreground score of binary (white-on-black) predictions: mean RGB intensity in [0, 1].

    A pixel is nearer to white than to black exactly when its score exceeds 0.5, so
    ``score > 0.5`` is the binary decision of :func:`postprocess_masks` with a black/white palette
    (and of Painter's video inference, ``mean > 128``).

    Args:
        pred_masks: ``(B, 3, h, w)`` normalised predictions.
        target_size: ``(H, W)``; nearest resize as in :func:`postprocess_masks`.

    Returns:
        ``(B, H, W)`` float32 in [0, 1].
    """
    scores = denormalize_masks(pred_masks).mean(dim=1) / 255.0                   # (B, h, w)
    if target_size is not None and tuple(target_size) != tuple(scores.shape[-2:]):
        scores = F.interpolate(scores[:, None], size=tuple(target_size), mode="nearest")[:, 0]
    return scores
