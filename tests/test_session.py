"""Prompt memory, object ids and the per-video predictor, with a fake model stage that records which
frames each SegGPT batch gets (the real model is exercised in tests/test_any_frame.py)."""

from __future__ import annotations

import numpy as np
import pytest

from vos.engine.predictor import VideoPredictor
from vos.engine.session import ObjectIds, PromptMemory

H, W = 4, 6


class FakeStage:
    """The SegGptStage methods the predictor uses. A frame's rgb is filled with its index; a prompt
    is ``("A", index, labels)`` for an annotated frame and ``("P", index, labels)`` for a predicted
    one. ``segment`` records ``(query index, [prompt names], K)`` and predicts from ``rule``."""

    def __init__(self, rule=None):
        self.calls: list[tuple[int, list[str], int]] = []
        self.rule = rule or (lambda q, prompts, k: np.where(np.arange(W) < W // 2, 1, 0)[None].repeat(H, 0))

    def prompt(self, rgb, labels):
        return ("A", int(rgb[0, 0, 0]), labels.copy())

    def query(self, rgb):
        return int(rgb[0, 0, 0])

    def segment(self, query, prompts, num_labels, per_object=False):
        self.calls.append((query, [f"{p[0]}{p[1]}" for p in prompts], num_labels))
        return np.asarray(self.rule(query, prompts, num_labels), dtype=np.uint8)

    @staticmethod
    def as_prompt(query, labels):
        return ("P", query, labels)

    @staticmethod
    def to_frame(labels, height, width):
        assert labels.shape == (height, width)
        return labels


def frame(i: int) -> np.ndarray:
    return np.full((H, W, 3), i, np.uint8)


def box(obj: int, rows=slice(0, H), cols=slice(0, W // 2)) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[rows, cols] = obj
    return m


def test_prompt_memory_pins_the_most_recent_annotations():
    memory = PromptMemory(context=4, max_pinned=2)
    memory.set_first("a")
    for i in (1, 2, 3):
        memory.push(i)
    assert memory.prompts() == ["a", 1, 2, 3]
    memory.pin("b")                      # annotated frames take places of the oldest predictions
    assert memory.prompts() == ["a", "b", 2, 3]
    memory.pin("c")                      # beyond max_pinned the oldest annotation goes
    assert memory.prompts() == ["b", "c", 2, 3] and memory.pinned == ("b", "c")
    memory.push(4)
    assert memory.prompts() == ["b", "c", 3, 4] and len(memory) == 4
    small = PromptMemory(context=2, max_pinned=4)   # never more than context prompts
    for item in ("a", "b", "c"):
        small.pin(item)
    small.push(1)
    assert small.prompts() == ["b", "c"]
    small.set_first("z")
    assert small.prompts() == ["z"]
    with pytest.raises(ValueError):
        PromptMemory(context=2, max_pinned=0)


def test_object_ids_added_later_get_the_next_labels():
    ids = ObjectIds([5, 2])
    assert ids.object_ids == (2, 5) and ids.num_objects == 2
    assert ids.add([7, 3, 5]) == (3, 7)
    assert ids.object_ids == (2, 5, 3, 7) and 3 in ids and 4 not in ids
    m = np.array([[0, 2, 5, 3, 7, 9]], np.uint8)
    assert ids.to_labels(m).tolist() == [[0, 1, 2, 3, 4, 0]]
    assert ids.to_ids(ids.to_labels(m)).tolist() == [[0, 2, 5, 3, 7, 0]]
    for bad in ([], [0], [255], [3, 3]):
        with pytest.raises(ValueError):
            ObjectIds(bad)
    with pytest.raises(ValueError):
        ids.add([255])


def test_correction_is_pinned_for_later_frames():
    """Frames in each batch with annotations on 0 and 3 (context 3, max_pinned 2)."""
    stage = FakeStage()
    p = VideoPredictor(stage, H, W, context=3, max_pinned=2)
    p.add_mask(0, box(1))
    correction = box(1, rows=slice(1, 3), cols=slice(1, 5))
    p.add_mask(3, correction)
    outs = [p.step(i, frame(i)) for i in range(7)]
    assert [c[:2] for c in stage.calls] == [
        (1, ["A0"]), (2, ["A0", "P1"]),
        # frame 3: its mask holds every tracked object, so no model call; its output is the mask
        (4, ["A0", "A3", "P2"]), (5, ["A0", "A3", "P4"]), (6, ["A0", "A3", "P5"])]
    assert np.array_equal(outs[0], box(1)) and np.array_equal(outs[3], correction)
    assert np.array_equal(p.memory.pinned[1][2], correction)      # the prompt holds the correction
    p.add_mask(8, box(1))
    p.step(7, frame(7))
    p.step(8, frame(8))                  # a third annotation pushes out the first
    p.step(9, frame(9))
    assert stage.calls[-1][:2] == (9, ["A3", "A8", "P7"])


def test_new_object_keeps_other_predictions_and_void():
    stage = FakeStage()              # predicts object label 1 on the left half
    p = VideoPredictor(stage, H, W, context=3)
    p.add_mask(0, box(4))
    new = box(9, rows=slice(0, 2), cols=slice(2, 5))            # object 9 overlaps the prediction
    void = np.zeros((H, W), bool)
    void[3, 0] = True
    p.add_mask(2, new, void)
    outs = [p.step(i, frame(i)) for i in range(4)]
    assert all(9 not in o for o in outs[:2])
    expected = np.where(np.arange(W) < W // 2, 4, 0)[None].repeat(H, 0).astype(np.uint8)
    expected[new == 9] = 9                    # the annotation wins where it has an object
    expected[void] = 255                      # void stays void
    assert np.array_equal(outs[2], expected)
    assert stage.calls[1] == (2, ["A0", "P1"], 1)     # frame 2 predicted with the old K for object 4
    prompt_labels = p.memory.pinned[1][2]
    assert prompt_labels[3, 0] == 0 and set(np.unique(prompt_labels)) == {0, 1, 2}
    assert stage.calls[2] == (3, ["A0", "A2", "P1"], 2)   # object 9 is label 2 from frame 2 on
    assert p.object_ids == (4, 9)


def test_backward_equals_a_forward_run_on_reversed_frames():
    def rule(q, prompts, k):     # depends on the query and on every prompt's labels
        s = q + sum(int(pr[2].sum()) for pr in prompts)
        out = np.zeros((H, W), np.uint8)
        out[s % H, :] = 1
        out[:, s % W] = 1
        return out

    stage = FakeStage(rule)
    p = VideoPredictor(stage, H, W, context=3)
    p.add_mask(4, box(2))
    p.add_mask(6, box(5, cols=slice(4, 6)))       # a later new object: not propagated backward
    a = p.step(4, frame(4))
    back = list(p.backward(frame(i) for i in (3, 2, 1, 0)))
    back_calls, stage.calls = stage.calls, []
    forward = [p.step(i, frame(i)) for i in (5, 6, 7)]
    assert stage.calls[0][:2] == (5, ["A4"])       # the forward memory did not see the backward pass
    assert all(5 not in b for b in back)

    ref_stage = FakeStage(rule)
    ref = VideoPredictor(ref_stage, H, W, context=3)
    ref.add_mask(0, box(2))
    ref_out = [ref.step(n, frame(i)) for n, i in enumerate((4, 3, 2, 1, 0))]
    assert np.array_equal(a, ref_out[0])
    assert all(np.array_equal(x, y) for x, y in zip(back, ref_out[1:]))
    assert [c[1:] for c in back_calls] == [c[1:] for c in ref_stage.calls]
    assert 5 in forward[1] and 5 not in forward[0]


def test_predictor_rejects_bad_order_and_masks():
    p = VideoPredictor(FakeStage(), H, W)
    with pytest.raises(ValueError, match="no object"):
        p.add_mask(1, box(0))
    with pytest.raises(ValueError, match="over 254"):
        p.add_mask(1, box(255))
    with pytest.raises(ValueError, match=r"must be \(4, 6\) uint8"):
        p.add_mask(1, np.ones((3, 3), np.uint8))
    p.add_mask(2, box(1))
    with pytest.raises(ValueError, match="two masks"):
        p.add_mask(2, box(1))
    p.add_mask(4, box(1))
    with pytest.raises(RuntimeError):
        next(p.backward([frame(1)]))
    with pytest.raises(ValueError, match="earliest annotated frame"):
        p.step(0, frame(0))
    p.step(2, frame(2))
    with pytest.raises(ValueError, match="more than the 2 frames"):
        list(p.backward(frame(i) for i in (1, 0, 0)))
    with pytest.raises(ValueError, match="annotated frame 4 was skipped"):
        p.step(5, frame(5))
    with pytest.raises(ValueError, match="already segmented"):
        p.add_mask(1, box(1))
    with pytest.raises(ValueError, match="differs"):
        p.step(3, np.zeros((5, 5, 3), np.uint8))
