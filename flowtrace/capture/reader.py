"""Streaming capture reading: the chunk loop shared by the pcap and pcapng readers.

A reader walks record headers in a tight loop over a chunk of the file and hands
the decoder a RecordBatch: the chunk's bytes plus arrays of frame offsets, lengths,
timestamps and interfaces. Memory grows with the decoded table, never with the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from flowtrace.capture.files import (
    PCAP_MAGICS,
    PCAPNG_MAGIC,
    CaptureSource,
    open_compressed,
)
from flowtrace.capture.records import PAD, Interface, RecordBatch
from flowtrace.errors import CaptureFormatError, CaptureWarning

CHUNK_BYTES = 2 << 20
"""Bytes read from the file per step; a batch holds the complete records among them."""

MAX_RECORD = 64 << 20
"""A record claiming more bytes than this is treated as corruption, not as a frame."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureMeta:
    """What a reader learned about its capture, detached from the open file (picklable)."""

    source: CaptureSource
    path: Path
    format: str
    compression: str | None
    byte_order: str
    time_resolution: str
    sections: int
    version: str
    interfaces: list[Interface]
    warnings: list[str]
    frames: int


class CaptureReader:
    """Base of the pcap and pcapng readers.

    Construct with :func:`open_capture`. After the header was validated, iterate
    :meth:`batches` once. ``interfaces`` grows while reading (pcapng IDBs can appear
    anywhere); ``warnings`` collects what was off (also issued as CaptureWarning).
    """

    format: str = ""

    def __init__(self, source: CaptureSource, f: BinaryIO, compression: str | None) -> None:
        self.source = source
        self.path: Path = source.path
        self.compression = compression
        self.byte_order = "little"
        self.sections = 1
        self.interfaces: list[Interface] = []
        self.warnings: list[str] = []
        self.frames = 0
        self._told_truncated = False
        self.consumed = 0
        """Offset in the (decompressed) file up to which records were walked."""
        self.window_start = 0
        """Offset where reading started (0, or the start of a window of a pcap file)."""
        self.expected_size: int | None = None
        """Size of the (decompressed) file when known up front, for capacity planning."""
        self.halted = False
        """The walk met a record it cannot read past (reported through _warn): a one-pass
        read of the file stops there."""
        self._f = f
        self._pending = b""
        self._pending_offset = 0
        self._pos = 0
        """File offset of the next byte read from ``_f``."""
        self._stop: int | None = None
        """File offset at which reading stops (a window of the file), or None for its end."""
        self._buffer: np.ndarray | None = None
        """The batch buffer, kept for the next ``batches`` (a window after a window)."""

    # -- subclass interface -------------------------------------------------------------
    def _walk(self, buf: np.ndarray, mv: memoryview, fill: int, base: int) -> tuple[int, RecordBatch | None, bool]:
        """Walk the complete records in ``mv[:fill]`` (``mv`` views ``buf``; file offset ``base``).

        Returns (bytes consumed, batch or None, stop) where stop means the rest of the
        file cannot be read (corruption, already reported through _warn). The batch's
        ``data`` is ``buf`` itself.
        """
        raise NotImplementedError

    # -- shared machinery ----------------------------------------------------------------
    def _warn(self, message: str) -> None:
        text = f"{self.path}: {message}"
        self.warnings.append(message)
        warnings.warn(text, CaptureWarning, stacklevel=4)

    def _fill(self, mv: memoryview) -> int:
        """Read into ``mv`` until it is full or the file ends; returns the bytes read."""
        if self._stop is not None:
            mv = mv[: max(0, self._stop - self._pos)]
        got = 0
        try:
            while got < len(mv):
                # Every opener gives a buffered file or a DecompressedStream: both read into.
                n = self._f.readinto(mv[got:])  # type: ignore[attr-defined]
                if not n:
                    break
                got += n
        except OSError as e:
            self._warn(f"cannot read further ({e}); keeping the records before it")
        self._pos += got
        if getattr(self._f, "truncated", False) and not self._told_truncated:
            self._told_truncated = True
            self._warn(f"the {self.compression} stream ends before its end marker; "
                       "keeping what was decompressed")
        return got

    def batches(self, chunk_bytes: int | None = None) -> Iterator[RecordBatch]:
        """Yield the capture's frames batch by batch, in file order (``chunk_bytes`` at a
        time, default CHUNK_BYTES).

        Every batch shares one reusable buffer, and so do the batches of a later call (the
        windows of one file read one after another): decode a batch before asking for the
        next. Reusing it spares a fresh buffer's page faults per window (512 per 2 MiB); it
        is freed when a read to the end of the file ends (``drop_buffer`` frees it sooner).
        """
        try:
            size = max(chunk_bytes or CHUNK_BYTES, len(self._pending))
            buf = self._buffer
            if buf is None or buf.shape[0] != size + PAD:
                buf = self._buffer = np.zeros(size + PAD, dtype=np.uint8)
            fill = len(self._pending)
            buf[:fill] = np.frombuffer(self._pending, dtype=np.uint8)
            base = self._pending_offset
            eof = False
            while True:
                if not eof and fill < size:
                    got = self._fill(buf.data[fill:size])
                    eof = fill + got < size
                    fill += got
                if fill == 0:
                    break
                buf[fill : fill + PAD] = 0
                mv = buf.data
                consumed, batch, stop = self._walk(buf, mv, fill, base)
                del mv
                self.consumed = base + consumed
                if batch is not None and len(batch):
                    self.frames += len(batch)
                    yield batch
                    del batch
                if stop:
                    self.halted = True
                    return
                if consumed:
                    rest = fill - consumed
                    buf[:rest] = buf[consumed:fill].copy()
                    fill = rest
                    base += consumed
                elif eof:
                    self._warn(
                        f"file ends in the middle of a record at byte {base} "
                        f"({fill} bytes left over); {self.frames} complete records read"
                    )
                    return
                elif fill == size:
                    # One record is larger than the buffer: grow it.
                    size *= 2
                    bigger = np.zeros(size + PAD, dtype=np.uint8)
                    bigger[:fill] = buf[:fill]
                    buf = self._buffer = bigger
        finally:
            if self._stop is None:  # read to the end of the file: no window follows
                self._buffer = None

    def meta(self) -> CaptureMeta:
        """A picklable snapshot of what was learned about the capture."""
        return CaptureMeta(source=self.source, path=self.path, format=self.format, compression=self.compression,
                           byte_order=self.byte_order, time_resolution=self.time_resolution,
                           sections=self.sections, version=getattr(self, "version", ""),
                           interfaces=list(self.interfaces), warnings=list(self.warnings), frames=self.frames)

    @property
    def time_resolution(self) -> str:
        """Label of the timestamp resolution (the formats say more)."""
        return "us"

    def drop_buffer(self) -> None:
        """Free the batch buffer kept for the next window (reading again makes a new one)."""
        self._buffer = None

    def close(self) -> None:
        """Release the file (the context manager that opened it closes the OS handle)."""
        self._f = None  # type: ignore[assignment]
        self._buffer = None


