"""``vos run``: one video, in-process (:func:`vos.engine.video.run_video`) or on one actor of a Ray
cluster (``--address``, :func:`vos.batch.cluster.run_on_cluster`)."""

from __future__ import annotations

from vos.batch.cluster import run_on_cluster
from vos.commands.options import resolve_options
from vos.engine.video import annotation_paths, parse_mask_args, run_video
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
    if getattr(args, "address", None):
        args.masks = masks
        result = run_on_cluster(args, opts)
    else:
        result = run_video(args.video, args.first_mask, masks=masks, max_pinned=opts["max_pinned"],
                           output=opts["output"], name=args.name, checkpoint=opts["checkpoint"],
                           device=opts["device"], dtype=opts["dtype"], context=opts["context"],
                           per_object=opts["per_object"], overlay=args.overlay,
                           mask_video=args.mask_video, allow_partial=args.allow_partial,
                           quiet=opts["quiet"], prompt=prompt)
    if not opts["quiet"]:
        def fps(v):
            return f"{v:.2f}" if v else "n/a"

        print(f"{result.frames} frames, model {fps(result.model_fps)} fps, end-to-end "
              f"{fps(result.end_to_end_fps)} fps -> {result.output_dir}")
    return 0
