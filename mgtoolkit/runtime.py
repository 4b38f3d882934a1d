"""Process-wide tuning: how this process's allocator treats the large tensors of a step.

Settings here affect the whole process (every thread): use them around a training or
prediction loop, not inside library code that other threads share.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform

__all__ = ["heap_reuse", "process_alive"]


@contextlib.contextmanager
def heap_reuse():
    """Keep freed memory in the process heap inside the context (glibc; elsewhere a no-op).

    Why: torch's CPU tensors come from malloc, and glibc serves every block of ≥ 32 MiB (one
    64³ × 16-channel activation of a batch of 4 is 64 MiB) with fresh ``mmap`` pages that the
    kernel faults in and zeroes on first touch, and unmaps again on ``free``. A training step
    allocates and frees the same large tensors every time, so it pays that again and again.
    Keeping them makes steps faster for a higher resident peak (memory freed in the heap is
    reused, not returned; the docs' performance page has the figures). Inside the context
    ``mmap`` is off (``M_MMAP_MAX = 0``) and the heap is not trimmed below 2 GiB of free
    memory; on exit the thresholds of the environment (``MALLOC_MMAP_MAX_``,
    ``MALLOC_TRIM_THRESHOLD_``) or glibc's defaults return and ``malloc_trim`` hands the free
    memory back to the OS.

    The settings are process-wide: use it around a training loop, not inside library code that
    other threads share.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        yield
        return
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**31 - 1)
    try:
        yield
    finally:
        libc.mallopt(m_mmap_max, int(os.environ.get("MALLOC_MMAP_MAX_", 65536)))
        libc.mallopt(m_trim_threshold, int(os.environ.get("MALLOC_TRIM_THRESHOLD_", 128 * 1024)))
        libc.malloc_trim(0)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (also one of another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's process
    return True
