"""The one weight loader of :mod:`seggpt_model` and the hub-layout writer: checkpoint I/O and key
conversion against a model (or model class) it is handed. It imports no model class;
:mod:`seggpt_model.build` (``seggpt_model.from_pretrained``) and the ``from_pretrained`` /
``save_pretrained`` methods of the model classes sit on top of it.

Checkpoints (:func:`resolve_checkpoint`, :func:`load_pretrained`):

* a hub repo id (default :data:`~seggpt_model.config.DEFAULT_CHECKPOINT`), downloaded and cached
  by ``huggingface_hub``;
* a local folder in hub layout (``config.json`` + ``model.safetensors``, as ``save_pretrained`` of
  this package or of ``transformers`` writes it);
* a single ``.safetensors`` file (config from a ``config.json`` beside it, else the default);
* an original Painter checkpoint (``seggpt_vit_large.pth``, weights under key ``"model"``), read
  with ``torch.load(weights_only=True)`` and renamed by :func:`convert_painter_state_dict`.

Loading is strict: missing, unexpected or mis-shaped keys raise :class:`CheckpointError` listing
them. This is the only module of the package that touches files or the network.

Two kinds of model load from these checkpoints, told apart by the model's own parameter names:
a full ``SegGptForImageSegmentation`` (keys ``model.*`` and ``decoder.*``) and a bare
``SegGptModel`` (keys without the ``model.`` prefix). A bare model loads from a full checkpoint
(``model.`` is stripped, ``decoder.*`` ignored, everything else checked strictly); a full model
cannot load from a bare checkpoint (no decoder weights): that is a :class:`CheckpointError` saying so.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn

from .config import DEFAULT_CHECKPOINT, SegGptConfig
from .errors import CheckpointError, one_line
from .files import atomic_write

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# Painter (original) name -> hub name; per-block names use the "blocks.{i}." / "layers.{i}." prefix.
_PAINTER_TOP = {
    "patch_embed.proj.weight": "model.embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "model.embeddings.patch_embeddings.projection.bias",
    "mask_token": "model.embeddings.mask_token",
    "segment_token_x": "model.embeddings.segment_token_input",
    "segment_token_y": "model.embeddings.segment_token_prompt",
    "type_token_cls": "model.embeddings.type_token_semantic",
    "type_token_ins": "model.embeddings.type_token_instance",
    "pos_embed": "model.embeddings.position_embeddings",
    "norm.weight": "model.encoder.layernorm.weight",
    "norm.bias": "model.encoder.layernorm.bias",
    "decoder_embed.weight": "decoder.decoder_embed.weight",
    "decoder_embed.bias": "decoder.decoder_embed.bias",
    "decoder_pred.0.weight": "decoder.decoder_pred.conv.weight",
    "decoder_pred.0.bias": "decoder.decoder_pred.conv.bias",
    "decoder_pred.1.weight": "decoder.decoder_pred.layernorm.weight",
    "decoder_pred.1.bias": "decoder.decoder_pred.layernorm.bias",
    "decoder_pred.3.weight": "decoder.decoder_pred.head.weight",
    "decoder_pred.3.bias": "decoder.decoder_pred.head.bias",
}
_PAINTER_BLOCK = {
    "attn.qkv.weight": "attention.qkv.weight",
    "attn.qkv.bias": "attention.qkv.bias",
    "attn.proj.weight": "attention.proj.weight",
    "attn.proj.bias": "attention.proj.bias",
    "attn.rel_pos_h": "attention.rel_pos_h",
    "attn.rel_pos_w": "attention.rel_pos_w",
    "mlp.fc1.weight": "mlp.lin1.weight",
    "mlp.fc1.bias": "mlp.lin1.bias",
    "mlp.fc2.weight": "mlp.lin2.weight",
    "mlp.fc2.bias": "mlp.lin2.bias",
    "norm1.weight": "layernorm_before.weight",
    "norm1.bias": "layernorm_before.bias",
    "norm2.weight": "layernorm_after.weight",
    "norm2.bias": "layernorm_after.bias",
}
_HUB_TOP = {v: k for k, v in _PAINTER_TOP.items()}
_HUB_BLOCK = {v: k for k, v in _PAINTER_BLOCK.items()}
_PAINTER_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
_HUB_BLOCK_RE = re.compile(r"^model\.encoder\.layers\.(\d+)\.(.+)$")


def convert_painter_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original Painter SegGPT state dict to hub names (pure; tensors are not copied).

    A leading ``module.`` (DistributedDataParallel) is dropped. Keys with no known mapping are kept
    unchanged so that strict loading reports them as unexpected.

    Args:
        state_dict: ``{painter_name: tensor}``, e.g. ``blocks.0.attn.qkv.weight``.

    Returns:
        ``{hub_name: tensor}``, e.g. ``model.encoder.layers.0.attention.qkv.weight``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name in _PAINTER_TOP:
            name = _PAINTER_TOP[name]
        elif (m := _PAINTER_BLOCK_RE.match(name)) and m.group(2) in _PAINTER_BLOCK:
            name = f"model.encoder.layers.{m.group(1)}.{_PAINTER_BLOCK[m.group(2)]}"
        out[name] = value
    return out


def to_painter_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`convert_painter_state_dict`: hub names to Painter names (pure)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = key
        if key in _HUB_TOP:
            name = _HUB_TOP[key]
        elif (m := _HUB_BLOCK_RE.match(key)) and m.group(2) in _HUB_BLOCK:
            name = f"blocks.{m.group(1)}.{_HUB_BLOCK[m.group(2)]}"
        out[name] = value
    return out


def _check_state_dict(expected: Mapping[str, tuple[int, ...]], state_dict: Mapping[str, torch.Tensor],
                      source: str) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and mis-shaped keys of
    ``state_dict`` against the model's ``{name: shape}``."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {expected[k]}"
                        for k in set(expected) & set(state_dict)
                        if tuple(state_dict[k].shape) != expected[k])
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("mis-shaped keys", mismatched)):
        if items:
            shown = ", ".join(items[:20]) + (f", ... ({len(items) - 20} more)" if len(items) > 20 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise CheckpointError(f"{source} does not fit the SegGPT config: " + "; ".join(problems))


_BARE_PREFIXES = ("embeddings.", "encoder.")
_FULL_PREFIXES = ("model.", "decoder.")


def is_bare(names) -> bool:
    """Whether parameter ``names`` (of a model or a checkpoint) are those of a bare ``SegGptModel``
    (no ``model.`` / ``decoder.`` prefix) rather than of a full ``SegGptForImageSegmentation``."""
    return not any(k.startswith(_FULL_PREFIXES) for k in names)


def _fit_state_dict(state_dict: dict[str, torch.Tensor], bare_model: bool, source: str
                    ) -> dict[str, torch.Tensor]:
    """Adapt hub-named keys to the model: full checkpoint -> bare model, or reject bare -> full.

    Raises:
        CheckpointError: a bare ``SegGptModel`` checkpoint loaded into ``SegGptForImageSegmentation``.
    """
    full = not is_bare(state_dict)
    if bare_model:
        if not full:
            return state_dict
        # strip the "model." prefix, drop the decoder; any other key stays (and is unexpected)
        return {k[len("model."):] if k.startswith("model.") else k: v
                for k, v in state_dict.items() if not k.startswith("decoder.")}
    if not full and state_dict and all(k.startswith(_BARE_PREFIXES) for k in state_dict):
        raise CheckpointError(
            f"{source} is a bare SegGptModel checkpoint (encoder only, no decoder weights): load it "
            f"with SegGptModel.from_pretrained, or use a SegGptForImageSegmentation checkpoint")
    return state_dict


def read_json_object(path: Path, what: str) -> dict:
    """A JSON file holding an object (``what`` names it in errors).

    Raises:
        CheckpointError: unreadable file, invalid JSON, or not an object.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable {what} ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {what} must hold a JSON object")
    return data


