"""The loader: hub layout, single safetensors, Painter .pth, strictness and clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from seggpt_model import CheckpointError, SegGptConfig, SegGptForImageSegmentation, from_pretrained
from seggpt_model.weights import convert_painter_state_dict, save_pretrained, to_painter_state_dict

TINY = dict(hidden_size=32, num_hidden_layers=6, num_attention_heads=4, mlp_dim=64, decoder_hidden_size=8,
            merge_index=2, intermediate_hidden_state_indices=[2, 3, 4, 5])


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return SegGptForImageSegmentation(SegGptConfig(**TINY)).eval()


def test_hub_folder_from_transformers(tiny_hf_dir):
    from transformers import SegGptForImageSegmentation as HfModel

    ours = from_pretrained(tiny_hf_dir)
    hf = HfModel.from_pretrained(tiny_hf_dir)
    assert not ours.training
    hf_state = hf.state_dict()
    for k, v in ours.state_dict().items():
        assert torch.equal(v, hf_state[k]), k


@pytest.mark.slow  # saves and reloads through transformers
def test_save_pretrained_round_trip_and_transformers_reads_it(tmp_path, tiny_model):
    from transformers import SegGptForImageSegmentation as HfModel

    save_pretrained(tiny_model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "seggpt"
    assert _same_weights(from_pretrained(tmp_path), tiny_model)
    hf = HfModel.from_pretrained(tmp_path)
    x = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        assert (hf(x, x, x).pred_masks - tiny_model(x, x, x).pred_masks).abs().max() <= 1e-4


def test_single_safetensors_file(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "hub")
    lone = tmp_path / "lone" / "weights.safetensors"
    lone.parent.mkdir()
    shutil.copy(tmp_path / "hub" / "model.safetensors", lone)
    # no config.json beside it: the default ViT-L config does not fit, and the error says why
    with pytest.raises(CheckpointError, match="missing keys|mis-shaped keys"):
        from_pretrained(lone)
    assert _same_weights(from_pretrained(lone, config=SegGptConfig(**TINY)), tiny_model)
    # a config.json beside the file is used
    shutil.copy(tmp_path / "hub" / "config.json", lone.parent / "config.json")
    assert _same_weights(from_pretrained(lone), tiny_model)


def test_painter_pth_round_trip(tmp_path, tiny_model):
    hub_state = tiny_model.state_dict()
    painter_state = to_painter_state_dict(hub_state)
    assert "blocks.0.attn.qkv.weight" in painter_state and "segment_token_x" in painter_state
    assert "decoder_pred.0.weight" in painter_state and "mlp.fc1.weight" in "".join(painter_state)
    assert not any(k.startswith(("model.", "decoder.decoder")) for k in painter_state)
    assert convert_painter_state_dict(painter_state).keys() == hub_state.keys()
    torch.save({"model": painter_state, "epoch": 0}, tmp_path / "seggpt_vit_large.pth")
    loaded = from_pretrained(tmp_path / "seggpt_vit_large.pth", config=SegGptConfig(**TINY))
    assert _same_weights(loaded, tiny_model)
    # DistributedDataParallel prefix is accepted
    torch.save({"model": {f"module.{k}": v for k, v in painter_state.items()}}, tmp_path / "ddp.pth")
    assert _same_weights(from_pretrained(tmp_path / "ddp.pth", config=SegGptConfig(**TINY)), tiny_model)


def test_device_and_dtype(tiny_hf_dir):
    model = from_pretrained(tiny_hf_dir, device="cpu", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.device == torch.device("cpu")


def test_truncated_file(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors.*truncated or corrupt") as info:
        from_pretrained(tmp_path)
    assert "\n" not in str(info.value)


def test_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "notes.safetensors"
    bogus.write_text("hello, this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="notes.safetensors"):
        from_pretrained(bogus)
    pth = tmp_path / "notes.pth"
    pth.write_text("not a pickle")
    with pytest.raises(CheckpointError, match="notes.pth"):
        from_pretrained(pth)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="state dict"):
        from_pretrained(tmp_path / "list.pth")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        from_pretrained(tmp_path / "emptydir")


def test_wrong_keys_and_shapes_are_listed(tmp_path, tiny_model):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    state["model.encoder.layers.0.attention.qkv.weight"] = torch.zeros(7, 7)
    state["extra.weight"] = torch.zeros(1)
    del state["decoder.decoder_embed.bias"]
    tiny_model.save_pretrained(tmp_path)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        from_pretrained(tmp_path)
    msg = str(info.value)
    assert "1 missing keys: decoder.decoder_embed.bias" in msg
    assert "1 unexpected keys: extra.weight" in msg
    assert "model.encoder.layers.0.attention.qkv.weight: checkpoint (7, 7) vs model (96, 32)" in msg


def test_missing_path_and_offline_hub(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="checkpoint not found: ./nope.pth"):
        from_pretrained("./nope.pth")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="pass a local path") as info:
        from_pretrained("BAAI/seggpt-vit-large", cache_dir=str(tmp_path / "empty-cache"))
    assert "\n" not in str(info.value)


def test_bad_config_json(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 30, "num_attention_heads": 4}))
    with pytest.raises(CheckpointError, match="divisible"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        from_pretrained(tmp_path)


def test_builder_picks_the_model_class_by_architecture_name(tiny_hf_dir):
    from seggpt_model import SegGptModel

    full = from_pretrained(tiny_hf_dir)
    bare = from_pretrained(tiny_hf_dir, model_class="SegGptModel")
    assert type(full) is SegGptForImageSegmentation and type(bare) is SegGptModel
    assert _same_weights(bare, full.model)
    with pytest.raises(ValueError, match="unknown SegGPT architecture 'SegGptForVideo'"):
        from_pretrained(tiny_hf_dir, model_class="SegGptForVideo")
