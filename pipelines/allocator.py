"""Process-wide settings of the C allocator for a model that allocates large, short-lived tensors.

Every SegGPT layer allocates and frees tensors of tens to hundreds of MiB (projections, MLP
activations, attention outputs). glibc's ``malloc`` serves requests above its mmap threshold (at
most 32 MiB) with a fresh ``mmap`` and returns them with ``munmap`` on free, so each such tensor
is paged in again, one zero-filled page fault per 4 KiB, on every layer of every frame. On the
project's 2-core CPU machines this costs 10-25 % of a ViT-L forward (``docs/benchmarks.md``).
:func:`keep_freed_memory` makes glibc serve those requests from its heap and keep freed memory
mapped for the next layer, the same effect that tcmalloc or jemalloc give, without a dependency.

Peak memory does not grow with video length: each frame repeats the same sizes, so freed blocks
are reused. On other C libraries (musl, macOS, Windows) the call does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters, glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Serve large allocations from the heap and keep freed memory for reuse (glibc only).

    Sets ``M_MMAP_MAX = 0`` (no per-allocation ``mmap``) and ``M_TRIM_THRESHOLD`` to 1 GiB (free
    memory at the top of the heap is returned to the system only beyond that). Idempotent; set the
    environment variable ``VOS_MALLOC_TUNING=0`` to leave the allocator alone.

    Returns:
        True when the settings are in effect, False when skipped (other C library, or opted out).
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("VOS_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30)) and bool(mallopt(_M_MMAP_MAX, 0))
    return _done
