"""SA-V's way of tracking: each object on its own, from its mask alone, into its own folder of
binary masks (:func:`run_video_objects`, built on :func:`vos.engine.video.run_video`)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipelines.model_stage import load_stage
from pipelines.sources import natural_sort_key
from seggpt_model.files import publish_dir
from vos.engine.video import RunResult, run_video, temp_output_dir
from vos.errors import MaskError, UserError, check_device_dtype

__all__ = ["run_video_objects"]


def _check_binary(path: Path, oid: int) -> None:
    """Raise MaskError unless ``path`` is a binary mask (values 0 and one other) with pixels.

    SA-V stores one binary PNG per object and frame (0/1 palette or 0/255 grey); any other value
    means the file is not what the layout promises.
    """
    try:
        with Image.open(path) as im:
            values = np.unique(np.asarray(im.convert("L") if im.mode not in ("P", "L", "1") else im))
    except FileNotFoundError:
        raise MaskError(f"{path}: object {oid} has no mask on the first annotated frame "
                        f"(no such file)") from None
    except OSError as exc:
        raise MaskError(f"{path}: cannot read the mask ({exc})") from None
    nonzero = [int(v) for v in values if v]
    if len(nonzero) > 1:
        raise MaskError(f"{path}: not a binary mask (values {', '.join(str(int(v)) for v in values[:6])}"
                        f"{', ...' if len(values) > 6 else ''}); SA-V object masks hold 0 and one value")
    if not nonzero:
        raise MaskError(f"{path}: object {oid} has no pixel on the first annotated frame")


def run_video_objects(video: str | os.PathLike, object_masks: dict[int | str, str | os.PathLike], *,
                      output: str | os.PathLike = "results", name: str | None = None,
                      write_stems: Collection[str] | None = None, checkpoint: str | None = None,
                      device: str | None = "auto", dtype: str | None = "auto", stage=None,
                      quiet: bool = True, attn: str = "auto", compile: bool = False,
                      **kwargs: Any) -> RunResult:
    """Track each object on its own (SA-V): ``output/NAME/OBJ/STEM.png`` binary masks per object.

    Object ``OBJ``'s results are exactly those of :func:`run_video` with its mask alone (on the
    frame of the mask's stem, ``stem_masks={STEM: mask}``), written to ``NAME/{OBJ:03d}``: 0
    background, 1 the object (a binary mask reads as object 1), palette PNGs as SAM 2's
    ``vos_inference.py --per_obj_png_file`` writes them. Objects may overlap. The model is loaded
    once; the video is decoded once per object. ``NAME`` is published only when every object is
    done (one temporary folder, renamed), with a ``manifest.json`` listing every file.

    Args:
        video: a folder of frames.
        object_masks: ``{object id (>= 0): binary PNG}``: each object's first annotated frame.
        output, name, write_stems, checkpoint, device, dtype, stage, quiet: as :func:`run_video`.
        **kwargs: further :func:`run_video` keywords (``context``, ``max_pinned``, ``per_object``...).

    Returns:
        :class:`RunResult` of the whole video (``frames``: files written over all objects).

    Raises:
        MaskError: a mask that is missing, not binary or empty (naming it); the errors of
            :func:`run_video`. Nothing is left under ``output/NAME`` on failure.
    """
    if not object_masks:
        raise UserError(f"{video}: no object mask given")
    items = sorted(((int(k), Path(v)) for k, v in object_masks.items()), key=lambda kv: kv[0])
    for oid, path in items:
        if oid < 0:
            raise UserError(f"{path}: object id must be >= 0, got {oid}")
        _check_binary(path, oid)
    t0 = time.perf_counter()
    if stage is None:
        check_device_dtype(device, dtype)
        stage = load_stage(checkpoint, device, dtype, attn=attn, compile=compile)
    name = name or Path(video).resolve().name
    root = Path(output)
    tmp = temp_output_dir(root, name)
    try:
        results = {}
        for oid, path in items:
            results[oid] = run_video(video, output=tmp, name=f"{oid:03d}", stem_masks={path.stem: path},
                                     write_stems=write_stems, checkpoint=checkpoint, stage=stage,
                                     quiet=quiet, **kwargs)
        one = next(iter(results.values())).manifest
        frame_list = [{**r, "file": f"{oid:03d}/{r['file']}", "object": oid}
                      for oid, res in results.items() for r in res.manifest["frame_list"]]
        frame_list.sort(key=lambda r: (natural_sort_key(r["file"].split("/", 1)[1]), r["object"]))
        manifest = {
            "video": str(Path(video).resolve()), "name": name, "per_object_tracks": True,
            "object_masks": {f"{oid:03d}": str(path.resolve()) for oid, path in items},
            "objects": [oid for oid, _ in items], "frames": len(frame_list),
            "width": one["width"], "height": one["height"], "fps": one["fps"],
            "settings": one["settings"],
            "timings": {"wall_s": time.perf_counter() - t0},
            "frame_list": frame_list,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        publish_dir(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fps = [r.model_fps for r in results.values() if r.model_fps]
    return RunResult(output_dir=root / name, frames=len(frame_list),
                     model_fps=sum(fps) / len(fps) if fps else None,
                     end_to_end_fps=len(frame_list) / max(time.perf_counter() - t0, 1e-9), manifest=manifest)
