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


def map_to_visible_cuda(name: str | None, visible: int) -> str:
    """The device an actor that sees ``visible`` CUDA devices should use for the requested ``name``.

    Under Ray each actor sees only the GPUs it was given, renumbered from 0 (Ray sets
    ``CUDA_VISIBLE_DEVICES``), so a ``cuda:N`` the user meant for the whole machine may not exist
    there. An index the actor cannot see maps to ``cuda:0``, the actor's own GPU, instead of
    failing the batch; anything else is returned as parsed.

    Args:
        name: a device string (:func:`parse_device`).
        visible: CUDA devices this process sees (``torch.cuda.device_count()``).

    Returns:
        The device string to resolve.

    Raises:
        ValueError: an unknown device string.
    """
    text = parse_device(name)
    if text.startswith("cuda:") and visible >= 1 and int(text[5:]) >= visible:
        return "cuda:0"
    return text


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


def use_device(device: torch.device) -> None:
    """Make ``device`` the current CUDA device of this process (no-op off CUDA).

    Events, ``synchronize``, streams, pinned-memory copies and CUDA graph capture use the current
    device, which is ``cuda:0`` unless set: a model on ``cuda:1`` would otherwise be timed, synced
    and captured on the wrong GPU. Called by every entry point that puts a model on a device
    (``pipelines.model_stage.load_stage``, ``benchmarks/gpu_check.py``).
    """
    import torch  # only here, as in resolve_device

    if device.type == "cuda":
        torch.cuda.set_device(device.index if device.index is not None else torch.cuda.current_device())
