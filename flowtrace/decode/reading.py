"""Whole captures into a packets table builder: one pass, two halves, or a pool of workers.

Nothing here needs pandas, so that reading can start before the command line has loaded
it (flowtrace.decode.early). ``flowtrace.pipeline.read_sources`` chooses between:

- several captures of PARALLEL_MIN_BYTES or more in total: one worker process per core,
  each decoding whole captures into a part of its own (``decode_worker``), merged later;
- otherwise each capture into the one builder (``decode_into``), a large uncompressed
  pcap by two processes (flowtrace.decode.halves).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from flowtrace.capture.files import CaptureSource
from flowtrace.capture.memory import pin_mmap_threshold
from flowtrace.capture.pcap import PcapReader
from flowtrace.capture.reader import CaptureFile, CaptureMeta, CaptureReader
from flowtrace.decode.feed import feed
from flowtrace.decode.halves import can_split, decode_halves, die_with_parent, source_key
from flowtrace.decode.table import PacketTableBuilder
from flowtrace.errors import CaptureWarning
from flowtrace.fork import requested_workers

log = logging.getLogger("flowtrace")

PARALLEL_MIN_BYTES = 64 << 20
"""Below this much input, decoding in one process is faster than starting workers."""

Part = tuple[dict[str, Any], CaptureMeta, list[str]]
"""What a worker returns: its builder's part (``export_part``), the metadata, the warnings."""


def workers_for(sources: Sequence[CaptureSource], workers: int | None = None) -> int:
    """How many worker processes decode ``sources`` (1: no pool). ``workers`` or
    FLOWTRACE_WORKERS decide when given; otherwise one per core for several captures of
    PARALLEL_MIN_BYTES or more in total, on Linux."""
    requested = requested_workers(workers)
    if requested is not None:
        return max(1, min(requested, len(sources)))
    if len(sources) < 2 or sys.platform != "linux":
        return 1
    size = sum(file_sizes(sources))
    return min(os.cpu_count() or 1, len(sources)) if size >= PARALLEL_MIN_BYTES else 1


def file_sizes(sources: Sequence[CaptureSource]) -> list[int]:
    """Each source's file size in bytes (0 when it cannot be read)."""
    sizes = []
    for s in sources:
        try:
            sizes.append(os.path.getsize(s.path))
        except OSError:
            sizes.append(0)
    return sizes


def decode_into(builder: PacketTableBuilder, code: int, source: CaptureSource,
                on_batch: Callable[[CaptureReader], None] | None = None, *, split: bool = False,
                later_bytes: int = 0) -> CaptureMeta:
    """Decode one capture into ``builder`` as capture ``code``; returns what the reader learned.
    ``on_batch(reader)`` is called after every batch (progress reporting). With ``split``, a
    large pcap file is decoded by two processes (see flowtrace.decode.halves);
    ``later_bytes`` is the size of the captures decoded after this one. The caller decides
    whether a second process may run (``flowtrace.fork.can_fork``)."""
    with CaptureFile(source) as reader:
        if not (split and can_split(reader)):
            return _one_pass(builder, code, reader, on_batch, later_bytes)
        assert isinstance(reader, PcapReader)
        meta = decode_halves(builder, code, source, reader, on_batch)
        if meta is not None:
            log.debug("read %s in two processes: %d frames", source.path, meta.frames)
            return meta
    # The split was refused (builder unchanged, reader spent): read the file from its start.
    with CaptureFile(source) as reader:
        return _one_pass(builder, code, reader, on_batch, later_bytes)


def _one_pass(builder: PacketTableBuilder, code: int, reader: CaptureReader,
              on_batch: Callable[[CaptureReader], None] | None, later_bytes: int) -> CaptureMeta:
    """Decode all of ``reader`` into ``builder`` in this process; returns what it learned."""
    feed(builder, code, reader, on_batch, later_bytes=later_bytes)
    reader.close()
    log.debug("read %s: %d frames", reader.path, reader.frames)
    return reader.meta()


def decode_worker(source: CaptureSource) -> Part:
    """Worker process: one capture decoded on its own (its warnings returned as text)."""
    pin_mmap_threshold()
    builder = PacketTableBuilder()
    builder.add_capture(source.name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CaptureWarning)
        meta = decode_into(builder, 0, source)
    return builder.export_part(), meta, [str(w.message) for w in caught]


class Pool:
    """Workers decoding ``sources``, one ``decode_worker`` task each, submitted in order."""

    def __init__(self, sources: Sequence[CaptureSource], n_workers: int, *, orphan_safe: bool = False) -> None:
        self.keys = [(s.name, source_key(s.path)) for s in sources]
        # Workers of a pool started early die with this process if no read adopts them.
        self._executor = ProcessPoolExecutor(max_workers=n_workers, mp_context=multiprocessing.get_context("fork"),
                                             initializer=die_with_parent if orphan_safe else None)
        self.futures: list[Future[Part]] = [self._executor.submit(decode_worker, s) for s in sources]

    def close(self) -> None:
        """Stop the workers (those still at work are killed) and release them."""
        for f in self.futures:
            f.cancel()
        for process in list(getattr(self._executor, "_processes", {}).values()):
            if process.is_alive():
                process.kill()
        self._executor.shutdown(wait=True, cancel_futures=True)


_EARLY: list[Pool] = []
"""A pool ``start_early_pool`` started, waiting for ``take_early_pool`` to adopt it."""


def start_early_pool(sources: Sequence[CaptureSource]) -> bool:
    """Start decoding ``sources`` in a pool now if a read of them would use one; whether it did."""
    n_workers = workers_for(sources)
    if n_workers < 2:
        return False
    _EARLY.append(Pool(sources, n_workers, orphan_safe=True))
    return True


def take_early_pool(sources: Sequence[CaptureSource]) -> Pool | None:
    """The early pool decoding exactly ``sources`` (same names and files, same order), if
    any; an early pool for anything else is stopped (this read is the command's read)."""
    keys = [(s.name, source_key(s.path)) for s in sources]
    found = None
    while _EARLY:
        pool = _EARLY.pop()
        if found is None and pool.keys == keys and None not in (k for _, k in keys):
            found = pool
        else:
            pool.close()
    return found


def abandon_early_pools() -> None:
    """Stop every early pool no read adopted."""
    while _EARLY:
        _EARLY.pop().close()
