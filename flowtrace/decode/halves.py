"""One large uncompressed pcap decoded by two processes at once, meeting where they meet.

The file is cut into segments at guessed record boundaries: two halves when both
processes start together, segments of about SEGMENT_BYTES when the child starts early
(``start_early_split``, see flowtrace.decode.early) while the command line is still
loading. The parent decodes segments from the first one forward into the packets table;
a forked child decodes segments from the last one backward into columns in shared
memory. Each takes the next segment only if the other has not taken it (``_Claims``), so
they meet wherever their speeds put them.

Once the parent meets a segment the child took, it appends the child's segments in
file order (codes translated, frame numbers shifted). A guess is proven when the walk
from a proven boundary lands exactly on it, so the parent's walk from the file's start
proves its own segments and then each of the child's in turn; a segment the child could
not finish cleanly (a record cut short, a corrupt header, a full table, a warning of any
kind) is decoded again by the parent at that place, so warnings and frame numbers are
those of a one-pass read. A boundary that proves wrong rolls everything back and the
caller decodes the file in one pass.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import mmap
import multiprocessing
import os
import signal
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from flowtrace.capture.files import CaptureSource
from flowtrace.capture.memory import pin_mmap_threshold
from flowtrace.capture.pcap import PcapReader
from flowtrace.capture.reader import CaptureFile, CaptureMeta, CaptureReader
from flowtrace.decode.feed import feed
from flowtrace.decode.table import SHARED_DTYPES, PacketTableBuilder
from flowtrace.fork import Forked

SPLIT_MIN_BYTES = 64 << 20
"""Smallest file worth a second process (below it, forking costs more than it saves)."""

SEGMENT_BYTES = 8 << 20
"""Segment size when the child starts early: small enough that both processes end close
together wherever they meet."""
MAX_SEGMENTS = 256
READ_SEGMENTS = 2
"""Segments when both processes start at the read: halves (the fewest joins and windows)."""

HEADROOM = 1.3
"""The child's table holds this many times the rows the file is expected to have past its
first segment, plus MIN_ROWS; a segment that does not fit is left to the parent."""
MIN_ROWS = 4096

_FREE, _PARENT, _CHILD = 0, 1, 2
_FIRST_RECORD = 24
"""File offset of a pcap's first record (after the file header)."""


def can_split(reader: CaptureReader) -> bool:
    """Whether ``reader`` (freshly opened) is a pcap file worth decoding in two processes;
    whether a second process may run at all is ``flowtrace.fork.can_fork``'s to say."""
    return (isinstance(reader, PcapReader) and reader.compression is None
            and (reader.expected_size or 0) >= SPLIT_MIN_BYTES)


class _Claims:
    """Which process took each segment: one byte per segment in shared memory, under a lock."""

    def __init__(self, n: int) -> None:
        self._map = mmap.mmap(-1, max(n, 1))
        self._lock = multiprocessing.get_context("fork").Lock()

    def take(self, i: int, who: int) -> bool:
        """Claim segment ``i`` for ``who`` unless it is taken; whether it now is ``who``'s."""
        with self._lock:
            if self._map[i] != _FREE:
                return False
            self._map[i] = who
            return True


@dataclasses.dataclass(slots=True)
class _Split:
    """A child decoding the segments of one file from its end."""

    key: tuple[str, int, int, int]
    bounds: list[int]
    """Segment ``i`` holds the records from ``bounds[i]`` up to ``bounds[i + 1]``."""
    claims: _Claims
    maps: dict[str, mmap.mmap]
    rows: int
    child: Forked[dict[str, Any]]

    def close(self) -> None:
        """Stop the child if it still runs and release the shared columns."""
        self.child.cancel()
        for mm in self.maps.values():
            # A view still alive (an exception on its way up) keeps its map until it goes.
            with contextlib.suppress(BufferError):
                mm.close()


_EARLY: dict[tuple[str, int, int, int], _Split] = {}
"""Splits started by ``start_early_split``, waiting for ``decode_halves`` to adopt them."""


