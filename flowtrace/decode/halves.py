"""One large uncompressed pcap decoded by two processes at once.

The parent decodes the first half of the file into the packets table; a forked child
decodes the second half into columns in shared memory, which the parent then appends
(address and interface codes translated, frame numbers shifted). The split point is a
guessed record boundary near the middle; it is proven only when the parent's walk from
the file's start lands exactly on it, otherwise everything is rolled back and the caller
decodes the file in one pass. Whatever made the child stop early (a record cut short, a
corrupt header, a full table) is re-read by the parent from where the child stopped, so
warnings and frame numbers are those of a one-pass read.
"""

from __future__ import annotations

import dataclasses
import gc
import mmap
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection

import numpy as np

from flowtrace.capture.files import CaptureSource
from flowtrace.capture.memory import pin_mmap_threshold
from flowtrace.capture.pcap import PcapReader
from flowtrace.capture.reader import CaptureFile, CaptureMeta, CaptureReader
from flowtrace.decode.feed import feed
from flowtrace.decode.table import SHARED_DTYPES, PacketTableBuilder

SPLIT_MIN_BYTES = 64 << 20
"""Smallest file worth a second process (below it, forking costs more than it saves)."""

HEADROOM = 1.3
"""The child's table holds this many times the rows its half is expected to have, plus MIN_ROWS;
past that it stops and the parent decodes the rest."""
MIN_ROWS = 4096


def can_split(reader: CaptureReader) -> bool:
    """Whether ``reader`` (freshly opened) is a pcap file worth decoding in two halves."""
    return (isinstance(reader, PcapReader) and reader.compression is None and sys.platform == "linux"
            and (reader.expected_size or 0) >= SPLIT_MIN_BYTES and (os.cpu_count() or 1) >= 2)


def decode_halves(builder: PacketTableBuilder, code: int, source: CaptureSource, reader: PcapReader,
                  on_batch: Callable[[CaptureReader], None] | None = None) -> CaptureMeta | None:
    """Decode ``reader``'s capture into ``builder`` as capture ``code`` with a second process.

    Returns the capture's metadata, or None (``builder`` unchanged, ``reader`` spent) when
    the file could not be split; the caller then decodes it again in one pass.
    """
    size = reader.expected_size or 0
    boundary = reader.record_boundary(24 + (size - 24) // 2)
    if boundary is None:
        return None
    rows = int((size - boundary) / reader.mean_record_bytes(boundary) * HEADROOM) + MIN_ROWS
    maps = {name: mmap.mmap(-1, max(rows * np.dtype(dt).itemsize, 1)) for name, dt in SHARED_DTYPES.items()}
    try:
        return _run(builder, code, source, reader, boundary, rows, maps, on_batch)
    finally:
        for mm in maps.values():
            if not mm.closed:
                mm.close()


def _run(builder: PacketTableBuilder, code: int, source: CaptureSource, reader: PcapReader, boundary: int,
         rows: int, maps: dict[str, mmap.mmap], on_batch: Callable[[CaptureReader], None] | None) -> CaptureMeta | None:
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(source, boundary, maps, rows, code, send), daemon=True)
    # Objects the collector never visits keep their pages shared with the child.
    gc.freeze()
    try:
        child.start()
    finally:
        gc.unfreeze()
    send.close()
    start_rows = builder.size
    reader.window(stop=boundary)
    expected = reader.expected_size
    reader.expected_size = boundary
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feed(builder, code, reader, on_batch)
    reader.expected_size = expected
    try:
        told = receive.recv()
    except (EOFError, OSError):
        told = {"error": "the second process ended without a word"}
    child.join()
    if caught or reader.consumed != boundary or "error" in told:
        builder.truncate(start_rows)
        return None
    cols = _columns(maps, rows)

    def release(name: str) -> None:
        maps[name].close()

    builder.append(cols, told["rows"], addresses=told["addresses"], labels=told["labels"],
                   frame_offset=reader.frames, release=release)
    frames = reader.frames + told["frames"]
    packets = reader.interfaces[0].packets + told["frames"]
    texts: list[str] = []
    if told["stopped_at"] is not None:
        with CaptureFile(source) as rest:
            assert isinstance(rest, PcapReader)
            rest.window(start=told["stopped_at"], frames_before=frames)
            rest.expected_size = expected
            feed(builder, code, rest, on_batch)
            frames = rest.frames
            packets += rest.interfaces[0].packets
            texts = rest.warnings
    reader.close()
    meta = reader.meta()
    interfaces = [dataclasses.replace(meta.interfaces[0], packets=packets)]
    return dataclasses.replace(meta, frames=frames, interfaces=interfaces, warnings=texts)


def _child(source: CaptureSource, start: int, maps: dict[str, mmap.mmap], rows: int, code: int,
           send: Connection) -> None:
    """The second process: decode from ``start`` into the shared columns, tell how it went."""
    try:
        pin_mmap_threshold()
        builder = PacketTableBuilder.on_columns(_columns(maps, rows))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with CaptureFile(source) as reader:
                assert isinstance(reader, PcapReader)
                reader.window(start=start)
                stopped = feed(builder, code, reader)
        if caught and stopped is None:
            # Let the parent meet the problem itself: same warning, true frame numbers.
            stopped = reader.consumed
        send.send({"rows": builder.size, "frames": builder.size, "stopped_at": stopped,
                   "addresses": builder.book.keys(), "labels": builder.interface_labels})
    except BaseException as e:
        send.send({"error": f"{type(e).__name__}: {e}"})
    finally:
        send.close()


def _columns(maps: dict[str, mmap.mmap], rows: int) -> dict[str, np.ndarray]:
    """The table columns (SHARED_DTYPES, ``rows`` rows each) that live in ``maps``."""
    return {name: np.frombuffer(mm, dtype=SHARED_DTYPES[name], count=rows) for name, mm in maps.items()}
