"""Serve flow building's many large temporary arrays from the heap, not from fresh mmaps.

flowtrace pins glibc's mmap threshold low (flowtrace.capture.memory) so that the packets
table's columns stay mmapped and freed memory goes back to the system at once. Flow
building, though, allocates and frees hundreds of packet-sized temporaries; as fresh
mmaps each one costs a page fault per 4 KiB page (about twice the whole build time). For
the duration of the build the threshold and the trim threshold are raised so that freed
blocks are reused; afterwards the threshold is pinned back and the heap trimmed (in a
thread of its own).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flowtrace.capture.memory import glibc

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_PINNED = 128 * 1024  # the value flowtrace.capture.memory pins, and glibc's default


@contextmanager
def heap_temporaries() -> Iterator[None]:
    """Within the block, large allocations come from the heap and freed ones are reused."""
    libc = glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    libc.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024 * 1024)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _PINNED)
        libc.mallopt(_M_TRIM_THRESHOLD, _PINNED)
        # Giving the freed heap back takes ~10 ms; a thread does it (ctypes calls run
        # without the GIL) while the caller goes on.
        threading.Thread(target=libc.malloc_trim, args=(0,), daemon=True).start()
