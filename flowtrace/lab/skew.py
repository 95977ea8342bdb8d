"""Shift the timestamps of a capture (or a conntrack event log) by a known offset.

In: a pcap or pcapng file and an offset in ns. Out: the same file with every packet
timestamp moved by the offset and nothing else changed, byte for byte. pcap: each record
header's seconds and fraction (µs or ns by the file's magic, either byte order). pcapng:
every EPB (and the obsolete OPB) and every ISB timestamp, converted to the units of its
interface's ``if_tsresol`` (10^-n or 2^-n s) and written back; ``if_tsoffset`` is left as
it is (it adds to the shifted value). Used to derive the clock-skew scenarios, where a
vantage point's clock runs ahead or behind.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from flowtrace.errors import LabError

_PCAP_MAGICS = {0xA1B2C3D4: 1000, 0xA1B23C4D: 1}
_SHB = 0x0A0D0D0A


def shift_capture(src: Path, dst: Path, offset_ns: int) -> None:
    """Write ``src`` to ``dst`` with every timestamp moved by ``offset_ns``."""
    data = bytearray(src.read_bytes())
    if len(data) < 24:
        raise LabError(f"{src}: too short to be a capture")
    if struct.unpack_from("<I", data)[0] == _SHB:
        _shift_pcapng(data, offset_ns, src)
    else:
        _shift_pcap(data, offset_ns, src)
    dst.write_bytes(bytes(data))


def _shift_pcap(data: bytearray, offset_ns: int, src: Path) -> None:
    for endian in ("<", ">"):
        magic = struct.unpack_from(endian + "I", data)[0]
        if magic in _PCAP_MAGICS:
            unit_ns = _PCAP_MAGICS[magic]
            break
    else:
        raise LabError(f"{src}: not a pcap or pcapng file")
    per_sec = 1_000_000_000 // unit_ns
    off = 24
    while off + 16 <= len(data):
        sec, frac, caplen, _wire = struct.unpack_from(endian + "IIII", data, off)
        total = (sec * per_sec + frac) * unit_ns + offset_ns
        if total < 0:
            raise LabError(f"{src}: shifting by {offset_ns} ns moves a packet before 1970")
        units = total // unit_ns
        struct.pack_into(endian + "II", data, off, units // per_sec, units % per_sec)
        off += 16 + caplen


def _units(tsresol: int) -> tuple[int, int]:
    """Units per second as a fraction (num, den) for an if_tsresol value."""
    if tsresol & 0x80:
        return 1 << (tsresol & 0x7F), 1
    return 10**tsresol, 1


def _shift_ts(data: bytearray, pos: int, endian: str, tsresol: int, offset_ns: int) -> None:
    hi, lo = struct.unpack_from(endian + "II", data, pos)
    per_sec, _ = _units(tsresol)
    value = (hi << 32) | lo
    delta, rem = divmod(offset_ns * per_sec, 1_000_000_000)
    if rem:
        # Offsets that are not a whole number of units round to the nearest unit.
        delta += 1 if rem * 2 >= 1_000_000_000 else 0
    value += delta
    if value < 0:
        raise LabError("shift moves a packet before 1970")
    struct.pack_into(endian + "II", data, pos, value >> 32, value & 0xFFFFFFFF)


def _shift_pcapng(data: bytearray, offset_ns: int, src: Path) -> None:
    off, endian = 0, "<"
    resols: list[int] = []
    while off + 12 <= len(data):
        if struct.unpack_from("<I", data, off)[0] == _SHB:
            bom = struct.unpack_from("<I", data, off + 8)[0]
            endian = "<" if bom == 0x1A2B3C4D else ">"
            resols = []
        btype, blen = struct.unpack_from(endian + "II", data, off)
        if blen < 12 or off + blen > len(data):
            raise LabError(f"{src}: corrupt pcapng block at byte {off}")
        body = off + 8
        if btype == 1:
            resols.append(_idb_tsresol(data, body, off + blen - 4, endian))
        elif btype in (6, 2):
            if_id = struct.unpack_from(endian + ("I" if btype == 6 else "H"), data, body)[0]
            if if_id >= len(resols):
                raise LabError(f"{src}: packet block at byte {off} names unknown interface {if_id}")
            _shift_ts(data, body + 4, endian, resols[if_id], offset_ns)
        elif btype == 5:
            if_id = struct.unpack_from(endian + "I", data, body)[0]
            if if_id < len(resols):
                _shift_ts(data, body + 4, endian, resols[if_id], offset_ns)
        off += blen


def _idb_tsresol(data: bytearray, body: int, end: int, endian: str) -> int:
    pos = body + 8
    while pos + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", data, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            return data[pos + 4]
        pos += 4 + ((length + 3) & ~3)
    return 6


_CT_TS = re.compile(r"^\[(\d+)\.(\d+)(\s*)\]")


def shift_conntrack_events(src: Path, dst: Path, offset_ns: int) -> None:
    """Copy a ``conntrack -E -o timestamp`` log moving each ``[sec.usec]`` by the offset.

    Keeps conntrack's layout: microseconds left-justified without zero padding, padded
    with spaces to six characters.
    """
    out = []
    for line in src.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
        m = _CT_TS.match(line)
        if m:
            usec_total = int(m.group(1)) * 1_000_000 + int(m.group(2)) + offset_ns // 1000
            sec, usec = divmod(usec_total, 1_000_000)
            line = f"[{sec}.{usec:<6}]" + line[m.end():]
        out.append(line)
    dst.write_text("".join(out), encoding="utf-8")
