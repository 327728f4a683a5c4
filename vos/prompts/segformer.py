"""SegFormer as a first-mask proposer: a semantic label map whose requested classes become objects.

SegFormer (Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers", NeurIPS 2021) predicts one logit map per class at 1/4 of its input size. The model
is ``transformers``' ``SegformerForSemanticSegmentation`` with its ``SegformerImageProcessor``
(default checkpoint :data:`DEFAULT_CLASS_MODEL`, the 150 ADE20K classes); the class map at the
frame size is exactly ``SegformerImageProcessor.post_process_semantic_segmentation(outputs,
target_sizes=[(H, W)])`` (logits upsampled bilinearly, ``align_corners=False``, then arg-maxed),
computed on float32 logits. Class names are those of the checkpoint's ``id2label``.

This module works on single RGB frames and knows nothing about video.
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np
import torch

from vos.errors import UserError
from vos.prompts.hf_models import ProposalModel

#: Hub id of the default SegFormer checkpoint (MiT-B5, ADE20K-150, 640x640).
DEFAULT_CLASS_MODEL = "nvidia/segformer-b5-finetuned-ade-640-640"


class Segformer(ProposalModel):
    """A loaded SegFormer (``SegformerForSemanticSegmentation`` + ``SegformerImageProcessor``); load
    it with :meth:`Segformer.load` (default :data:`DEFAULT_CLASS_MODEL`, ``--class-model``).

    Attributes:
        class_names: ``{class id: name}`` from the checkpoint's ``id2label``.
    """

    DEFAULT = DEFAULT_CLASS_MODEL
    MODEL_TYPE, MODEL_CLASS = "segformer", "SegformerForSemanticSegmentation"
    PROCESSOR_CLASS = "SegformerImageProcessor"
    OPTION, NEEDED_BY = "--class-model", "--classes"

    def __init__(self, model: Any, processor: Any, device: Any, dtype: Any, name: str) -> None:
        super().__init__(model, processor, device, dtype, name)
        self.class_names = {int(k): str(v) for k, v in model.config.id2label.items()}

    def class_ids(self, names: list[str] | tuple[str, ...]) -> list[int]:
        """The class id of each name (case-insensitive, surrounding spaces ignored), in order.

        Raises:
            UserError: a name that is not in ``id2label`` (the message lists the closest valid
                names, by :func:`difflib.get_close_matches`), or a name given twice.
        """
        by_name: dict[str, int] = {}
        for cid, label in sorted(self.class_names.items()):
            by_name.setdefault(label.strip().lower(), cid)
        ids = []
        for name in names:
            key = name.strip().lower()
            if key not in by_name:
                close = difflib.get_close_matches(key, list(by_name), n=5, cutoff=0.5)
                hint = (f"closest: {', '.join(close)}" if close
                        else f"valid names include {', '.join(list(by_name)[:10])}, ...")
                raise UserError(f"--classes: unknown class {name!r} for {self.name} ({hint})")
            if by_name[key] in ids:
                raise UserError(f"--classes: class {name!r} given twice")
            ids.append(by_name[key])
        return ids

    def class_map(self, rgb: np.ndarray) -> np.ndarray:
        """Semantic class ids at the frame size, as ``post_process_semantic_segmentation``.

        Args:
            rgb: ``(H, W, 3)`` uint8 RGB frame.

        Returns:
            ``(H, W)`` int64 class ids (keys of :attr:`class_names`).
        """
        inputs = self.processor(images=np.asarray(rgb), return_tensors="pt")
        with torch.inference_mode():
            outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device, self.dtype))
            outputs.logits = outputs.logits.float()
            seg = self.processor.post_process_semantic_segmentation(
                outputs, target_sizes=[(int(rgb.shape[0]), int(rgb.shape[1]))])[0]
        return seg.cpu().numpy().astype(np.int64)

    def labels(self, rgb: np.ndarray, class_ids: list[int]) -> np.ndarray:
        """Object label map: pixels of ``class_ids[k]`` get ``k + 1``, every other pixel 0.

        Args:
            rgb: ``(H, W, 3)`` uint8 RGB frame.
            class_ids: at most 254 distinct class ids (see :meth:`class_ids`).

        Returns:
            ``(H, W)`` uint8 label map.
        """
        classes = self.class_map(rgb)
        out = np.zeros(classes.shape, dtype=np.uint8)
        for k, cid in enumerate(class_ids):
            out[classes == cid] = k + 1
        return out
