"""``vos run``: stream one video through SegGPT and write DAVIS-format masks.

Data flow (see ``shared/DESIGN.md``)::

    FrameSource (reader thread) -> [read-ahead queue] -> VideoSession + SegGptStage (this thread)
        -> [write-behind queue] -> writers (writer thread): palette PNGs, mask video, overlay

Everything is written under a temporary folder ``DIR/.NAME.tmp-*`` that is renamed to ``DIR/NAME``
only when every frame and the manifest are written; a failure removes it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vos.errors import UserError
from vos.session import DEFAULT_CONTEXT

DEFAULTS: dict[str, Any] = {
    "checkpoint": None,          # None -> seggpt_model.DEFAULT_CHECKPOINT
    "device": "auto",
    "dtype": "auto",
    "context": DEFAULT_CONTEXT,
    "per_object": False,
    "output": "results",
    "quiet": False,
}


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


def load_config_file(path: str | os.PathLike | None, known=None) -> dict[str, Any]:
    """Read a ``--config`` JSON file of option defaults (keys as the long option names, ``-`` or ``_``).

    Args:
        path: the file, or None (no file: empty dict).
        known: accepted keys (default: those of ``vos run``, :data:`DEFAULTS`).

    Raises:
        UserError: unreadable file, not a JSON object, or unknown keys.
    """
    if path is None:
        return {}
    known = set(DEFAULTS if known is None else known)
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as exc:
        raise UserError(f"{p}: cannot read config file ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{p}: config file is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: config file must hold a JSON object")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{p}: unknown config keys {unknown} (known: {sorted(known)})")
    return data


def merge_options(args, defaults: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` < ``config`` (from :func:`load_config_file`) < flags given on the command line.

    Only keys of ``defaults`` are taken from ``config`` and ``args``; a flag counts as given when it
    is neither None nor False.
    """
    opts = dict(defaults)
    opts.update({k: v for k, v in config.items() if k in defaults})
    for key in defaults:
        value = getattr(args, key, None)
        if value is not None and value is not False:
            opts[key] = value
    return opts


