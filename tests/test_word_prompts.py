"""Word prompts through the whole product: ``vos run --text``/``--classes``, ``vos image --text`` and
batch jobs with ``text`` run exactly as with the mask that ``vos mask`` proposes.

Tiny random CLIPSeg / SegFormer / SegGPT checkpoints made by the tests, real car-shadow frames (a
5-frame copy in a temporary folder, to keep the runs short).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vos.cli import main as vos_main

TEXTS = ["car", "road"]


@pytest.fixture(scope="module")
def frames(shared_data, tmp_path_factory) -> Path:
    src = shared_data / "davis_sample" / "JPEGImages" / "480p" / "car-shadow"
    dst = tmp_path_factory.mktemp("frames") / "car-shadow"
    dst.mkdir()
    for f in sorted(src.glob("*.jpg"))[:5]:
        shutil.copy(f, dst / f.name)
    return dst


@pytest.fixture(scope="module")
def threshold(clipseg_dir, frames) -> float:
    """A threshold at which both texts keep pixels on frame 0 (picked from the model's own scores)."""
    from vos.prompts.clipseg import ClipSeg

    rgb = np.array(Image.open(frames / "00000.jpg").convert("RGB"))
    probs = ClipSeg.load(str(clipseg_dir), device="cpu").text_probabilities(rgb, TEXTS)
    return float(np.quantile(probs.max(axis=0), 0.4))


def _pngs(folder: Path) -> list[np.ndarray]:
    return [np.array(Image.open(p)) for p in sorted(folder.glob("*.png"))]


def _vos(*argv) -> int:
    return vos_main([str(a) for a in argv])


def test_run_text_equals_run_first_mask_of_vos_mask(tmp_path, frames, clipseg_dir, tiny_hf_dir, threshold):
    words = ["--text", TEXTS[0], "--text", TEXTS[1], "--threshold", threshold,
             "--text-model", clipseg_dir, "--device", "cpu"]
    assert _vos("mask", frames, *words, "--output", tmp_path / "m.png") == 0
    assert _vos("run", frames, *words, "--checkpoint", tiny_hf_dir, "--output", tmp_path / "a",
                "--quiet") == 0
    assert _vos("run", frames, "--first-mask", tmp_path / "m.png", "--checkpoint", tiny_hf_dir,
                "--device", "cpu", "--output", tmp_path / "b", "--quiet") == 0
    a, b = _pngs(tmp_path / "a" / "car-shadow"), _pngs(tmp_path / "b" / "car-shadow")
    assert len(a) == len(b) == 5
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert np.array_equal(a[0], np.array(Image.open(tmp_path / "m.png")))    # frame 0 is the proposal
    manifest = json.loads((tmp_path / "a" / "car-shadow" / "manifest.json").read_text())
    prompt = manifest["prompt"]
    assert prompt["prompt"] == "text" and prompt["texts"] == TEXTS and prompt["threshold"] == threshold
    assert prompt["model"] == str(clipseg_dir)
    counts = np.bincount(a[0].ravel(), minlength=3)
    assert [o["pixels"] for o in prompt["objects"]] == [int(counts[1]), int(counts[2])]
    assert manifest["first_mask"] is None
    assert manifest["annotations"][0]["frame"] == 0 and manifest["annotations"][0]["proposed"] is True


def test_run_classes_with_a_later_mask(tmp_path, frames, segformer_dir, tiny_hf_dir, shared_data):
    """--classes proposes frame 0; a --mask on a later frame still adds/corrects objects."""
    from vos.prompts.segformer import Segformer

    rgb = np.array(Image.open(frames / "00000.jpg").convert("RGB"))
    model = Segformer.load(str(segformer_dir), device="cpu")
    names = [model.class_names[int(np.bincount(model.class_map(rgb).ravel()).argmax())]]
    later = shared_data / "davis_sample" / "Annotations" / "480p" / "car-shadow" / "00003.png"
    assert _vos("run", frames, "--classes", ",".join(names), "--class-model", segformer_dir,
                "--mask", f"3:{later}", "--checkpoint", tiny_hf_dir, "--device", "cpu",
                "--output", tmp_path, "--quiet") == 0
    out = tmp_path / "car-shadow"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["prompt"]["classes"] == names
    assert [a["frame"] for a in manifest["annotations"]] == [0, 3]
    assert np.array_equal(_pngs(out)[3] == 1, np.array(Image.open(later)) == 1)


def test_run_word_prompt_bad_input_exits_2_and_writes_nothing(tmp_path, frames, clipseg_dir, tiny_hf_dir,
                                                              capsys):
    base = ["run", frames, "--checkpoint", tiny_hf_dir, "--device", "cpu", "--output", tmp_path]
    cases = {
        "empty object": ([*base, "--text", "car", "--threshold", "0.999999", "--text-model", clipseg_dir],
                         "lower --threshold or pass --first-mask"),
        "frame 0 twice": ([*base, "--text", "car", "--mask", f"0:{frames / '00000.jpg'}",
                           "--text-model", clipseg_dir], "frame 0 has two masks"),
        "empty text": ([*base, "--text", " ", "--text-model", clipseg_dir], "empty text"),
        "not clipseg": ([*base, "--text", "car", "--text-model", tiny_hf_dir], str(tiny_hf_dir)),
    }
    for name, (argv, message) in cases.items():
        assert _vos(*argv) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (name, err)
        assert list(tmp_path.iterdir()) == [], name


def test_image_text_equals_image_with_the_proposed_prompt_mask(tmp_path, frames, clipseg_dir, tiny_hf_dir,
                                                               threshold):
    queries = [frames / "00000.jpg", frames / "00004.jpg"]
    words = ["--text", TEXTS[0], "--text", TEXTS[1], "--threshold", threshold, "--text-model", clipseg_dir]
    common = ["--checkpoint", tiny_hf_dir, "--device", "cpu", "--quiet"]
    assert _vos("image", *queries, *words, "--output", tmp_path / "a", *common) == 0
    assert _vos("mask", queries[0], *words, "--device", "cpu", "--output", tmp_path / "m.png") == 0
    assert _vos("image", *queries, "--prompt-image", queries[0], "--prompt-mask", tmp_path / "m.png",
                "--output", tmp_path / "b", *common) == 0
    for q in queries:
        a = np.array(Image.open(tmp_path / "a" / f"{q.stem}.png"))
        b = np.array(Image.open(tmp_path / "b" / f"{q.stem}.png"))
        assert np.array_equal(a, b)
    assert set(np.unique(a).tolist()) <= {0, 1, 2}


def test_batch_worker_text_job_equals_run_first_mask(tmp_path, frames, clipseg_dir, tiny_hf_dir, threshold):
    """A batch job with ``text`` (what vos.datasets.job reads from a JSONL manifest) runs on the worker with
    its own proposer, exactly as vos run --first-mask of the proposed mask."""
    from vos.batch.worker import VideoWorker

    worker = VideoWorker(str(tiny_hf_dir), "cpu")
    record = worker.process({"name": "w", "video": str(frames), "output": str(tmp_path / "batch"),
                             "text": TEXTS, "threshold": threshold, "text_model": str(clipseg_dir)})
    assert record["status"] == "ok", record
    assert _vos("mask", frames, "--text", TEXTS[0], "--text", TEXTS[1], "--threshold", threshold,
                "--text-model", clipseg_dir, "--device", "cpu", "--output", tmp_path / "m.png") == 0
    assert _vos("run", frames, "--first-mask", tmp_path / "m.png", "--checkpoint", tiny_hf_dir,
                "--device", "cpu", "--output", tmp_path / "run", "--name", "w", "--quiet") == 0
    a, b = _pngs(tmp_path / "batch" / "w"), _pngs(tmp_path / "run" / "w")
    assert len(a) == 5 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
