"""Serve the many large temporary arrays of flow building and correlation from the heap,
not from fresh mmaps.

flowtrace pins glibc's mmap threshold low (flowtrace.capture.memory) so that the packets
table's columns stay mmapped and freed memory goes back to the system at once. Flow
building and correlation, though, allocate and free hundreds of packet-sized temporaries;
as fresh mmaps each one costs a page fault per 4 KiB page (flow building: about twice its
whole time; correlation of 1,000,000 packets: 70,000 faults, 0.24 s). For the duration of
that work the threshold and the trim threshold are raised so that freed blocks are
reused; afterwards the threshold is pinned back and the heap trimmed (in a thread of its
own). Blocks nest: only the outermost changes the thresholds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flowtrace.capture.memory import glibc

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_PINNED = 128 * 1024  # the value flowtrace.capture.memory pins, and glibc's default
_depth = 0


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
            libc.mallopt(_M_MMAP_THRESHOLD, _PINNED)
            libc.mallopt(_M_TRIM_THRESHOLD, _PINNED)
            # Giving the freed heap back takes ~10 ms; a thread does it (ctypes calls run
            # without the GIL) while the caller goes on.
            threading.Thread(target=libc.malloc_trim, args=(0,), daemon=True).start()