def source_key(path: str | Path) -> tuple[str, int, int, int] | None:
    """What identifies a file's contents for adopting early work: real path, size,
    modification time, inode; None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino


def start_early_split(source: CaptureSource) -> bool:
    """Start the second process on ``source`` now if reading it would split it (the caller
    has asked ``can_fork``); whether it did.

    ``decode_halves`` adopts the split when it reads that file (same path, size, time).
    """
    with CaptureFile(source) as reader:
        if not can_split(reader):
            return False
        assert isinstance(reader, PcapReader)
        segments = max(2, min(MAX_SEGMENTS, (reader.expected_size or 0) // SEGMENT_BYTES))
        split = _start(source, reader, segments=segments)
    if split is None:
        return False
    _EARLY[split.key] = split
    return True


def abandon_early_splits() -> None:
    """Stop every early split that no read adopted."""
    while _EARLY:
        _EARLY.popitem()[1].close()


def _start(source: CaptureSource, reader: PcapReader, *, segments: int | None = None) -> _Split | None:
    """Cut ``reader``'s file into ``segments`` segments and start the child on them; None
    if no cut could be guessed or the file changed. Two (halves) when both processes start
    together; more when the child starts early and meets the parent wherever it is."""
    key = source_key(source.path)
    size = reader.expected_size or 0
    if key is None or key[1] != size:
        return None
    n = segments or READ_SEGMENTS
    bounds = [_FIRST_RECORD]
    for i in range(1, n):
        near = max(_FIRST_RECORD + (size - _FIRST_RECORD) * i // n, bounds[-1] + 1)
        b = reader.record_boundary(near)
        if b is not None and b < size:
            bounds.append(b)
    bounds = sorted(set(bounds))
    if len(bounds) < 2:
        return None
    bounds.append(size)
    rows = int((size - bounds[1]) / reader.mean_record_bytes(bounds[1]) * HEADROOM) + MIN_ROWS
    maps = {name: mmap.mmap(-1, max(rows * np.dtype(dt).itemsize, 1)) for name, dt in SHARED_DTYPES.items()}
    claims = _Claims(len(bounds) - 1)
    # Objects the collector never visits keep their pages shared with the child.
    parent = os.getpid()
    gc.freeze()
    try:
        child = Forked(lambda: _child(source, bounds, claims, maps, rows, parent))
    finally:
        gc.unfreeze()
    return _Split(key=key, bounds=bounds, claims=claims, maps=maps, rows=rows, child=child)


def decode_halves(builder: PacketTableBuilder, code: int, source: CaptureSource, reader: PcapReader,
                  on_batch: Callable[[CaptureReader], None] | None = None) -> CaptureMeta | None:
    """Decode ``reader``'s capture into ``builder`` as capture ``code`` with a second process.

    Returns the capture's metadata, or None (``builder`` unchanged, ``reader`` spent) when
    the file could not be split; the caller then decodes it again in one pass.
    """
    key = source_key(source.path)
    split = _EARLY.pop(key, None) if key is not None else None
    for stale in [k for k in _EARLY if key is None or k[0] == key[0]]:
        _EARLY.pop(stale).close()  # started on this file before it changed (still being written?)
    if split is None:
        split = _start(source, reader)
        if split is None:
            return None
    try:
        return _run(builder, code, reader, split, on_batch)
    finally:
        split.close()


class _Rollback(Exception):
    """A boundary guess proved wrong: undo everything and read in one pass."""


def _run(builder: PacketTableBuilder, code: int, reader: PcapReader, split: _Split,
         on_batch: Callable[[CaptureReader], None] | None) -> CaptureMeta | None:
    start_rows = builder.size
    bounds = split.bounds
    last = len(bounds) - 2
    try:
        i = 0
        while i <= last and split.claims.take(i, _PARENT):
            if not _segment(builder, code, reader, bounds, i, on_batch):
                return _meta(reader)
            i += 1
        # The batch buffer kept between segments is not needed while rows are appended (the
        # peak of a split read): 2 MiB less then.
        reader.drop_buffer()
        told = split.child.result() if i <= last else {}
        done = {seg: (row, rows, frames) for seg, row, rows, frames in told.get("segments", [])}
        # The child's segments are the last ones, in a row, after at most one it could not
        # finish (it stops at the first): their rows join the table in one append, which
        # releases each shared column once copied. Any other shape (a child that died)
        # takes several appends, the shared columns kept until the end.
        groups: list[list[tuple[int, int, int]]] = [[]]
        for seg in range(i, last + 1):
            if seg in done:
                row, rows, frames = done[seg]
                groups[-1].append((row, rows, reader.frames))
                reader.frames += frames
                continue
            _append(builder, code, split, groups[-1], told, release=False)
            groups.append([])
            if not _segment(builder, code, reader, bounds, seg, on_batch):
                break
        _append(builder, code, split, groups[-1], told, release=True)
    except _Rollback:
        builder.truncate(start_rows)
        return None
    return _meta(reader)


def _segment(builder: PacketTableBuilder, code: int, reader: PcapReader, bounds: list[int], i: int,
             on_batch: Callable[[CaptureReader], None] | None) -> bool:
    """Decode segment ``i`` here; whether reading goes on after it (False: the file ended,
    or a corrupt record header stopped the walk as it stops a one-pass read)."""
    last = i == len(bounds) - 2
    reader.window(start=bounds[i], stop=None if last else bounds[i + 1], frames_before=reader.frames)
    if last:
        feed(builder, code, reader, on_batch)
        return False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feed(builder, code, reader, on_batch)
    if reader.halted:
        for w in caught:
            warnings.warn(w.message, w.category, stacklevel=3)
        return False
    if caught or reader.consumed != bounds[i + 1]:
        raise _Rollback
    return True


def _append(builder: PacketTableBuilder, code: int, split: _Split, spans: list[tuple[int, int, int]],
            told: dict[str, Any], *, release: bool) -> None:
    """Append the child's rows of ``spans``; with ``release``, each shared column is closed
    once copied (no later append may read it)."""
    if not spans:
        return
    cols = _columns(split.maps, split.rows)

    def close(name: str) -> None:
        split.maps[name].close()

    builder.append(cols, spans, capture=code, addresses=told["addresses"], labels=told["labels"],
                   release=close if release else None)


def _columns(maps: dict[str, mmap.mmap], rows: int) -> dict[str, np.ndarray]:
    """The table columns (SHARED_DTYPES, ``rows`` rows each) that live in ``maps``."""
    return {name: np.frombuffer(mm, dtype=SHARED_DTYPES[name], count=rows) for name, mm in maps.items()}


def _meta(reader: PcapReader) -> CaptureMeta:
    frames = reader.frames
    reader.close()
    meta = reader.meta()
    interfaces = [dataclasses.replace(meta.interfaces[0], packets=frames)]
    return dataclasses.replace(meta, frames=frames, interfaces=interfaces)


def _child(source: CaptureSource, bounds: list[int], claims: _Claims, maps: dict[str, mmap.mmap],
           rows: int, parent: int) -> dict[str, Any]:
    """The second process: take segments from the last one backward while the parent has
    not; report each clean one (segment, first row, rows, frames) and the vocabularies."""
    segments: list[tuple[int, int, int, int]] = []
    try:
        if os.getpid() != parent:
            die_with_parent(parent)
        pin_mmap_threshold()
        cols = _columns(maps, rows)
        builder = PacketTableBuilder.on_columns(cols)
        last = len(bounds) - 2
        with CaptureFile(source) as reader:
            assert isinstance(reader, PcapReader)
            for i in range(last, 0, -1):
                if not claims.take(i, _CHILD):
                    break
                first = builder.size
                reader.window(start=bounds[i], stop=None if i == last else bounds[i + 1])
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    stopped = feed(builder, 0, reader)
                if caught or stopped is not None or (i < last and reader.consumed != bounds[i + 1]):
                    # The parent meets whatever happened here itself.
                    builder.truncate(first)
                    break
                segments.append((i, first, builder.size - first, reader.frames))
        return {"segments": segments, "addresses": builder.book.keys(), "labels": builder.interface_labels}
    except Exception as e:  # the parent decodes every segment the child did not report
        return {"segments": [], "error": f"{type(e).__name__}: {e}"}


def die_with_parent(parent: int | None = None) -> None:
    """Ask Linux to kill this process when its parent ends (early work never adopted).

    ``parent`` is the pid that started this process (default: multiprocessing's parent).
    A parent that ended before the request took effect sends no signal: then this
    process ends here."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if parent is None:
        started_by = multiprocessing.parent_process()
        parent = started_by.pid if started_by is not None else None
    if parent is not None and os.getppid() != parent:
        os._exit(0)
