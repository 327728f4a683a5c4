"""``vos run``: one video, in-process (:func:`vos.engine.video.run_video`) or on one actor of a Ray
cluster (``--address``, :func:`vos.batch.cluster.run_on_cluster`)."""

from __future__ import annotations

from pathlib import Path

from vos.batch.cluster import run_on_cluster
from vos.commands.options import resolve_options
from vos.datasets.job import default_name
from vos.engine.video import annotation_paths, check_not_finished, frame_range, parse_mask_args, run_video
from vos.errors import UserError
from vos.prompts.first_mask import prompt_from_args


def main(args) -> int:
    """``vos run`` entry point (see :func:`vos.cli.build_parser`)."""
    opts = resolve_options(args)
    masks = parse_mask_args(getattr(args, "masks", None))
    prompt = prompt_from_args(args)
    if prompt is not None:
        prompt.check()
    annotation_paths(getattr(args, "first_mask", None), masks,      # one-line errors before any work
                     frame0_prompt=prompt is not None)
    frames = frame_range(getattr(args, "frames", None))
    overwrite = bool(getattr(args, "overwrite", False))
    if getattr(args, "address", None):
        if getattr(args, "frames", None) or getattr(args, "fps", None):
            raise UserError("--frames and --fps run in-process only (without --address)")
        if not overwrite:          # the actor replaces its output (vos batch's rule): check here
            check_not_finished(Path(opts["output"]) / (args.name or default_name(Path(args.video))))
        args.masks = masks
        result = run_on_cluster(args, opts)
    else:
        result = run_video(args.video, args.first_mask, masks=masks, max_pinned=opts["max_pinned"],
                           output=opts["output"], name=args.name, checkpoint=opts["checkpoint"],
                           device=opts["device"], dtype=opts["dtype"], context=opts["context"],
                           per_object=opts["per_object"], overlay=args.overlay,
                           mask_video=args.mask_video, allow_partial=args.allow_partial,
                           quiet=opts["quiet"], prompt=prompt, frames=frames,
                           fps=getattr(args, "fps", None), overwrite=overwrite, attn=opts["attn"],
                           compile=opts["compile"])
    if not opts["quiet"]:
        def fps(v):
            return f"{v:.2f}" if v else "n/a"

        print(f"{result.frames} frames, model {fps(result.model_fps)} fps, end-to-end "
              f"{fps(result.end_to_end_fps)} fps -> {result.output_dir}")
    return 0
