"""First masks from words: CLIPSeg texts/examples, SegFormer classes, --instances and ``vos mask``.

References are computed through ``transformers`` directly (processor + model + the rules of the
issue), with PIL's bilinear resize as an independent implementation of ``align_corners=False``
upsampling, on the real car-shadow frames; the tiny checkpoints are built by
``tests/_proposal_models.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO

TEXTS = ["car", "road", "a shadow"]
#: Pixels where two scores (or a score and the threshold) are this close count as ties.
TIE = 1e-4


# ------------------------------------------------------------------------------------------------
# fixtures and references
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def frames_dir(shared_data) -> Path:
    return shared_data / "davis_sample" / "JPEGImages" / "480p" / "car-shadow"


@pytest.fixture(scope="module")
def frame0(frames_dir) -> np.ndarray:
    return np.array(Image.open(frames_dir / "00000.jpg").convert("RGB"))


@pytest.fixture(scope="module")
def proposer():
    from vos.prompts.first_mask import FirstMaskProposer

    return FirstMaskProposer(device="cpu")


def _pil_resize(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(K, h, w)`` float maps resized with PIL's bilinear filter (half-pixel centres)."""
    return np.stack([np.asarray(Image.fromarray(m.astype(np.float32), mode="F")
                                .resize((width, height), Image.Resampling.BILINEAR)) for m in maps])


