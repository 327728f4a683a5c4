"""CLIPSeg as a first-mask proposer: per-pixel probabilities for texts or for an example object.

CLIPSeg (Lüddecke and Ecker, "Image Segmentation Using Text and Image Prompts", CVPR 2022) is a
frozen CLIP ViT with a small FiLM-conditioned decoder; it gives one ``352 x 352`` logit map per
prompt, where the prompt is a text or a *visual prompt* (an example image with its object
highlighted). The model is ``transformers``' ``CLIPSegForImageSegmentation`` with its
``CLIPSegProcessor`` (default checkpoint :data:`DEFAULT_TEXT_MODEL`).

Rules (also used by :mod:`vos.prompts.first_mask`):

* probabilities are ``sigmoid(logits)`` computed in float32 and resized bilinearly
  (``align_corners=False``) from ``352 x 352`` to the frame size;
* a pixel belongs to prompt ``k`` (label ``k + 1``) when ``k`` has the highest probability there
  and that probability exceeds the threshold (default :data:`DEFAULT_THRESHOLD`), else to the
  background 0 (:func:`labels_from_probabilities`).

This module works on single RGB frames and knows nothing about video.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from vos.prompts.hf_models import ProposalModel

#: Hub id of the default CLIPSeg checkpoint (ViT-B/16 CLIP, decoder reduce_dim 64, refined).
DEFAULT_TEXT_MODEL = "CIDAS/clipseg-rd64-refined"

#: Default probability a pixel must exceed to belong to a prompt.
DEFAULT_THRESHOLD = 0.4

#: Visual prompt: background pixels keep this fraction of their intensity (CLIPSeg paper,
#: Sec. 3.2 / Table 1: background intensity 10 %, background blur and cropping work best together).
BACKGROUND_INTENSITY = 0.1
#: Visual prompt: Gaussian blur radius of the background, as a fraction of the longer image side.
BACKGROUND_BLUR = 0.01
#: Visual prompt: margin around the object's bounding box in the square crop (fraction of its side).
CROP_MARGIN = 0.1


def resize_probabilities(probs, height: int, width: int):
    """Resize probability maps to the frame size: bilinear, ``align_corners=False``, float32.

    Args:
        probs: ``(K, h, w)`` tensor (any float dtype).
        height, width: frame size in pixels.

    Returns:
        ``(K, height, width)`` float32 tensor on the same device.
    """
    return F.interpolate(probs.float()[:, None], size=(int(height), int(width)), mode="bilinear",
                         align_corners=False)[:, 0]


def labels_from_probabilities(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Label map of the best prompt per pixel where its probability exceeds ``threshold``.

    Args:
        probs: ``(K, H, W)`` float probabilities in 0..1, one map per prompt, ``K <= 254``.
        threshold: a pixel is background unless its highest probability is ``> threshold``.

    Returns:
        ``(H, W)`` uint8: ``k + 1`` where prompt ``k`` has the highest probability (the first
        one on ties) and it exceeds ``threshold``, else 0.
    """
    best = probs.argmax(axis=0)
    top = np.take_along_axis(probs, best[None], axis=0)[0]
    return np.where(top > threshold, best + 1, 0).astype(np.uint8)


