"""``vos image`` end to end on SegGPT's real examples with a tiny random checkpoint, against
``transformers`` (same weights), and its bad inputs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests._reference import painter_ensemble_reference
from vos.cli import main as vos_main
from vos.labels import FirstMask, davis_palette, read_first_mask
from vos.engine.images import _prompt_labels


def _image(*argv) -> int:
    return vos_main(["image", *map(str, argv)])


@pytest.fixture(scope="module")
def examples(shared_data) -> Path:
    return shared_data / "prompts" / "seggpt_examples"


@pytest.fixture(scope="module")
def reference(tiny_hf_dir):
    """transformers' processor + model: binary prompt labels painted white, Painter ensemble for
    several prompts, nearest-colour decoding at the query's size."""
    from transformers import SegGptForImageSegmentation as HfModel
    from transformers.models.seggpt.modeling_seggpt import SegGptImageSegmentationOutput

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers import SegGptImageProcessor as RefProcessor

        processor = RefProcessor()
    model = HfModel.from_pretrained(tiny_hf_dir).eval()

    @torch.no_grad()
    def predict(query: Path, pairs: list[tuple[Path, Path]]) -> np.ndarray:
        image = Image.open(query).convert("RGB")
        prompts = [Image.open(p).convert("RGB") for p, _ in pairs]
        masks = [read_first_mask(m).labels for _, m in pairs]          # SegGPT targets: > 127 is object
        inputs = processor.preprocess([image] * len(pairs), prompt_images=prompts, prompt_masks=masks,
                                      num_labels=1, return_tensors="pt")
        if len(pairs) == 1:
            pred = model(**inputs).pred_masks
        else:
            pred = painter_ensemble_reference(model, inputs["pixel_values"], inputs["prompt_pixel_values"],
                                              inputs["prompt_masks"])[:1]
        out = processor.post_process_semantic_segmentation(SegGptImageSegmentationOutput(pred_masks=pred),
                                                           target_sizes=[image.size[::-1]], num_labels=1)
        return out[0].numpy()

    return predict


def _check_label_png(path: Path, size: tuple[int, int], ids: set[int]) -> np.ndarray:
    im = Image.open(path)
    assert im.mode == "P" and im.size == size
    assert bytes(im.getpalette()[:768]) == davis_palette().tobytes()
    labels = np.array(im)
    assert set(np.unique(labels).tolist()) <= ids | {0}
    return labels


