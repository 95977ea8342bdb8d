"""Python's cyclic garbage collector during flowtrace's bulk work.

At the default threshold (a collection every 700 net container allocations) the collector
runs thousands of times while an analysis makes its conntrack entries, dump lines and
report rows, and each older-generation pass walks every tracked object: about 0.4 s of
a 1,000,000-packet analysis. flowtrace makes few reference cycles, so it asks for
collections a hundred times less often; the command does so for its whole run
(``flowtrace.launch``), the Python API for the duration of a call.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

RELAXED_THRESHOLD = (100_000, 20, 20)
"""gc.set_threshold arguments while flowtrace works: generation 0 after 100,000 net
allocations (instead of 700), the older generations as often as usual relative to it."""


def relax() -> None:
    """Collect a hundred times less often from now on (unless collections are rarer already)."""
    if gc.get_threshold()[0] < RELAXED_THRESHOLD[0]:
        gc.set_threshold(*RELAXED_THRESHOLD)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Within the block, collect as ``relax`` does; the thresholds before are put back after
    it unless something else changed them meanwhile."""
    before = gc.get_threshold()
    relax()
    try:
        yield
    finally:
        if gc.get_threshold() == RELAXED_THRESHOLD and before != RELAXED_THRESHOLD:
            gc.set_threshold(*before)
