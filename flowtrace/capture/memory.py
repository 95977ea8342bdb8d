"""Keeping the process's resident memory close to what the tables really use.

glibc serves allocations above a *dynamic* threshold from mmap; once a large block
(such as a 4 MiB read buffer) is freed the threshold rises to its size, later column
arrays land on the heap, and ``calloc`` there writes every page. Pinning the threshold
keeps large arrays mmapped: their pages stay untouched (not resident) until written,
growing them is an mremap, and freed memory returns to the system at once.

Flow building and correlation, though, allocate and free hundreds of packet-sized
temporaries; as fresh mmaps each one costs a page fault per 4 KiB page (flow building:
about twice its whole time; correlation of 1,000,000 packets: 70,000 faults, 0.24 s).
``heap_temporaries`` raises the threshold and the trim threshold for the duration of that
work so that freed blocks are reused; afterwards the threshold is pinned back and the heap
trimmed (in a thread of its own). Blocks nest: only the outermost changes the thresholds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
PINNED_BYTES = 128 * 1024
"""The mmap threshold flowtrace pins (glibc's default starting value)."""
_pinned = False
_depth = 0


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


def pin_mmap_threshold(nbytes: int = PINNED_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` once per process; False where not possible."""
    global _pinned
    if _pinned:
        return True
    libc = glibc()
    if libc is None:
        return False
    _pinned = bool(libc.mallopt(_M_MMAP_THRESHOLD, nbytes))
    return _pinned


@contextmanager
def heap_temporaries() -> Iterator[None]:
    """Within the block, large allocations come from the heap and freed ones are reused."""
    global _depth
    libc = glibc()
    if libc is None:
        yield
        return
    _depth += 1
    if _depth == 1:
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024 * 1024)
    try:
        yield
    finally:
        _depth -= 1
        if not _depth:  # an enclosing block would restore them itself
            libc.mallopt(_M_MMAP_THRESHOLD, PINNED_BYTES)
            libc.mallopt(_M_TRIM_THRESHOLD, PINNED_BYTES)
            # Giving the freed heap back takes ~10 ms; a thread does it (ctypes calls run
            # without the GIL) while the caller goes on.
            threading.Thread(target=libc.malloc_trim, args=(0,), daemon=True).start()
