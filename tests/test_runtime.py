"""Process-wide allocator tuning, measured through glibc's own statistics."""

import json
import os
import platform
import subprocess
import sys

import pytest

#: Measured in a fresh interpreter: in the test process, free chunks that earlier tests left in
#: the heap can serve a large tensor without mmap, whatever the settings.
_MEASURE = r"""
import ctypes, json
import torch
from mgtoolkit.runtime import heap_reuse

FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS.split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped():
    # How much of a fresh 64 MiB tensor glibc serves from mmap (read while it is alive).
    before = libc.mallinfo2().hblkhd
    t = torch.ones(16 * 2**20)
    got = libc.mallinfo2().hblkhd - before
    del t
    return got

out = [mapped()]
with heap_reuse():
    out.append(mapped())
out.append(mapped())
print(json.dumps(out))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc statistics")
def test_heap_reuse_serves_large_tensors_from_the_heap_and_restores():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE], env=env, capture_output=True, text=True, check=True
    )
    before, inside, after = json.loads(out.stdout.split("\n")[-2])
    assert before >= 64 * 2**20  # glibc's default: mmap
    assert inside == 0  # inside the context: from the heap
    assert after >= 64 * 2**20  # the defaults are back
