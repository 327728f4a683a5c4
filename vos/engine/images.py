"""In-context segmentation of images from prompt image/mask pairs (the engine of ``vos image``).

One prompt pair is SegGPT's one-shot segmentation; several pairs are combined by feature ensemble
(few-shot, Painter semantics, see :mod:`seggpt_model.model`). The model stage of ``vos run``
(:class:`pipelines.model_stage.SegGptStage`) does the work, so images and video frames go through
the same preprocessing, model call and palette decoding.

Prompt masks are read with :func:`vos.labels.read_first_mask` (palette PNG, grayscale ids or 0/255,
RGB colour masks such as SegGPT's white-on-black targets) at the size of their prompt image. Labels:

* without ``--num-labels`` (objects): the objects of all prompt masks are numbered together
  (colour masks by colour, so one colour is one object in every prompt; other masks by id) and
  painted with SegGPT's palette for that many objects; each output pixel gets the object's id
  (the colour mask's DAVIS palette index or first-appearance id, else the id in the mask).
* with ``--num-labels N`` (semantic classes): mask values are class ids ``0..N`` painted with the
  palette for N classes (as ``SegGptImageProcessor(num_labels=N)`` does); output pixels are class ids.

Outputs, per query image ``STEM.ext``: ``DIR/STEM.png``, a DAVIS palette PNG of the label map at the
query's size, and with ``--overlay`` ``DIR/STEM_overlay.png``, the image with coloured masks. Each
file is written atomically.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pipelines.errors import OutputError
from pipelines.model_stage import load_stage
from pipelines.writers import overlay_masks
from seggpt_model.errors import one_line
from seggpt_model.files import atomic_write
from vos.errors import MaskError, UserError, check_device_dtype
from vos.labels import MAX_OBJECTS, davis_palette, read_first_mask, read_image, write_label_png
from vos.prompts.first_mask import FirstMaskProposer, as_first_mask

#: Object/class ids must fit a DAVIS label PNG next to background 0 and void 255.
MAX_LABELS = MAX_OBJECTS

@dataclass
class ImageResult:
    """What :func:`segment_images` produced.

    Attributes:
        outputs: the label PNG written for each query, in query order.
        overlays: the overlay PNGs (empty without ``overlay``).
        label_ids: the ids that can appear in the outputs besides 0 (objects or classes).
        prompts: prompt pairs used per query.
        model_s: seconds in the model stage (preprocess, SegGPT, post-process) over all queries.
    """

    outputs: list[Path]
    overlays: list[Path] = field(default_factory=list)
    label_ids: tuple[int, ...] = ()
    prompts: int = 0
    model_s: float = 0.0


def _check_readable(path: Path) -> None:
    """Fail fast on a missing or non-image query before the model is loaded (header only)."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path):
            pass
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the image ({one_line(exc)})") from None


