"""Benchmark: the time that proposing the first mask (``vos mask``, ``vos run --text/--example/
--classes``) adds to a ``vos run``.

Builds the real checkpoints' architectures with random weights (no download): CLIPSeg with
``CLIPSegConfig()`` defaults (= ``CIDAS/clipseg-rd64-refined``: CLIP ViT-B/16, reduce_dim 64,
352x352 input) and SegFormer-B5 (``nvidia/segformer-b5-finetuned-ade-640-640``: depths
[3, 6, 40, 3], hidden sizes [64, 128, 320, 512], decoder 768, 150 labels, 640x640 input), saves
each with ``save_pretrained`` and times, on the real car-shadow frame 0 (854x480):

* loading each model (``from_pretrained`` from the local folder, what every ``vos run`` pays once);
* :func:`vos.prompts.first_mask.propose_first_mask` with 1 and 3 texts, the example prompt, and 2 classes
  (median of ``--repeat`` calls after one warm-up).

Usage::

    python benchmarks/bench_first_mask.py [--device cpu|cuda] [--dtype auto] [--repeat 2]
                                          [--write-doc]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CAR = REPO.parent / "shared" / "data" / "davis_sample"


def build(root: Path) -> tuple[Path, Path]:
    """Save the full-size CLIPSeg and SegFormer-B5 (random weights) with their processors."""
    from transformers import (CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor,
                              CLIPTokenizer, SegformerConfig, SegformerForSemanticSegmentation,
                              SegformerImageProcessor, ViTImageProcessor)

    from tests._proposal_models import write_clip_vocab

    clip = root / "clipseg"
    write_clip_vocab(clip)
    CLIPSegForImageSegmentation(CLIPSegConfig()).eval().save_pretrained(clip)
    CLIPSegProcessor(image_processor=ViTImageProcessor(size={"height": 352, "width": 352},
                                                       image_mean=[0.485, 0.456, 0.406],
                                                       image_std=[0.229, 0.224, 0.225]),
                     tokenizer=CLIPTokenizer.from_pretrained(clip)).save_pretrained(clip)
    seg = root / "segformer"
    config = SegformerConfig(depths=[3, 6, 40, 3], hidden_sizes=[64, 128, 320, 512],
                             decoder_hidden_size=768, num_labels=150,
                             id2label={i: f"class{i}" for i in range(150)})
    config.id2label[12], config.id2label[20] = "person", "car"
    config.label2id = {v: k for k, v in config.id2label.items()}
    SegformerForSemanticSegmentation(config).eval().save_pretrained(seg)
    SegformerImageProcessor(size={"height": 640, "width": 640}).save_pretrained(seg)
    return clip, seg


def propose(proposer, rgb: np.ndarray, prompt) -> None:
    """One proposal; random weights may leave an object empty, which is reported after all the
    model work is done, so the time is the same."""
    from vos.errors import MaskError

    try:
        proposer.propose(rgb, prompt)
    except MaskError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--write-doc", action="store_true",
                        help="store the table as a section of docs/benchmarks.md")
    args = parser.parse_args(argv)

    import torch

    from benchmarks._common import machine, measure_times, report, today
    from vos.prompts.first_mask import FirstMaskProposer, MaskPrompt

    frames = CAR / "JPEGImages" / "480p" / "car-shadow"
    rgb = np.array(Image.open(frames / "00000.jpg").convert("RGB"))
    example = (frames / "00010.jpg", CAR / "Annotations" / "480p" / "car-shadow" / "00010.png")
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    with tempfile.TemporaryDirectory() as tmp:
        clip_dir, seg_dir = build(Path(tmp))
        proposer = FirstMaskProposer(device=args.device, dtype=args.dtype)
        rows = []
        for label, load in (("load CLIPSeg", lambda: proposer.clipseg(str(clip_dir))),
                            ("load SegFormer-B5", lambda: proposer.segformer(str(seg_dir)))):
            t0 = time.perf_counter()
            load()                                   # loads once; later calls reuse the model
            rows.append((label, [time.perf_counter() - t0]))
        cases = [
            ("CLIPSeg, 1 text", MaskPrompt(texts=("car",), threshold=0.0, text_model=str(clip_dir))),
            ("CLIPSeg, 3 texts", MaskPrompt(texts=("car", "road", "shadow"), threshold=0.0,
                                            text_model=str(clip_dir))),
            ("CLIPSeg, example", MaskPrompt(example_image=example[0], example_mask=example[1],
                                            threshold=0.0, text_model=str(clip_dir))),
            ("SegFormer-B5, 2 classes", None),
        ]
        for label, prompt in cases:
            if prompt is None:   # random weights: ask for the two classes the model outputs most
                seg = proposer.segformer(str(seg_dir))
                top = np.argsort(-np.bincount(seg.class_map(rgb).ravel()))[:2]
                prompt = MaskPrompt(classes=tuple(seg.class_names[int(c)] for c in top),
                                    class_model=str(seg_dir))
            times, _ = measure_times(lambda p=prompt: propose(proposer, rgb, p), args.repeat, sync=sync)
            rows.append((label, times))
    lines = [f"{today()}, {machine()}, device {args.device}, dtype {args.dtype}, frame 854x480, "
             f"random weights, median of {args.repeat} after 1 warm-up (loads: once)", "",
             "| step | seconds |", "|---|---|"]
    lines += [f"| {label} | {statistics.median(times):.2f} |" for label, times in rows]
    return report("first-mask", "First mask from words (vos mask)", lines, write=args.write_doc)


if __name__ == "__main__":
    sys.exit(main())
