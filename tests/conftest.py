"""Shared fixtures: paths to ../shared/data and tiny random-weight checkpoints in hub layout."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # tests never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the compiled bf16 softmax kernel (seggpt_model.native) is cached under the temp dir, not ~/.cache
os.environ.setdefault("SEGGPT_KERNEL_CACHE", os.path.join(tempfile.gettempdir(), f"seggpt-test-kernels-{os.getuid()}"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CONFIGS = REPO / "configs"


def pytest_configure(config):
    warnings.filterwarnings("ignore", message=".*torchvision.*")


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Every test leaves torch's thread count as it found it (an in-process ``VideoWorker`` sets it),
    so that later tests run on the machine's cores."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory) -> Path:
    """A tiny SegGPT with random (non-degenerate) weights, saved by transformers' save_pretrained."""
    from tests._reference import make_hf_model

    folder = tmp_path_factory.mktemp("tiny_hf")
    model = make_hf_model(CONFIGS / "seggpt-tiny.json", seed=0)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def small_hf_dir(tmp_path_factory) -> Path:
    """The tiny SegGPT at a 448 x 224 canvas (224 x 224 halves, grid 28 x 14): random weights saved
    by transformers' save_pretrained, for the tests that run many frames (app, any-frame prompts,
    dataset layouts)."""
    from tests._reference import make_hf_model

    folder = tmp_path_factory.mktemp("small_hf")
    make_hf_model(CONFIGS / "seggpt-tiny.json", seed=0, image_size=[448, 224]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def clipseg_dir(tmp_path_factory) -> Path:
    """A tiny random CLIPSeg and its processor (small CLIP vocabulary), saved by save_pretrained."""
    from tests._proposal_models import make_clipseg

    return make_clipseg(tmp_path_factory.mktemp("clipseg"))


@pytest.fixture(scope="session")
def segformer_dir(tmp_path_factory) -> Path:
    """A tiny random SegFormer (21 ADE20K labels) and its image processor, saved by save_pretrained."""
    from tests._proposal_models import make_segformer

    return make_segformer(tmp_path_factory.mktemp("segformer"))
