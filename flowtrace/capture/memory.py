"""Keeping the process's resident memory close to what the tables really use.

glibc serves allocations above a *dynamic* threshold from mmap; once a large block
(such as a 4 MiB read buffer) is freed the threshold rises to its size, later column
arrays land on the heap, and ``calloc`` there writes every page. Pinning the threshold
keeps large arrays mmapped: their pages stay untouched (not resident) until written,
growing them is an mremap, and freed memory returns to the system at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_MMAP_THRESHOLD = -3
_pinned = False


def pin_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` once per process; False where not possible."""
    global _pinned
    if _pinned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _pinned = bool(libc.mallopt(_M_MMAP_THRESHOLD, nbytes))
    except (OSError, AttributeError):
        return False
    return _pinned
