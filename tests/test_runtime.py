"""Process-wide allocator tuning, measured through glibc's own statistics."""

import ctypes
import platform

import pytest
import torch

from mgtoolkit.runtime import heap_reuse


class _MallInfo2(ctypes.Structure):
    _FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS.split()]


def _mapped_bytes_of_a_64_mib_tensor() -> int:
    """How much of a fresh 64 MiB tensor glibc serves from mmap (read while it is alive)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    before = libc.mallinfo2().hblkhd
    t = torch.ones(16 * 2**20)
    mapped = libc.mallinfo2().hblkhd - before
    del t
    return mapped


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc statistics")
def test_heap_reuse_serves_large_tensors_from_the_heap_and_restores():
    assert _mapped_bytes_of_a_64_mib_tensor() >= 64 * 2**20  # glibc's default: mmap
    with heap_reuse():
        assert _mapped_bytes_of_a_64_mib_tensor() == 0
    assert _mapped_bytes_of_a_64_mib_tensor() >= 64 * 2**20
