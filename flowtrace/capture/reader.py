"""Streaming capture reading: the chunk loop shared by the pcap and pcapng readers.

A reader walks record headers in a tight loop over a chunk of the file and hands
the decoder a RecordBatch: the chunk's bytes plus arrays of frame offsets, lengths,
timestamps and interfaces. Memory grows with the decoded table, never with the file.
"""

from __future__ import annotations

import lzma
import warnings
from collections.abc import Iterator
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

CHUNK_BYTES = 4 << 20
"""Bytes read from the file per step; a batch holds the complete records among them."""

MAX_RECORD = 64 << 20
"""A record claiming more bytes than this is treated as corruption, not as a frame."""


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
        self._f = f
        self._pending = b""
        self._pending_offset = 0

    # -- subclass interface -------------------------------------------------------------
    def _walk(self, buf: bytearray, base: int) -> tuple[int, RecordBatch | None, bool]:
        """Walk complete records at the start of ``buf`` (file offset ``base``).

        Returns (bytes consumed, batch or None, stop) where stop means the rest of the
        file cannot be read (corruption, already reported through _warn).
        """
        raise NotImplementedError

    # -- shared machinery ----------------------------------------------------------------
    def _warn(self, message: str) -> None:
        text = f"{self.path}: {message}"
        self.warnings.append(message)
        warnings.warn(text, CaptureWarning, stacklevel=4)

    def _read(self, n: int) -> bytes:
        try:
            return self._f.read(n)
        except (OSError, EOFError, lzma.LZMAError) as e:
            self._warn(f"cannot read further ({e}); keeping the records before it")
            return b""

    def batches(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[RecordBatch]:
        """Yield the capture's frames batch by batch, in file order."""
        buf = bytearray(self._pending)
        base = self._pending_offset
        eof = False
        while True:
            if not eof:
                chunk = self._read(chunk_bytes)
                if chunk:
                    buf += chunk
                else:
                    eof = True
            if not buf:
                break
            consumed, batch, stop = self._walk(buf, base)
            if batch is not None and len(batch):
                self.frames += len(batch)
                yield batch
            if stop:
                return
            if consumed:
                del buf[:consumed]
                base += consumed
            elif eof:
                self._warn(
                    f"file ends in the middle of a record at byte {base} "
                    f"({len(buf)} bytes left over); {self.frames} complete records read"
                )
                return

    def close(self) -> None:
        """Release the file (the context manager that opened it closes the OS handle)."""
        self._f = None  # type: ignore[assignment]


def to_array(buf: bytearray, n: int) -> np.ndarray:
    """Copy the first ``n`` bytes of ``buf`` into a new uint8 array followed by PAD zeros."""
    arr = np.zeros(n + PAD, dtype=np.uint8)
    view = np.frombuffer(buf, dtype=np.uint8, count=n)
    arr[:n] = view
    del view
    return arr


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
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise CaptureFormatError(source.path, f"cannot decompress: {e}") from None
    if not head:
        raise CaptureFormatError(source.path, "empty file")
    if head in PCAP_MAGICS:
        return PcapReader(source, f, compression, head)
    if head == PCAPNG_MAGIC:
        return PcapngReader(source, f, compression, head)
    shown = " ".join(f"{b:02x}" for b in head)
    raise CaptureFormatError(source.path, f"not a pcap or pcapng capture (starts with {shown})")


class CaptureFile:
    """Context manager: ``with CaptureFile(source) as reader:`` opens, detects and closes."""

    def __init__(self, source: CaptureSource) -> None:
        self.source = source
        self._ctx = open_compressed(source.path)

    def __enter__(self) -> CaptureReader:
        f, compression = self._ctx.__enter__()
        try:
            return open_capture(self.source, f, compression)
        except BaseException:
            self._ctx.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
