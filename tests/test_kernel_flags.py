"""``--attn`` and ``--compile`` (issue 21) reach the model stage from ``vos run`` and ``vos image``,
are recorded in the manifest, and a kernel name the model does not have is a usage error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import pipelines.model_stage
import vos.engine.images
import vos.engine.video
from seggpt_model.config import ATTENTION_IMPLEMENTATIONS
from tests._media import small_car_shadow
from vos.cli import build_parser
from vos.cli import main as vos_main

SIZE = (128, 72)


@pytest.fixture(scope="module")
def clip(shared_data, tmp_path_factory):
    return small_car_shadow(shared_data, tmp_path_factory.mktemp("clip"), SIZE, 3)


def _spy(monkeypatch, module):
    calls = []
    real = pipelines.model_stage.load_stage

    def load_stage(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "load_stage", load_stage)
    return calls


def test_parser_lists_every_kernel_and_refuses_others(capsys):
    parser = build_parser()
    for name in ("auto", *ATTENTION_IMPLEMENTATIONS):
        args = parser.parse_args(["run", "v.mp4", "--first-mask", "m.png", "--attn", name, "--compile"])
        assert args.attn == name and args.compile is True
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["run", "v.mp4", "--attn", "nope"])
    assert exc.value.code == 2 and "--attn" in capsys.readouterr().err


def test_vos_run_attn_reaches_the_stage_and_the_manifest(tiny_hf_dir, clip, tmp_path, monkeypatch):
    folder, mask = clip
    calls = _spy(monkeypatch, vos.engine.video)
    common = ["run", str(folder), "--first-mask", str(mask), "--checkpoint", str(tiny_hf_dir),
              "--device", "cpu", "--context", "2", "--quiet"]
    assert vos_main([*common, "--attn", "eager", "--output", str(tmp_path / "eager")]) == 0
    assert vos_main([*common, "--output", str(tmp_path / "auto")]) == 0
    assert [(c["attn"], c["compile"]) for c in calls] == [("eager", False), ("auto", False)]
    settings = json.loads((tmp_path / "eager" / "car" / "manifest.json").read_text())["settings"]
    assert settings["attn"] == "eager" and settings["compile"] is False
    # the eager formula and the default kernel segment these frames alike
    for p in sorted((tmp_path / "auto" / "car").glob("*.png")):
        a, b = np.array(Image.open(p)), np.array(Image.open(tmp_path / "eager" / "car" / p.name))
        assert (a == b).mean() > 0.99


def test_vos_image_attn_reaches_the_stage(tiny_hf_dir, clip, tmp_path, monkeypatch):
    folder, mask = clip
    frames = sorted(folder.glob("*.jpg"))
    calls = _spy(monkeypatch, vos.engine.images)
    assert vos_main(["image", str(frames[1]), "--prompt-image", str(frames[0]), "--prompt-mask", str(mask),
                     "--checkpoint", str(tiny_hf_dir), "--device", "cpu", "--attn", "chunked",
                     "--output", str(tmp_path / "img"), "--quiet"]) == 0
    assert [(c["attn"], c["compile"]) for c in calls] == [("chunked", False)]
    assert (tmp_path / "img" / f"{frames[1].stem}.png").is_file()
