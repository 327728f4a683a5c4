"""The measured choice of the CUDA attention kernel: a small JSON record the product reads.

``benchmarks/gpu_check.py`` times the attention kernels that can run on the GPU (``"sdpa"``, which
picks :func:`seggpt_model.layers.fused_sdpa_attention` there, and ``"flex"``,
:func:`seggpt_model.layers.flex_attention_kernel`) on the device, in bf16 at the VOS operating
point, and writes the winner here with :func:`write_record`. :func:`pipelines.model_stage.load_stage`
reads it with :func:`cuda_attention_choice` when the caller names no kernel: the product chooses by
that measurement, not by a guess. While no record exists (no GPU has run the check), the choice is
``"sdpa"``, today's kernel. CPU runs never read the record (their kernels were measured on CPU,
``docs/benchmarks.md``).

Record (``pipelines/attention_record.json``, or ``VOS_ATTENTION_RECORD=PATH``)::

    {"winner": "flex", "device": "NVIDIA H200", "torch": "2.13.0+cu128", "date": "2026-12-03",
     "dtype": "bfloat16", "context": 8, "ms_per_frame": {"sdpa": 61.2, "flex": 48.0},
     "label_agreement": 0.9998, "source": "benchmarks/gpu_check.py"}

This module does file I/O, so it lives in ``pipelines``, not in the I/O-free ``seggpt_model``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from seggpt_model.files import atomic_write

__all__ = ["RECORD_PATH", "CUDA_CANDIDATES", "DEFAULT_CUDA_ATTENTION", "record_path", "read_record",
           "cuda_attention_choice", "write_record"]

#: Where the GPU check writes the record and the product reads it (``VOS_ATTENTION_RECORD``
#: overrides it).
RECORD_PATH = Path(__file__).resolve().parent / "attention_record.json"

#: Kernel names the GPU check compares on CUDA (names of ``set_attn_implementation``).
CUDA_CANDIDATES = ("sdpa", "flex")

#: The choice while no record exists: today's kernel (``"sdpa"`` = fused SDPA on CUDA).
DEFAULT_CUDA_ATTENTION = "sdpa"


def record_path() -> Path:
    """The record's path: ``$VOS_ATTENTION_RECORD`` when set, else :data:`RECORD_PATH`."""
    env = os.environ.get("VOS_ATTENTION_RECORD")
    return Path(env) if env else RECORD_PATH


def read_record(path: Path | None = None) -> dict | None:
    """The record as a dict, or None when there is none or it is unreadable or malformed (a bad
    record must not stop a run: the default kernel is used instead).

    Args:
        path: the file (default :func:`record_path`).
    """
    path = record_path() if path is None else Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("winner") not in CUDA_CANDIDATES:
        return None
    return record


def cuda_attention_choice(path: Path | None = None) -> str:
    """The attention implementation to use on CUDA: the record's winner, or
    :data:`DEFAULT_CUDA_ATTENTION` (``"sdpa"``) without a valid record.

    Returns:
        One of :data:`CUDA_CANDIDATES`.
    """
    record = read_record(path)
    return DEFAULT_CUDA_ATTENTION if record is None else record["winner"]


def write_record(ms_per_frame: dict[str, float], *, device: str, torch_version: str, date: str,
                 dtype: str, context: int, label_agreement: float | None,
                 path: Path | None = None) -> dict:
    """Write the record of a measurement (atomically) and return it.

    The winner is the candidate with the lowest ``ms_per_frame``; a candidate whose labels did not
    agree with ``"sdpa"`` (``label_agreement`` below 0.995, the bf16 gate of the check) cannot win.

    Args:
        ms_per_frame: ``{name: milliseconds per frame}`` for names in :data:`CUDA_CANDIDATES`
            (at least ``"sdpa"``).
        device, torch_version, date, dtype, context: where and how it was measured.
        label_agreement: fraction of labels of ``"flex"`` equal to ``"sdpa"``'s, or None.
        path: the file (default :func:`record_path`).

    Raises:
        ValueError: an unknown candidate name, or no time for ``"sdpa"``.
    """
    unknown = set(ms_per_frame) - set(CUDA_CANDIDATES)
    if unknown or "sdpa" not in ms_per_frame:
        raise ValueError(f"ms_per_frame needs 'sdpa' and only {CUDA_CANDIDATES}, got {sorted(ms_per_frame)}")
    eligible = {k: v for k, v in ms_per_frame.items()
                if k == "sdpa" or label_agreement is None or label_agreement >= 0.995}
    winner = min(eligible, key=eligible.get)
    record = {"winner": winner, "device": device, "torch": torch_version, "date": date, "dtype": dtype,
              "context": context, "ms_per_frame": dict(ms_per_frame), "label_agreement": label_agreement,
              "source": "benchmarks/gpu_check.py"}
    path = record_path() if path is None else Path(path)
    atomic_write(path, json.dumps(record, indent=1) + "\n", fsync=False)
    return record
