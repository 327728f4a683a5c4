"""The inputs and outputs of :class:`seggpt_model.image_processor.SegGptImageProcessor`:
``BatchFeature`` and the conversions of the many image forms the documented processor API accepts
(PIL images, numpy arrays and tensors in ``HWC`` or ``CHW``, nested lists) to numpy, with Pillow's
resampling as ``transformers``' processor does it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import processing as P

_RESAMPLE_NAMES = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
class BatchFeature(dict):
    """Output of :meth:`SegGptImageProcessor.preprocess`: a ``dict`` of model inputs with attribute
    access, so ``model(**inputs)`` and ``inputs.pixel_values`` both work.

    Keys: ``pixel_values`` (query images), ``prompt_pixel_values`` (prompt images), ``prompt_masks``
    (prompt masks as normalised RGB), each present when the matching input was given. Values with
    ``return_tensors="pt"``: ``torch.Tensor`` ``(B, 3, H, W)`` float32 (normalised; ``(B, H, W, 3)``
    with ``data_format="channels_last"``); ``"np"``: the same as ``np.ndarray``; None: a list of B
    per-image ``(3, H, W)`` arrays.
    """

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchFeature has no key {name!r} (keys: {sorted(self)})") from None

    @property
    def data(self) -> dict:
        """The entries as a plain ``dict``."""
        return dict(self)

    def to(self, *args, **kwargs) -> BatchFeature:
        """Move the tensors like ``Tensor.to``: a device applies to every tensor, a dtype only to
        floating-point tensors. Non-tensor values are kept. Returns a new :class:`BatchFeature`."""
        dtype = kwargs.pop("dtype", None)
        device = kwargs.pop("device", None)
        for a in args:
            if isinstance(a, torch.dtype):
                dtype = a
            else:
                device = a
        out = BatchFeature()
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                cast = dtype if dtype is not None and value.is_floating_point() else None
                value = value.to(device=device, dtype=cast, **kwargs)
            out[key] = value
        return out


def _size_dict(size: Any) -> dict[str, int]:
    """``int`` (square), ``(height, width)`` or ``{"height", "width"}`` -> ``{"height", "width"}``."""
    if isinstance(size, Mapping):
        if set(size) >= {"height", "width"}:
            return {"height": int(size["height"]), "width": int(size["width"])}
        raise ValueError(f"size must have 'height' and 'width' keys, got {dict(size)}")
    if isinstance(size, int):
        return {"height": size, "width": size}
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    raise ValueError(f"size must be an int, (height, width) or {{'height', 'width'}}, got {size!r}")


def _resample(value: Any) -> int:
    """A PIL resampling filter (enum, int 0..5 or name such as ``"bicubic"``) -> its int."""
    if isinstance(value, str):
        if value.lower() not in _RESAMPLE_NAMES:
            raise ValueError(f"unknown resample {value!r} (known: {sorted(_RESAMPLE_NAMES)})")
        return _RESAMPLE_NAMES[value.lower()]
    try:
        code = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"resample must be a PIL resampling filter, got {value!r}") from None
    if code not in _RESAMPLE_NAMES.values():
        raise ValueError(f"resample must be a PIL resampling filter (0..5), got {value!r}")
    return code


def _channel_format(value: Any) -> str | None:
    """``"channels_first"`` / ``"channels_last"`` (strings or ChannelDimension-like enums) or None."""
    if value is None:
        return None
    value = getattr(value, "value", value)
    aliases = {"channels_first": "channels_first", "first": "channels_first",
               "channels_last": "channels_last", "last": "channels_last"}
    if not isinstance(value, str) or value.lower() not in aliases:
        raise ValueError(f"data format must be 'channels_first' or 'channels_last', got {value!r}")
    return aliases[value.lower()]


def _tensor_kind(value: Any) -> str | None:
    if value is None:
        return None
    value = getattr(value, "value", value)
    if value not in ("pt", "np"):
        raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {value!r}")
    return value


def _is_image(x: Any) -> bool:
    return isinstance(x, (Image.Image, np.ndarray, torch.Tensor))


def _flatten(x: Any, expected_ndims: int, what: str) -> list:
    """A single image, a batch array, or (nested) lists of them -> a flat list of single images.

    Rules of the reference (``make_flat_list_of_images``): a PIL image or an array with
    ``expected_ndims`` dimensions is one item, one more dimension is a batch; lists (of lists) are
    flattened. Images (``expected_ndims=3``) also accept 2-D arrays as one grayscale image.
    """
    def items(obj: Any) -> list:
        if isinstance(obj, Image.Image):
            return [obj]
        ndim = obj.ndim
        if ndim == expected_ndims or (expected_ndims == 3 and ndim == 2):
            return [obj]
        if ndim == expected_ndims + 1:
            return list(obj)
        raise ValueError(f"{what}: an array of shape {tuple(obj.shape)} is neither one "
                         f"{expected_ndims}-D {'map' if expected_ndims == 2 else 'image'} nor a batch of them")

    if _is_image(x):
        return items(x)
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError(f"{what}: empty list")
        out: list = []
        for element in x:
            if isinstance(element, (list, tuple)):
                out.extend(_flatten(element, expected_ndims, what))
            elif _is_image(element):
                out.extend(items(element))
            else:
                raise ValueError(f"{what}: expected PIL images, numpy arrays or torch tensors, got "
                                 f"a list holding {type(element).__name__}")
        return out
    raise ValueError(f"{what}: expected a PIL image, numpy array or torch tensor (or a list of them), "
                     f"got {type(x).__name__}")


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    return arr.astype(np.uint8) if arr.dtype == np.bool_ else arr


def _to_chw(image: Any, input_data_format: str | None, what: str) -> np.ndarray:
    """One image -> ``(C, H, W)`` numpy, channels inferred as the reference does (a leading axis of
    1, 3 or 4 is channels-first, else a trailing one is channels-last)."""
    if isinstance(image, Image.Image):
        arr = _to_numpy(np.array(image))
        return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    arr = _to_numpy(image)
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{what}: expected a (C, H, W) or (H, W, C) image, got shape {arr.shape}")
    fmt = input_data_format
    if fmt is None:
        if arr.shape[0] in (1, 3, 4):
            fmt = "channels_first"
        elif arr.shape[-1] in (1, 3, 4):
            fmt = "channels_last"
        else:
            raise ValueError(f"{what}: cannot tell the channel axis of shape {arr.shape}; pass "
                             f"input_data_format")
    return arr if fmt == "channels_first" else np.moveaxis(arr, -1, 0)


def _to_rgb(image: Any, input_data_format: str | None, what: str) -> np.ndarray:
    """One image -> ``(3, H, W)``: PIL ``convert("RGB")``, gray arrays repeated, alpha dropped."""
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.moveaxis(np.array(image), -1, 0)
    arr = _to_chw(image, input_data_format, what)
    if arr.shape[0] == 1:
        return np.repeat(arr, 3, axis=0)
    if arr.shape[0] == 4:
        return arr[:3]
    return arr


def _pil_resize(arr: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """Resize a ``(C, H, W)`` array with Pillow the way ``transformers``' PIL backend does.

    Non-uint8 input is made uint8 first: integral values in 0..255 are cast; floats in [0, 1] are
    scaled by 255 (float64, stored float32) and truncated, and the result is scaled back by 1/255.

    Raises:
        ValueError: values that fit neither rule, or a channel count Pillow cannot hold (not 1, 3, 4).
    """
    rescaled = False
    if arr.dtype != np.uint8:
        if np.allclose(arr, arr.astype(int)):
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                raise ValueError(f"cannot resize an image with values in [{arr.min()}, {arr.max()}]: "
                                 f"integer values must lie in 0..255")
        elif arr.size and arr.min() >= 0 and arr.max() <= 1:
            rescaled = True
            arr = (arr.astype(np.float64) * 255).astype(np.float32)
        else:
            raise ValueError(f"cannot resize an image with values in [{arr.min()}, {arr.max()}]: "
                             f"floats must lie in [0, 1] or be whole numbers in 0..255")
        arr = arr.astype(np.uint8)
    channels = arr.shape[0]
    if channels == 1:
        pil = Image.fromarray(np.ascontiguousarray(arr[0]))
    elif channels in (3, 4):
        pil = Image.fromarray(np.ascontiguousarray(np.moveaxis(arr, 0, -1)))
    else:
        raise ValueError(f"cannot resize an image with {channels} channels (1, 3 or 4 expected)")
    out = np.array(pil.resize((width, height), resample=resample))
    out = out[None] if out.ndim == 2 else np.moveaxis(out, -1, 0)
    if rescaled:
        out = (out.astype(np.float64) * (1 / 255)).astype(np.float32)
    return out


def _nearest_colour(rgb: torch.Tensor, palette: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """``(1, 3, H, W)`` float RGB -> ``(1, H, W)`` int64 index of the nearest palette colour (first on
    ties, as ``argmin``), in palette chunks so that 100+ labels at full resolution stay small."""
    best_d = best_i = None
    for start in range(0, palette.shape[0], chunk):
        d = P.palette_distances(rgb, palette[start:start + chunk])          # (1, k, H, W)
        d_min, i_min = d.min(dim=1)
        i_min = i_min + start
        if best_d is None:
            best_d, best_i = d_min, i_min
        else:
            better = d_min < best_d
            best_d = torch.where(better, d_min, best_d)
            best_i = torch.where(better, i_min, best_i)
    return best_i


def _map_array(mask: Any) -> np.ndarray:
    """A segmentation map (PIL ``L``/``P``/``I``/``1``... image, array or tensor) -> its ids array."""
    if isinstance(mask, Image.Image):
        if mask.mode in ("LA", "PA"):
            mask = mask.getchannel(0)
        return _to_numpy(np.array(mask))
    return _to_numpy(mask)


def _collect(arrays: list[np.ndarray], kind: str | None, key: str):
    if kind is None:
        return arrays
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"{key}: images of different shapes {sorted(shapes)} cannot be stacked into "
                         f"one tensor (use do_resize=True or return_tensors=None)")
    stacked = np.stack(arrays)
    return torch.from_numpy(np.ascontiguousarray(stacked)) if kind == "pt" else stacked


