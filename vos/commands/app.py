"""``vos app``: the web page and API of :mod:`vos.app.server` on one model shared by every session."""

from __future__ import annotations

from typing import Any

from pipelines.sources import open_source
from seggpt_model.config import DEFAULT_CHECKPOINT
from vos.app.state import AppSettings, ModelHost
from vos.commands.options import resolve_options
from vos.errors import UserError, check_device_dtype

EXTRA = 'pip install "seggpt-vos[app]"'


def main(args) -> int:
    """``vos app`` entry point (see :func:`vos.cli.build_parser`): checks the options and the video,
    loads the model once, serves until Ctrl-C.

    Raises:
        UserError: Gradio not installed (names the ``app`` extra), a bad option, a port outside
            1..65535 or already taken; pipelines.errors.VideoDecodeError: VIDEO is not a video;
            seggpt_model.CheckpointError: the checkpoint cannot be loaded.
    """
    opts: dict[str, Any] = resolve_options(args)
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    try:
        import gradio  # noqa: F401  (optional dependency: the app extra)
    except ImportError:
        raise UserError(f"vos app needs Gradio, which is not installed: {EXTRA}") from None
    from vos.app.server import launch  # imports gradio (optional dependency: the app extra)

    check_device_dtype(opts["device"], opts["dtype"])
    if args.video is not None:                  # a bad VIDEO is one line, before the model loads
        with open_source(args.video):
            pass
    if not opts["quiet"]:
        print(f"vos app: loading SegGPT checkpoint {opts['checkpoint'] or DEFAULT_CHECKPOINT}", flush=True)
    host = ModelHost(AppSettings(checkpoint=opts["checkpoint"], device=opts["device"], dtype=opts["dtype"],
                                 context=opts["context"], max_pinned=opts["max_pinned"],
                                 text_model=args.text_model, attn=opts["attn"],
                                 compile=bool(opts["compile"])))
    try:
        launch(host, args.video, server_name=args.host, port=args.port, quiet=opts["quiet"])
    except OSError as exc:
        raise UserError(f"{args.host}:{args.port}: cannot serve there ({exc})") from None
    return 0

