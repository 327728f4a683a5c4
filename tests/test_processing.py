"""Pre/post-processing against transformers' SegGptImageProcessor on real images."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from seggpt_model import processing as P


@pytest.fixture(scope="module")
def processor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers import SegGptImageProcessor

        return SegGptImageProcessor()


def _as_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)[None]


def _images(shared_data):
    ex = shared_data / "prompts" / "seggpt_examples"
    car = shared_data / "davis_sample" / "JPEGImages" / "480p" / "car-shadow" / "00000.jpg"
    return [Image.open(p).convert("RGB") for p in (ex / "hmbb_1.jpg", ex / "hmbb_3.jpg", ex / "video_1.jpg", car)]


def test_build_palette_equals_reference(processor):
    for n in (1, 2, 3, 7, 8, 27, 103):
        assert P.build_palette(n).tolist() == [list(c) for c in processor.get_palette(n)]
    assert P.build_palette(1).tolist() == [[0, 0, 0], [255, 255, 255]]
    with pytest.raises(ValueError):
        P.build_palette(0)


def test_image_preprocessing_matches_reference(processor, shared_data):
    """Two-pass bicubic rounded to uint8 levels: within two uint8 levels of PIL (fixed-point weights)
    on under 1% of values, every other value equal."""
    two_levels = 2 / 255 / min(P.IMAGENET_STD) + 1e-6
    for img in _images(shared_data):
        ref = processor(images=img, return_tensors="pt")["pixel_values"]
        ours = P.preprocess_images(_as_tensor(img))
        assert ours.shape == ref.shape == (1, 3, 448, 448)
        diff = (ours - ref).abs()
        assert diff.max() <= two_levels
        assert (diff > 1e-5).float().mean() < 0.01      # almost all values are identical


def test_mask_preprocessing_matches_reference(processor, shared_data):
    ex = shared_data / "prompts" / "seggpt_examples"
    # RGB colour masks used as they are
    rgb = Image.open(ex / "hmbb_1_target.png").convert("RGB")
    ref = processor.preprocess(images=None, prompt_masks=rgb, do_convert_rgb=False, return_tensors="pt")["prompt_masks"]
    assert torch.equal(P.preprocess_masks(_as_tensor(rgb)), ref)
    # label maps through the palette
    ann = shared_data / "prompts" / "first_frame_only" / "Annotations" / "480p" / "bike" / "00000.png"
    labels = np.array(Image.open(ann))
    ref = processor.preprocess(images=None, prompt_masks=labels, num_labels=2, return_tensors="pt")["prompt_masks"]
    ours = P.preprocess_label_masks(torch.from_numpy(labels)[None], P.build_palette(2))
    assert torch.equal(ours, ref)
    assert torch.equal(P.preprocess_masks(P.labels_to_rgb(torch.from_numpy(labels)[None], P.build_palette(2))), ref)


def test_postprocessing_matches_reference(processor):
    from transformers.models.seggpt.modeling_seggpt import SegGptImageSegmentationOutput

    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 896, 448, generator=g) * 1.5
    sizes = [(480, 854), (170, 297)]
    for num_labels in (1, 2, 5):
        palette = P.build_palette(num_labels)
        ref = processor.post_process_semantic_segmentation(
            SegGptImageSegmentationOutput(pred_masks=pred), target_sizes=sizes, num_labels=num_labels)
        for i, size in enumerate(sizes):
            ours = P.postprocess_masks(pred[i:i + 1, :, 448:], palette, size)[0]
            assert ours.shape == size
            assert torch.equal(ours, ref[i].long())


def test_foreground_scores_agree_with_binary_palette():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(1, 3, 448, 448, generator=g)
    labels = P.postprocess_masks(pred, P.build_palette(1), (480, 854))
    scores = P.foreground_scores(pred, (480, 854))
    assert torch.equal(labels == 1, scores > 0.5)


def test_labels_to_rgb_rejects_unknown_labels():
    with pytest.raises(ValueError, match="labels must lie"):
        P.labels_to_rgb(torch.tensor([[[0, 3]]]), P.build_palette(2))
