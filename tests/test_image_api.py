"""The documented SegGPT API on our package: processor, bare model, loss, post-processing.

The three examples of the SegGPT documentation are transcribed with only the import line changed,
on a tiny random checkpoint in hub layout and SegGPT's own ``hmbb`` images; FoodSeg103 is not
available offline, so its example runs on generated label maps with ids 0..103 (same calls).
Every value is compared with ``transformers`` (same weights, its PIL image processor).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from seggpt_model import (
    BatchFeature,
    CheckpointError,
    SegGptForImageSegmentation,
    SegGptImageProcessor,
    SegGptModel,
)
from tests._reference import painter_ensemble_reference

ATOL = 1e-4


@pytest.fixture(scope="module")
def ref_processor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers import SegGptImageProcessor as RefProcessor

        return RefProcessor()


@pytest.fixture(scope="module")
def hf_model(tiny_hf_dir):
    from transformers import SegGptForImageSegmentation as HfModel

    return HfModel.from_pretrained(tiny_hf_dir).eval()


@pytest.fixture(scope="module")
def examples(shared_data):
    return shared_data / "prompts" / "seggpt_examples"


def _ref_preprocess(ref_processor, **kwargs):
    """The reference's ``preprocess`` (its ``__call__`` requires ``images`` positionally)."""
    return ref_processor.preprocess(kwargs.pop("images", None), **kwargs)


def _equal_inputs(ours, ref):
    assert set(ours) == set(ref)
    for key in ref:
        assert isinstance(ours[key], torch.Tensor) and ours[key].dtype == ref[key].dtype == torch.float32
        assert torch.equal(ours[key], ref[key]), key


# ---------------------------------------------------------------------------------------------
# the documentation's three examples
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def test_doc_example_bare_model(tiny_hf_dir, examples, ref_processor):
    """``SegGptModel`` example: hmbb_2 from (hmbb_1, hmbb_1_target as "L"), no ``num_labels``."""
    from transformers import SegGptModel as HfSegGptModel

    image_input = Image.open(examples / "hmbb_2.jpg")
    image_prompt = Image.open(examples / "hmbb_1.jpg")
    mask_prompt = Image.open(examples / "hmbb_1_target.png").convert("L")

    checkpoint = tiny_hf_dir                       # stands for "BAAI/seggpt-vit-large"
    model = SegGptModel.from_pretrained(checkpoint)  # a full checkpoint: decoder keys ignored
    image_processor = SegGptImageProcessor.from_pretrained(checkpoint)

    inputs = image_processor(images=image_input, prompt_images=image_prompt, prompt_masks=mask_prompt,
                             return_tensors="pt")
    outputs = model(**inputs)
    assert list(outputs.last_hidden_state.shape) == [1, 56, 28, model.config.hidden_size]

    ref_inputs = _ref_preprocess(ref_processor, images=image_input, prompt_images=image_prompt,
                                 prompt_masks=mask_prompt, return_tensors="pt")
    _equal_inputs(inputs, ref_inputs)
    ref = HfSegGptModel.from_pretrained(checkpoint).eval()(**ref_inputs)
    assert (outputs.last_hidden_state - ref.last_hidden_state).abs().max() <= ATOL
    assert len(outputs.intermediate_hidden_states) == len(ref.intermediate_hidden_states)
    for a, b in zip(outputs.intermediate_hidden_states, ref.intermediate_hidden_states, strict=True):
        assert (a - b).abs().max() <= ATOL
    # key access as on transformers' outputs
    assert outputs["last_hidden_state"] is outputs.last_hidden_state
    assert outputs.to_tuple()[0] is outputs[0] is outputs.last_hidden_state
    assert "hidden_states" not in outputs.keys()
    with pytest.raises(KeyError):
        outputs["attentions"]


