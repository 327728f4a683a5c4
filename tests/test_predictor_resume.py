"""``VideoPredictor.resume`` (what ``vos app`` re-propagates a correction with): a fresh predictor
put in the state an earlier run had before frame K steps on exactly as an uninterrupted run with the
same masks. Real DAVIS frames and a tiny random SegGPT (query size 224), so the prompts rebuilt from
saved labels go through the real preprocessing and model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vos.engine.predictor import VideoPredictor

H, W = 120, 214


@pytest.fixture(scope="module")
def stage(small_hf_dir):
    from pipelines.model_stage import load_stage

    return load_stage(str(small_hf_dir), "cpu", "float32")


@pytest.fixture(scope="module")
def car(shared_data):
    base = shared_data / "davis_sample"
    frames = sorted((base / "JPEGImages" / "480p" / "car-shadow").glob("*.jpg"))[:7]
    rgbs = [np.array(Image.open(f).convert("RGB").resize((W, H))) for f in frames]   # small: cheap
    ann = base / "Annotations" / "480p" / "car-shadow"
    masks = {k: np.array(Image.open(ann / f"{k:05d}.png").resize((W, H), Image.NEAREST)) for k in (1, 4)}
    return rgbs, masks


def _run(stage, rgbs, masks, start, context, max_pinned=4):
    """Forward from the earliest mask to the end; every output and prompt label map by frame."""
    p = VideoPredictor(stage, H, W, context=context, max_pinned=max_pinned)
    for k, m in masks.items():
        p.add_mask(k, m)
    outs, labels = {}, {}
    for i in range(start, len(rgbs)):
        outs[i] = p.step(i, rgbs[i])
        labels[i] = p.last_prompt_labels
    return p, outs, labels


@pytest.mark.slow
def test_resume_at_a_correction_equals_an_uninterrupted_run(stage, car):
    rgbs, masks = car
    # the earlier run knew only the mask of frame 1; the correction on frame 4 comes later
    _, first_outs, first_labels = _run(stage, rgbs, {1: masks[1]}, 1, context=3)
    assert first_labels[1] is None and first_labels[2].shape == (224, 224)
    ref_p, ref_outs, _ = _run(stage, rgbs, masks, 1, context=3)     # both masks from the start

    def load(i):
        return rgbs[i], (first_outs[i] if i == 1 else first_labels[i])

    loaded = []
    p = VideoPredictor(stage, H, W, context=3)
    for k, m in masks.items():
        p.add_mask(k, m)
    p.resume(4, lambda i: loaded.append(i) or load(i))
    assert sorted(loaded) == [1, 2, 3]                 # A pinned, the two latest predictions
    resumed = {i: p.step(i, rgbs[i]) for i in range(4, len(rgbs))}
    assert np.array_equal(resumed[4], masks[4]) and not np.array_equal(first_outs[4], masks[4])
    for i in resumed:
        assert np.array_equal(resumed[i], ref_outs[i]), f"frame {i}"
    assert any(not np.array_equal(resumed[i], first_outs[i]) for i in range(5, len(rgbs)))
    # backward from A after a resume is the backward of the uninterrupted run
    back = list(p.backward([rgbs[0]]))
    ref_back = list(ref_p.backward([rgbs[0]]))
    assert len(back) == 1 and np.array_equal(back[0], ref_back[0])


def test_resume_after_two_annotations_keeps_the_pinned_ones(stage, car):
    """Resume past both masks (max_pinned 1: only the latest annotation and A are rebuilt)."""
    rgbs, masks = car
    _, outs, labels = _run(stage, rgbs, masks, 1, context=2, max_pinned=1)
    p = VideoPredictor(stage, H, W, context=2, max_pinned=1)
    for k, m in masks.items():
        p.add_mask(k, m)
    loaded = []
    p.resume(6, lambda i: loaded.append(i) or (rgbs[i], outs[i] if i in masks else labels[i]))
    assert sorted(loaded) == [1, 4, 5]
    assert set(p.object_ids) == set(np.unique(masks[1]).tolist()) - {0}
    for i in (6,):
        assert np.array_equal(p.step(i, rgbs[i]), outs[i]), f"frame {i}"


def test_resume_rejects_bad_use(stage, car):
    rgbs, masks = car
    p = VideoPredictor(stage, H, W, context=2)
    with pytest.raises(ValueError, match="annotated frame before frame 3"):
        p.resume(3, lambda i: None)
    p.add_mask(2, masks[1])
    with pytest.raises(ValueError, match="annotated frame before frame 2"):
        p.resume(2, lambda i: None)
    p.step(2, rgbs[2])
    with pytest.raises(RuntimeError, match="has not stepped"):
        p.resume(4, lambda i: None)
