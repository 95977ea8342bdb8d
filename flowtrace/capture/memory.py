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
import functools
import sys

_M_MMAP_THRESHOLD = -3
_pinned = False


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (``mallopt`` and ``malloc_trim``), else None; loaded
    once (``find_library`` runs ldconfig in a subprocess)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            return None
    try:
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
    except AttributeError:
        return None
    return libc


def pin_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` once per process; False where not possible."""
    global _pinned
    if _pinned:
        return True
    libc = glibc()
    if libc is None:
        return False
    _pinned = bool(libc.mallopt(_M_MMAP_THRESHOLD, nbytes))
    return _pinned
