"""Tiny random-weight CLIPSeg and SegFormer checkpoints for the first-mask tests (built, never
downloaded), saved with ``save_pretrained`` so that each model's own ``from_pretrained`` reads them.

Weights are redrawn with :func:`tests._reference.randomize_` (std ``1/sqrt(fan_in)``, LayerNorm
gains around 1), so the probability and logit maps vary over the frame by several units instead of
being almost constant as with the default std-0.02 initialisation.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from tests._reference import randomize_

#: A few ADE20K class names (the ``id2label`` of the tiny SegFormer), ids as in ADE20K-150.
TINY_ADE_LABELS = {0: "wall", 1: "building", 2: "sky", 3: "floor", 4: "tree", 5: "ceiling",
                   6: "road", 7: "bed", 8: "windowpane", 9: "grass", 10: "cabinet", 11: "sidewalk",
                   12: "person", 13: "earth", 14: "door", 15: "table", 16: "mountain", 17: "plant",
                   18: "curtain", 19: "chair", 20: "car"}


def write_clip_vocab(folder: Path) -> None:
    """A small CLIP BPE vocabulary (``vocab.json`` + ``merges.txt``): every lower-case letter as a
    word piece and as a word end (``x</w>``), a few merged words, and the special tokens."""
    letters = list(string.ascii_lowercase)
    tokens = ["<|startoftext|>", "<|endoftext|>"] + letters + [c + "</w>" for c in letters]
    merges = ["c a", "ca r</w>", "r o", "ro a", "roa d</w>", "s h", "sh a", "sha d", "shad o",
              "shado w</w>", "t r", "tr e", "tre e</w>"]
    tokens += ["ca", "car</w>", "ro", "roa", "road</w>", "sh", "sha", "shad", "shado", "shadow</w>",
               "tr", "tre", "tree</w>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def make_clipseg(folder: Path, seed: int = 0) -> Path:
    """Save a tiny CLIPSeg (2-layer ViT-/16 and text encoder, reduce_dim 16) and its processor
    (ViT image processor at 352x352 with CLIPSeg's ImageNet mean/std, CLIP tokenizer) to ``folder``."""
    import torch
    from transformers import (CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor,
                              CLIPTokenizer, ViTImageProcessor)

    folder = Path(folder)
    write_clip_vocab(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                  image_size=224, patch_size=16)
    config = CLIPSegConfig(text_config=text, vision_config=vision, projection_dim=32,
                           extract_layers=[0, 1], reduce_dim=16, decoder_num_attention_heads=2,
                           decoder_intermediate_size=32)
    model = CLIPSegForImageSegmentation(config).eval()
    randomize_(model, seed)
    with torch.no_grad():
        # randomize_ scales the transposed convolution by its 256 taps rather than its 16 input
        # channels, and FiLM is the only path from the text: scale both so that logits spread over
        # a few units and the texts' maps differ visibly.
        model.decoder.transposed_convolution.weight.mul_(8.0)
        model.decoder.film_mul.weight.mul_(3.0)
        model.decoder.film_add.weight.mul_(3.0)
    model.save_pretrained(folder)
    image_processor = ViTImageProcessor(do_resize=True, size={"height": 352, "width": 352},
                                        resample=2, image_mean=[0.485, 0.456, 0.406],
                                        image_std=[0.229, 0.224, 0.225])
    CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def make_segformer(folder: Path, seed: int = 0) -> Path:
    """Save a tiny SegFormer (4 stages of one block, 21 ADE20K labels) and its image processor
    (128x128) to ``folder``."""
    from transformers import (SegformerConfig, SegformerForSemanticSegmentation,
                              SegformerImageProcessor)

    folder = Path(folder)
    config = SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32],
                             num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=16,
                             id2label=dict(TINY_ADE_LABELS),
                             label2id={v: k for k, v in TINY_ADE_LABELS.items()})
    model = SegformerForSemanticSegmentation(config).eval()
    randomize_(model, seed)
    model.save_pretrained(folder)
    SegformerImageProcessor(size={"height": 128, "width": 128}).save_pretrained(folder)
    return folder
