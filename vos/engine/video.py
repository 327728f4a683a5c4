"""The per-video run: stream one video through SegGPT and write DAVIS-format masks.

:func:`run_video` is what ``vos run``, the batch worker (:mod:`vos.batch.worker`) and the web app
call; :func:`annotation_paths` and :func:`parse_mask_args` check the masks given to it.

Data flow::

    FrameSource (reader thread) -> [read-ahead queue] -> VideoPredictor + SegGptStage (this thread)
        -> [write-behind queue] -> writers (writer thread): palette PNGs, mask video, overlay

Masks may be given on any frames (``--mask K:FILE``, :mod:`vos.engine.predictor`). When the earliest one
is on frame ``A > 0``, frames ``0..A-1`` are decoded to a spill folder (one ``.npy`` per frame,
inside the run's temporary folder, so memory stays flat), segmented backward from ``A`` when frame
``A`` arrives, and written in order ``0..A-1`` from the spill before the forward stream goes on.

Everything is written under a temporary folder ``DIR/.NAME.tmp-HOST-PID-*``
(:func:`seggpt_model.files.make_temp_dir`) that is renamed to ``DIR/NAME`` only when every frame
and the manifest are written; any failure, Ctrl-C or SIGTERM (:mod:`vos.signals`) removes it, and a
run left by a killed process is removed by the next run of the same name.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipelines.errors import OutputError, VideoDecodeError
from pipelines.model_stage import load_stage
from pipelines.runner import PipelineStats, run_pipeline
from pipelines.sources import Frame, FrameFolderSource, open_source
from pipelines.writers import MaskVideoWriter, OverlayVideoWriter, PalettePngWriter
from seggpt_model.config import DEFAULT_CHECKPOINT
from seggpt_model.files import make_temp_dir, publish_dir, remove_stale_temps
from vos.engine.predictor import VideoPredictor
from vos.engine.session import DEFAULT_CONTEXT, DEFAULT_MAX_PINNED
from vos.errors import UserError, check_device_dtype, check_positive
from vos.labels import davis_palette, read_first_mask
from vos.prompts.first_mask import as_first_mask, propose_first_mask


@dataclass
class RunResult:
    """What :func:`run_video` produced.

    Attributes:
        output_dir: the finished ``DIR/NAME`` folder.
        frames: frames written.
        model_fps: frames per second of model-stage time (preprocess + SegGPT + post-process).
        end_to_end_fps: frames per second of wall time (decode to last PNG written).
        manifest: the manifest written to ``output_dir/manifest.json``.
    """

    output_dir: Path
    frames: int
    model_fps: float | None
    end_to_end_fps: float | None
    manifest: dict = field(repr=False, default_factory=dict)


def parse_mask_args(values: list[str] | None) -> dict[int, str]:
    """``--mask K:FILE`` values -> ``{K: FILE}`` (``K`` a 0-based frame index in decoding order).

    Raises:
        UserError: a value that is not ``K:FILE`` with ``K >= 0``, or two masks for one frame.
    """
    masks: dict[int, str] = {}
    for value in values or []:
        k, sep, path = str(value).partition(":")
        if not sep or not k.strip().isdigit() or not path:
            raise UserError(f"--mask {value!r}: expected K:FILE, K a frame index (0, 1, ...)")
        k = int(k)
        if k in masks:
            raise UserError(f"--mask {value}: frame {k} has two masks ({masks[k]}, {path})")
        masks[k] = path
    return masks


def annotation_paths(first_mask: str | os.PathLike | None,
                     masks: dict[int | str, str | os.PathLike] | None, *,
                     frame0_prompt: bool = False) -> dict[int, Path]:
    """The annotated frames of a run: ``first_mask`` is frame 0's mask, ``masks`` any frame's.

    Args:
        first_mask: ``--first-mask`` (or None).
        masks: ``{frame index: path}``; keys may be ints or decimal strings (JSON job files).
        frame0_prompt: frame 0's mask comes from a word prompt (``--text`` ...): no file for
            frame 0 may be given, and no file at all is needed.

    Returns:
        ``{frame index: path}`` in ascending frame order (at least one entry unless
        ``frame0_prompt``).

    Raises:
        UserError: no mask at all, a key that is not a frame index >= 0, or two masks for frame 0.
    """
    out: dict[int, Path] = {}
    for key, path in (masks or {}).items():
        text = str(key).strip()
        if isinstance(key, bool) or not text.isdigit():
            raise UserError(f"mask {path}: frame index {key!r} is not an integer >= 0")
        if int(text) in out:
            raise UserError(f"frame {int(text)} has two masks ({out[int(text)]}, {path})")
        out[int(text)] = Path(path)
    if first_mask is not None:
        if 0 in out:
            raise UserError(f"frame 0 has two masks: --first-mask {first_mask} and --mask 0:{out[0]}")
        out[0] = Path(first_mask)
    if frame0_prompt and 0 in out:
        raise UserError(f"frame 0 has two masks: the word prompt (--text/--example/--classes) and "
                        f"{out[0]}")
    if not out and not frame0_prompt:
        raise UserError("no mask given: use --first-mask FILE, --mask K:FILE, or propose frame 0's "
                        "mask with --text, --example/--example-mask or --classes")
    return dict(sorted(out.items()))


def _outside(path: Path, k: int, frames: int) -> UserError:
    return UserError(f"{path}: mask of frame {k} is outside the video ({frames} frames, 0..{frames - 1})")


def _propose_frame0(source, video, prompt, proposer, device, dtype):
    """Frame 0's mask proposed from a word prompt, as a :class:`vos.labels.FirstMask`, and the
    proposal's info for the manifest.

    Frame 0 is decoded by a separate iteration of ``source`` (a video is re-opened for the run).

    Raises:
        pipelines.errors.VideoDecodeError: no frame to decode; the errors of
            :func:`vos.prompts.first_mask.propose_first_mask`.
    """
    frames = iter(source)
    try:
        frame = next(frames, None)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
    if frame is None:
        raise VideoDecodeError(f"{video}: no frame to decode")
    labels, info = propose_first_mask(frame.rgb, prompt, proposer=proposer, device=device, dtype=dtype,
                                      where=f"frame 0 of {video}")
    return as_first_mask(labels), info


def run_video(video: str | os.PathLike, first_mask: str | os.PathLike | None = None, *,
              masks: dict[int, str | os.PathLike] | None = None, max_pinned: int = DEFAULT_MAX_PINNED,
              output: str | os.PathLike = "results", name: str | None = None, checkpoint: str | None = None,
              device: str | None = "auto", dtype: str | None = "auto", context: int = DEFAULT_CONTEXT,
              per_object: bool = False, overlay: str | os.PathLike | None = None,
              mask_video: str | os.PathLike | None = None, allow_partial: bool = False, quiet: bool = True,
              stage=None, prompt=None, proposer=None) -> RunResult:
    """Segment every frame of one video from masks of some of its frames (library form of ``vos run``).

    Args:
        video: video file or folder of frames.
        first_mask: frame 0's annotation (see :func:`vos.labels.read_first_mask`); same as
            ``masks={0: first_mask}``.
        masks: ``{K: path}``: the annotation of frame ``K`` (0-based, decoding order), read like
            ``first_mask``; the rules are those of :mod:`vos.engine.predictor` (new objects tracked from
            ``K`` on, corrections, backward propagation before the earliest annotation).
        max_pinned: annotated frames kept as prompts (the most recent ones).
        output, name: results go to ``output/name`` (name defaults to the video's stem/folder).
        checkpoint, device, dtype: model to load when ``stage`` is None.
        context: prompts per frame (pinned annotated frames included).
        per_object: binary pass per object instead of one multi-colour pass.
        overlay: optional H.264 overlay video path; mask_video: optional FFV1 label video path.
        allow_partial: keep frames decoded before a corrupt part instead of failing.
        quiet: no progress bar.
        stage: an already loaded :class:`pipelines.model_stage.SegGptStage` (Ray actors reuse one).
        prompt: a :class:`vos.prompts.first_mask.MaskPrompt` (texts, an example or class names): frame 0's
            mask is proposed from it (:func:`vos.prompts.first_mask.propose_first_mask`) and the run then
            goes exactly as with ``first_mask`` that mask; the manifest's ``prompt`` records the
            prompt, the model, the threshold and each object's pixel count.
        proposer: a :class:`vos.prompts.first_mask.FirstMaskProposer` with its models loaded (reused across
            videos); None loads them on ``device``/``dtype`` when ``prompt`` is given.

    Returns:
        :class:`RunResult`; ``manifest["annotations"]`` lists every annotated frame.

    Raises:
        UserError / MaskError: no mask, two masks for a frame, a mask that is unreadable, empty, of
            another size or with more than 254 objects, a frame index outside the video (known
            only once it is decoded), a bad ``context`` / ``max_pinned``;
        pipelines.errors.PipelineError (VideoDecodeError, OutputError), seggpt_model.CheckpointError:
            bad input, output or checkpoint. In every case (and on Ctrl-C / SIGTERM) no
            finished-looking output is left behind.
    """
    if prompt is not None:
        prompt.check()
    paths = annotation_paths(first_mask, masks, frame0_prompt=prompt is not None)
    check_positive("context", context)
    check_positive("max_pinned", max_pinned)
    if stage is None:  # check device and dtype before touching inputs or weights
        check_device_dtype(device, dtype)
    t_start = time.perf_counter()
    source = open_source(video, allow_partial=allow_partial)
    try:
        size = (source.width, source.height)
        if isinstance(source, FrameFolderSource):     # the frame count is known before decoding
            for k, path in paths.items():
                if k >= source.num_frames:
                    raise _outside(path, k, source.num_frames)
        annotations = {k: read_first_mask(path, frame_size=size) for k, path in paths.items()}
        proposal = None
        if prompt is not None:                        # frame 0's mask from words
            annotations[0], proposal = _propose_frame0(source, video, prompt, proposer, device, dtype)
            annotations = dict(sorted(annotations.items()))
        first = next(iter(annotations))               # A, the earliest annotated frame
        name = name or source.name
        root = Path(output)
        final = root / name
        try:
            remove_stale_temps(root, name)            # left by a killed earlier run
            tmp = make_temp_dir(root, name)
        except OSError as exc:
            raise OutputError(f"{root}: output folder is not writable ({exc.strerror or exc})") from None
        writers: list = []
        try:
            palette = davis_palette()
            writers.append(PalettePngWriter(tmp, palette))
            fps = source.fps or 24.0
            if mask_video is not None:
                writers.append(MaskVideoWriter(mask_video, source.width, source.height, fps))
            if overlay is not None:
                writers.append(OverlayVideoWriter(overlay, source.width, source.height, fps, palette))
            t_load = time.perf_counter()
            if stage is None:
                if not quiet:
                    print(f"loading SegGPT checkpoint {checkpoint or DEFAULT_CHECKPOINT}",
                          file=sys.stderr, flush=True)
                stage = load_stage(checkpoint, device, dtype)
            load_s = time.perf_counter() - t_load

            predictor = VideoPredictor(stage, source.height, source.width, context=context,
                                       max_pinned=max_pinned, per_object=per_object)
            for k, mask in annotations.items():
                predictor.add_mask(k, mask.labels, mask.void)
            spill = tmp / ".spill"          # frames 0..A-1 (rgb, then backward ids), one .npy each
            spill_pts: list[float | None] = []
            records: list[dict] = []
            bar = tqdm(total=source.num_frames, unit="frame", desc=name, disable=quiet,
                       dynamic_ncols=True, file=sys.stderr)

            def spilled(index: int, kind: str) -> Path:
                return spill / f"{index:08d}.{kind}.npy"

            def process(frame):
                if frame.index < first:                 # before A: keep for the backward pass
                    spill.mkdir(exist_ok=True)
                    np.save(spilled(frame.index, "rgb"), frame.rgb, allow_pickle=False)
                    spill_pts.append(frame.pts)
                    return None
                ids = predictor.step(frame.index, frame.rgb)
                if frame.index == first and first > 0:
                    rgbs = (np.load(spilled(k, "rgb")) for k in range(first - 1, -1, -1))
                    for k, back in zip(range(first - 1, -1, -1), predictor.backward(rgbs)):
                        np.save(spilled(k, "ids"), back, allow_pickle=False)
                return frame, ids

            def write(frame, ids):
                for w in writers:
                    w.write(frame, ids)
                records.append({"index": len(records), "file": f"{len(records):05d}.png",
                                "source_index": frame.index, "pts": frame.pts})
                bar.update(1)

            def sink(item):
                if item is None:
                    return
                frame, ids = item
                if frame.index == first:                # frames 0..A-1 first, in order, from the spill
                    for k in range(first):
                        write(Frame(k, spill_pts[k], np.load(spilled(k, "rgb"))), np.load(spilled(k, "ids")))
                        spilled(k, "rgb").unlink()
                        spilled(k, "ids").unlink()
                write(frame, ids)

            stats = PipelineStats()
            try:
                run_pipeline(source, process, sink, stats=stats)
            finally:
                bar.close()
            shutil.rmtree(spill, ignore_errors=True)
            decoded = max(stats.items_read, len(records))
            for k in predictor.pending_frames:        # K outside the video: known only now
                raise _outside(paths[k], k, decoded)
            for w in writers:
                w.close()
            manifest = {
                "video": str(Path(video).resolve()),
                "first_mask": str(paths[0].resolve()) if 0 in paths else None,
                "annotations": [{"frame": k, "mask": str(paths[k].resolve()) if k in paths else None,
                                 "proposed": k not in paths, "objects": list(mask.object_ids)}
                                for k, mask in annotations.items()],
                "prompt": proposal,
                "name": name,
                "frames": len(records),
                "width": source.width,
                "height": source.height,
                "fps": source.fps,
                "objects": sorted(predictor.object_ids),
                "settings": {
                    "checkpoint": checkpoint or DEFAULT_CHECKPOINT,
                    "device": str(stage.device), "dtype": str(stage.dtype).replace("torch.", ""),
                    "context": context, "max_pinned": max_pinned, "per_object": per_object,
                    "embedding_type": stage.embedding_type, "allow_partial": allow_partial,
                },
                "outputs": {"overlay": str(overlay) if overlay else None,
                            "mask_video": str(mask_video) if mask_video else None},
                "timings": {
                    "model_load_s": load_s, "wall_s": time.perf_counter() - t_start,
                    "pipeline_s": stats.wall_s, "decode_s": stats.read_s, "model_s": stats.process_s,
                    "write_s": stats.write_s, "model_fps": stats.model_fps,
                    "end_to_end_fps": stats.end_to_end_fps,
                },
                "frame_list": records,
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
            publish_dir(tmp, final)
        except BaseException:          # errors, Ctrl-C and SIGTERM (vos.signals.Terminated)
            for w in writers:
                w.abort()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        source.close()
    return RunResult(output_dir=final, frames=len(records), model_fps=stats.model_fps,
                     end_to_end_fps=stats.end_to_end_fps, manifest=manifest)


