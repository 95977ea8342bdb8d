"""The pcapng format: sections, interfaces, enhanced/simple/obsolete packet blocks, statistics."""

from __future__ import annotations

import struct
from typing import BinaryIO

import numpy as np

from flowtrace.capture import linktypes
from flowtrace.capture.files import CaptureSource, read_exact
from flowtrace.capture.reader import MAX_RECORD, CaptureReader, strided
from flowtrace.capture.records import (
    DIR_IN,
    DIR_OUT,
    DIR_UNKNOWN,
    Interface,
    InterfaceStats,
    RecordBatch,
    ticks_to_ns,
)
from flowtrace.errors import CaptureFormatError

SHB = 0x0A0D0D0A
IDB = 0x00000001
OPB = 0x00000002
SPB = 0x00000003
ISB = 0x00000005
EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D

_ISB_OPTIONS = {4: "ifrecv", 5: "ifdrop", 6: "filteraccept", 7: "osdrop", 8: "usrdeliv"}


def _options(body: bytes | bytearray | memoryview, start: int, end: int, endian: str) -> dict[int, bytes]:
    """Parse a pcapng option list in ``body[start:end]`` into {code: value} (last wins)."""
    out: dict[int, bytes] = {}
    hdr = struct.Struct(endian + "HH")
    pos = start
    while pos + 4 <= end:
        code, length = hdr.unpack_from(body, pos)
        if code == 0:
            break
        value = bytes(body[pos + 4 : pos + 4 + length])
        if pos + 4 + length > end:
            break
        out[code] = value
        pos += 4 + ((length + 3) & ~3)
    return out


def _supported_version(major: int, minor: int) -> bool:
    """pcapng versions readers accept: 1.0, and 1.2 which some writers emit (as libpcap does)."""
    return major == 1 and minor in (0, 2)


def _options_fit(body: bytes | bytearray | memoryview, start: int, end: int, endian: str) -> bool:
    """True when the option list in ``body[start:end]`` stays inside it."""
    hdr = struct.Struct(endian + "HH")
    pos = start
    while pos + 4 <= end:
        code, length = hdr.unpack_from(body, pos)
        if code == 0:
            return True
        pos += 4 + ((length + 3) & ~3)
        if pos > end:
            return False
    return True


def _text(value: bytes | None) -> str:
    if not value:
        return ""
    return value.split(b"\0", 1)[0].decode("utf-8", errors="replace")


