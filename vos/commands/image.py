"""``vos image``: in-context segmentation of images (:func:`vos.engine.images.segment_images`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vos.commands.options import DEFAULTS as RUN_DEFAULTS
from vos.commands.options import load_config_file as load_run_config
from vos.commands.options import merge_options
from vos.engine.images import MAX_LABELS, segment_images
from vos.errors import UserError, check_positive
from vos.prompts.first_mask import prompt_from_args

DEFAULTS: dict[str, Any] = {
    "checkpoint": None,          # None -> seggpt_model.DEFAULT_CHECKPOINT
    "device": "auto",
    "dtype": "auto",
    "context": None,             # None -> every prompt pair given
    "num_labels": None,          # None -> objects of the prompt masks
    "attn": "auto",
    "compile": False,
    "output": "results",
    "quiet": False,
}


def load_config_file(path: str | os.PathLike | None) -> dict[str, Any]:
    """Read a ``--config`` JSON file of option defaults (the ``vos run`` format).

    Keys are long option names (``-`` or ``_``); ``vos run`` keys that do not apply to images
    (``per_object``) are accepted and ignored, so one file can serve both commands.

    Raises:
        UserError: unreadable file, not a JSON object, or unknown keys.
    """
    data = load_run_config(path, known=set(DEFAULTS) | set(RUN_DEFAULTS))
    return {k: v for k, v in data.items() if k in DEFAULTS}


def resolve_options(args) -> dict[str, Any]:
    """Merge defaults < ``--config`` file < command-line flags, and check them.

    Raises:
        UserError: ``context`` or ``num_labels`` that is not a positive integer (``num_labels`` at
            most 254).
    """
    opts = merge_options(args, DEFAULTS, load_config_file(getattr(args, "config", None)))
    if opts["context"] is not None:
        check_positive("context", opts["context"])
    n = opts["num_labels"]
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_LABELS):
        raise UserError(f"--num-labels must be an integer in 1..{MAX_LABELS}, got {n!r}")
    return opts


def main(args) -> int:
    """``vos image`` entry point (see :func:`vos.cli.build_parser`)."""
    opts = resolve_options(args)
    mask_prompt = prompt_from_args(args)
    if mask_prompt is None and not args.prompt_mask:
        raise UserError("give --prompt-image/--prompt-mask pairs, or --text, --example/--example-mask "
                        "or --classes to propose the prompt masks")
    result = segment_images(args.queries, args.prompt_image or [], args.prompt_mask or [],
                            mask_prompt=mask_prompt, output=opts["output"],
                            num_labels=opts["num_labels"], overlay=bool(args.overlay),
                            checkpoint=opts["checkpoint"], device=opts["device"], dtype=opts["dtype"],
                            context=opts["context"], quiet=opts["quiet"], attn=opts["attn"],
                            compile=opts["compile"])
    if not opts["quiet"]:
        shots = "one-shot" if result.prompts == 1 else f"{result.prompts}-shot"
        print(f"{len(result.outputs)} image(s), {shots}, labels {list(result.label_ids)} -> "
              f"{Path(opts['output'])}")
    return 0