def _prompt_labels(masks: list, num_labels: int | None) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Model labels of the prompt masks and the table back to output ids.

    Returns:
        ``(labels, out_ids, k)``: per prompt an ``(H, W)`` int64 map in ``0..k``, the ``(k + 1,)``
        uint8 table from model label to output id, and k (palette size).

    Raises:
        MaskError: a class id above ``num_labels``, or more than 254 objects over all prompts.
    """
    if num_labels is not None:
        for m in masks:
            top = max(m.object_ids)
            if top > num_labels:
                raise MaskError(f"{m.path}: class id {top} is above --num-labels {num_labels} "
                                f"(ids must lie in 0..{num_labels})")
        return ([m.labels.astype(np.int64) for m in masks],
                np.arange(num_labels + 1, dtype=np.uint8), num_labels)

    # Objects over all prompts: colour masks by colour, other masks by id.
    pal = {tuple(int(c) for c in row): i for i, row in enumerate(davis_palette())}
    keys_per_mask = []
    fixed: dict[tuple, int] = {}
    custom: list[tuple] = []
    for m in masks:
        keys = {}
        for obj in m.object_ids:
            if m.kind == "colour" and obj in m.colours:
                key = ("colour", m.colours[obj])
                if m.colours[obj] in pal:
                    fixed[key] = pal[m.colours[obj]]
                elif key not in custom:
                    custom.append(key)
            else:
                key = ("id", obj)
                fixed[key] = obj
            keys[obj] = key
        keys_per_mask.append(keys)
    used = set(fixed.values())
    next_id = 1
    for key in custom:                 # first appearance over the prompts, smallest free id
        while next_id in used:
            next_id += 1
        if next_id > MAX_LABELS:
            raise MaskError(f"more than {MAX_LABELS} objects over the prompt masks")
        fixed[key] = next_id
        used.add(next_id)
    out_ids = sorted(used)
    model_label = {i: n + 1 for n, i in enumerate(out_ids)}
    labels = []
    for m, keys in zip(masks, keys_per_mask, strict=True):
        table = np.zeros(256, dtype=np.int64)
        for obj, key in keys.items():
            table[obj] = model_label[fixed[key]]
        labels.append(table[m.labels])
    return labels, np.array([0, *out_ids], dtype=np.uint8), len(out_ids)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` uint8 RGB PNG with :func:`seggpt_model.files.atomic_write`.

    Raises:
        OSError: the file cannot be written (nothing is left behind).
    """
    image = Image.fromarray(rgb)
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def _proposed_masks(rgbs: list[np.ndarray], paths: list[Path], mask_prompt, proposer, device, dtype):
    """The prompt masks proposed from words, one per prompt image, as :class:`vos.labels.FirstMask`."""
    if proposer is None:
        proposer = FirstMaskProposer(device=device, dtype=dtype)
    masks = []
    for rgb, path in zip(rgbs, paths, strict=True):
        labels, _ = proposer.propose(rgb, mask_prompt, where=str(path))
        masks.append(as_first_mask(labels, path))
    return masks