def _reference_text_probs(folder: Path, rgb: np.ndarray, texts: list[str]) -> np.ndarray:
    import torch
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    processor = CLIPSegProcessor.from_pretrained(folder)
    model = CLIPSegForImageSegmentation.from_pretrained(folder).eval()
    inputs = processor(text=texts, images=[rgb] * len(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits.reshape(len(texts), 352, 352)
    return _pil_resize(torch.sigmoid(logits).numpy(), rgb.shape[0], rgb.shape[1])


def _reference_example_probs(folder: Path, rgb: np.ndarray, prompt_rgb: np.ndarray) -> np.ndarray:
    import torch
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    processor = CLIPSegProcessor.from_pretrained(folder)
    model = CLIPSegForImageSegmentation.from_pretrained(folder).eval()
    inputs = processor(images=[rgb], visual_prompt=[prompt_rgb], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits.reshape(1, 352, 352)
    return _pil_resize(torch.sigmoid(logits).numpy(), rgb.shape[0], rgb.shape[1])


def _reference_labels(probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(labels by the issue's rule, mask of non-tie pixels)."""
    order = np.sort(probs, axis=0)
    top = order[-1]
    labels = np.where(top > threshold, probs.argmax(axis=0) + 1, 0)
    clear = np.abs(top - threshold) > TIE
    if len(probs) > 1:
        clear &= (order[-1] - order[-2]) > TIE
    return labels, clear


def _reference_class_map(folder: Path, rgb: np.ndarray) -> np.ndarray:
    import torch
    from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor

    processor = SegformerImageProcessor.from_pretrained(folder)
    model = SegformerForSemanticSegmentation.from_pretrained(folder).eval()
    with torch.no_grad():
        outputs = model(**processor(images=rgb, return_tensors="pt"))
    return processor.post_process_semantic_segmentation(outputs, target_sizes=[rgb.shape[:2]])[0].numpy()


def _agreement(labels: np.ndarray, ref: np.ndarray, clear: np.ndarray) -> float:
    return float((labels == ref)[clear].mean())


# ------------------------------------------------------------------------------------------------
# CLIPSeg texts
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_case(clipseg_dir, frame0):
    probs = _reference_text_probs(clipseg_dir, frame0, TEXTS)
    threshold = float(np.quantile(probs.max(axis=0), 0.4))   # ~40 % background, from the reference
    ref, clear = _reference_labels(probs, threshold)
    assert clear.mean() > 0.99 and len(np.unique(ref)) == len(TEXTS) + 1   # the case is not degenerate
    return probs, threshold, ref, clear


def test_text_mask_equals_transformers_reference(clipseg_dir, frame0, proposer, text_case):
    from vos.prompts.first_mask import MaskPrompt, propose_first_mask

    _, threshold, ref, clear = text_case
    prompt = MaskPrompt(texts=tuple(TEXTS), threshold=threshold, text_model=str(clipseg_dir))
    labels, info = propose_first_mask(frame0, prompt, proposer=proposer)
    assert labels.shape == frame0.shape[:2] and labels.dtype == np.uint8
    assert _agreement(labels, ref, clear) >= 0.999
    assert info["prompt"] == "text" and info["texts"] == TEXTS and info["threshold"] == threshold
    assert info["model"] == str(clipseg_dir) and info["frame_size"] == [854, 480]
    assert [(o["id"], o["text"]) for o in info["objects"]] == [(1, "car"), (2, "road"), (3, "a shadow")]
    assert [o["pixels"] for o in info["objects"]] == [int((labels == k).sum()) for k in (1, 2, 3)]


@pytest.mark.parametrize("mode", ["nearest", "align_corners"])
def test_wrong_resize_fails_the_equality(clipseg_dir, frame0, proposer, text_case, monkeypatch, mode):
    """Mutation check: the comparison above catches a wrong upsampling of the 352x352 maps."""
    import torch.nn.functional as F

    import vos.prompts.clipseg
    from vos.prompts.first_mask import MaskPrompt

    def wrong(probs, height, width):
        kw = {"mode": "nearest"} if mode == "nearest" else {"mode": "bilinear", "align_corners": True}
        return F.interpolate(probs.float()[:, None], size=(height, width), **kw)[:, 0]

    monkeypatch.setattr(vos.prompts.clipseg, "resize_probabilities", wrong)
    _, threshold, ref, clear = text_case
    labels, _ = proposer.propose(frame0, MaskPrompt(texts=tuple(TEXTS), threshold=threshold,
                                                    text_model=str(clipseg_dir)))
    assert _agreement(labels, ref, clear) < 0.999


def test_several_texts_give_ids_in_order(clipseg_dir, frame0, proposer, text_case):
    from vos.prompts.first_mask import MaskPrompt

    _, threshold, ref, clear = text_case
    labels, info = proposer.propose(frame0, MaskPrompt(texts=tuple(TEXTS[::-1]), threshold=threshold,
                                                       text_model=str(clipseg_dir)))
    assert [o["text"] for o in info["objects"]] == TEXTS[::-1]
    swapped = np.array([0, 3, 2, 1])[ref]                  # text k of the reversed list is id 4 - k
    assert _agreement(labels, swapped, clear) >= 0.999


def test_example_prompt_equals_transformers_visual_prompt(clipseg_dir, frames_dir, shared_data, proposer):
    from vos.prompts.clipseg import visual_prompt
    from vos.labels import read_first_mask
    from vos.prompts.first_mask import MaskPrompt

    example, example_mask = frames_dir / "00000.jpg", (shared_data / "davis_sample" / "Annotations"
                                                       / "480p" / "car-shadow" / "00000.png")
    query = np.array(Image.open(frames_dir / "00010.jpg").convert("RGB"))
    prompt_rgb = visual_prompt(np.array(Image.open(example).convert("RGB")),
                               read_first_mask(example_mask).labels != 0)
    probs = _reference_example_probs(clipseg_dir, query, prompt_rgb)
    threshold = float(np.quantile(probs, 0.5))
    ref, clear = _reference_labels(probs, threshold)
    labels, info = proposer.propose(query, MaskPrompt(example_image=example, example_mask=example_mask,
                                                      threshold=threshold, text_model=str(clipseg_dir)))
    assert _agreement(labels, ref, clear) >= 0.999
    assert set(np.unique(labels)) == {0, 1} and info["prompt"] == "example"
    assert info["objects"][0]["pixels"] == int((labels == 1).sum())


def test_visual_prompt_highlights_the_object(frame0):
    """Object pixels unchanged, background blurred and at 10 % intensity, square crop around the
    object's box with a 10 % margin (positions worked out by hand for this mask)."""
    from PIL import ImageFilter

    from vos.prompts.clipseg import visual_prompt

    rgb = np.ascontiguousarray(frame0[100:300, 200:500])          # 200 x 300
    mask = np.zeros((200, 300), dtype=bool)
    mask[80:120, 100:160] = True                                   # 40 x 60 box, centre (100, 130)
    out = visual_prompt(rgb, mask)
    assert out.shape == (72, 72, 3)                                # ceil(60 * 1.2); rows 64..135, cols 94..165
    crop, inside = rgb[64:136, 94:166], mask[64:136, 94:166]
    assert np.array_equal(out[inside], crop[inside])
    blurred = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(3.0)), dtype=np.float64)
    assert np.abs(out[~inside] - 0.1 * blurred[64:136, 94:166][~inside]).max() <= 0.5 + 1e-9


# ------------------------------------------------------------------------------------------------
# SegFormer classes
# ------------------------------------------------------------------------------------------------

def test_classes_equal_post_process_semantic_segmentation(segformer_dir, frame0, proposer):
    from tests._proposal_models import TINY_ADE_LABELS
    from vos.prompts.first_mask import MaskPrompt

    ref_map = _reference_class_map(segformer_dir, frame0)
    top = [int(c) for c in np.argsort(-np.bincount(ref_map.ravel()))[:2]]
    names = [TINY_ADE_LABELS[c] for c in top]
    assert len(names) == 2 and all((ref_map == c).any() for c in top)
    ref = np.zeros(ref_map.shape, dtype=np.uint8)
    for k, c in enumerate(top):
        ref[ref_map == c] = k + 1
    prompt = MaskPrompt(classes=(names[0].upper(), f" {names[1]} "), class_model=str(segformer_dir))
    labels, info = proposer.propose(frame0, prompt)
    assert float((labels == ref).mean()) >= 0.999
    assert info["prompt"] == "classes" and info["classes"] == names
    assert [(o["id"], o["class"], o["class_id"]) for o in info["objects"]] == [
        (1, names[0], top[0]), (2, names[1], top[1])]
    assert "threshold" not in info


def test_unknown_class_lists_closest_names(segformer_dir, frame0, proposer):
    from vos.errors import UserError
    from vos.prompts.first_mask import MaskPrompt

    with pytest.raises(UserError, match=r"unknown class 'flor'.*closest: floor"):
        proposer.propose(frame0, MaskPrompt(classes=("flor",), class_model=str(segformer_dir)))


# ------------------------------------------------------------------------------------------------
# --instances
# ------------------------------------------------------------------------------------------------

def test_split_instances_eight_connected_largest_first_small_dropped():
    from vos.prompts.first_mask import split_instances

    labels = np.zeros((100, 100), dtype=np.uint8)      # 0.1 % of the frame = 10 pixels
    labels[0:3, 0:3] = 1                               # object 1: 9 px, dropped
    labels[10:20, 10:20] = 1                           # 100 px ...
    labels[20:25, 20:25] = 1                           # ... touching diagonally: one 125 px component
    labels[50:70, 50:70] = 1                           # 400 px: first id
    labels[80:82, 0:10] = 2                            # object 2: 20 px
    out, objects = split_instances(labels, [{"text": "a"}, {"text": "b"}])
    expected = np.zeros_like(labels)
    expected[50:70, 50:70] = 1
    expected[10:20, 10:20] = 2
    expected[20:25, 20:25] = 2
    expected[80:82, 0:10] = 3
    assert np.array_equal(out, expected)
    assert objects == [{"id": 1, "text": "a", "component": 1, "pixels": 400},
                       {"id": 2, "text": "a", "component": 2, "pixels": 125},
                       {"id": 3, "text": "b", "component": 1, "pixels": 20}]


def test_instances_on_real_frame_are_components_of_their_object(segformer_dir, frame0, proposer):
    from scipy import ndimage

    from tests._proposal_models import TINY_ADE_LABELS
    from vos.prompts.first_mask import MaskPrompt

    names = [TINY_ADE_LABELS[c] for c in np.argsort(-np.bincount(
        _reference_class_map(segformer_dir, frame0).ravel()))[:2]]
    whole, _ = proposer.propose(frame0, MaskPrompt(classes=tuple(names), class_model=str(segformer_dir)))
    labels, info = proposer.propose(frame0, MaskPrompt(classes=tuple(names), instances=True,
                                                       class_model=str(segformer_dir)))
    assert info["instances"] is True and len(info["objects"]) >= 2
    sizes = []
    for obj in info["objects"]:
        part = labels == obj["id"]
        source = names.index(obj["class"]) + 1
        assert whole[part].min() == source                  # inside its object
        comp, n = ndimage.label(whole == source, structure=np.ones((3, 3)))
        ids = np.unique(comp[part])
        assert len(ids) == 1 and np.array_equal(comp == ids[0], part)   # exactly one component
        assert part.sum() == obj["pixels"] >= 0.001 * labels.size
        sizes.append((source, -obj["pixels"]))
    assert sizes == sorted(sizes)                           # object order, then largest first


# ------------------------------------------------------------------------------------------------
# vos mask
# ------------------------------------------------------------------------------------------------

def _vos(argv, capsys) -> tuple[int, str, str]:
    from vos.cli import main

    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_vos_mask_writes_palette_png_and_overlay(clipseg_dir, frames_dir, frame0, proposer, text_case,
                                                 tmp_path, capsys):
    from pipelines.writers import overlay_masks
    from vos.labels import davis_palette
    from vos.prompts.first_mask import MaskPrompt

    _, threshold, _, _ = text_case
    out, ov = tmp_path / "sub" / "mask.png", tmp_path / "overlay.png"
    rc, stdout, err = _vos(["mask", str(frames_dir), "--text", "car", "--text", "road", "--text",
                            "a shadow", "--threshold", str(threshold), "--text-model", str(clipseg_dir),
                            "--device", "cpu", "--output", str(out), "--overlay", str(ov)], capsys)
    assert rc == 0, err
    expected, _ = proposer.propose(frame0, MaskPrompt(texts=tuple(TEXTS), threshold=threshold,
                                                      text_model=str(clipseg_dir)))
    with Image.open(out) as im:
        assert im.mode == "P" and im.size == (854, 480)
        assert np.array_equal(np.array(im.getpalette(), dtype=np.uint8).reshape(-1, 3)[:256], davis_palette())
        assert np.array_equal(np.array(im), expected)
    with Image.open(ov) as im:
        assert np.array_equal(np.array(im.convert("RGB")), overlay_masks(frame0, expected, davis_palette()))
    assert "3 objects" in stdout and "'car'" in stdout
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["mask.png", "overlay.png"]


def test_vos_mask_video_frame_n_is_the_frame_vos_run_sees(segformer_dir, frames_dir, proposer, tmp_path,
                                                         capsys):
    from pipelines.sources import open_source
    from tests._media import encode_mp4
    from tests._proposal_models import TINY_ADE_LABELS
    from vos.prompts.first_mask import MaskPrompt

    video = encode_mp4(frames_dir, tmp_path / "clip.mp4", limit=4)
    with open_source(video) as src:
        frame2 = [f.rgb for f in src][2]
    ref_map = _reference_class_map(segformer_dir, frame2)
    name = TINY_ADE_LABELS[int(np.bincount(ref_map.ravel()).argmax())]
    out = tmp_path / "m.png"
    rc, _, err = _vos(["mask", str(video), "--frame", "2", "--classes", name, "--class-model",
                       str(segformer_dir), "--output", str(out)], capsys)
    assert rc == 0, err
    expected, _ = proposer.propose(frame2, MaskPrompt(classes=(name,), class_model=str(segformer_dir)))
    assert np.array_equal(np.array(Image.open(out)), expected)
    class_id = {v: k for k, v in TINY_ADE_LABELS.items()}[name]
    assert float((expected == (ref_map == class_id)).mean()) >= 0.999


@pytest.mark.parametrize("case", [
    "empty_text", "empty_object", "too_many", "frame_past_end", "frame_of_image", "not_clipseg",
    "not_segformer", "seggpt_checkpoint", "unknown_class", "offline", "no_transformers",
    "example_without_mask", "threshold_with_classes", "threshold_range", "not_png", "twice",
])
def test_vos_mask_bad_input_exits_2_and_writes_nothing(case, clipseg_dir, segformer_dir, tiny_hf_dir,
                                                       frames_dir, text_case, tmp_path, capsys,
                                                       monkeypatch):
    probs, _, _, _ = text_case
    out = tmp_path / "out" / "mask.png"
    clip, seg = ["--text-model", str(clipseg_dir)], ["--class-model", str(segformer_dir)]
    frames, image = str(frames_dir), str(frames_dir / "00000.jpg")
    too_high = float(probs[0].max() + (1 - probs[0].max()) / 2)   # above every pixel's score for 'car'

    argv, message = {
        "empty_text": ([frames, "--text", "car", "--text", " ", *clip], "--text: empty text"),
        "empty_object": ([frames, "--text", "car", "--threshold", repr(too_high), *clip],
                         f"no pixel of frame 0 of {frames} scored above {too_high:g} for 'car'; "
                         f"lower --threshold or pass --first-mask"),
        "too_many": ([frames, *[a for i in range(255) for a in ("--text", f"t{i}")], *clip],
                     "255 objects, more than the 254"),
        "frame_past_end": ([frames, "--frame", "40", "--text", "car", *clip], "has only 40 frame(s)"),
        "frame_of_image": ([image, "--frame", "1", "--text", "car", *clip], "is a single image"),
        "not_clipseg": ([frames, "--text", "car", "--text-model", str(segformer_dir)],
                        "a segformer checkpoint, not a clipseg model"),
        "not_segformer": ([frames, "--classes", "car", "--class-model", str(clipseg_dir)],
                          "a clipseg checkpoint, not a segformer model"),
        "seggpt_checkpoint": ([frames, "--text", "car", "--text-model", str(tiny_hf_dir)],
                              "a seggpt checkpoint, not a clipseg model"),
        "unknown_class": ([frames, "--classes", "car,flor", *seg], "unknown class 'flor'"),
        "offline": ([frames, "--text", "car"], "'CIDAS/clipseg-rd64-refined' is not in the local "
                                               "Hugging Face cache and cannot be downloaded (offline?)"),
        "no_transformers": ([frames, "--classes", "car", *seg],
                            "install the prompts extra: pip install 'seggpt-vos[prompts]'"),
        "example_without_mask": ([frames, "--example", image, *clip], "--example and --example-mask"),
        "threshold_with_classes": ([frames, "--classes", "car", "--threshold", "0.5", *seg],
                                   "--threshold applies to --text and --example"),
        "threshold_range": ([frames, "--text", "car", "--threshold", "1.5", *clip],
                            "--threshold must be a probability in [0, 1)"),
        "not_png": ([frames, "--text", "car", *clip, "--output", str(tmp_path / "out" / "m.jpg")],
                    "must be a .png file"),
        "twice": ([frames, "--text", "car", "--text", "Car", *clip], "'car' given twice"),
    }[case]
    if case == "no_transformers":
        monkeypatch.setitem(sys.modules, "transformers", None)
    if case == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if "--output" not in argv:
        argv = [*argv, "--output", str(out)]
    rc, _, err = _vos(["mask", *argv], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vos mask: error: "), err
    assert message in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_failed_mask_write_leaves_no_overlay(clipseg_dir, frames_dir, text_case, tmp_path, capsys,
                                             monkeypatch):
    import vos.commands.mask

    def fail(path, labels, palette=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vos.commands.mask, "write_label_png", fail)
    _, threshold, _, _ = text_case
    rc, _, err = _vos(["mask", str(frames_dir), "--text", "car", "--threshold", str(threshold),
                       "--text-model", str(clipseg_dir), "--output", str(tmp_path / "m.png"),
                       "--overlay", str(tmp_path / "o.png")], capsys)
    assert rc == 2 and "No space left on device" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_imports_no_torch_and_first_mask_no_transformers():
    """``vos --help`` stays torch-free (the dispatcher imports a command only when it runs); the
    proposal code imports ``transformers`` (the prompts extra) only when a model is loaded. Torch
    itself is imported at the top of the prompt modules since the sub-package layout (imports at
    the top, issue 18)."""
    code = ("import sys, vos.cli; vos.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules)); "
            "import vos.prompts.first_mask; print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0].strip() == "[]"
    assert out[1].strip() == "False"