class PcapngReader(CaptureReader):
    """Reader for pcapng files: every section and interface, EPB/SPB/OPB, ISB counters."""

    format = "pcapng"

    def __init__(self, source: CaptureSource, f: BinaryIO, compression: str | None, magic: bytes) -> None:
        super().__init__(source, f, compression)
        head = read_exact(f, 8, self.path, "section header block", 4)
        bom = head[4:8]
        if bom == b"\x4d\x3c\x2b\x1a":
            endian = "<"
        elif bom == b"\x1a\x2b\x3c\x4d":
            endian = ">"
        else:
            raise CaptureFormatError(self.path, "pcapng section header has no byte-order magic", offset=8)
        self.byte_order = "little" if endian == "<" else "big"
        blen = struct.unpack(endian + "I", head[:4])[0]
        if blen < 28 or blen & 3 or blen > 1 << 20:
            raise CaptureFormatError(self.path, f"corrupt section header block (length {blen})", offset=4)
        rest = read_exact(f, blen - 12, self.path, "section header block", 12)
        major, minor = struct.unpack_from(endian + "HH", rest, 0)
        if not _supported_version(major, minor):
            raise CaptureFormatError(self.path, f"unsupported pcapng version {major}.{minor}", offset=12)
        if struct.unpack_from(endian + "I", rest, len(rest) - 4)[0] != blen:
            raise CaptureFormatError(self.path, "corrupt section header block (trailing length differs)", offset=blen - 4)
        body = magic + head + rest
        if not _options_fit(body, 24, blen - 4, endian):
            raise CaptureFormatError(self.path, "corrupt section header block (an option overruns it)", offset=24)
        head = head + rest
        self.sections = 0
        self._section_base = 0
        self._section_ifaces: list[int] = []
        self._skip_section = False
        self._set_endian(endian)
        self._pending = magic + head
        self._pending_offset = 0

    def _set_endian(self, endian: str) -> None:
        self._endian = endian
        self._hdr = struct.Struct(endian + "II").unpack_from
        self._u32 = struct.Struct(endian + "I").unpack_from

    @property
    def time_resolution(self) -> str:
        """The interfaces' common resolution label, or ``mixed``."""
        labels = {i.time_resolution for i in self.interfaces}
        if not labels:
            return "us"
        return labels.pop() if len(labels) == 1 else "mixed"

    # -- non-packet blocks ---------------------------------------------------------------
    def _section(self, buf: memoryview, pos: int, blen: int, base: int) -> None:
        bom = bytes(buf[pos + 8 : pos + 12])
        if bom == b"\x4d\x3c\x2b\x1a":
            self._set_endian("<")
        elif bom == b"\x1a\x2b\x3c\x4d":
            self._set_endian(">")
        else:
            raise CaptureFormatError(self.path, "section header block without byte-order magic", offset=base + pos)
        if self.sections == 0:
            self.byte_order = "little" if self._endian == "<" else "big"
        self.sections += 1
        major, minor = struct.unpack_from(self._endian + "HH", buf, pos + 12)
        self._skip_section = not _supported_version(major, minor)
        if self._skip_section:
            self._warn(f"section {self.sections - 1} at byte {base + pos} has unsupported pcapng version "
                       f"{major}.{minor}; its blocks are skipped")
        self._section_base = len(self.interfaces)
        self._section_ifaces = []

    def _interface(self, buf: memoryview, pos: int, blen: int) -> None:
        link_type, _reserved, snaplen = struct.unpack_from(self._endian + "HHI", buf, pos + 8)
        opts = _options(buf, pos + 16, pos + blen - 4, self._endian)
        tsresol = opts[9][0] if opts.get(9) else 6
        ts_offset = struct.unpack(self._endian + "q", opts[14][:8])[0] if len(opts.get(14, b"")) >= 8 else 0
        gid = len(self.interfaces)
        local = len(self._section_ifaces)
        name = _text(opts.get(2))
        iface = Interface(
            id=gid, section=max(self.sections - 1, 0), local_id=local, link_type=link_type,
            snaplen=snaplen, name=name, description=_text(opts.get(3)), tsresol=tsresol,
            ts_offset_s=ts_offset, label=name or f"#{gid}",
        )
        if not linktypes.is_supported(link_type):
            self._warn(
                f"interface {gid} has unsupported link type {link_type} "
                f"({linktypes.name(link_type)}); its frames are marked unsupported"
            )
        self.interfaces.append(iface)
        self._section_ifaces.append(gid)

    def _statistics(self, buf: memoryview, pos: int, blen: int) -> None:
        local = self._u32(buf, pos + 8)[0]
        if local >= len(self._section_ifaces):
            return
        opts = _options(buf, pos + 20, pos + blen - 4, self._endian)
        stats = InterfaceStats()
        for code, attr in _ISB_OPTIONS.items():
            if len(opts.get(code, b"")) >= 8:
                setattr(stats, attr, struct.unpack(self._endian + "Q", opts[code][:8])[0])
        self.interfaces[self._section_ifaces[local]].stats = stats

    # -- the walk ------------------------------------------------------------------------
    def _walk(self, buf: np.ndarray, mv: memoryview, fill: int, base: int) -> tuple[int, RecordBatch | None, bool]:
        n = fill
        arr = buf  # the batch keeps the array; struct and slicing below read the memoryview
        hdr = self._hdr
        epbs: list[int] = []
        spbs: list[int] = []
        opbs: list[int] = []
        pos = 0
        stop = False
        while pos + 12 <= n:
            btype, blen = hdr(mv, pos)
            if btype == SHB and pos + 12 <= n:
                # The byte order of a new section decides how its length reads.
                bom = bytes(mv[pos + 8 : pos + 12])
                endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else None
                if endian is None:
                    self._warn(f"corrupt section header at byte {base + pos}; stopping here")
                    stop = True
                    break
                blen = struct.unpack_from(endian + "I", mv, pos + 4)[0]
            if blen < 12 or blen & 3 or blen > MAX_RECORD:
                self._warn(
                    f"corrupt block (type 0x{btype:08x}, length {blen}) at byte {base + pos}; "
                    f"{self.frames + len(epbs) + len(spbs) + len(opbs)} records read before it"
                )
                stop = True
                break
            if pos + blen > n:
                break
            if self._skip_section and btype != SHB:
                pos += blen
                continue
            if btype == EPB:
                epbs.append(pos)
            elif btype == SPB:
                spbs.append(pos)
            elif btype == SHB:
                if epbs or spbs or opbs:
                    break  # finish this section's batch first: byte order may change
                self._section(mv, pos, blen, base)
                hdr = self._hdr
            elif btype == IDB:
                if epbs or spbs or opbs:
                    break  # packets before it keep the interface table they were read with
                self._interface(mv, pos, blen)
            elif btype == ISB:
                self._statistics(mv, pos, blen)
            elif btype == OPB:
                opbs.append(pos)
            pos += blen
        if not (epbs or spbs or opbs):
            return pos, None, stop
        return pos, self._batch(arr, mv, epbs, spbs, opbs), stop

    def _batch(self, data: np.ndarray, buf: memoryview, epbs: list[int], spbs: list[int], opbs: list[int]) -> RecordBatch:
        u4 = strided(data, self._endian + "u4")
        u2 = strided(data, self._endian + "u2")
        parts = []
        if epbs:
            o = np.asarray(epbs, dtype=np.int64)
            parts.append((o, u4[o + 8].astype(np.int64), o + 28, u4[o + 20].astype(np.int64),
                          u4[o + 24].astype(np.int64), u4[o + 12], u4[o + 16], True))
        if opbs:
            o = np.asarray(opbs, dtype=np.int64)
            parts.append((o, u2[o + 8].astype(np.int64), o + 28, u4[o + 20].astype(np.int64),
                          u4[o + 24].astype(np.int64), u4[o + 12], u4[o + 16], True))
        if spbs:
            o = np.asarray(spbs, dtype=np.int64)
            wire = u4[o + 8].astype(np.int64)
            spb_len = u4[o + 4].astype(np.int64)
            cap = np.minimum(wire, spb_len - 16)
            if self._section_ifaces:
                snap = self.interfaces[self._section_ifaces[0]].snaplen
                if snap:
                    cap = np.minimum(cap, snap)
            zero = np.zeros(o.shape[0], dtype=np.uint32)
            parts.append((o, np.zeros(o.shape[0], dtype=np.int64), o + 12, cap, wire, zero, zero, False))
        if len(parts) > 1:
            order = np.argsort(np.concatenate([p[0] for p in parts]), kind="stable")
            cols = [np.concatenate([p[i] for p in parts])[order] for i in range(7)]
            has_ts = np.concatenate([np.full(p[0].shape[0], p[7]) for p in parts])[order]
        else:
            cols = list(parts[0][:7])
            has_ts = np.full(cols[0].shape[0], parts[0][7])
        blk, local, off, cap, wire, ts_hi, ts_lo = cols
        blen: np.ndarray = u4[blk + 4].astype(np.int64)
        # Blocks whose captured length overruns the block are corrupt: cut them to the block.
        cap = np.clip(np.minimum(cap, blen - (off - blk) - 4), 0, None)
        nifs = len(self._section_ifaces)
        gid: np.ndarray = np.full(local.shape[0], -1, dtype=np.int32)
        known = local < nifs
        if nifs:
            lookup = np.asarray(self._section_ifaces, dtype=np.int32)
            gid[known] = lookup[local[known]]
        if not known.all():
            self._warn(f"{int((~known).sum())} packets name an interface with no description block; skipped")
            keep = known
            blk, off, cap, wire, ts_hi, ts_lo, has_ts, gid, blen = (
                a[keep] for a in (blk, off, cap, wire, ts_hi, ts_lo, has_ts, gid, blen)
            )
        ticks = (ts_hi.astype(np.uint64) << np.uint64(32)) | ts_lo.astype(np.uint64)
        ts = np.zeros(ticks.shape[0], dtype=np.int64)
        for g in np.unique(gid):
            iface = self.interfaces[int(g)]
            sel = (gid == g) & has_ts
            ts[sel] = ticks_to_ns(ticks[sel], iface.tsresol) + iface.ts_offset_s * 1_000_000_000
            iface.packets += int((gid == g).sum())
        direction = self._directions(buf, blk, off, cap, blen, has_ts)
        return RecordBatch(
            data=data, offset=off, caplen=cap, wirelen=wire, ts_ns=ts, interface=gid,
            direction=direction, first_frame=self.frames + 1,
        )

    def _directions(self, buf: memoryview, blk: np.ndarray, off: np.ndarray, cap: np.ndarray,
                    blen: np.ndarray, has_opts_field: np.ndarray) -> np.ndarray:
        """epb_flags direction bits of every EPB/OPB that carries options; else unknown."""
        direction = np.full(blk.shape[0], DIR_UNKNOWN, dtype=np.int8)
        opt_start = off + ((cap + 3) & ~3)
        with_opts = np.flatnonzero(has_opts_field & (opt_start + 4 < blk + blen - 4))
        for i in with_opts.tolist():
            opts = _options(buf, int(opt_start[i]), int(blk[i] + blen[i] - 4), self._endian)
            flags = opts.get(2)
            if flags and len(flags) >= 4:
                bits = struct.unpack(self._endian + "I", flags[:4])[0] & 3
                direction[i] = DIR_IN if bits == 1 else DIR_OUT if bits == 2 else DIR_UNKNOWN
        return direction