def resolve_options(args, extra_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """``vos run`` options: defaults < ``--config`` file < command-line flags.

    Args:
        args: parsed command line.
        extra_defaults: further options of another command (``vos batch``) accepted in the
            config file and merged the same way.

    Raises:
        UserError: bad config file, or a ``context`` that is not a positive integer.
    """
    defaults = {**DEFAULTS, **(extra_defaults or {})}
    opts = merge_options(args, defaults, load_config_file(getattr(args, "config", None), known=defaults))
    if not isinstance(opts["context"], int) or opts["context"] < 1:
        raise UserError(f"--context must be a positive integer, got {opts['context']!r}")
    return opts


def check_device_dtype(device: str | None, dtype: str | None) -> None:
    """Resolve ``--device`` and ``--dtype`` (see :mod:`pipelines.model_stage`) without loading anything.

    Raises:
        UserError: unknown device or dtype, or a CUDA device that is not available.
    """
    from pipelines.model_stage import resolve_device, resolve_dtype

    try:
        resolve_dtype(dtype, resolve_device(device))
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _make_temp_dir(root: Path, name: str) -> Path:
    try:
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    except OSError as exc:
        from pipelines.errors import OutputError

        raise OutputError(f"{root}: output folder is not writable ({exc.strerror or exc})") from None


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished temporary folder to ``final``, replacing an older result.

    ``mkdtemp`` made the folder 0700; it gets the permissions a plain ``mkdir`` would (umask), so
    results on a shared file system are readable as usual.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_video(video: str | os.PathLike, first_mask: str | os.PathLike, *, output: str | os.PathLike = "results",
              name: str | None = None, checkpoint: str | None = None, device: str | None = "auto",
              dtype: str | None = "auto", context: int = DEFAULT_CONTEXT, per_object: bool = False,
              overlay: str | os.PathLike | None = None, mask_video: str | os.PathLike | None = None,
              allow_partial: bool = False, quiet: bool = True, stage=None) -> RunResult:
    """Segment every frame of one video from its first frame's mask (library form of ``vos run``).

    Args:
        video: video file or folder of frames.
        first_mask: the first frame's annotation (see :func:`vos.davis.read_first_mask`).
        output, name: results go to ``output/name`` (name defaults to the video's stem/folder).
        checkpoint, device, dtype: model to load when ``stage`` is None.
        context: prompts per frame (first frame included).
        per_object: binary pass per object instead of one multi-colour pass.
        overlay: optional H.264 overlay video path; mask_video: optional FFV1 label video path.
        allow_partial: keep frames decoded before a corrupt part instead of failing.
        quiet: no progress bar.
        stage: an already loaded :class:`pipelines.model_stage.SegGptStage` (Ray actors reuse one).

    Returns:
        :class:`RunResult`.

    Raises:
        UserError / MaskError, pipelines.errors.PipelineError (VideoDecodeError, OutputError),
        seggpt_model.CheckpointError: bad input, output or checkpoint; no finished-looking output
        is left behind.
    """
    from tqdm import tqdm

    from pipelines.runner import PipelineStats, run_pipeline
    from pipelines.sources import open_source
    from pipelines.writers import MaskVideoWriter, OverlayVideoWriter, PalettePngWriter
    from vos.davis import davis_palette, read_first_mask
    from vos.session import VideoSession

    if stage is None:  # check device and dtype before touching inputs or weights
        check_device_dtype(device, dtype)
    t_start = time.perf_counter()
    source = open_source(video, allow_partial=allow_partial)
    try:
        mask = read_first_mask(first_mask, frame_size=(source.width, source.height))
        name = name or source.name
        root = Path(output)
        final = root / name
        tmp = _make_temp_dir(root, name)
        writers: list = []
        try:
            palette = davis_palette()
            pngs = PalettePngWriter(tmp, palette)
            writers.append(pngs)
            fps = source.fps or 24.0
            if mask_video is not None:
                writers.append(MaskVideoWriter(mask_video, source.width, source.height, fps))
            if overlay is not None:
                writers.append(OverlayVideoWriter(overlay, source.width, source.height, fps, palette))
            t_load = time.perf_counter()
            if stage is None:
                from pipelines.model_stage import load_stage

                if not quiet:
                    print(f"loading SegGPT checkpoint {checkpoint or 'BAAI/seggpt-vit-large'}",
                          file=sys.stderr, flush=True)
                stage = load_stage(checkpoint, device, dtype)
            load_s = time.perf_counter() - t_load

            first_ids = mask.labels.copy()
            if mask.void is not None:
                first_ids[mask.void] = 255          # the first output equals the annotation
            records: list[dict] = []
            session: list[VideoSession] = []
            bar = tqdm(total=source.num_frames, unit="frame", desc=name, disable=quiet,
                       dynamic_ncols=True, file=sys.stderr)

            def process(frame):
                if not session:
                    session.append(VideoSession(stage, frame.rgb, mask.labels, mask.object_ids,
                                                context=context, per_object=per_object))
                    return frame, first_ids
                return frame, session[0].step(frame.rgb)

            def sink(item):
                frame, ids = item
                pngs.write(len(records), ids)
                for w in writers[1:]:
                    if isinstance(w, OverlayVideoWriter):
                        w.write(frame.rgb, ids, pts=frame.pts)
                    else:
                        w.write(ids, pts=frame.pts)
                records.append({"index": len(records), "file": f"{len(records):05d}.png",
                                "source_index": frame.index, "pts": frame.pts})
                bar.update(1)

            stats = PipelineStats()
            try:
                run_pipeline(source, process, sink, stats=stats)
            finally:
                bar.close()
            manifest = {
                "video": str(Path(video).resolve()),
                "first_mask": str(Path(first_mask).resolve()),
                "name": name,
                "frames": len(records),
                "width": source.width,
                "height": source.height,
                "fps": source.fps,
                "objects": list(mask.object_ids),
                "settings": {
                    "checkpoint": checkpoint or "BAAI/seggpt-vit-large",
                    "device": str(stage.device), "dtype": str(stage.dtype).replace("torch.", ""),
                    "context": context, "per_object": per_object, "embedding_type": stage.embedding_type,
                    "allow_partial": allow_partial,
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
            for w in writers:
                w.close()
            _publish(tmp, final)
        except BaseException:
            for w in writers:
                w.abort()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        source.close()
    return RunResult(output_dir=final, frames=len(records), model_fps=stats.model_fps,
                     end_to_end_fps=stats.end_to_end_fps, manifest=manifest)


def main(args) -> int:
    """``vos run`` entry point (see :func:`vos.cli.build_parser`)."""
    opts = resolve_options(args)
    if getattr(args, "address", None):
        from vos.batch import run_on_cluster

        result = run_on_cluster(args, opts)
    else:
        result = run_video(args.video, args.first_mask, output=opts["output"], name=args.name,
                           checkpoint=opts["checkpoint"], device=opts["device"], dtype=opts["dtype"],
                           context=opts["context"], per_object=opts["per_object"], overlay=args.overlay,
                           mask_video=args.mask_video, allow_partial=args.allow_partial,
                           quiet=opts["quiet"])
    if not opts["quiet"]:
        def fps(v):
            return f"{v:.2f}" if v else "n/a"

        print(f"{result.frames} frames, model {fps(result.model_fps)} fps, end-to-end "
              f"{fps(result.end_to_end_fps)} fps -> {result.output_dir}")
    return 0
