"""The classic libpcap file format: both byte orders, µs and ns magic, Kuznetzov's variant."""

from __future__ import annotations

import struct
import sys
from typing import BinaryIO

import numpy as np

from flowtrace.capture import linktypes
from flowtrace.capture.files import CaptureSource, read_exact
from flowtrace.capture.reader import MAX_RECORD, CaptureReader, strided
from flowtrace.capture.records import DIR_IN, DIR_OUT, DIR_UNKNOWN, Interface, RecordBatch
from flowtrace.errors import CaptureFormatError

_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 6, 16),
    b"\xa1\xb2\xc3\xd4": (">", 6, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 9, 16),
    b"\xa1\xb2\x3c\x4d": (">", 9, 16),
    b"\x34\xcd\xb2\xa1": ("<", 6, 24),
    b"\xa1\xb2\xcd\x34": (">", 6, 24),
}


class PcapReader(CaptureReader):
    """Reader for pcap files. One interface; link type and snaplen from the file header."""

    format = "pcap"

    def __init__(self, source: CaptureSource, f: BinaryIO, compression: str | None, magic: bytes) -> None:
        super().__init__(source, f, compression)
        endian, self.tsresol, self.record_header = _MAGIC[magic]
        self.modified = self.record_header == 24
        self.byte_order = "little" if endian == "<" else "big"
        rest = read_exact(f, 20, self.path, "pcap file header", 4)
        major, minor, thiszone, _sigfigs, snaplen, network = struct.unpack(endian + "HHiIII", rest)
        self.version = f"{major}.{minor}"
        self.thiszone = thiszone
        link_type = network & 0xFFFF
        if network & 0x03FF0000 or not linktypes.is_supported(link_type):
            raise CaptureFormatError(
                self.path, f"unsupported link type {network} ({linktypes.name(link_type)})", offset=20
            )
        self.fcs_len = (network >> 28) * 2 if network & 0x04000000 else 0
        self.interfaces.append(
            Interface(
                id=0, section=0, local_id=0, link_type=link_type, snaplen=snaplen,
                tsresol=self.tsresol, label="",
            )
        )
        self._u32 = struct.Struct(endian + "I").unpack_from
        self._endian = endian
        self._pending_offset = 24
        self._pos = 24

    @property
    def time_resolution(self) -> str:
        """``us`` or ``ns`` from the magic number."""
        return "ns" if self.tsresol == 9 else "us"

    def window(self, start: int | None = None, stop: int | None = None, frames_before: int = 0) -> None:
        """Read only the records from file offset ``start`` (a record boundary) up to ``stop``.

        Call before :meth:`batches`; the file must be seekable (not compressed). Frame
        numbers continue after ``frames_before``. A record crossing ``stop`` is reported
        like a file cut mid-record.
        """
        if start is not None:
            self._f.seek(start)
            self._pos = self._pending_offset = self.consumed = self.window_start = start
            self._pending = b""
        self._stop = stop
        self.frames = frames_before
        self.halted = False

    def record_boundary(self, near: int, *, chain: int = 16, span: int = 1 << 20) -> int | None:
        """The first offset at or after ``near`` that starts ``chain`` plausible records in a row.

        Plausible: a fraction below one second, a time within a year of the first
        record's, caplen within the snaplen and at most the original length. A guess, not
        a proof: whoever splits at it must check that the walk from the file's start
        lands on it. None when the file holds no such offset within ``span`` bytes.
        Leaves the file position where it was.
        """
        first = self._peek(24, self.record_header)
        if len(first) < self.record_header:
            return None
        first_sec = struct.unpack_from(self._endian + "I", first, 0)[0]
        # Most boundaries lie within the first records after ``near``: a small read first,
        # and the whole span only when no full chain starts in it (38 reads of 1 MiB each
        # cost a split read 15 ms before its second process could start).
        for width in dict.fromkeys((min(span, 1 << 16), span)):
            data = self._peek(near, width + chain * (self.record_header + 1))
            found = self._chain_start(data, width, chain, first_sec, sure=width < span)
            if found is not None:
                return near + found
        return None

    def _chain_start(self, data: bytes, span: int, chain: int, first_sec: int, *, sure: bool = False) -> int | None:
        """The first offset below ``span`` in ``data`` that starts ``chain`` plausible
        records (or at least two, cut by the end of ``data``). With ``sure``, None as soon
        as a chain is cut by the end of ``data`` before it is whole: more data might have
        made it the answer (the caller reads more)."""
        one = 10**self.tsresol
        cap_limit = min(max(self.interfaces[0].snaplen, 262_144), MAX_RECORD)
        hl = self.record_header
        unpack = struct.Struct(self._endian + "IIII").unpack_from
        year = 366 * 86_400
        for p in range(min(span, len(data))):
            q, ok = p, 0
            while ok < chain and q + hl <= len(data):
                sec, frac, caplen, wirelen = unpack(data, q)
                if frac >= one or abs(sec - first_sec) > year or caplen > cap_limit or wirelen < caplen:
                    break
                q += hl + caplen
                ok += 1
            else:
                if sure and ok < chain:
                    return None
                if ok >= 2:
                    return p
        return None

    def mean_record_bytes(self, start: int, *, span: int = 1 << 20) -> float:
        """Mean size (header included) of the records in ``span`` bytes from ``start`` (a
        record boundary); the file size per record when nothing can be walked there."""
        data = self._peek(start, span)
        unpack = struct.Struct(self._endian + "I").unpack_from
        pos = count = 0
        while pos + self.record_header <= len(data):
            pos += self.record_header + unpack(data, pos + 8)[0]
            count += 1
        return pos / count if count else float(max(len(data), 1))

    def _peek(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of the file from ``offset``, leaving the file position as it was."""
        here = self._f.tell()
        try:
            self._f.seek(offset)
            return self._f.read(size)
        finally:
            self._f.seek(here)

    def _walk(self, buf: np.ndarray, mv: memoryview, fill: int, base: int) -> tuple[int, RecordBatch | None, bool]:
        n = fill
        hl = self.record_header
        offs: list[int] = []
        append = offs.append
        pos = 0
        stop = False
        # The caplen field read as a native uint32 through four casts of the buffer, one per
        # alignment: two list-style index operations per record, the cheapest walk Python has.
        if self._endian == "<" and sys.byteorder == "little":
            words = tuple(mv[k : k + ((n - k) // 4) * 4].cast("I") for k in range(4))
            try:
                while True:
                    q = pos + 8
                    end = pos + hl + words[q & 3][q >> 2]
                    if end > n:
                        break
                    append(pos)
                    pos = end
            except IndexError:
                pass
            del words
        else:
            u32 = self._u32
            while pos + hl <= n:
                (caplen,) = u32(mv, pos + 8)
                end = pos + hl + caplen
                if end > n:
                    break
                append(pos)
                pos = end
        if pos + hl <= n:
            (caplen,) = self._u32(mv, pos + 8)
            if caplen > MAX_RECORD:
                self._warn(
                    f"corrupt record header at byte {base + pos} (caplen {caplen}); "
                    f"{self.frames + len(offs)} records read before it"
                )
                stop = True
        if not offs:
            return pos, None, stop
        data = buf
        o = np.asarray(offs, dtype=np.int64)
        u4 = strided(data, self._endian + "u4")
        sec = u4[o].astype(np.int64)
        frac = u4[o + 4].astype(np.int64)
        caplen = u4[o + 8].astype(np.int64)
        wirelen = u4[o + 12].astype(np.int64)
        ts = sec * 1_000_000_000 + (frac if self.tsresol == 9 else frac * 1000)
        direction = np.full(o.shape[0], DIR_UNKNOWN, dtype=np.int8)
        if self.modified:
            pkt_type = data[o + 22]
            direction[pkt_type == 4] = DIR_OUT
            direction[pkt_type < 4] = DIR_IN
        if self.fcs_len:
            caplen = np.maximum(caplen - self.fcs_len, 0)
        batch = RecordBatch(
            data=data,
            offset=o + hl,
            caplen=caplen,
            wirelen=wirelen,
            ts_ns=ts,
            interface=np.zeros(o.shape[0], dtype=np.int32),
            direction=direction,
            first_frame=self.frames + 1,
        )
        self.interfaces[0].packets += len(batch)
        return pos, batch, stop
