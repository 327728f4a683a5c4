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

import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipelines.errors import OutputError, VideoDecodeError
from pipelines.model_stage import load_stage
from pipelines.runner import PipelineStats, run_pipeline
from pipelines.sources import (Frame, FrameFolderSource, FrameRange, open_source,
                               parse_frame_range)
from pipelines.writers import MaskVideoWriter, OverlayVideoWriter, PalettePngWriter
from seggpt_model.config import DEFAULT_CHECKPOINT
from seggpt_model.files import make_temp_dir, publish_dir, remove_stale_temps
from vos.engine.predictor import VideoPredictor
from vos.engine.session import DEFAULT_CONTEXT, DEFAULT_MAX_PINNED
from vos.errors import MaskError, UserError, check_device_dtype, check_positive
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


def frame_range(frames: str | tuple[int, int | None] | None) -> tuple[int, int | None]:
    """``--frames`` as ``(start, stop)``: ``None`` (the whole video: ``(0, None)``), a
    ``"START:STOP"`` string (:func:`pipelines.sources.parse_frame_range`) or a pair of ints.

    Raises:
        UserError: not a range of 0-based frame indices with ``START < STOP``.
    """
    if frames is None:
        return 0, None
    try:
        if isinstance(frames, str):
            return parse_frame_range(frames)
        start, stop = frames
        return parse_frame_range(f"{int(start)}:{'' if stop is None else int(stop)}")
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc) if str(exc).startswith("--frames") else
                        f"--frames {frames!r}: expected START:STOP") from None


def finished_result(folder: Path) -> bool:
    """Whether ``folder`` holds a finished result (its ``manifest.json``, written last)."""
    return (Path(folder) / "manifest.json").is_file()


def check_not_finished(folder: Path) -> None:
    """Refuse to replace a finished result (``vos run`` without ``--overwrite``).

    Raises:
        OutputError: ``folder`` holds a ``manifest.json``.
    """
    if finished_result(folder):
        raise OutputError(f"{folder}: holds a finished result (manifest.json); pass --overwrite "
                          f"to replace it, or choose another --output or --name")


def temp_output_dir(root: Path, name: str) -> Path:
    """The temporary folder a run writes ``root/name`` into (published by one rename when done),
    after removing the ones a killed earlier run of ``name`` left behind.

    Raises:
        OutputError: ``root`` cannot be created or written.
    """
    try:
        remove_stale_temps(root, name)
        return make_temp_dir(root, name)
    except OSError as exc:
        raise OutputError(f"{root}: output folder is not writable ({exc.strerror or exc})") from None


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"


def cpu_estimate_line(seconds: float, prompts: int, context: int, frames: int | None) -> str:
    """The one line ``vos run`` prints on a CPU after its first segmented frame.

    The forward's cost grows with the prompts as ``prompts + 1`` (the query half once, each prompt
    canvas once; measured: 4.35x to 4.9x from 1 to 8 prompts against 4.5x, docs/benchmarks.md), so
    ``seconds`` measured with ``prompts`` prompts is scaled to the full ``context``.

    Args:
        seconds: wall time of the first segmented frame (model stage).
        prompts: prompts it was segmented with (>= 1).
        context: ``--context``, the prompts of later frames.
        frames: frames left to segment, or None when unknown.

    Returns:
        ``"about 45 s a frame on this CPU: ~30 min for 40 frames; --device cuda, --context 2 or
        --frames for a quicker look"``.
    """
    per_frame = seconds * (max(context, prompts) + 1) / (max(prompts, 1) + 1)
    line = f"about {_seconds(per_frame)} a frame on this CPU"
    if frames:
        total = per_frame * frames
        line += (f": ~{_seconds(total) if total < 120 else f'{total / 60:.0f} min'} for {frames} "
                 f"frame{'s' if frames > 1 else ''}")
    hints = ["--device cuda", *(["--context 2"] if context > 2 else []), "--frames"]
    return f"{line}; {', '.join(hints[:-1])} or {hints[-1]} for a quicker look"


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


def _frame_stems(source, video, stem_masks, write_stems) -> list[str] | None:
    """Each frame's file stem (frame folders), or None (video files: outputs numbered).

    Raises:
        UserError: two frames with one stem; stems asked of a video file.
    """
    if not isinstance(source, FrameFolderSource):
        if stem_masks or write_stems is not None:
            raise UserError(f"{video}: frames named by stem need a folder of frames, not a video file")
        return None
    stems = [f.stem for f in source.files]
    if len(set(stems)) < len(stems):
        seen: dict[str, Path] = {}
        for f in source.files:
            if f.stem in seen:
                raise UserError(f"{video}: frames {seen[f.stem].name} and {f.name} have the same stem "
                                f"(results are named STEM.png)")
            seen[f.stem] = f
    return stems


