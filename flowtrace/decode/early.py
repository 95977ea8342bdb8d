"""Reading started by the command line before it has loaded (typer, rich, pandas: ~0.4 s).

``start_early(paths)`` gets the capture arguments of a command that reads captures
(flowtrace.launch picks them out) and starts what that command's read would start: for
one large pcap, the second process of flowtrace.decode.halves, decoding segments from
the file's end; for several large captures, the worker pool of flowtrace.decode.reading.
The read adopts them when it asks for exactly those files; ``abandon_early`` stops
whatever no read adopted. Nothing here raises: a path it cannot use is left to the
command, which reports it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from flowtrace.capture.files import expand_sources
from flowtrace.decode import halves, reading
from flowtrace.fork import can_fork


def start_early(paths: Sequence[str], *, pool: bool = True) -> None:
    """Start decoding the captures ``paths`` name (files, ``NAME=PATH``, directories); a
    worker pool for several of them only with ``pool`` (a command that reads them all at once)."""
    if not paths or not can_fork():
        return
    with contextlib.suppress(Exception):
        sources = expand_sources(list(paths))
        if not all(os.path.isfile(s.path) for s in sources):
            return  # a pipe (<(zcat ...)) or a device: reading ahead would take data from the command
        if len(sources) == 1:
            halves.start_early_split(sources[0])
        elif pool:
            reading.start_early_pool(sources)


def abandon_early() -> None:
    """Stop everything ``start_early`` started that no read adopted."""
    halves.abandon_early_splits()
    reading.abandon_early_pools()