@pytest.mark.parametrize("name", ["hmbb", "video"])
def test_one_shot_matches_transformers(tmp_path, tiny_hf_dir, examples, reference, name):
    query, prompt, mask = (examples / f"{name}_2.jpg", examples / f"{name}_1.jpg",
                           examples / f"{name}_1_target.png")
    rc = _image(query, "--prompt-image", prompt, "--prompt-mask", mask, "--checkpoint", tiny_hf_dir,
                "--output", tmp_path, "--overlay", "--quiet")
    assert rc == 0
    size = Image.open(query).size
    labels = _check_label_png(tmp_path / f"{name}_2.png", size, {1})
    ref = reference(query, [(prompt, mask)])
    assert len(np.unique(ref)) == 2                   # the random model predicts both labels
    assert (labels == ref).mean() > 0.999             # preprocessing within 2 uint8 levels of PIL
    overlay = Image.open(tmp_path / f"{name}_2_overlay.png")
    assert overlay.mode == "RGB" and overlay.size == size
    rgb = np.array(Image.open(query).convert("RGB"))
    assert np.array_equal(np.array(overlay)[labels == 0], rgb[labels == 0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}_2.png", f"{name}_2_overlay.png"]


def test_three_shot_matches_painter_ensemble(tmp_path, tiny_hf_dir, examples, reference, capsys):
    """Queries hmbb_3 (a palette PNG named .jpg) and video_3 from three prompt pairs."""
    names = ["hmbb_1", "hmbb_2", "video_1"]
    pairs = [(examples / f"{n}.jpg", examples / f"{n}_target.png") for n in names]
    queries = [examples / "hmbb_3.jpg", examples / "video_3.jpg"]
    rc = _image(*queries, "--prompt-image", *(p for p, _ in pairs), "--prompt-mask", *(m for _, m in pairs),
                "--checkpoint", tiny_hf_dir, "--output", tmp_path)
    assert rc == 0
    assert "2 image(s), 3-shot, labels [1]" in capsys.readouterr().out
    outputs = [_check_label_png(tmp_path / f"{q.stem}.png", Image.open(q).size, {1}) for q in queries]
    assert all(len(np.unique(labels)) == 2 for labels in outputs)
    ref = reference(queries[0], pairs)          # one reference (3 canvases) keeps the test short
    assert len(np.unique(ref)) == 2 and (outputs[0] == ref).mean() > 0.999
    assert not list(tmp_path.glob("*_overlay.png"))


def test_semantic_labels_with_num_labels(tmp_path, tiny_hf_dir, shared_data):
    """A two-object palette annotation as class ids 0..2 (``--num-labels``), options from --config."""
    seq = shared_data / "prompts" / "first_frame_only"
    frames, masks = seq / "JPEGImages" / "480p" / "bike", seq / "Annotations" / "480p" / "bike"
    config = tmp_path / "opts.json"
    config.write_text(json.dumps({"num-labels": 2, "checkpoint": str(tiny_hf_dir), "quiet": True,
                                  "per_object": False}))
    out = tmp_path / "out"
    rc = _image(frames / "00001.jpg", "--prompt-image", frames / "00000.jpg", "--prompt-mask",
                masks / "00000.png", "--config", config, "--output", out)
    assert rc == 0
    _check_label_png(out / "00001.png", (854, 480), {1, 2})
    # class ids above --num-labels are an error naming the mask
    rc = _image(frames / "00001.jpg", "--prompt-image", frames / "00000.jpg", "--prompt-mask",
                masks / "00000.png", "--num-labels", "1", "--checkpoint", tiny_hf_dir, "--output", out)
    assert rc == 2


def test_objects_are_numbered_over_all_prompts():
    """Colour masks by colour (one colour, one object in every prompt), other masks by id."""
    red, teal = (200, 10, 10), (0, 128, 128)            # teal is DAVIS entry 6, red is not DAVIS

    def colour_mask(ids, colours):
        return FirstMask(labels=np.array(ids, dtype=np.uint8), object_ids=tuple(sorted(set(sum(ids, [])) - {0})),
                         void=None, kind="colour", colours=colours)

    a = colour_mask([[0, 1, 2]], {1: red, 2: teal})       # first appearance: red 1, teal -> 6
    b = colour_mask([[2, 0, 1]], {1: teal, 2: red})       # same colours, other local ids
    c = FirstMask(labels=np.array([[0, 3, 3]], dtype=np.uint8), object_ids=(3,), void=None, kind="palette")
    labels, out_ids, k = _prompt_labels([a, b, c], None)
    assert k == 3 and out_ids.tolist() == [0, 1, 3, 6]
    painted = [out_ids[lab].tolist() for lab in labels]
    assert painted == [[[0, 1, 6]], [[1, 0, 6]], [[0, 3, 3]]]
    labels, out_ids, k = _prompt_labels([c], 5)
    assert k == 5 and out_ids.tolist() == list(range(6)) and labels[0].tolist() == [[0, 3, 3]]


def test_bad_inputs_exit_2_with_one_line(tmp_path, tiny_hf_dir, examples, capsys):
    q, p, m = examples / "hmbb_2.jpg", examples / "hmbb_1.jpg", examples / "hmbb_1_target.png"
    cases = [
        ([q, "--prompt-image", p, "--prompt-mask", m, m], "in pairs"),
        ([tmp_path / "nope.jpg", "--prompt-image", p, "--prompt-mask", m], "no such file"),
        ([examples.parent / "SOURCES.md", "--prompt-image", p, "--prompt-mask", m], "cannot read the image"),
        ([q, "--prompt-image", p, "--prompt-mask", examples / "video_1_target.png"], "aspect ratios"),
        ([q, q.with_suffix(".png"), "--prompt-image", p, "--prompt-mask", m], "both be written"),
        ([q, "--prompt-image", p, "--prompt-mask", m, "--device", "tpu"], "unknown device"),
        ([q, "--prompt-image", p, "--prompt-mask", m, "--num-labels", "0"], "--num-labels"),
        ([q, "--prompt-image", p, "--prompt-mask", p], "photo"),
    ]
    for argv, message in cases:
        rc = _image(*argv, "--checkpoint", tiny_hf_dir, "--output", tmp_path / "out", "--quiet")
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, argv
        assert len(err) == 1 and err[0].startswith("vos image: error: ") and message in err[0], err
    rc = _image(q, "--prompt-image", p, "--prompt-mask", m, "--checkpoint", tmp_path / "missing",
                "--output", tmp_path / "out", "--quiet")
    assert rc == 2 and "checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