def visual_prompt(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The example image with its object highlighted, as CLIPSeg's visual prompt.

    Following the CLIPSeg paper's visual prompt engineering (Sec. 3.2): the background (pixels
    outside ``mask``) is blurred (Gaussian, radius :data:`BACKGROUND_BLUR` of the longer side) and
    darkened to :data:`BACKGROUND_INTENSITY` of its intensity, and the image is cropped to a square
    around the object's bounding box (margin :data:`CROP_MARGIN`, kept inside the image).

    Args:
        rgb: ``(H, W, 3)`` uint8 example image.
        mask: ``(H, W)`` bool (or 0/non-zero) object mask with at least one pixel set.

    Returns:
        ``(h, w, 3)`` uint8 image, ``h == w`` unless the image is narrower than the crop.

    Raises:
        ValueError: shapes that do not match, or an empty mask.
    """
    rgb = np.asarray(rgb)
    mask = np.asarray(mask) != 0
    if rgb.ndim != 3 or rgb.shape[2] != 3 or mask.shape != rgb.shape[:2]:
        raise ValueError(f"example image {rgb.shape} and mask {mask.shape} do not match")
    if not mask.any():
        raise ValueError("the example mask is empty")
    h, w = mask.shape
    radius = max(1.0, BACKGROUND_BLUR * max(h, w))
    blurred = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)
    dark = np.rint(blurred * BACKGROUND_INTENSITY).astype(np.uint8)
    out = np.where(mask[..., None], rgb, dark)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    side = int(np.ceil(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) * (1 + 2 * CROP_MARGIN)))
    box = []
    for lo, hi, size in ((rows[0], rows[-1], h), (cols[0], cols[-1], w)):
        n = min(side, size)
        start = int(round((lo + hi + 1) / 2 - n / 2))
        start = min(max(start, 0), size - n)
        box.append((start, start + n))
    (y0, y1), (x0, x1) = box
    return np.ascontiguousarray(out[y0:y1, x0:x1])


class ClipSeg(ProposalModel):
    """A loaded CLIPSeg (``CLIPSegForImageSegmentation`` + ``CLIPSegProcessor``: resize to 352x352,
    ImageNet normalisation, CLIP tokenizer); load it with :meth:`ClipSeg.load` (default
    :data:`DEFAULT_TEXT_MODEL`, ``--text-model``)."""

    DEFAULT = DEFAULT_TEXT_MODEL
    MODEL_TYPE, MODEL_CLASS, PROCESSOR_CLASS = "clipseg", "CLIPSegForImageSegmentation", "CLIPSegProcessor"
    OPTION, NEEDED_BY = "--text-model", "--text/--example"

    def _pixel_values(self, rgb: np.ndarray):
        """``(1, 3, 352, 352)`` model input of an ``(H, W, 3)`` uint8 image, on device and dtype."""
        pixels = self.processor.image_processor(images=np.asarray(rgb), return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, self.dtype)

    def _probabilities(self, rgb: np.ndarray, n: int, **prompt) -> np.ndarray:
        pixel_values = self._pixel_values(rgb).expand(n, -1, -1, -1)
        with torch.inference_mode():
            logits = self.model(pixel_values=pixel_values, **prompt).logits
            probs = torch.sigmoid(logits.float().reshape(n, *logits.shape[-2:]))
            probs = resize_probabilities(probs, rgb.shape[0], rgb.shape[1])
        return probs.cpu().numpy()

    def text_probabilities(self, rgb: np.ndarray, texts: list[str] | tuple[str, ...]) -> np.ndarray:
        """Per-text probabilities at the frame size.

        Args:
            rgb: ``(H, W, 3)`` uint8 RGB frame.
            texts: ``K >= 1`` non-empty prompt texts.

        Returns:
            ``(K, H, W)`` float32 probabilities in 0..1 (``sigmoid(logits)`` resized bilinearly,
            ``align_corners=False``, from 352x352).
        """
        tokens = self.processor.tokenizer(list(texts), padding=True, return_tensors="pt")
        return self._probabilities(rgb, len(texts), input_ids=tokens["input_ids"].to(self.device),
                                   attention_mask=tokens["attention_mask"].to(self.device))

    def example_probabilities(self, rgb: np.ndarray, example_rgb: np.ndarray,
                              example_mask: np.ndarray) -> np.ndarray:
        """Probabilities of the object shown by an example image and mask (CLIPSeg's visual
        prompt, :func:`visual_prompt`, given as ``conditional_pixel_values``).

        Args:
            rgb: ``(H, W, 3)`` uint8 RGB frame.
            example_rgb: ``(h, w, 3)`` uint8 example image.
            example_mask: ``(h, w)`` bool mask of the object in the example.

        Returns:
            ``(1, H, W)`` float32 probabilities in 0..1.
        """
        prompt = self._pixel_values(visual_prompt(example_rgb, example_mask))
        return self._probabilities(rgb, 1, conditional_pixel_values=prompt)
