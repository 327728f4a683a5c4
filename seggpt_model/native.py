"""The model's one native CPU kernel: the biased softmax rows of a bf16 attention block.

torch has no fused "add the decomposed position bias, take the row maximum, exponentiate and sum"
for bf16 logits; as separate torch ops over bf16 data these passes take about 1.4 ms per 784 x 1568
block on a Zen 4 core, twice the block's two GEMMs (``docs/benchmarks.md``, "bf16 on CPUs without
AMX"). ``csrc/biased_softmax.c`` does them with one read of the logits and one write of the
probabilities per row, in fp32 (0.28 ms). It is plain C, compiled at first use by the system's C
compiler for this CPU's vector ISA level (the level torch's own kernels were dispatched to),
cached on disk and loaded with :mod:`ctypes`, which releases the GIL during the call, so the blocks of
:func:`seggpt_model.layers.chunked_softmax_attention` run in parallel on torch's threads.

The kernel cache is the one place where the model's forward touches the file system (at the
first bf16 forward of a process, through :func:`biased_softmax`):

* Cache: ``$SEGGPT_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/seggpt/kernels``, else
  ``~/.cache/seggpt/kernels``; one shared library per (source, compiler, flags), written
  atomically, so concurrent processes never load a half-written file.
* Compiler: ``$CC``, else ``cc``. Where none works, :func:`biased_softmax` returns None, warns once
  (a :class:`RuntimeWarning` naming the reason), and the model runs the same math on torch ops.
* ``SEGGPT_NATIVE_KERNELS=0`` turns the kernel off (benchmarks compare the two paths with it).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from .files import atomic_write

SOURCE = Path(__file__).with_name("csrc") / "biased_softmax.c"
_SYMBOL = "seggpt_biased_softmax_bf16"
_BASE_FLAGS = ("-O3", "-shared", "-fPIC", "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros",
               "-fassociative-math", "-ffinite-math-only")  # not -ffast-math: see the C file
_LIBRARIES = ("-lm",)
_COMPILE_TIMEOUT_S = 120


def isa_flags(capability: str | None = None, machine: str | None = None) -> tuple[str, ...]:
    """The compiler's target flags for the vector ISA level torch dispatches to on this CPU.

    Args:
        capability: ``torch.backends.cpu.get_cpu_capability()`` (``"AVX512"``, ``"AVX2"``,
            ``"DEFAULT"``, ...); None: this host's.
        machine: ``platform.machine()``; None: this host's.

    Returns:
        ``-march=x86-64-v4`` (with 512-bit vectors preferred) for AVX512, ``-march=x86-64-v3`` for
        AVX2, nothing elsewhere (the compiler's baseline, e.g. NEON on aarch64).
    """
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in ("x86_64", "amd64"):
        return ()
    if capability.startswith("AVX512"):
        return ("-march=x86-64-v4", "-mprefer-vector-width=512")
    if capability == "AVX2":
        return ("-march=x86-64-v3",)
    return ()


def cache_dir() -> Path:
    """Where compiled kernels are kept (see the module docstring)."""
    if os.environ.get("SEGGPT_KERNEL_CACHE"):
        return Path(os.environ["SEGGPT_KERNEL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "seggpt" / "kernels"


def build(source: Path = SOURCE, directory: Path | None = None,
          compiler: str | None = None, flags: tuple[str, ...] | None = None) -> Path:
    """Compile ``source`` into a shared library in ``directory``, or return the cached one.

    The file name holds a hash of the source text, the compiler command and the flags, so an
    edited source, another compiler or another ISA level builds anew. The library is compiled in
    a temporary folder inside ``directory`` and put in place by
    :func:`~seggpt_model.files.atomic_write`, so a concurrent process never loads a partial file.

    Args:
        source: the C file.
        directory: the cache; None: :func:`cache_dir`.
        compiler: the compiler command; None: ``$CC`` or ``cc``.
        flags: target flags; None: :func:`isa_flags` of this host.

    Returns:
        The shared library's path.

    Raises:
        RuntimeError: no compiler found, or compilation failed (the message holds the compiler's
            first error line).
    """
    directory = cache_dir() if directory is None else directory
    command = shlex.split(compiler or os.environ.get("CC") or "cc") or ["cc"]
    flags = isa_flags() if flags is None else flags
    text = source.read_bytes()
    key = hashlib.sha256(text + "\0".join([*command, *_BASE_FLAGS, *flags, *_LIBRARIES]).encode()).hexdigest()[:16]
    target = directory / f"{source.stem}-{key}.so"
    if target.is_file():
        return target
    if shutil.which(command[0]) is None:
        raise RuntimeError(f"no C compiler found ({command[0]!r}; set CC)")
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=directory) as work:
        built = Path(work) / target.name
        try:
            done = subprocess.run([*command, *_BASE_FLAGS, *flags, str(source), "-o", str(built), *_LIBRARIES],
                                  capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{command[0]} took over {_COMPILE_TIMEOUT_S} s on {source.name}") from exc
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines()
            raise RuntimeError(f"{command[0]} failed on {source.name}: "
                               f"{lines[0].strip() if lines else f'exit status {done.returncode}'}")
        atomic_write(target, built.read_bytes(), fsync=False)
    return target


class BiasedSoftmax:
    """The loaded kernel of ``csrc/biased_softmax.c``: for each row ``t`` of a bf16 block of raw
    logits ``s = q k^T``, ``x = scale * s[t] + term_h + term_w`` in fp32 with the position terms
    read from ``products`` as in :func:`seggpt_model.layers._chunked_block`, then
    ``s[t] = bf16(softmax(x))`` in place and, if asked, ``lse[t] = logsumexp(x)``.

    Thread-safe (no state); the GIL is released during the call.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._function = getattr(ctypes.CDLL(str(path)), _SYMBOL)
        self._function.restype = None
        self._function.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                   ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                   ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p]

    def __call__(self, logits: torch.Tensor, products: torch.Tensor, h_offset: int, w_offset: int,
                 grid_width: int, scale: float, lse: torch.Tensor | None, row: torch.Tensor) -> None:
        """Run the kernel on one block.

        Args:
            logits: ``(M, N)`` bf16, contiguous, CPU: raw ``q k^T`` in; the probabilities out
                (each row sums to 1 before rounding). ``M`` and ``N`` are whole grid rows
                (multiples of ``grid_width``).
            products: ``(M, nt)`` bf16, unit column stride: row ``t`` holds the height term of
                key row ``kr`` at column ``h_offset - t // grid_width + kr`` and the width term of
                key column ``kc`` at ``w_offset - t % grid_width + kc``.
            h_offset, w_offset: those column offsets.
            grid_width: ``Wg``, keys per grid row.
            scale: multiplies the raw logits (the attention scale).
            lse: ``(M,)`` fp32, contiguous, receives the rows' log-sum-exp; or None.
            row: fp32 scratch of at least ``N`` elements, contiguous, owned by the calling thread.

        Raises:
            ValueError: a dtype, layout or size that does not fit (checked before any memory is
                touched, since the C code trusts its arguments).
        """
        m, n = logits.shape
        nt = products.shape[1]
        extra = () if lse is None else (lse,)
        if (logits.dtype != torch.bfloat16 or not logits.is_contiguous() or products.dtype != torch.bfloat16
                or products.stride(1) != 1 or products.shape[0] != m or m % grid_width or n % grid_width
                or h_offset - (m - 1) // grid_width < 0 or h_offset + n // grid_width > nt
                or w_offset - (grid_width - 1) < 0 or w_offset + grid_width > nt
                or any(t.dtype != torch.float32 or not t.is_contiguous() for t in (row, *extra))
                or row.numel() < n or (lse is not None and lse.numel() != m)
                or any(t.device.type != "cpu" for t in (logits, products, row, *extra))):
            raise ValueError(f"biased softmax kernel: arguments do not fit (logits {tuple(logits.shape)} "
                             f"{logits.dtype}, products {tuple(products.shape)} {products.dtype}, "
                             f"offsets {h_offset}/{w_offset}, grid width {grid_width})")
        self._function(logits.data_ptr(), m, n, grid_width, products.data_ptr(), products.stride(0),
                       h_offset, w_offset, scale, None if lse is None else lse.data_ptr(), row.data_ptr())


_lock = threading.Lock()
_loaded: dict[str, BiasedSoftmax | None] = {}


def biased_softmax() -> BiasedSoftmax | None:
    """The kernel for this process: built (or found in the cache) and loaded at the first call.

    Returns:
        The :class:`BiasedSoftmax`, or None when ``SEGGPT_NATIVE_KERNELS=0`` or it cannot be built
        or loaded; in the latter case a :class:`RuntimeWarning` says why, once per process.
    """
    if os.environ.get("SEGGPT_NATIVE_KERNELS", "1") == "0":
        return None
    with _lock:
        if "biased_softmax" not in _loaded:
            try:
                _loaded["biased_softmax"] = BiasedSoftmax(build())
            except (OSError, RuntimeError, AttributeError) as exc:
                _loaded["biased_softmax"] = None
                warnings.warn(f"bf16 attention on CPU: the native softmax kernel is not available ({exc}); "
                              f"running it on torch ops (bf16 attention about 2.5x slower)", RuntimeWarning, stacklevel=2)
        return _loaded["biased_softmax"]


def reset() -> None:
    """Forget the loaded kernel, so the next :func:`biased_softmax` builds or loads it again (tests)."""
    with _lock:
        _loaded.clear()
