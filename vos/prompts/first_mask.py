"""First masks from words: turn a text, example or class-name prompt into the first-frame mask.

:func:`propose_first_mask` is the one function that turns any of the three prompt kinds of a
:class:`MaskPrompt` into the ``(H, W)`` uint8 label map that ``vos run --first-mask`` consumes
(0 background, objects 1, 2, ...), plus an info dict for a manifest:

* ``texts`` (``--text``): CLIPSeg (:mod:`vos.prompts.clipseg`), one object per text, ids 1, 2, ... in the
  order given; a pixel belongs to text k when k has the highest probability there and it exceeds
  ``threshold`` (default 0.4).
* ``example_image`` + ``example_mask`` (``--example/--example-mask``): CLIPSeg's visual prompt;
  one object (the union of the example mask's objects).
* ``classes`` (``--classes``): SegFormer (:mod:`vos.prompts.segformer`); each class name (from the
  checkpoint's ``id2label``, case-insensitive) is one object, ids in the order given.
* ``instances`` (``--instances``): each object is split into its connected components
  (8-connectivity, :func:`scipy.ndimage.label`); components under 0.1 % of the frame are
  dropped; ids go object by object in prompt order, within an object largest component first.

A :class:`FirstMaskProposer` loads each model once (on first use) and serves any number of
frames, so a batch of videos pays for loading once. Nothing here knows about video: the caller
decodes the frame.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scipy import ndimage

from vos.errors import MaskError, UserError
from vos.labels import MAX_OBJECTS, FirstMask, read_first_mask, read_image
from vos.prompts.clipseg import DEFAULT_THRESHOLD, ClipSeg, labels_from_probabilities
from vos.prompts.segformer import Segformer

#: ``--instances``: components smaller than this fraction of the frame are dropped.
MIN_COMPONENT_FRACTION = 0.001


@dataclass(frozen=True, eq=False)
class MaskPrompt:
    """What to propose a first mask from: exactly one of texts, an example, or class names.

    Attributes:
        texts: CLIPSeg text prompts, one object each.
        example_image, example_mask: a file (or ``(h, w, 3)`` uint8 array) and its mask (a file
            :func:`vos.labels.read_first_mask` reads, or an ``(h, w)`` array, non-zero = object).
        classes: SegFormer class names, one object each.
        instances: split each object into connected components.
        threshold: CLIPSeg probability threshold in ``[0, 1)``; None means 0.4. Not used by
            ``classes`` (giving one there is an error).
        text_model, class_model: CLIPSeg / SegFormer hub id or folder (None: the defaults).
    """

    texts: tuple[str, ...] = ()
    example_image: Any = None
    example_mask: Any = None
    classes: tuple[str, ...] = ()
    instances: bool = False
    threshold: float | None = None
    text_model: str | None = None
    class_model: str | None = None

    @property
    def kind(self) -> str:
        """``"text"``, ``"example"`` or ``"classes"`` (call :meth:`check` first)."""
        return "text" if self.texts else "classes" if self.classes else "example"

    def check(self) -> MaskPrompt:
        """Validate without loading anything heavy; returns ``self``.

        Raises:
            UserError: no prompt or more than one kind, an empty or repeated text or class name,
                more than 254 objects, ``--example`` without ``--example-mask`` (or the reverse),
                a threshold outside ``[0, 1)``, or a threshold with ``classes``.
        """
        has_example = self.example_image is not None or self.example_mask is not None
        given = [name for name, on in (("--text", bool(self.texts)), ("--example", has_example),
                                       ("--classes", bool(self.classes))) if on]
        if len(given) != 1:
            raise UserError("give exactly one of --text, --example/--example-mask or --classes"
                            + (f" (got {' and '.join(given)})" if given else ""))
        if has_example and (self.example_image is None or self.example_mask is None):
            raise UserError("--example and --example-mask go together: give both")
        for option, names in (("--text", self.texts), ("--classes", self.classes)):
            for i, name in enumerate(names):
                if not str(name).strip():
                    raise UserError(f"{option}: empty {'text' if option == '--text' else 'class name'} "
                                    f"(item {i + 1})")
            lowered = [str(n).strip().lower() for n in names]
            twice = sorted({n for n in lowered if lowered.count(n) > 1})
            if twice:
                raise UserError(f"{option}: {twice[0]!r} given twice (one object per item)")
            if len(names) > MAX_OBJECTS:
                raise UserError(f"{option}: {len(names)} objects, more than the {MAX_OBJECTS} that fit "
                                f"in 8-bit ids 1..{MAX_OBJECTS}")
        if self.threshold is not None:
            if self.classes:
                raise UserError("--threshold applies to --text and --example, not to --classes "
                                "(SegFormer's classes are arg-maxed)")
            t = self.threshold
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0.0 <= t < 1.0):
                raise UserError(f"--threshold must be a probability in [0, 1), got {t!r}")
        return self


def prompt_from_args(args) -> MaskPrompt | None:
    """The :class:`MaskPrompt` of parsed ``vos mask``/``vos run`` options, or None when none of
    ``--text``, ``--example``, ``--example-mask``, ``--classes`` was given.

    ``--classes`` values are split at commas (``--classes person,car`` and ``--classes person
    --classes car`` are the same). Not validated: call :meth:`MaskPrompt.check`.
    """
    texts = tuple(getattr(args, "text", None) or ())
    classes = tuple(part.strip() for value in (getattr(args, "classes", None) or ())
                    for part in str(value).split(","))
    example, example_mask = getattr(args, "example", None), getattr(args, "example_mask", None)
    if not texts and not classes and example is None and example_mask is None:
        return None
    return MaskPrompt(texts=texts, example_image=example, example_mask=example_mask, classes=classes,
                      instances=bool(getattr(args, "instances", False)),
                      threshold=getattr(args, "threshold", None),
                      text_model=getattr(args, "text_model", None),
                      class_model=getattr(args, "class_model", None))


class FirstMaskProposer:
    """The proposal models, loaded once on first use and reused for every frame.

    Args:
        device, dtype: ``--device`` / ``--dtype`` strings for both models (see
            :mod:`pipelines.devices`; ``auto``: cuda when available, bfloat16 there, float32 on cpu).
    """

    def __init__(self, *, device: str | None = None, dtype: str | None = None) -> None:
        self.device, self.dtype = device, dtype
        self._models: dict[tuple[str, str], Any] = {}

    def _model(self, cls, name: str | None):
        key = (cls.__name__, os.fspath(name) if name is not None else cls.DEFAULT)
        if key not in self._models:
            self._models[key] = cls.load(key[1], device=self.device, dtype=self.dtype)
        return self._models[key]

    def clipseg(self, name: str | None = None):
        """The :class:`vos.prompts.clipseg.ClipSeg` for ``name`` (default checkpoint when None), cached."""
        return self._model(ClipSeg, name)

    def segformer(self, name: str | None = None):
        """The :class:`vos.prompts.segformer.Segformer` for ``name`` (default checkpoint when None), cached."""
        return self._model(Segformer, name)

    def propose(self, rgb: np.ndarray, prompt: MaskPrompt, *, where: str = "frame 0"
                ) -> tuple[np.ndarray, dict[str, Any]]:
        """See :func:`propose_first_mask`."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be an (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
        prompt.check()
        threshold = DEFAULT_THRESHOLD if prompt.threshold is None else float(prompt.threshold)
        info: dict[str, Any] = {"prompt": prompt.kind, "frame_size": [int(rgb.shape[1]), int(rgb.shape[0])]}
        if prompt.kind == "classes":
            model = self.segformer(prompt.class_model)
            ids = model.class_ids(prompt.classes)
            labels = model.labels(rgb, ids)
            names = [model.class_names[i] for i in ids]
            info.update(classes=names, model=model.name)
            _check_found(labels, [f"class {n!r}" for n in names], lambda k: (
                f"no pixel of {where} is labelled {names[k]!r} by {model.name}; pass --first-mask "
                f"or other --classes"))
            sources = [{"class": n, "class_id": int(i)} for n, i in zip(names, ids, strict=True)]
        else:
            model = self.clipseg(prompt.text_model)
            if prompt.kind == "text":
                names = [str(t).strip() for t in prompt.texts]
                probs = model.text_probabilities(rgb, names)
                info.update(texts=names)
                sources = [{"text": t} for t in names]
            else:
                example_rgb, example_mask = _read_example(prompt.example_image, prompt.example_mask)
                probs = model.example_probabilities(rgb, example_rgb, example_mask)
                names = [f"the example {_describe(prompt.example_image)}"]
                info.update(example_image=_describe(prompt.example_image),
                            example_mask=_describe(prompt.example_mask))
                sources = [{"example": _describe(prompt.example_image)}]
            labels = labels_from_probabilities(probs, threshold)
            info.update(model=model.name, threshold=threshold)
            shown = [repr(n) if prompt.kind == "text" else n for n in names]

            def empty(k: int) -> str:
                msg = f"no pixel of {where} scored above {threshold:g} for {shown[k]}"
                if (probs[k] > threshold).any():
                    msg += " (where it does, another text scores higher)"
                return msg + "; lower --threshold or pass --first-mask"

            _check_found(labels, shown, empty)
        info["instances"] = bool(prompt.instances)
        if prompt.instances:
            labels, objects = split_instances(labels, sources, where=where)
        else:
            counts = np.bincount(labels.ravel(), minlength=len(sources) + 1)
            objects = [{"id": k + 1, **src, "pixels": int(counts[k + 1])} for k, src in enumerate(sources)]
        info["objects"] = objects
        return labels, info