@torch.no_grad()
def test_doc_example_image_segmentation(tiny_hf_dir, hf_model, examples, ref_processor):
    """``SegGptForImageSegmentation`` example: post-processed map at the input's (H, W)."""
    image_input = Image.open(examples / "hmbb_2.jpg")
    image_prompt = Image.open(examples / "hmbb_1.jpg")
    mask_prompt = Image.open(examples / "hmbb_1_target.png").convert("L")

    checkpoint = tiny_hf_dir
    model = SegGptForImageSegmentation.from_pretrained(checkpoint)
    image_processor = SegGptImageProcessor.from_pretrained(checkpoint)

    inputs = image_processor(images=image_input, prompt_images=image_prompt, prompt_masks=mask_prompt,
                             return_tensors="pt")
    outputs = model(**inputs)
    result = image_processor.post_process_semantic_segmentation(
        outputs, target_sizes=[(image_input.height, image_input.width)])[0]
    assert list(result.shape) == [170, 297]

    ref_outputs = hf_model(**inputs)
    assert outputs.pred_masks.shape == ref_outputs.pred_masks.shape == (1, 3, 896, 448)
    assert (outputs.pred_masks - ref_outputs.pred_masks).abs().max() <= ATOL
    sizes = [(image_input.height, image_input.width)]
    ref_result = ref_processor.post_process_semantic_segmentation(ref_outputs, target_sizes=sizes)[0]
    # same post-processing: identical maps from the same predictions (mean intensity, int32)
    ours_on_ref = image_processor.post_process_semantic_segmentation(ref_outputs, target_sizes=sizes)[0]
    assert ours_on_ref.dtype == ref_result.dtype == torch.int32
    assert torch.equal(ours_on_ref, ref_result)
    # end to end: predictions equal to 1e-4, so a truncated intensity may differ by one level
    diff = (result - ref_result).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    assert outputs["pred_masks"] is outputs.pred_masks and outputs.keys() == ["pred_masks"]


