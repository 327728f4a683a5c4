"""pipelines.allocator: large freed blocks stay mapped for the next allocation (glibc)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

_PROBE = r"""
import resource, sys
import torch
from pipelines.allocator import keep_freed_memory

tuned = keep_freed_memory()
def faults_of_one_layer(mib):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(mib * 2**20 // 4, dtype=torch.float32)   # above glibc's mmap threshold
    t.fill_(1.0)
    del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one_layer(64)
# A smaller second tensor: an equal-sized one can miss the freed block by the few bytes of
# alignment slack that posix_memalign asks for, depending on where the heap starts.
print(tuned, faults_of_one_layer(48))
"""


def _probe(env_extra: dict[str, str]) -> tuple[str, int]:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tuned, faults = out.stdout.split()
    return tuned, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings exist in glibc only")
def test_freed_tensor_memory_is_reused_without_new_page_faults():
    pages = 48 * 2**20 // 4096
    tuned, faults = _probe({"VOS_MALLOC_TUNING": "1"})
    assert tuned == "True"
    assert faults < pages // 10            # the 48 MiB tensor reuses the freed 64 MiB block's pages
    default, faults_default = _probe({"VOS_MALLOC_TUNING": "0"})
    assert default == "False"               # opted out: glibc maps and unmaps the block each time
    assert faults_default > pages // 2