def _stem_paths(video, stems, stem_masks, paths: dict[int, Path]) -> dict[int, str]:
    """Add ``stem_masks`` to ``paths`` (frame index -> mask) in place; returns index -> stem of each.

    Raises:
        UserError: a stem that names no frame, or a frame with two masks.
    """
    if not stem_masks:
        return {}
    index = {stem: k for k, stem in enumerate(stems)}
    out = {}
    for stem, path in stem_masks.items():
        if stem not in index:
            raise UserError(f"{video}: no frame {stem} (the frame of mask {path})")
        k = index[stem]
        if k in paths:
            raise UserError(f"frame {k} ({stem}) has two masks ({paths[k]}, {path})")
        paths[k] = Path(path)
        out[k] = stem
    return out


def _only_objects(annotations: dict, by_stem: dict[int, str], paths: dict[int, Path],
                  mask_objects: dict[str, Sequence[int]]) -> dict:
    """``annotations`` with only the ``mask_objects`` ids kept in the masks of those stems.

    Raises:
        MaskError: an id without pixels in its frame's mask (an object whose first frame has no mask).
    """
    out = dict(annotations)
    for k, stem in by_stem.items():
        ids = mask_objects.get(stem)
        if ids is None:
            continue
        mask = annotations[k]
        absent = [i for i in ids if i not in mask.object_ids]
        if absent:
            raise MaskError(f"{paths[k]}: object {absent[0]} starts on frame {stem} but has no pixel "
                            f"in this mask (objects there: {list(mask.object_ids) or 'none'})")
        labels = np.where(np.isin(mask.labels, ids), mask.labels, 0).astype(np.uint8)
        out[k] = dataclasses.replace(mask, labels=labels, object_ids=tuple(sorted(int(i) for i in ids)))
    return out


def _check_written(video, stems, keep, first: int, backward: bool) -> None:
    """Raise UserError for a frame to write that is not in the video, or that comes before the
    first annotated frame when there is no backward pass."""
    if keep is None:
        return
    if stems is None:   # pragma: no cover - _frame_stems refused it already
        raise UserError(f"{video}: frames named by stem need a folder of frames")
    missing = sorted(keep - set(stems))
    if missing:
        raise UserError(f"{video}: no frame {missing[0]} (one of the frames to write; "
                        f"{len(missing)} missing)")
    if not backward:
        early = [s for s in stems[:first] if s in keep]
        if early:
            raise UserError(f"{video}: frame {early[0]} is to be written but comes before the first "
                            f"annotated frame {stems[first]}")


