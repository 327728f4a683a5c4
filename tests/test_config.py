"""SegGptConfig: hub field names and defaults, unknown keys, impossible values."""

from __future__ import annotations

import dataclasses
import json

import pytest

from seggpt_model import SegGptConfig
from tests.conftest import CONFIGS


def test_defaults_equal_transformers_and_hub_config():
    from transformers import SegGptConfig as HfConfig

    ours = SegGptConfig()
    hf = HfConfig()
    for f in dataclasses.fields(ours):
        theirs = getattr(hf, f.name)
        theirs = list(theirs) if isinstance(theirs, tuple) else theirs
        assert getattr(ours, f.name) == theirs, f.name
    assert ours.grid_size == (56, 28) and ours.mlp_dim == 4096 and ours.head_dim == 64
    assert SegGptConfig.from_dict(json.loads((CONFIGS / "seggpt-vit-large.json").read_text())) == ours


def test_transformers_written_config_loads_silently(tiny_hf_dir, recwarn):
    data = json.loads((tiny_hf_dir / "config.json").read_text())
    cfg = SegGptConfig.from_dict(data)
    assert cfg.hidden_size == 32 and cfg.intermediate_hidden_state_indices == [2, 3, 4, 5]
    assert not [w for w in recwarn if "unknown config keys" in str(w.message)]


def test_unknown_keys_warn():
    with pytest.warns(UserWarning, match=r"ignoring unknown config keys \['frobnicate'\]"):
        cfg = SegGptConfig.from_dict({"hidden_size": 1024, "frobnicate": 3})
    assert cfg == SegGptConfig()


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden_size=1000), "divisible"),
    (dict(num_hidden_layers=0), "num_hidden_layers"),
    (dict(image_size=[448, 448]), "two square images"),
    (dict(image_size=[900, 450]), "divisible by patch_size"),
    (dict(merge_index=6), "merge_index"),
    (dict(intermediate_hidden_state_indices=[5, 11, 17, 24]), "intermediate_hidden_state_indices"),
    (dict(intermediate_hidden_state_indices=[11, 5, 17, 23]), "increasing"),
    (dict(hidden_act="relu"), "hidden_act"),
    (dict(layer_norm_eps=0.0), "layer_norm_eps"),
    (dict(patch_size=[16, 8]), "square"),
])
def test_impossible_values_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegGptConfig(**kwargs)


def test_other_model_type_is_rejected():
    with pytest.raises(ValueError, match="model_type"):
        SegGptConfig.from_dict({"model_type": "vit"})