@torch.no_grad()
@pytest.mark.slow  # the documented example against transformers
def test_doc_example_one_shot_semantic_segmentation(tiny_hf_dir, hf_model, examples, ref_processor):
    """The FoodSeg103 one-shot example (``num_labels=103``) on generated label maps 0..103."""
    num_labels = 103
    g = np.random.default_rng(7)
    image_input = Image.open(examples / "video_3.jpg")
    image_prompt = Image.open(examples / "video_1.jpg")
    # a label map like the dataset's: blocks of classes (every id 0..103 present), mode "L"
    blocks = np.concatenate([np.arange(num_labels + 1), g.integers(0, num_labels + 1, 16 * 8 - 104)])
    labels = np.kron(g.permutation(blocks).reshape(16, 8), np.ones((32, 64), dtype=np.int64))
    mask_prompt = Image.fromarray(labels.astype(np.uint8), mode="L")
    assert mask_prompt.size == image_prompt.size and len(np.unique(labels)) == num_labels + 1

    image_processor = SegGptImageProcessor.from_pretrained(tiny_hf_dir)
    model = SegGptForImageSegmentation.from_pretrained(tiny_hf_dir)
    inputs = image_processor(images=image_input, prompt_images=image_prompt, prompt_masks=mask_prompt,
                             num_labels=num_labels, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    target_sizes = [image_input.size[::-1]]
    mask = image_processor.post_process_semantic_segmentation(outputs, target_sizes, num_labels=num_labels)[0]
    assert mask.shape == (480, 854) and mask.dtype == torch.int64
    assert 0 <= int(mask.min()) and int(mask.max()) <= num_labels

    ref_inputs = _ref_preprocess(ref_processor, images=image_input, prompt_images=image_prompt,
                                 prompt_masks=mask_prompt, num_labels=num_labels, return_tensors="pt")
    _equal_inputs(inputs, ref_inputs)
    alias = image_processor(images=image_input, prompt_images=image_prompt, segmentation_maps=mask_prompt,
                            num_labels=num_labels, return_tensors="pt")
    _equal_inputs(alias, ref_inputs)

    ref_outputs = hf_model(**ref_inputs)
    assert (outputs.pred_masks - ref_outputs.pred_masks).abs().max() <= ATOL
    ref_mask = ref_processor.post_process_semantic_segmentation(ref_outputs, target_sizes, num_labels=num_labels)[0]
    ours_on_ref = image_processor.post_process_semantic_segmentation(ref_outputs, target_sizes,
                                                                     num_labels=num_labels)[0]
    assert torch.equal(ours_on_ref, ref_mask)
    assert (mask == ref_mask).float().mean() > 0.999      # nearest colour, 1e-4 apart predictions
    assert len(torch.unique(ref_mask)) > 1


@torch.no_grad()
def test_few_shot_inputs_with_feature_ensemble(tiny_hf_dir, hf_model, examples, ref_processor):
    """hmbb_3 (a palette PNG named .jpg) from the hmbb_1 and hmbb_2 prompts, batched by the processor."""
    query = Image.open(examples / "hmbb_3.jpg")
    prompts = [Image.open(examples / f"hmbb_{i}.jpg") for i in (1, 2)]
    masks = [Image.open(examples / f"hmbb_{i}_target.png") for i in (1, 2)]
    processor = SegGptImageProcessor()
    # RGB colour masks given as RGB images are used as they are with the default do_convert_rgb
    inputs = processor(images=query, prompt_images=prompts, prompt_masks=masks, return_tensors="pt")
    assert inputs.pixel_values.shape == (1, 3, 448, 448)
    assert inputs.prompt_pixel_values.shape == inputs.prompt_masks.shape == (2, 3, 448, 448)
    ref_masks = _ref_preprocess(ref_processor, prompt_masks=masks, do_convert_rgb=False, return_tensors="pt")
    assert torch.equal(inputs.prompt_masks, ref_masks["prompt_masks"])
    # the reference leaves palette images unconverted; on the RGB image it equals ours
    ref_query = _ref_preprocess(ref_processor, images=query.convert("RGB"), return_tensors="pt")
    assert torch.equal(inputs.pixel_values, ref_query["pixel_values"])

    model = SegGptForImageSegmentation.from_pretrained(tiny_hf_dir)
    outputs = model(**inputs, feature_ensemble=True)
    assert outputs.pred_masks.shape == (1, 3, 896, 448)
    pv = inputs.pixel_values.expand(2, -1, -1, -1)
    painter = painter_ensemble_reference(hf_model, pv, inputs.prompt_pixel_values, inputs.prompt_masks)[:1]
    assert (outputs.pred_masks - painter).abs().max() <= ATOL
    result = processor.post_process_semantic_segmentation(outputs, [query.size[::-1]], num_labels=1)[0]
    assert result.shape == (400, 700) and set(torch.unique(result).tolist()) <= {0, 1}


# ---------------------------------------------------------------------------------------------
# loss, return_dict, checkpoints
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def test_loss_equals_transformers_for_random_labels_and_masks(tiny_hf_dir, hf_model):
    model = SegGptForImageSegmentation.from_pretrained(tiny_hf_dir)
    g = torch.Generator().manual_seed(3)
    pv, ppv, pm, labels = (torch.randn(2, 3, 448, 448, generator=g) for _ in range(4))
    bool_masked_pos = torch.rand(2, 56 * 28, generator=g) < 0.5
    out = model(pv, ppv, pm, labels=labels, bool_masked_pos=bool_masked_pos, embedding_type="semantic")
    ref = hf_model(pv, ppv, pm, labels=labels, bool_masked_pos=bool_masked_pos, embedding_type="semantic")
    assert out.loss.ndim == 0 and out.loss > 0
    assert torch.allclose(out.loss, ref.loss, rtol=1e-5, atol=1e-6)
    assert (out.pred_masks - ref.pred_masks).abs().max() <= ATOL
    # the loss counts the masked patches only: a different mask gives a different loss
    other = model(pv, ppv, pm, labels=labels, bool_masked_pos=~bool_masked_pos, embedding_type="semantic")
    assert not torch.allclose(other.loss, out.loss)
    # default bool_masked_pos (query half) and return_dict=False: (loss, pred_masks) as transformers
    loss, pred = model(pv[:1], ppv[:1], pm[:1], labels=labels[:1], return_dict=False)
    ref_loss, ref_pred = hf_model(pv[:1], ppv[:1], pm[:1], labels=labels[:1], return_dict=False)
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6) and (pred - ref_pred).abs().max() <= ATOL