def run_video(video: str | os.PathLike, first_mask: str | os.PathLike | None = None, *,
              masks: dict[int, str | os.PathLike] | None = None, max_pinned: int = DEFAULT_MAX_PINNED,
              output: str | os.PathLike = "results", name: str | None = None, checkpoint: str | None = None,
              device: str | None = "auto", dtype: str | None = "auto", context: int = DEFAULT_CONTEXT,
              per_object: bool = False, overlay: str | os.PathLike | None = None,
              mask_video: str | os.PathLike | None = None, allow_partial: bool = False, quiet: bool = True,
              stage=None, prompt=None, proposer=None, attn: str = "auto", compile: bool = False,
              stem_masks: dict[str, str | os.PathLike] | None = None,
              mask_objects: dict[str, Sequence[int]] | None = None,
              write_stems: Collection[str] | None = None, backward: bool = True,
              frames: str | tuple[int, int | None] | None = None, fps: float | None = None,
              overwrite: bool = False) -> RunResult:
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
        stem_masks: ``{STEM: path}``: like ``masks``, keyed by the frame's file stem (frame folders
            only; how the dataset readers of :mod:`vos.datasets` give prompts).
        mask_objects: ``{STEM: ids}``: take only these objects from that frame's mask (the others
            are 0 there, i.e. "no label": the objects already tracked keep their predictions, as
            with ``--mask K:FILE``); each id must have pixels in the mask.
        write_stems: write only the frames with these stems (frame folders; all frames are still
            propagated over), e.g. YouTube-VOS's sparse frames out of ``--all-frames``.
        backward: False: frames before the earliest annotated frame are neither segmented nor
            written (YouTube-VOS, LVOS: objects are absent before they first appear).

        frames: ``"START:STOP"`` or ``(START, STOP)``: only these frames (0-based indices of the
            whole video, STOP excluded, ``None`` for the end), as a Python slice of the decoded
            frames (:class:`pipelines.sources.FrameRange`); every mask index (and frame 0 of a word
            prompt) must fall inside. None: every frame.
        fps: frame rate of ``overlay`` and ``mask_video`` for a frame folder (default 24); a video
            file keeps its own timing (used only when the container declares no rate).
        overwrite: replace a finished ``output/name`` (one with its ``manifest.json``); without it
            such a folder is an error before any work. The old result is replaced only when the
            new one is complete.
    Output files: ``STEM.png`` for a frame folder (the input frame's own stem: DAVIS ``00000.jpg``
    gives ``00000.png``), ``00000.png, 00001.png, ...`` in decoding order for a video file.

    Returns:
        :class:`RunResult`; ``manifest["annotations"]`` lists every annotated frame.

    Raises:
        UserError / MaskError: no mask, two masks for a frame, a stem that names no frame (or
            stems for a video file, or two frames with one stem), an object of ``mask_objects``
            without pixels in its mask, a frame to write before the first annotation without
            ``backward``, a mask that is unreadable, empty, of
            another size or with more than 254 objects, a frame index outside the video (known
            only once it is decoded), a bad ``context`` / ``max_pinned``;
        pipelines.errors.PipelineError (VideoDecodeError, OutputError), seggpt_model.CheckpointError:
            bad input, output or checkpoint; OutputError: a finished ``output/name`` without
            ``overwrite``, or ``output`` is a file. In every case (and on Ctrl-C / SIGTERM) no
            finished-looking output is left behind, and no folder this call created.
    """
    if prompt is not None:
        prompt.check()
    paths = annotation_paths(first_mask, masks, frame0_prompt=prompt is not None or bool(stem_masks))
    check_positive("context", context)
    check_positive("max_pinned", max_pinned)
    start, stop = frame_range(frames)
    in_range = f"--frames {start}:{'' if stop is None else stop}"
    for k, path in paths.items():
        if k < start or (stop is not None and k >= stop):
            raise UserError(f"{path}: mask of frame {k} is outside {in_range}")
    if prompt is not None and start > 0:
        raise UserError(f"the word prompt proposes frame 0's mask, which is outside {in_range}: "
                        f"propose it with vos mask --frame {start} and pass --mask {start}:FILE")
    if stage is None:  # check device and dtype before touching inputs or weights
        check_device_dtype(device, dtype)
    t_start = time.perf_counter()
    try:
        source = open_source(video, allow_partial=allow_partial, fps=fps)
    except ValueError as exc:    # a bad fps
        raise UserError(f"--fps: {exc}") from None
    try:
        root = Path(output)
        final = root / (name or source.name)
        blocker = next((p for p in (root, *root.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise OutputError(f"{blocker}: is a file, not a folder (--output {root})")
        if not overwrite:
            check_not_finished(final)
        size = (source.width, source.height)
        if isinstance(source, FrameFolderSource):     # the frame count is known before decoding
            for k, path in paths.items():
                if k >= source.num_frames:
                    raise _outside(path, k, source.num_frames)
        stems = _frame_stems(source, video, stem_masks, write_stems)
        by_stem = _stem_paths(video, stems, stem_masks, paths)
        annotations = {k: read_first_mask(path, frame_size=size) for k, path in sorted(paths.items())}
        annotations = _only_objects(annotations, by_stem, paths, mask_objects or {})
        if start > 0 or stop is not None:
            source = FrameRange(source, start, stop)   # after the stems: they are the folder's
        proposal = None
        if prompt is not None:                        # frame 0's mask from words
            annotations[0], proposal = _propose_frame0(source, video, prompt, proposer, device, dtype)
            annotations = dict(sorted(annotations.items()))
        first = next(iter(annotations))               # A, the earliest annotated frame
        keep = None if write_stems is None else set(write_stems)
        _check_written(video, stems, keep, first, backward)
        name = name or source.name
        created = [p for p in (root, *root.parents) if not p.exists()]   # removed again on failure
        tmp = temp_output_dir(root, name)
        writers: list = []
        try:
            palette = davis_palette()
            pngs = PalettePngWriter(tmp, palette,
                                    name_of=None if stems is None else (lambda f: f"{stems[f.index]}.png"))
            writers.append(pngs)
            rate = source.fps or 24.0
            if mask_video is not None:
                writers.append(MaskVideoWriter(mask_video, source.width, source.height, rate))
            if overlay is not None:
                writers.append(OverlayVideoWriter(overlay, source.width, source.height, rate, palette))
            t_load = time.perf_counter()
            if stage is None:
                if not quiet:
                    print(f"loading SegGPT checkpoint {checkpoint or DEFAULT_CHECKPOINT}",
                          file=sys.stderr, flush=True)
                stage = load_stage(checkpoint, device, dtype, attn=attn, compile=compile)
            load_s = time.perf_counter() - t_load

            predictor = VideoPredictor(stage, source.height, source.width, context=context,
                                       max_pinned=max_pinned, per_object=per_object)
            for k, mask in annotations.items():
                predictor.add_mask(k, mask.labels, mask.void)
            spill = tmp / ".spill"          # frames start..A-1 (rgb, then backward ids), one .npy each
            estimate = not quiet and getattr(stage.device, "type", None) == "cpu"   # one estimate on a CPU

            def timed_first(seconds: float, prompts: int) -> None:
                nonlocal estimate
                if estimate:
                    estimate = False
                    left = source.num_frames and max(source.num_frames - len(annotations), 1)
                    tqdm.write(cpu_estimate_line(seconds, prompts, context, left), file=sys.stderr)
            spill_pts: list[float | None] = []
            records: list[dict] = []
            bar = tqdm(total=source.num_frames, unit="frame", desc=name, disable=quiet,
                       dynamic_ncols=True, file=sys.stderr)

            def spilled(index: int, kind: str) -> Path:
                return spill / f"{index:08d}.{kind}.npy"

            def process(frame):
                if frame.index < first and not backward:    # before A: not segmented
                    return None
                if frame.index < first:                 # before A: keep for the backward pass
                    spill.mkdir(exist_ok=True)
                    np.save(spilled(frame.index, "rgb"), frame.rgb, allow_pickle=False)
                    spill_pts.append(frame.pts)
                    return None
                prompts, t0 = len(predictor.memory), time.perf_counter()
                ids = predictor.step(frame.index, frame.rgb)
                if frame.index not in annotations:
                    timed_first(time.perf_counter() - t0, prompts)
                if frame.index == first and first > start and backward:
                    rgbs = (np.load(spilled(k, "rgb")) for k in range(first - 1, start - 1, -1))
                    t0 = time.perf_counter()
                    for k, back in zip(range(first - 1, start - 1, -1), predictor.backward(rgbs)):
                        timed_first(time.perf_counter() - t0, 1)    # backward starts from A alone
                        np.save(spilled(k, "ids"), back, allow_pickle=False)
                return frame, ids

            def write(frame, ids):
                bar.update(1)
                if keep is not None and stems[frame.index] not in keep:
                    return
                for w in writers:
                    w.write(frame, ids)
                records.append({"index": len(records), "file": pngs.written[-1].name,
                                "source_index": frame.index, "pts": frame.pts})

            def sink(item):
                if item is None:
                    return
                frame, ids = item
                if frame.index == first and backward:   # frames start..A-1 first, in order, from the spill
                    for k in range(start, first):
                        write(Frame(k, spill_pts[k - start], np.load(spilled(k, "rgb"))),
                              np.load(spilled(k, "ids")))
                        spilled(k, "rgb").unlink()
                        spilled(k, "ids").unlink()
                write(frame, ids)

            stats = PipelineStats()
            try:
                run_pipeline(source, process, sink, stats=stats)
            finally:
                bar.close()
            shutil.rmtree(spill, ignore_errors=True)
            decoded = start + max(stats.items_read, len(records))
            if start > 0 and not stats.items_read:
                raise UserError(f"{video}: no frame in {in_range} (the video has fewer frames)")
            for k in predictor.pending_frames:        # K outside the video: known only now
                raise _outside(paths[k], k, decoded)
            for w in writers:
                w.close()
            manifest = {
                "video": str(Path(video).resolve()),
                "first_mask": str(paths[0].resolve()) if 0 in paths else None,
                "annotations": [{"frame": k, "mask": str(paths[k].resolve()) if k in paths else None,
                                 "proposed": k not in paths, "objects": list(mask.object_ids),
                                 **({"stem": stems[k]} if stems is not None else {})}
                                for k, mask in annotations.items()],
                "prompt": proposal,
                "name": name,
                "frames": len(records),
                "width": source.width,
                "height": source.height,
                "fps": source.fps,
                "frame_range": [start, stop] if (start > 0 or stop is not None) else None,
                "objects": sorted(predictor.object_ids),
                "settings": {
                    "checkpoint": checkpoint or DEFAULT_CHECKPOINT,
                    "device": str(stage.device), "dtype": str(stage.dtype).replace("torch.", ""),
                    "context": context, "max_pinned": max_pinned, "per_object": per_object,
                    "embedding_type": stage.embedding_type, "allow_partial": allow_partial,
                    "attn": stage.attn, "compile": stage.compiled,
                    **({} if backward else {"backward": False}),
                    **({} if keep is None else {"write_stems": len(keep)}),
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
            if not overwrite:
                check_not_finished(final)             # finished meanwhile by another run
            publish_dir(tmp, final)
        except BaseException:          # errors, Ctrl-C and SIGTERM (vos.signals.Terminated)
            for w in writers:
                w.abort()
            shutil.rmtree(tmp, ignore_errors=True)
            for folder in created:                   # the output folders this run created, if empty
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise
    finally:
        source.close()
    return RunResult(output_dir=final, frames=len(records), model_fps=stats.model_fps,
                     end_to_end_fps=stats.end_to_end_fps, manifest=manifest)