def segment_images(queries: list, prompt_images: list, prompt_masks: list, *,
                   output: str | os.PathLike = "results", num_labels: int | None = None,
                   overlay: bool = False, checkpoint: str | None = None, device: str | None = "auto",
                   dtype: str | None = "auto", context: int | None = None, quiet: bool = True,
                   stage=None, mask_prompt=None, proposer=None, attn: str = "auto",
                   compile: bool = False) -> ImageResult:
    """Segment query images from prompt image/mask pairs (library form of ``vos image``).

    Args:
        queries: image files to segment.
        prompt_images, prompt_masks: equally many files; pair i is ``(prompt_images[i],
            prompt_masks[i])``. One pair is one-shot, several are few-shot (feature ensemble).
            With ``mask_prompt``, ``prompt_masks`` must be empty and ``prompt_images`` may be
            (then the first query is the prompt image).
        output: folder for ``STEM.png`` (and ``STEM_overlay.png``) per query.
        num_labels: masks hold class ids ``0..num_labels`` (semantic); None: objects (module doc).
        overlay: also write overlay PNGs.
        checkpoint, device, dtype: model to load when ``stage`` is None.
        context: use at most this many prompt pairs (the first ones; a warning names the rest).
        quiet: no progress bar.
        stage: an already loaded :class:`pipelines.model_stage.SegGptStage`.
        mask_prompt: a :class:`vos.prompts.first_mask.MaskPrompt` (``--text``, ``--example`` or
            ``--classes``): each prompt image's mask is proposed from it
            (:func:`vos.prompts.first_mask.propose_first_mask`) instead of read from a file, so words
            give SegGPT its in-context example.
        proposer: a :class:`vos.prompts.first_mask.FirstMaskProposer` with the proposal models loaded
            (None: loaded on ``device``/``dtype`` when ``mask_prompt`` is given).

    Returns:
        :class:`ImageResult`.

    Raises:
        UserError: unequal numbers of prompt images and masks, two queries with the same output
            name, unreadable images, bad device/dtype/num_labels; MaskError: unreadable or empty
            prompt masks, masks whose size does not fit their image, ids above ``num_labels``;
            pipelines.errors.OutputError: output folder not writable;
            seggpt_model.CheckpointError: the checkpoint cannot be loaded.
    """
    queries = [Path(q) for q in queries]
    prompt_images = [Path(p) for p in prompt_images]
    prompt_masks = [Path(m) for m in prompt_masks]
    if not queries:
        raise UserError("no query image given")
    if mask_prompt is not None:
        mask_prompt.check()
        if prompt_masks:
            raise UserError("give either --prompt-mask or a word prompt (--text, --example, "
                            "--classes), not both")
        prompt_images = prompt_images or queries[:1]
    elif not prompt_images or len(prompt_images) != len(prompt_masks):
        raise UserError(f"--prompt-image and --prompt-mask must be given in pairs: got "
                        f"{len(prompt_images)} prompt image(s) and {len(prompt_masks)} prompt mask(s)")
    if num_labels is not None and not 1 <= int(num_labels) <= MAX_LABELS:
        raise UserError(f"--num-labels must be an integer in 1..{MAX_LABELS}, got {num_labels!r}")
    if context is not None and len(prompt_images) > context:
        warnings.warn(f"--context {context}: using the first {context} of {len(prompt_images)} prompt "
                      f"pairs (ignoring {', '.join(str(p) for p in prompt_images[context:])})",
                      UserWarning, stacklevel=2)
        prompt_images, prompt_masks = prompt_images[:context], prompt_masks[:context]
    if stage is None:  # check device and dtype before touching inputs or weights
        check_device_dtype(device, dtype)

    stems: dict[str, Path] = {}
    for q in queries:
        if q.stem in stems:
            raise UserError(f"{q} and {stems[q.stem]} would both be written to {q.stem}.png; "
                            f"segment them in separate runs or rename one")
        stems[q.stem] = q
        _check_readable(q)

    rgbs = [read_image(p) for p in prompt_images]
    if mask_prompt is not None:
        masks = _proposed_masks(rgbs, prompt_images, mask_prompt, proposer, device, dtype)
    else:
        masks = [read_first_mask(m, frame_size=(rgb.shape[1], rgb.shape[0]))
                 for m, rgb in zip(prompt_masks, rgbs, strict=True)]
    labels, out_ids, k = _prompt_labels(masks, num_labels)

    root = Path(output)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{root}: output folder is not writable ({one_line(exc)})") from None
    if not os.access(root, os.W_OK):
        raise OutputError(f"{root}: output folder is not writable (permission denied)")

    if stage is None:
        stage = load_stage(checkpoint, device, dtype, attn=attn, compile=compile)
    palette = davis_palette()
    result = ImageResult(outputs=[], label_ids=tuple(int(i) for i in out_ids[1:]), prompts=len(masks))
    t0 = time.perf_counter()
    prompts = [stage.prompt(rgb, lab) for rgb, lab in zip(rgbs, labels, strict=True)]
    result.model_s += time.perf_counter() - t0
    for q in tqdm(queries, unit="image", disable=quiet, dynamic_ncols=True, file=sys.stderr):
        rgb = read_image(q)
        t0 = time.perf_counter()
        pred = stage.segment(stage.query(rgb), prompts, k)
        ids = out_ids[stage.to_frame(pred, rgb.shape[0], rgb.shape[1])]
        result.model_s += time.perf_counter() - t0
        target = root / f"{q.stem}.png"
        try:
            write_label_png(target, ids, palette)
            result.outputs.append(target)
            if overlay:
                target = root / f"{q.stem}_overlay.png"
                _write_png(target, overlay_masks(rgb, ids, palette))
                result.overlays.append(target)
        except OSError as exc:
            raise OutputError(f"{target}: cannot write ({one_line(exc)})") from None
    return result