def test_bare_model_checkpoints(tmp_path, tiny_hf_dir):
    from transformers import SegGptModel as HfSegGptModel

    full = SegGptForImageSegmentation.from_pretrained(tiny_hf_dir)
    bare = SegGptModel.from_pretrained(tiny_hf_dir)
    assert isinstance(bare, SegGptModel) and not bare.training
    full_state = full.model.state_dict()
    assert bare.state_dict().keys() == full_state.keys()
    assert all(torch.equal(v, full_state[k]) for k, v in bare.state_dict().items())

    # our bare save: keys without "model.", architectures SegGptModel, read by both packages
    bare.save_pretrained(tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["architectures"] == ["SegGptModel"]
    again = SegGptModel.from_pretrained(tmp_path / "ours", dtype=torch.bfloat16)
    assert again.dtype == torch.bfloat16
    hf_bare = HfSegGptModel.from_pretrained(tmp_path / "ours")
    hf_state = hf_bare.state_dict()
    assert all(torch.equal(v, hf_state[k]) for k, v in bare.state_dict().items())
    # a bare checkpoint written by transformers loads too
    hf_bare.save_pretrained(tmp_path / "hf")
    from_hf = SegGptModel.from_pretrained(tmp_path / "hf")
    assert all(torch.equal(v, full_state[k]) for k, v in from_hf.state_dict().items())
    # ... but has no decoder for the full model: a clear error
    with pytest.raises(CheckpointError, match="bare SegGptModel checkpoint.*no decoder"):
        SegGptForImageSegmentation.from_pretrained(tmp_path / "ours")
    # strict otherwise: a foreign key in a full checkpoint is still reported
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_hf_dir / "model.safetensors"))
    state["model.extra.weight"] = torch.zeros(1)
    (tmp_path / "extra").mkdir()
    save_file(state, str(tmp_path / "extra" / "model.safetensors"))
    (tmp_path / "extra" / "config.json").write_text((tiny_hf_dir / "config.json").read_text())
    with pytest.raises(CheckpointError, match="unexpected keys: extra.weight"):
        SegGptModel.from_pretrained(tmp_path / "extra")


# ---------------------------------------------------------------------------------------------
# processor: defaults, input forms, configuration files, errors
# ---------------------------------------------------------------------------------------------


def test_processor_defaults_equal_reference(ref_processor):
    ours = SegGptImageProcessor()
    assert ours.do_resize and ours.do_rescale and ours.do_normalize and ours.do_convert_rgb
    assert ours.size == {"height": 448, "width": 448}
    assert ours.resample == int(Image.Resampling.BICUBIC) and ours.rescale_factor == 1 / 255
    assert ours.num_labels is None
    ref = ref_processor.to_dict()
    for key, value in ours.to_dict().items():
        ref_value = ref[key]
        ref_value = dict(ref_value) if key == "size" else ref_value
        ref_value = list(ref_value) if isinstance(ref_value, tuple) else ref_value
        assert value == ref_value, key
    assert ours.get_palette(2) == [tuple(c) for c in ref_processor.get_palette(2)]


def test_processor_input_forms_equal_reference(examples, ref_processor):
    ours = SegGptImageProcessor()
    img = Image.open(examples / "hmbb_1.jpg")
    arr = np.array(img)
    chw = np.ascontiguousarray(arr.transpose(2, 0, 1))
    for form in (arr, chw, torch.from_numpy(chw), [img, arr], np.stack([arr, arr]),
                 arr.astype(np.float32) / 255, arr.astype(np.float64)):
        ref = _ref_preprocess(ref_processor, images=form, return_tensors="pt")["pixel_values"]
        got = ours(images=form, return_tensors="pt")["pixel_values"]
        assert torch.equal(got, ref)
    # return_tensors None / "np", channels_last
    listed = ours(images=[img])
    assert isinstance(listed, BatchFeature) and isinstance(listed["pixel_values"], list)
    ref = _ref_preprocess(ref_processor, images=[img])["pixel_values"]
    assert np.array_equal(listed.pixel_values[0], ref[0])
    as_np = ours(images=img, return_tensors="np", data_format="channels_last").pixel_values
    assert isinstance(as_np, np.ndarray) and as_np.shape == (1, 448, 448, 3)
    assert np.array_equal(as_np[0].transpose(2, 0, 1), ref[0])
    # label maps: batched int64 arrays and tensors, with and without a palette
    g = np.random.default_rng(0)
    maps = g.integers(0, 4, (2, 100, 80))
    for form, kwargs in ((maps, {"num_labels": 3}), ([torch.from_numpy(m) for m in maps], {}),
                         (Image.fromarray(maps[0].astype(np.uint8)), {"num_labels": 5})):
        ref = _ref_preprocess(ref_processor, prompt_masks=form, return_tensors="pt", **kwargs)["prompt_masks"]
        got = ours(prompt_masks=form, return_tensors="pt", **kwargs)["prompt_masks"]
        assert got.shape[1:] == (3, 448, 448) and torch.equal(got, ref)
    # RGB colour masks with do_convert_rgb=False
    rgb_mask = Image.open(examples / "hmbb_1_target.png")
    ref = _ref_preprocess(ref_processor, prompt_masks=rgb_mask, do_convert_rgb=False, return_tensors="pt")
    assert torch.equal(ours(prompt_masks=rgb_mask, do_convert_rgb=False, return_tensors="pt").prompt_masks,
                       ref["prompt_masks"])


