"""The documented SegGPT processor API: :class:`SegGptImageProcessor` and :class:`BatchFeature`.

This is the object the SegGPT documentation's examples use (``processor(images=...,
prompt_images=..., prompt_masks=..., return_tensors="pt")``, then ``model(**inputs)`` and
``processor.post_process_semantic_segmentation(outputs, ...)``), built on
:mod:`seggpt_model.processing` (palette, label painting, palette distances). It works on the CPU,
one image at a time, like the reference; the batched tensor functions of
:mod:`seggpt_model.processing` are the fast path for pipelines (GPU, video).

Equivalence with ``transformers``' ``SegGptImageProcessor`` (its PIL backend,
``SegGptImageProcessorPil``, used when torchvision is absent):

* Resizing goes through Pillow exactly as the reference does (images ``BICUBIC``, masks
  ``NEAREST``; non-uint8 arrays are converted to uint8 first by the same rule: integral values in
  0..255 cast, floats in [0, 1] scaled by 255 and truncated, then scaled back), followed by rescale
  (``x * rescale_factor`` in float64, stored as float32) and normalisation (``(x - mean) / std`` in
  float32). For RGB images and for masks the outputs are therefore bit-identical to the reference.
  (:func:`seggpt_model.processing.preprocess_images`, the batched torch path, is within two uint8
  levels of Pillow's fixed-point bicubic.)
* Segmentation maps (``do_convert_rgb=True``, the default) are painted with SegGPT's palette when
  ``num_labels`` is given (class 0 background black, class ``k`` the ``k``-th palette colour, see
  :func:`seggpt_model.processing.build_palette`), else repeated over three channels, before the
  nearest resize; ``do_convert_rgb=False`` takes masks that are already RGB.
* ``post_process_semantic_segmentation`` takes the bottom (query) half of ``pred_masks``,
  denormalises with the processor's mean/std, clips to [0, 255], resizes nearest to the target size
  and returns the nearest palette colour's class (``num_labels`` given) or the truncated mean
  intensity (int32, as the reference) per pixel: identical maps.

Deliberate differences (each for input the reference cannot process meaningfully):

* With ``do_convert_rgb`` images that are not RGB are converted (PIL ``convert("RGB")``; arrays with
  one channel repeated, with four channels the alpha dropped). The reference skips this for images,
  so e.g. a palette-mode PNG query gives it a one-channel array of palette indices.
* With ``do_convert_rgb=True`` a PIL ``RGB``/``RGBA`` mask is taken as an RGB colour mask and used
  as it is (the reference fails on it); arrays of three dimensions are still a batch of maps.
* Class ids outside ``0..num_labels`` raise ``ValueError`` (the reference raises ``IndexError`` or,
  for negative ids, silently picks a colour from the end of the palette).
* ``data_format="channels_last"`` is honoured (the reference's PIL backend ignores it).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import processing as P
from .config import DEFAULT_CHECKPOINT
from .errors import CheckpointError, one_line
from .files import atomic_write
from .processor_io import (BatchFeature, _channel_format, _collect, _flatten, _map_array, _nearest_colour,
                           _pil_resize, _resample, _size_dict, _tensor_kind, _to_chw, _to_numpy, _to_rgb)
from .weights import read_json_object

PROCESSOR_CONFIG_NAME = "preprocessor_config.json"
DEFAULT_SIZE = {"height": 448, "width": 448}

_SETTINGS = ("do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize",
             "image_mean", "image_std", "do_convert_rgb", "num_labels")
# keys transformers writes into preprocessor_config.json for its own bookkeeping
_BOOKKEEPING = {"image_processor_type", "processor_class", "_processor_class", "feature_extractor_type",
                "backend", "image_processor_class"}


# ------------------------------------------------------------------------------------------------
# argument normalisation
# ------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------
# image helpers (one image, channels-first numpy)
# ------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------
# the processor
# ------------------------------------------------------------------------------------------------


class SegGptImageProcessor:
    """Prepares query images, prompt images and prompt masks for SegGPT, and turns its predictions
    into class maps. Drop-in for ``transformers.SegGptImageProcessor`` (see the module doc).

    Args (the documented defaults; every one can be overridden per call of :meth:`preprocess`):
        do_resize: resize to ``size`` (default True).
        size: ``{"height": 448, "width": 448}`` (also an int or ``(height, width)``).
        resample: Pillow filter for images (default ``BICUBIC``); masks always use ``NEAREST``.
        do_rescale: multiply by ``rescale_factor`` (default True, ``1 / 255``).
        do_normalize: ``(x - image_mean) / image_std`` with ImageNet statistics (default True).
        do_convert_rgb: images to RGB; prompt masks are segmentation maps to be painted (default
            True). With False, prompt masks must already be RGB.
        num_labels: classes besides background in segmentation maps; builds the palette. None
            repeats the map over three channels (only sensible for 0/255 masks).

    Raises:
        ValueError: impossible settings (size, resample, mean/std length).
    """

    model_input_names = ("pixel_values", "prompt_pixel_values", "prompt_masks")

    def __init__(self, do_resize: bool = True, size: Any = None,
                 resample: Any = Image.Resampling.BICUBIC, do_rescale: bool = True,
                 rescale_factor: float = 1 / 255, do_normalize: bool = True,
                 image_mean: Any = None, image_std: Any = None, do_convert_rgb: bool = True,
                 num_labels: int | None = None) -> None:
        self.do_resize = bool(do_resize)
        self.size = _size_dict(DEFAULT_SIZE if size is None else size)
        self.resample = _resample(resample)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = [float(v) for v in (P.IMAGENET_MEAN if image_mean is None else image_mean)]
        self.image_std = [float(v) for v in (P.IMAGENET_STD if image_std is None else image_std)]
        if len(self.image_mean) != len(self.image_std):
            raise ValueError(f"image_mean and image_std differ in length: {self.image_mean}, {self.image_std}")
        self.do_convert_rgb = bool(do_convert_rgb)
        self.num_labels = None if num_labels is None else int(num_labels)

    # -- configuration ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The settings as written to ``preprocessor_config.json`` (the hub file's keys)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _SETTINGS}
        data["size"] = dict(self.size)
        data["image_mean"] = list(self.image_mean)
        data["image_std"] = list(self.image_std)
        if data["num_labels"] is None:
            del data["num_labels"]
        data["image_processor_type"] = "SegGptImageProcessor"
        return data

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def __repr__(self) -> str:
        return f"SegGptImageProcessor {self.to_json_string()}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **kwargs: Any) -> SegGptImageProcessor:
        """Build from a ``preprocessor_config.json`` dict; ``kwargs`` override its values.

        Bookkeeping keys (``image_processor_type``...) are ignored; other unknown keys in ``data``
        are ignored with a warning.

        Raises:
            TypeError: an unknown keyword argument.
            ValueError: impossible values.
        """
        bad = sorted(set(kwargs) - set(_SETTINGS))
        if bad:
            raise TypeError(f"unknown SegGptImageProcessor settings {bad} (known: {list(_SETTINGS)})")
        unknown = sorted(set(data) - set(_SETTINGS) - _BOOKKEEPING)
        if unknown:
            warnings.warn(f"ignoring unknown image processor settings {unknown}", stacklevel=2)
        settings = {k: v for k, v in data.items() if k in _SETTINGS}
        settings.update(kwargs)
        return cls(**settings)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_CHECKPOINT, *,
                        revision: str | None = None, cache_dir: str | None = None,
                        local_files_only: bool = False, **kwargs: Any) -> SegGptImageProcessor:
        """Read ``preprocessor_config.json`` from a folder, a JSON file or a hub repo id.

        A folder without the file (e.g. a model saved by ``save_pretrained``) gives the documented
        defaults, which are also the settings of :data:`~seggpt_model.config.DEFAULT_CHECKPOINT`;
        so does a repo id whose file cannot be fetched (offline, not cached), with a warning. ``kwargs`` override settings.

        Raises:
            CheckpointError: a local path that does not exist, or a file that is not a JSON object.
            TypeError / ValueError: as :meth:`from_dict`.
        """
        text = os.fspath(name_or_path)
        path = Path(text).expanduser()
        data: dict[str, Any] = {}
        if path.is_dir():
            if (path / PROCESSOR_CONFIG_NAME).is_file():
                data = _read_json(path / PROCESSOR_CONFIG_NAME)
        elif path.is_file():
            data = _read_json(path)
        elif text.startswith((".", "/", "~")) or text.count("/") != 1 or path.suffix == ".json":
            raise CheckpointError(f"image processor config not found: {text}")
        else:
            data = _download_config(text, revision, cache_dir, local_files_only)
        return cls.from_dict(data, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``preprocessor_config.json`` (atomically) into ``save_directory``; readable by
        :meth:`from_pretrained` and by ``transformers``. Returns the file path."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        return atomic_write(folder / PROCESSOR_CONFIG_NAME, self.to_json_string())

    # -- palette ---------------------------------------------------------------------------------
    @staticmethod
    def get_palette(num_labels: int) -> list[tuple[int, int, int]]:
        """SegGPT's palette as ``num_labels + 1`` RGB tuples, class 0 (background) black; see
        :func:`seggpt_model.processing.build_palette`. Raises ValueError for ``num_labels < 1``."""
        return [tuple(int(c) for c in row) for row in P.build_palette(num_labels).tolist()]

    @staticmethod
    def mask_to_rgb(mask: np.ndarray, palette: Any = None) -> np.ndarray:
        """Paint a segmentation map.

        Args:
            mask: ``(H, W)`` or ``(1, H, W)`` class ids (numpy or tensor).
            palette: ``(K, 3)`` colours (list of tuples or array), e.g. :meth:`get_palette`; None
                repeats the map over three channels.

        Returns:
            ``(3, H, W)``: uint8 palette colours, or the map's own dtype when repeated.

        Raises:
            ValueError: not a 2-D map, non-integer ids with a palette, or an id outside the palette.
        """
        arr = _to_numpy(mask)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2:
            raise ValueError(f"a segmentation map must be (H, W), got shape {arr.shape}")
        if palette is None:
            return np.repeat(arr[None], 3, axis=0)
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"segmentation map ids must be integers to use a palette, got {arr.dtype}")
        pal = torch.as_tensor(np.asarray(palette, dtype=np.uint8))
        try:
            rgb = P.labels_to_rgb(torch.from_numpy(arr.astype(np.int64))[None], pal)[0]
        except ValueError as exc:
            raise ValueError(f"segmentation map: {exc} (class ids must lie in 0..num_labels = "
                             f"0..{pal.shape[0] - 1})") from None
        return rgb.numpy()

    # -- preprocessing ---------------------------------------------------------------------------
    def __call__(self, images: Any = None, prompt_images: Any = None, prompt_masks: Any = None,
                 **kwargs: Any) -> BatchFeature:
        """Same as :meth:`preprocess`."""
        return self.preprocess(images, prompt_images, prompt_masks, **kwargs)

    def preprocess(self, images: Any = None, prompt_images: Any = None, prompt_masks: Any = None, *,
                   segmentation_maps: Any = None, do_resize: bool | None = None, size: Any = None,
                   resample: Any = None, do_rescale: bool | None = None,
                   rescale_factor: float | None = None, do_normalize: bool | None = None,
                   image_mean: Any = None, image_std: Any = None, do_convert_rgb: bool | None = None,
                   num_labels: int | None = None, return_tensors: Any = None,
                   data_format: Any = "channels_first", input_data_format: Any = None) -> BatchFeature:
        """Prepare model inputs. Each of the three inputs is optional (at least one is required).

        Args:
            images: query images: PIL images, numpy arrays or tensors, ``(H, W, C)`` or
                ``(C, H, W)`` (or 2-D grayscale), uint8 in [0, 255] (or float in [0, 255] / [0, 1]);
                one image, a list, or a 4-D batch.
            prompt_images: prompt images, same forms.
            prompt_masks: prompt masks. With ``do_convert_rgb`` (default): segmentation maps
                ``(H, W)`` of class ids (PIL ``L``/``P``/``I`` images, arrays or tensors; 3-D arrays
                are batches of maps), painted with the palette of ``num_labels`` (or repeated over
                three channels without it); PIL ``RGB`` images are used as RGB masks. Without
                ``do_convert_rgb``: RGB masks, same forms as images.
            segmentation_maps: the documented alias of ``prompt_masks`` (give one of the two).
            do_resize, size, resample, do_rescale, rescale_factor, do_normalize, image_mean,
                image_std, do_convert_rgb, num_labels: override the processor's settings.
            return_tensors: ``"pt"`` (torch), ``"np"`` or None (lists of per-image arrays).
            data_format: ``"channels_first"`` (default) or ``"channels_last"`` output layout.
            input_data_format: channel layout of array inputs; None infers it.

        Returns:
            :class:`BatchFeature` with ``pixel_values``, ``prompt_pixel_values`` and ``prompt_masks``
            (for the inputs given): ``(B, 3, 448, 448)`` float32 ImageNet-normalised by default.

        Raises:
            ValueError: no input, both ``prompt_masks`` and ``segmentation_maps``, unsupported input
                types or shapes, values that cannot be resized, class ids outside the palette, masks
                that are not RGB with ``do_convert_rgb=False``, or (with ``return_tensors``) images
                of different sizes.
        """
        if prompt_masks is not None and segmentation_maps is not None:
            raise ValueError("give prompt_masks or its alias segmentation_maps, not both")
        if prompt_masks is None:
            prompt_masks = segmentation_maps
        if images is None and prompt_images is None and prompt_masks is None:
            raise ValueError("at least one of images, prompt_images and prompt_masks must be given")

        def pick(value, default):
            return default if value is None else value

        opts = {
            "do_resize": pick(do_resize, self.do_resize),
            "size": _size_dict(pick(size, self.size)),
            "do_rescale": pick(do_rescale, self.do_rescale),
            "rescale_factor": float(pick(rescale_factor, self.rescale_factor)),
            "do_normalize": pick(do_normalize, self.do_normalize),
            "image_mean": list(pick(image_mean, self.image_mean)),
            "image_std": list(pick(image_std, self.image_std)),
        }
        image_resample = _resample(pick(resample, self.resample))
        convert_rgb = pick(do_convert_rgb, self.do_convert_rgb)
        num_labels = pick(num_labels, self.num_labels)
        kind = _tensor_kind(return_tensors)
        out_format = _channel_format(data_format) or "channels_first"
        in_format = _channel_format(input_data_format)

        data = BatchFeature()
        for key, value in (("pixel_values", images), ("prompt_pixel_values", prompt_images)):
            if value is None:
                continue
            arrays = []
            for image in _flatten(value, 3, key):
                arr = _to_rgb(image, in_format, key) if convert_rgb else _to_chw(image, in_format, key)
                arrays.append(self._transform(arr, image_resample, out_format, **opts))
            data[key] = _collect(arrays, kind, key)
        if prompt_masks is not None:
            arrays = []
            if convert_rgb:
                palette = self.get_palette(num_labels) if num_labels is not None else None
                for mask in _flatten(prompt_masks, 2, "prompt_masks"):
                    if isinstance(mask, Image.Image) and mask.mode in ("RGB", "RGBA"):
                        rgb = np.moveaxis(np.array(mask.convert("RGB")), -1, 0)   # an RGB colour mask
                    else:
                        rgb = self.mask_to_rgb(_map_array(mask), palette)
                    arrays.append(self._transform(rgb, Image.Resampling.NEAREST, out_format, **opts))
            else:
                for mask in _flatten(prompt_masks, 3, "prompt_masks"):
                    arr = _to_chw(mask, in_format, "prompt_masks")
                    if arr.shape[0] != 3:
                        raise ValueError(f"prompt_masks must be RGB (3 channels) with do_convert_rgb=False, "
                                         f"got {arr.shape[0]}; pass segmentation maps with do_convert_rgb=True")
                    arrays.append(self._transform(arr, Image.Resampling.NEAREST, out_format, **opts))
            data["prompt_masks"] = _collect(arrays, kind, "prompt_masks")
        return data

    @staticmethod
    def _transform(arr: np.ndarray, resample: int, out_format: str, *, do_resize: bool,
                   size: dict[str, int], do_rescale: bool, rescale_factor: float,
                   do_normalize: bool, image_mean: list[float], image_std: list[float]) -> np.ndarray:
        """``(C, H, W)`` -> resized, rescaled, normalised array in ``out_format`` (reference order)."""
        if do_resize:
            arr = _pil_resize(arr, size["height"], size["width"], int(resample))
        if do_rescale:
            arr = (arr.astype(np.float64) * rescale_factor).astype(np.float32)
        if do_normalize:
            if not np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(np.float32)
            if len(image_mean) != arr.shape[0] or len(image_std) != arr.shape[0]:
                raise ValueError(f"image_mean/image_std have {len(image_mean)}/{len(image_std)} values "
                                 f"for an image with {arr.shape[0]} channels")
            mean = np.array(image_mean, dtype=arr.dtype)[:, None, None]
            std = np.array(image_std, dtype=arr.dtype)[:, None, None]
            arr = (arr - mean) / std
        return np.moveaxis(arr, 0, -1) if out_format == "channels_last" else arr

    # -- post-processing -------------------------------------------------------------------------
    def post_process_semantic_segmentation(self, outputs: Any, target_sizes: Any = None,
                                           num_labels: int | None = None) -> list[torch.Tensor]:
        """Predicted canvases to per-image class maps (identical to the reference's maps).

        Args:
            outputs: the model output (anything with ``pred_masks``, a mapping with key
                ``"pred_masks"``, or the tensor): ``(B, 3, 2S, S)`` canvases, of which the bottom
                half is used, or ``(B, 3, S, S)`` query predictions (e.g. from ``segment``); any
                float dtype, ImageNet-normalised.
            target_sizes: B pairs ``(height, width)`` (e.g. ``image.size[::-1]`` of each query) for
                a nearest resize; None keeps ``(S, S)``.
            num_labels: classes besides background, as in :meth:`preprocess`. None returns the mean
                RGB intensity instead of classes (meaningful for white-on-black masks).

        Returns:
            list of B ``(H, W)`` tensors on ``pred_masks``' device: int64 class ids in
            ``0..num_labels`` (nearest palette colour), or without ``num_labels`` int32 mean
            intensity in 0..255 (truncated).

        Raises:
            ValueError: ``target_sizes`` of another length than the batch, or a ``pred_masks`` that
                is not ``(B, 3, H, W)``.
        """
        pred = outputs
        if isinstance(outputs, Mapping):
            pred = outputs["pred_masks"]
        elif not isinstance(outputs, torch.Tensor):
            pred = outputs.pred_masks
        if pred.ndim != 4 or pred.shape[1] != len(self.image_mean):
            raise ValueError(f"pred_masks must be (B, {len(self.image_mean)}, H, W), got {tuple(pred.shape)}")
        if target_sizes is not None and len(target_sizes) != pred.shape[0]:
            raise ValueError(f"got {len(target_sizes)} target sizes for a batch of {pred.shape[0]} predictions")
        if pred.shape[2] == 2 * pred.shape[3]:
            pred = pred[:, :, pred.shape[2] // 2:]
        std = torch.tensor(self.image_std, device=pred.device)
        mean = torch.tensor(self.image_mean, device=pred.device)
        rgb = (pred.float().permute(0, 2, 3, 1) * std + mean).permute(0, 3, 1, 2)
        rgb = torch.clip(rgb * 255, 0, 255)
        palette = P.build_palette(num_labels).to(pred.device) if num_labels is not None else None
        results = []
        for i, mask in enumerate(rgb):
            if target_sizes is not None:
                size = tuple(int(v) for v in (target_sizes[i].tolist() if isinstance(target_sizes[i], torch.Tensor)
                                              else target_sizes[i]))
                mask = F.interpolate(mask[None], size=size, mode="nearest")[0]
            if palette is None:
                results.append(mask.mean(dim=0).int())
            else:
                results.append(_nearest_colour(mask[None], palette)[0])
        return results


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, "image processor config")


def _download_config(repo_id: str, revision: str | None, cache_dir: str | None,
                     local_files_only: bool) -> dict[str, Any]:
    """``preprocessor_config.json`` of a hub repo, or ``{}`` (documented defaults) when unavailable."""
    try:
        # lazy: importing huggingface_hub costs about 0.45 s, paid only for a hub repo id
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id, PROCESSOR_CONFIG_NAME, revision=revision, cache_dir=cache_dir,
                               local_files_only=local_files_only)
    except Exception as exc:  # offline, not cached, no such file or repo, no huggingface_hub
        if type(exc).__name__ != "EntryNotFoundError":
            warnings.warn(f"{repo_id}: cannot fetch {PROCESSOR_CONFIG_NAME} ({one_line(exc)}); using the "
                          f"documented SegGPT defaults", stacklevel=3)
        return {}
    return _read_json(Path(path))
