"""Helpers shared by the benchmark scripts: peak-memory probes, machine description, doc sections."""

from __future__ import annotations

import datetime
import os
import platform
import re
import time
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux ``clear_refs`` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """Peak resident set size since the last :func:`reset_peak_rss` (MiB; Linux ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """Current resident set size (MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> str:
    """One line naming the CPU (or GPU), core count and library versions."""
    import torch

    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        desc = f"{torch.cuda.get_device_name()} ({desc})"
    return desc


def measure_times(fn, repeat: int, warmup: int = 1, sync=None) -> tuple[list[float], object]:
    """Wall seconds of each of ``repeat`` calls of ``fn()`` after ``warmup`` untimed ones, and the
    last result; ``sync`` (e.g. ``torch.cuda.synchronize``) waits for the device around each call."""
    sync = sync or (lambda: None)
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times, out


def today() -> str:
    return datetime.date.today().isoformat()


def write_section(key: str, title: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section between ``<!-- key:start -->`` and ``<!-- key:end -->``."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nMeasured speed, with machine and date.\n"
    block = f"<!-- {key}:start -->\n## {title}\n\n{body.rstrip()}\n<!-- {key}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(key)}:start -->.*?<!-- {re.escape(key)}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, doc)


def report(key: str, title: str, lines: list[str], write: bool = True) -> int:
    """Print the report lines and, when ``write``, store them as section ``key`` of
    ``docs/benchmarks.md`` (:func:`write_section`). Returns 0, the script's exit status."""
    text = "\n".join(lines)
    print(text)
    if write:
        write_section(key, title, text)
    return 0