def test_post_processing_equals_reference(ref_processor):
    from transformers.models.seggpt.modeling_seggpt import SegGptImageSegmentationOutput as RefOutput

    ours = SegGptImageProcessor()
    pred = torch.randn(2, 3, 896, 448, generator=torch.Generator().manual_seed(5)) * 1.5
    sizes = [(480, 854), (170, 297)]
    for num_labels in (None, 1, 7):
        ref = ref_processor.post_process_semantic_segmentation(RefOutput(pred_masks=pred), sizes,
                                                               num_labels=num_labels)
        got = ours.post_process_semantic_segmentation({"pred_masks": pred}, sizes, num_labels=num_labels)
        assert len(got) == 2
        for a, b, size in zip(got, ref, sizes, strict=True):
            assert a.shape == size and a.dtype == b.dtype and torch.equal(a, b)
    # no target size: the (448, 448) query half; a query-only prediction (segment()) works as well
    full = ours.post_process_semantic_segmentation(pred, num_labels=2)
    half = ours.post_process_semantic_segmentation(pred[:, :, 448:], num_labels=2)
    assert full[0].shape == (448, 448) and all(torch.equal(a, b) for a, b in zip(full, half, strict=True))
    with pytest.raises(ValueError, match="target sizes"):
        ours.post_process_semantic_segmentation(pred, target_sizes=[(10, 10)])


def test_processor_config_round_trip(tmp_path, tiny_hf_dir, ref_processor):
    from transformers import SegGptImageProcessor as RefProcessor

    # a model folder without preprocessor_config.json: the documented defaults
    assert SegGptImageProcessor.from_pretrained(tiny_hf_dir).to_dict() == SegGptImageProcessor().to_dict()
    custom = SegGptImageProcessor(size=224, num_labels=5, do_normalize=False)
    custom.save_pretrained(tmp_path / "ours")
    loaded = SegGptImageProcessor.from_pretrained(tmp_path / "ours")
    assert loaded.to_dict() == custom.to_dict() and loaded.size == {"height": 224, "width": 224}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_read = RefProcessor.from_pretrained(tmp_path / "ours")
        assert hf_read.size["height"] == 224 and hf_read.num_labels == 5 and not hf_read.do_normalize
        ref_processor.save_pretrained(tmp_path / "hf")
    assert SegGptImageProcessor.from_pretrained(tmp_path / "hf").to_dict() == SegGptImageProcessor().to_dict()
    assert SegGptImageProcessor.from_pretrained(tmp_path / "hf", num_labels=3).num_labels == 3
    with pytest.warns(UserWarning, match="documented SegGPT defaults"):   # offline in tests
        hub = SegGptImageProcessor.from_pretrained("nobody/not-a-seggpt-repo")
    assert hub.to_dict() == SegGptImageProcessor().to_dict()
    with pytest.raises(CheckpointError, match="not found"):
        SegGptImageProcessor.from_pretrained(tmp_path / "missing")
    with pytest.raises(TypeError, match="unknown"):
        SegGptImageProcessor.from_pretrained(tmp_path / "hf", do_resise=False)


def test_processor_errors_and_batch_feature(examples):
    processor = SegGptImageProcessor()
    img = Image.open(examples / "hmbb_1.jpg")
    labels = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    with pytest.raises(ValueError, match="at least one"):
        processor()
    with pytest.raises(ValueError, match="not both"):
        processor(prompt_masks=labels, segmentation_maps=labels)
    with pytest.raises(ValueError, match="0..num_labels"):
        processor(prompt_masks=labels, num_labels=2)
    with pytest.raises(ValueError, match="RGB"):
        processor(prompt_masks=labels[None], do_convert_rgb=False)
    with pytest.raises(ValueError, match="return_tensors"):
        processor(images=img, return_tensors="tf")
    with pytest.raises(ValueError, match="expected a PIL image"):
        processor(images="hmbb_1.jpg")
    with pytest.raises(ValueError, match="cannot resize"):
        processor(images=np.full((8, 8, 3), 300.0))

    inputs = processor(images=img, prompt_images=img, prompt_masks=labels, num_labels=3, return_tensors="pt")
    assert isinstance(inputs, dict) and inputs.pixel_values is inputs["pixel_values"]
    half = inputs.to(torch.float16)
    assert half.pixel_values.dtype == torch.float16 and isinstance(half, BatchFeature)
    with pytest.raises(AttributeError):
        inputs.labels
