"""``--device`` and ``--dtype``: the one parser of both, used by every entry point.

:func:`parse_device` and :func:`parse_dtype` check the strings without importing torch (the
``vos batch`` driver and the CLI validate before anything heavy is loaded, and a Ray driver may
have no GPU of its own); :func:`resolve_device` and :func:`resolve_dtype` turn them into torch
objects on the machine that runs the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Accepted ``--dtype`` spellings -> canonical torch dtype name.
DTYPE_NAMES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16",
               "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def parse_device(name: str | None) -> str:
    """Normalise a device string: None -> ``auto``; ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ValueError: any other string (the message lists the accepted forms).
    """
    text = (name or "auto").strip().lower()
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise ValueError(f"unknown device {text!r}: use auto, cpu, cuda or cuda:N")


def parse_dtype(name: str | None) -> str:
    """Normalise a dtype string: None -> ``auto``; else ``float32``, ``bfloat16`` or ``float16``
    (``fp32``, ``bf16``, ``fp16`` accepted).

    Raises:
        ValueError: any other string.
    """
    text = (name or "auto").strip().lower()
    if text not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {text!r}: use auto, float32, bfloat16 or float16")
    return DTYPE_NAMES[text]


def resolve_device(name: str | None) -> torch.device:
    """``auto`` / None -> ``cuda`` when available, else ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` as given.

    Raises:
        ValueError: an unknown device string, or a CUDA device that is not available.
    """
    import torch  # only here: parse_* and `vos --help` stay torch-free (0.2 s vs 3 s start-up)

    text = parse_device(name)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {text!r} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {text!r} requested but only {torch.cuda.device_count()} CUDA "
                             f"device(s) exist")
    return device


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """``auto`` / None -> bfloat16 on CUDA, float32 on CPU; else float32, bfloat16 or float16.

    Raises:
        ValueError: an unknown dtype string.
    """
    import torch  # only here, as in resolve_device

    text = parse_dtype(name)
    if text == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, text)


def check_device_dtype(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    """Resolve both on this machine, before any weight is read.

    Raises:
        ValueError: unknown device or dtype, or a CUDA device that is not available.
    """
    dev = resolve_device(device)
    return dev, resolve_dtype(dtype, dev)