def _check_found(labels: np.ndarray, names: list[str], message) -> None:
    """MaskError(message(k)) for the first object k (id k + 1) with no pixel in ``labels``."""
    counts = np.bincount(labels.ravel(), minlength=len(names) + 1)
    for k in range(len(names)):
        if counts[k + 1] == 0:
            raise MaskError(message(k))


def _describe(value: Any) -> str:
    return str(value) if isinstance(value, (str, os.PathLike)) else f"array{tuple(np.shape(value))}"


def _read_example(image: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """The example as ``(h, w, 3)`` uint8 RGB and ``(h, w)`` bool (union of the mask's objects).

    Raises:
        UserError / MaskError: unreadable files, a mask whose size does not fit the image, or an
            empty mask.
    """
    rgb = read_image(image) if isinstance(image, (str, os.PathLike)) else np.asarray(image, dtype=np.uint8)
    if isinstance(mask, (str, os.PathLike)):
        obj = read_first_mask(mask, frame_size=(rgb.shape[1], rgb.shape[0])).labels != 0
    else:
        obj = np.asarray(mask) != 0
        if obj.shape != rgb.shape[:2]:
            raise MaskError(f"example mask is {obj.shape[1]}x{obj.shape[0]} but the example image "
                            f"is {rgb.shape[1]}x{rgb.shape[0]}")
        if not obj.any():
            raise MaskError("the example mask has no object pixel")
    return rgb, obj


def split_instances(labels: np.ndarray, sources: list[dict[str, Any]], *, where: str = "frame 0"
                    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Split each object into its connected components (``--instances``).

    Components use 8-connectivity (:func:`scipy.ndimage.label` with a 3x3 structure); those with
    fewer than :data:`MIN_COMPONENT_FRACTION` (0.1 %) of the frame's pixels are dropped. New ids
    run 1, 2, ... object by object in the order of ``sources``, largest component first within
    an object (equal sizes: in scan order).

    Args:
        labels: ``(H, W)`` uint8 map with objects ``1..len(sources)``.
        sources: per object, what it came from (``{"text": ...}``), copied into each component.
        where: the frame, for messages.

    Returns:
        ``(labels, objects)``: the new ``(H, W)`` uint8 map and per new id
        ``{"id", **source, "component", "pixels"}``.

    Raises:
        MaskError: an object with no component of 0.1 % of the frame, or more than 254
            components in all.
    """
    h, w = labels.shape
    min_pixels = math.ceil(MIN_COMPONENT_FRACTION * h * w)
    out = np.zeros((h, w), dtype=np.uint8)
    objects: list[dict[str, Any]] = []
    parts = []
    for k, src in enumerate(sources):
        comp, n = ndimage.label(labels == k + 1, structure=np.ones((3, 3), dtype=bool))
        sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:]
        keep = [i + 1 for i in sorted(range(n), key=lambda i: (-sizes[i], i)) if sizes[i] >= min_pixels]
        if not keep:
            what = next(iter(src.values()))
            raise MaskError(f"--instances: no part of {what!r} in {where} covers 0.1 % of the frame "
                            f"({min_pixels} pixels); drop --instances or pass --first-mask")
        parts.append((src, comp, keep, sizes))
    total = sum(len(keep) for _, _, keep, _ in parts)
    if total > MAX_OBJECTS:
        raise MaskError(f"--instances: {total} components in {where}, more than the {MAX_OBJECTS} "
                        f"that fit in 8-bit ids; drop --instances or use fewer prompts")
    for src, comp, keep, sizes in parts:
        table = np.zeros(len(sizes) + 1, dtype=np.uint8)
        for j, c in enumerate(keep):
            table[c] = len(objects) + 1
            objects.append({"id": len(objects) + 1, **src, "component": j + 1,
                            "pixels": int(sizes[c - 1])})
        out = np.where(table[comp] != 0, table[comp], out)
    return out, objects


def propose_first_mask(rgb: np.ndarray, prompt: MaskPrompt, *,
                       proposer: FirstMaskProposer | None = None, device: str | None = None,
                       dtype: str | None = None, where: str = "frame 0"
                       ) -> tuple[np.ndarray, dict[str, Any]]:
    """Propose the first-frame mask of ``rgb`` from a text, example or class-name prompt.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB frame, upright as ``vos run`` sees it.
        prompt: the :class:`MaskPrompt` (checked here).
        proposer: models already loaded (reused across calls); None loads them for this call on
            ``device``/``dtype``.
        where: how messages name the frame (``"frame 0 of clip.mp4"``).

    Returns:
        ``(labels, info)``: ``(H, W)`` uint8 label map (0 background, objects 1..N, N <= 254), and
        ``info`` for a manifest: ``prompt`` (``"text"``/``"example"``/``"classes"``), ``texts`` /
        ``classes`` / ``example_image`` + ``example_mask``, ``model`` (hub id or folder),
        ``threshold`` (CLIPSeg only), ``instances``, ``frame_size`` ``[W, H]`` and ``objects``:
        per id ``{"id", "text" | "class" (+ "class_id") | "example", "pixels"}`` (with
        ``--instances`` also ``"component"``).

    Raises:
        UserError: a bad prompt (:meth:`MaskPrompt.check`), an unknown class name (the closest
            valid names listed), ``transformers`` not installed (names the ``prompts`` extra), a
            bad device/dtype; vos.prompts.hf_models.ProposalModelError: a model that is missing, offline
            without a cached copy, or not a CLIPSeg/SegFormer checkpoint; MaskError: an object
            whose mask comes out empty ("no pixel of frame 0 scored above 0.4 for 'black swan';
            lower --threshold or pass --first-mask"), an unreadable example, too many components.
    """
    proposer = proposer if proposer is not None else FirstMaskProposer(device=device, dtype=dtype)
    return proposer.propose(rgb, prompt, where=where)


def as_first_mask(labels: np.ndarray, path: str | os.PathLike | None = None):
    """A proposed ``(H, W)`` uint8 label map as the :class:`vos.labels.FirstMask` that a mask file
    gives (``kind="proposed"``, no void), so proposed and drawn masks go the same way from here.

    Args:
        labels: from :func:`propose_first_mask`.
        path: the image the mask was proposed for, named in later messages (or None).
    """
    ids = tuple(int(i) for i in np.flatnonzero(np.bincount(labels.ravel(), minlength=1)) if i)
    return FirstMask(labels=labels, object_ids=ids, void=None, path=None if path is None else Path(path),
                     mode="L", kind="proposed", source_size=(labels.shape[1], labels.shape[0]))


def describe_objects(info: dict[str, Any]) -> str:
    """One line naming each proposed object: ``1 'car' (12345 px), 2 'road' (...)``."""
    parts = []
    for obj in info.get("objects", []):
        name = obj.get("text") or obj.get("class") or "example"
        comp = f" #{obj['component']}" if "component" in obj else ""
        parts.append(f"{obj['id']} {name!r}{comp} ({obj['pixels']} px)")
    return ", ".join(parts)


__all__ = ["MIN_COMPONENT_FRACTION", "FirstMaskProposer", "MaskPrompt", "as_first_mask", "describe_objects",
           "prompt_from_args", "propose_first_mask", "split_instances"]