def strided(data: np.ndarray, dtype: str) -> np.ndarray:
    """A view of ``data`` as ``dtype`` values starting at every byte (unaligned reads)."""
    width = np.dtype(dtype).itemsize
    return np.ndarray(shape=(max(data.shape[0] - width + 1, 0),), dtype=dtype, buffer=data, strides=(1,))


def open_capture(source: CaptureSource, f: BinaryIO, compression: str | None) -> CaptureReader:
    """Read the file header of an opened capture and return the reader for its format.

    Raises CaptureFormatError when the file is empty or not a pcap/pcapng capture.
    """
    from flowtrace.capture.pcap import PcapReader
    from flowtrace.capture.pcapng import PcapngReader

    try:
        head = f.read(4)
    except OSError as e:
        raise CaptureFormatError(source.path, f"cannot decompress: {e}") from None
    if not head:
        raise CaptureFormatError(source.path, "empty file")
    if head in PCAP_MAGICS:
        return PcapReader(source, f, compression, head)
    if head == PCAPNG_MAGIC:
        return PcapngReader(source, f, compression, head)
    shown = " ".join(f"{b:02x}" for b in head)
    raise CaptureFormatError(source.path, f"not a pcap or pcapng capture (starts with {shown})")


def expected_size(path: Path, compression: str | None) -> int | None:
    """Decompressed size of ``path`` when cheaply known: the file size, or gzip's ISIZE."""
    try:
        size = path.stat().st_size
        if compression is None:
            return size
        if compression == "gzip" and size >= 18:
            with open(path, "rb") as raw:
                raw.seek(-4, 2)
                isize = int.from_bytes(raw.read(4), "little")
            # ISIZE is the size modulo 2**32; trust it only when it is plausible.
            return isize if isize >= size else None
    except OSError:
        return None
    return None


class CaptureFile:
    """Context manager: ``with CaptureFile(source) as reader:`` opens, detects and closes."""

    def __init__(self, source: CaptureSource) -> None:
        self.source = source
        self._ctx = open_compressed(source.path)

    def __enter__(self) -> CaptureReader:
        f, compression = self._ctx.__enter__()
        try:
            reader = open_capture(self.source, f, compression)
        except BaseException:
            self._ctx.__exit__(None, None, None)
            raise
        reader.expected_size = expected_size(self.source.path, compression)
        return reader

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