def _read_config(path: Path) -> SegGptConfig:
    data = read_json_object(path, "config.json")
    try:
        return SegGptConfig.from_dict(data, source=str(path))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid SegGPT config: {exc}") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors checkpoint (truncated or corrupt?): "
                              f"{one_line(exc)}") from None


def _read_painter(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError...)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: {one_line(exc)}") from None
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a Painter checkpoint with a state dict under 'model'")
    return convert_painter_state_dict(obj)


#: Seconds the one reachability check of the hub waits (:func:`_hub_reachable`).
HUB_PROBE_TIMEOUT = 4.0


def _hub_reachable(repo_id: str, revision: str | None, timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether the Hugging Face hub answers one request for ``repo_id``'s ``config.json``.

    One ``HEAD`` request (``huggingface_hub.get_hf_file_metadata``: no retries, the endpoint,
    proxies and token of ``huggingface_hub``) with a ``timeout`` of a few seconds. Any HTTP answer
    (even 404 or 5xx) counts as reachable: ``hf_hub_download`` then reports it. No answer
    (connection refused, DNS failure, timeout) means unreachable: ``hf_hub_download`` would retry
    for about 25 s (1+2+4+8+8 s of back-off) before giving up, so the caller reads the cache only.
    """
    # huggingface_hub is imported only when a hub id is resolved, as in _download
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError  # (same reason)

    try:
        get_hf_file_metadata(hf_hub_url(repo_id, CONFIG_NAME, revision=revision), timeout=timeout)
    except (HfHubHTTPError, ValueError):  # the hub answered, or a bad repo id: the download says so
        return True
    except Exception:  # network errors are requests' or httpx's types depending on the version
        return False
    return True


def _download(repo_id: str, revision: str | None, cache_dir: str | None,
              local_files_only: bool) -> tuple[Path, Path]:
    # lazy: importing huggingface_hub costs about 0.45 s, paid only when a checkpoint is fetched
    # from the hub (local folders and files never need it)
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled  # lazy, as above

    # huggingface_hub logs every network retry as a warning; the outcome is reported below as one line
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        if not (local_files_only or constants.HF_HUB_OFFLINE) and not _hub_reachable(repo_id, revision):
            local_files_only = True       # unreachable: the cached copy or the one-line error, at once
        config_path = hf_hub_download(repo_id, CONFIG_NAME, revision=revision, cache_dir=cache_dir,
                                      local_files_only=local_files_only)
        weights_path = hf_hub_download(repo_id, WEIGHTS_NAME, revision=revision, cache_dir=cache_dir,
                                       local_files_only=local_files_only)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as exc:
        raise CheckpointError(
            f"checkpoint '{repo_id}' is not in the local Hugging Face cache and cannot be downloaded "
            f"(offline?): pass a local path (hub-layout folder, .safetensors or Painter .pth)") from exc
    except HfHubHTTPError as exc:
        raise CheckpointError(f"checkpoint '{repo_id}' could not be downloaded from the Hugging Face "
                              f"hub: {one_line(exc)}") from exc
    except ValueError as exc:  # invalid repo id
        raise CheckpointError(f"'{repo_id}' is neither an existing path nor a valid hub repo id") from exc
    finally:
        hub_logger.setLevel(level)
    return Path(config_path), Path(weights_path)


def resolve_checkpoint(name_or_path: str | os.PathLike, *, revision: str | None = None,
                       cache_dir: str | None = None, local_files_only: bool = False
                       ) -> tuple[SegGptConfig | None, dict[str, torch.Tensor], str]:
    """Read a checkpoint (any accepted form) into ``(config or None, hub-named state dict, source)``.

    Raises:
        CheckpointError: missing path, unreadable or corrupt file, invalid config, offline hub.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
        if not weights_path.is_file():
            raise CheckpointError(f"{path}: no {WEIGHTS_NAME} in this folder (hub layout expected)")
        config = _read_config(config_path) if config_path.is_file() else None
        return config, _read_safetensors(weights_path), str(weights_path)
    if path.is_file():
        if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
            beside = path.with_name(CONFIG_NAME)
            config = _read_config(beside) if beside.is_file() else None
            return config, _read_painter(path), str(path)
        beside = path.with_name(CONFIG_NAME)
        config = _read_config(beside) if beside.is_file() else None
        return config, _read_safetensors(path), str(path)
    # A hub repo id is "owner/name"; anything else that does not exist is a missing local path.
    looks_like_path = (text.startswith((".", "/", "~")) or text.count("/") != 1
                       or path.suffix in (".safetensors", ".pth", ".pt", ".bin", ".ckpt"))
    if looks_like_path:
        raise CheckpointError(f"checkpoint not found: {text}")
    config_path, weights_path = _download(text, revision, cache_dir, local_files_only)
    return _read_config(config_path), _read_safetensors(weights_path), f"{text} ({weights_path})"


def load_state_dict_into(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, *,
                        device: str | torch.device | None = None, dtype: torch.dtype | None = None
                        ) -> nn.Module:
    """Assign a hub-named checkpoint strictly to ``model`` (typically built on the ``meta`` device).

    Keys are fitted to the model first (a bare model takes a full checkpoint's ``model.*`` keys and
    ignores ``decoder.*``), then checked: every key present, none unexpected, every shape equal.
    The checkpoint's tensors become the parameters (``load_state_dict(assign=True)``), cast to
    ``dtype`` and moved to ``device`` when given.

    Args:
        model: a ``SegGptForImageSegmentation`` or ``SegGptModel`` (told apart by its keys).
        state_dict: ``{hub_name: tensor}``, as :func:`resolve_checkpoint` returns it.
        source: the checkpoint's name for error messages.
        device, dtype: where and in which dtype the parameters end up (default: as stored).

    Returns:
        ``model``, with the checkpoint's weights.

    Raises:
        CheckpointError: a bare checkpoint for a full model, or keys that are missing, unexpected
            or mis-shaped (all listed).
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state_dict = _fit_state_dict(state_dict, is_bare(expected), source)
    _check_state_dict(expected, state_dict, source)
    if dtype is not None:
        state_dict = {k: v.to(dtype) for k, v in state_dict.items()}
    if device is not None:
        state_dict = {k: v.to(device) for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model


def load_pretrained(model_class: Callable[[SegGptConfig], nn.Module],
                    name_or_path: str | os.PathLike = DEFAULT_CHECKPOINT,
                    device: str | torch.device | None = None, dtype: torch.dtype | None = None, *,
                    config: SegGptConfig | None = None, revision: str | None = None,
                    cache_dir: str | None = None, local_files_only: bool = False) -> nn.Module:
    """Load a SegGPT model of ``model_class`` strictly, in eval mode.

    The model is built on the ``meta`` device (no allocation, no random init) from ``config``, else
    the checkpoint's ``config.json``, else the default :class:`SegGptConfig`, and the checkpoint's
    tensors are assigned to it (:func:`load_state_dict_into`).

    Args:
        model_class: the class (any callable ``config -> nn.Module``): ``SegGptForImageSegmentation``
            or the bare ``SegGptModel``, which reads bare checkpoints and full ones (whose
            ``decoder.*`` keys it ignores).
        name_or_path: hub repo id, hub-layout folder, ``.safetensors`` file or Painter ``.pth``.
        device: where to put the weights (default CPU). The caller chooses.
        dtype: parameter dtype (default: as stored, float32 for the public checkpoint).
        config: overrides the checkpoint's ``config.json`` (required for a bare file of a
            non-default architecture).
        revision, cache_dir, local_files_only: passed to ``huggingface_hub`` for repo ids.

    Returns:
        ``model_class`` instance on ``device`` in ``dtype``, ``eval()`` mode.

    Raises:
        CheckpointError: not found, offline without cache, unreadable/corrupt file, a bare
            checkpoint given for the full model, or keys that are missing, unexpected or mis-shaped
            (all listed).
    """
    file_config, state_dict, source = resolve_checkpoint(
        name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    config = config or file_config or SegGptConfig()
    with torch.device("meta"):  # no allocation or random init: the checkpoint's tensors are assigned
        model = model_class(config)
    return load_state_dict_into(model, state_dict, source, device=device, dtype=dtype).eval()


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (hub layout) of a SegGPT model into ``save_directory``.

    Each file is written atomically (:func:`seggpt_model.files.atomic_write`), so an interrupted save
    leaves no file that looks complete. The result loads with :func:`load_pretrained` and with
    ``transformers``' ``SegGptForImageSegmentation.from_pretrained`` (or, for a bare
    ``SegGptModel``, whose keys have no ``model.`` prefix and whose ``architectures`` is
    ``["SegGptModel"]``, with ``SegGptModel.from_pretrained`` of either package).

    Args:
        model: a ``SegGptForImageSegmentation`` or ``SegGptModel`` (anything with ``config`` and
            hub-named ``state_dict()``).
        save_directory: the folder, created as needed.

    Returns:
        The folder path.

    Raises:
        OSError: the folder cannot be written.
    """
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    if is_bare(tensors):
        config["architectures"] = ["SegGptModel"]
    atomic_write(folder / WEIGHTS_NAME, save_safetensors(tensors, metadata={"format": "pt"}))
    atomic_write(folder / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder
