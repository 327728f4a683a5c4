"""Option merging shared by the commands: defaults < ``--config`` JSON file < command-line flags."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vos.engine.session import DEFAULT_CONTEXT, DEFAULT_MAX_PINNED
from vos.errors import UserError, check_positive

DEFAULTS: dict[str, Any] = {
    "checkpoint": None,          # None -> seggpt_model.DEFAULT_CHECKPOINT
    "device": "auto",
    "dtype": "auto",
    "context": DEFAULT_CONTEXT,
    "max_pinned": DEFAULT_MAX_PINNED,
    "per_object": False,
    "attn": "auto",
    "compile": False,
    "output": "results",
    "quiet": False,
}


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
        UserError: bad config file, or a ``context`` or ``max_pinned`` that is not a positive
            integer.
    """
    defaults = {**DEFAULTS, **(extra_defaults or {})}
    opts = merge_options(args, defaults, load_config_file(getattr(args, "config", None), known=defaults))
    for key in ("context", "max_pinned"):
        check_positive(key, opts[key])
    return opts


