"""The lab's own small capture reader: enough to check a scenario against its captures.

In: a pcap (both byte orders, µs and ns) or pcapng file (every IDB, ``if_tsresol``,
``if_tsoffset``, EPB/SPB, ``epb_flags``). Out: the file's interfaces and one :class:`Pkt`
per frame with the 5-tuple (the inner one for VXLAN, with the outer addresses kept),
TCP flags/seq/ack, and for ICMP errors the quoted tuple. Link types: Ethernet (1),
raw IP (101, 228, 229), Linux SLL (113) and SLL2 (276, with ifindex and direction).

It is deliberately independent of ``flowtrace.capture``/``flowtrace.decode`` (whose
correctness the lab's fixtures exist to check) and decodes per packet in Python, which
is fine for the lab's captures of a few thousand frames.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

PCAP_MAGICS = {0xA1B2C3D4: ("<", 1000), 0xA1B23C4D: ("<", 1)}
PCAPNG_SHB = 0x0A0D0D0A
VXLAN_PORTS = (4789, 8472)


@dataclass(slots=True)
class Pkt:
    """One decoded frame (fields are None/0 where the frame does not have them)."""

    ts_ns: int
    iface: int
    """SLL2 ifindex, pcapng interface id, or 0 for a single-interface pcap."""
    direction: str | None
    """``in``/``out`` from SLL/SLL2 packet type or pcapng epb_flags; None when unknown."""
    src_mac: str | None
    proto: int = 0
    src: str = ""
    dst: str = ""
    sport: int = 0
    dport: int = 0
    flags: int = 0
    seq: int = 0
    ack: int = 0
    payload_len: int = 0
    icmp: tuple[int, int] | None = None
    quoted: tuple[int, str, int, str, int] | None = None
    vxlan: tuple[int, str, str] | None = None
    """(VNI, outer source, outer destination) when the frame was VXLAN on the wire."""
    caplen: int = 0
    wirelen: int = 0

    def tuple5(self) -> tuple[int, str, int, str, int]:
        """(proto, src, sport, dst, dport)."""
        return (self.proto, self.src, self.sport, self.dst, self.dport)


def sniff_format(path: Path) -> dict[str, Any]:
    """Read only the headers: format, byte order, link types, interfaces (no packets)."""
    info, _ = _open(path, headers_only=True)
    return info


def read_packets(path: Path) -> tuple[dict[str, Any], list[Pkt]]:
    """Return (file info, decoded packets) of a pcap or pcapng file."""
    info, it = _open(path, headers_only=False)
    pkts = list(it)
    return info, pkts


def _open(path: Path, *, headers_only: bool) -> tuple[dict[str, Any], Iterator[Pkt]]:
    f = open(path, "rb")  # noqa: SIM115 - closed by the generator or below
    head = f.read(24)
    if len(head) < 24:
        f.close()
        raise ValueError(f"{path}: too short for a capture")
    magic_le = struct.unpack("<I", head[:4])[0]
    magic_be = struct.unpack(">I", head[:4])[0]
    if magic_le == PCAPNG_SHB:
        f.seek(0)
        info, blocks = _pcapng_scan(f)
        if headers_only:
            f.close()
            return info, iter(())
        return info, _pcapng_packets(f, blocks, info)
    for magic, endian in ((magic_le, "<"), (magic_be, ">")):
        if magic in PCAP_MAGICS:
            mult = PCAP_MAGICS[magic][1]
            _, vmaj, vmin, _tz, _sig, snaplen, network = struct.unpack(endian + "IHHiIII", head)
            info = {"format": "pcap", "byte_order": "little" if endian == "<" else "big",
                    "ts_resolution": "ns" if mult == 1 else "us", "version": f"{vmaj}.{vmin}",
                    "snaplen": snaplen, "link_types": [network & 0x0FFFFFFF],
                    "interfaces": [{"id": 0, "name": None, "link_type": network & 0x0FFFFFFF}]}
            if headers_only:
                f.close()
                return info, iter(())
            return info, _pcap_packets(f, endian, mult, network & 0x0FFFFFFF)
    f.close()
    raise ValueError(f"{path}: not a pcap or pcapng file (magic {head[:4].hex()})")


def _pcap_packets(f: BinaryIO, endian: str, mult: int, linktype: int) -> Iterator[Pkt]:
    with f:
        while True:
            rh = f.read(16)
            if len(rh) < 16:
                return
            sec, frac, caplen, wirelen = struct.unpack(endian + "IIII", rh)
            data = f.read(caplen)
            yield decode_frame(data, linktype, sec * 1_000_000_000 + frac * mult, 0, None, wirelen)


def _tsresol_ns(value: int) -> tuple[int, int]:
    """(numerator, denominator) turning timestamp units into ns."""
    if value & 0x80:
        return 1_000_000_000, 1 << (value & 0x7F)
    exp = value
    return (10 ** (9 - exp), 1) if exp <= 9 else (1, 10 ** (exp - 9))


def _options(body: bytes, endian: str) -> Iterator[tuple[int, bytes]]:
    off = 0
    while off + 4 <= len(body):
        code, length = struct.unpack_from(endian + "HH", body, off)
        if code == 0:
            return
        yield code, body[off + 4:off + 4 + length]
        off += 4 + ((length + 3) & ~3)


def _pcapng_scan(f: BinaryIO) -> tuple[dict[str, Any], list[tuple[int, int, str]]]:
    """Walk the blocks once: interfaces per section, and (type, offset, endian) of blocks."""
    interfaces: list[dict[str, Any]] = []
    blocks: list[tuple[int, int, str]] = []
    endian, section = "<", -1
    while True:
        start = f.tell()
        hdr = f.read(8)
        if len(hdr) < 8:
            break
        if struct.unpack("<I", hdr[:4])[0] == PCAPNG_SHB:
            bom = f.read(4)
            endian = "<" if struct.unpack("<I", bom)[0] == 0x1A2B3C4D else ">"
            section += 1
            f.seek(start + 8)
        btype, blen = struct.unpack(endian + "II", hdr)
        if blen < 12:
            break
        body = f.read(blen - 12)
        f.read(4)
        if btype == 1:
            linktype, _res, snaplen = struct.unpack_from(endian + "HHI", body)
            iface: dict[str, Any] = {"id": sum(1 for i in interfaces if i["section"] == section),
                                     "section": section, "link_type": linktype, "snaplen": snaplen,
                                     "name": None, "tsresol": 6, "tsoffset": 0}
            for code, val in _options(body[8:], endian):
                if code == 2:
                    iface["name"] = val.decode(errors="replace").rstrip("\x00")
                elif code == 9:
                    iface["tsresol"] = val[0]
                elif code == 14:
                    iface["tsoffset"] = struct.unpack(endian + "q", val[:8])[0]
            interfaces.append(iface)
        blocks.append((btype, start, endian))
    info = {"format": "pcapng", "link_types": sorted({i["link_type"] for i in interfaces}),
            "interfaces": interfaces, "sections": section + 1}
    return info, blocks


def _pcapng_packets(f: BinaryIO, blocks: list[tuple[int, int, str]], info: dict[str, Any]) -> Iterator[Pkt]:
    section = -1
    by_section: dict[int, list[dict[str, Any]]] = {}
    for iface in info["interfaces"]:
        by_section.setdefault(iface["section"], []).append(iface)
    with f:
        for btype, start, endian in blocks:
            if btype == PCAPNG_SHB:
                section += 1
                continue
            if btype not in (3, 6):
                continue
            f.seek(start)
            _bt, blen = struct.unpack(endian + "II", f.read(8))
            body = f.read(blen - 12)
            ifaces = by_section.get(section, [])
            if btype == 6:
                if_id, hi, lo, caplen, wirelen = struct.unpack_from(endian + "IIIII", body)
                data = body[20:20 + caplen]
                direction = None
                for code, val in _options(body[20 + ((caplen + 3) & ~3):], endian):
                    if code == 2 and len(val) >= 4:
                        d = struct.unpack(endian + "I", val[:4])[0] & 3
                        direction = {1: "in", 2: "out"}.get(d)
                iface = ifaces[if_id]
                num, den = _tsresol_ns(iface["tsresol"])
                ts = ((hi << 32) | lo) * num // den + iface["tsoffset"] * 1_000_000_000
            else:
                if_id, ts, direction = 0, 0, None
                wirelen = struct.unpack_from(endian + "I", body)[0]
                iface = ifaces[0]
                data = body[4:4 + min(wirelen, iface["snaplen"] or wirelen)]
            yield decode_frame(data, iface["link_type"], ts, if_id, direction, wirelen)


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def decode_frame(data: bytes, linktype: int, ts_ns: int, iface: int, direction: str | None,
                 wirelen: int) -> Pkt:
    """Decode one frame of ``linktype`` into a Pkt (as far as it goes)."""
    p = Pkt(ts_ns=ts_ns, iface=iface, direction=direction, src_mac=None, caplen=len(data), wirelen=wirelen)
    try:
        if linktype == 1:
            p.src_mac = _mac(data[6:12])
            _ether(p, data, 12)
        elif linktype == 276 and len(data) >= 20:
            proto, _r, ifindex, _ha, pkttype, alen = struct.unpack_from(">HHIHBB", data)
            p.iface, p.direction = ifindex, "out" if pkttype == 4 else "in"
            p.src_mac = _mac(data[12:12 + min(alen, 8)]) if alen else None
            _l3(p, proto, data[20:])
        elif linktype == 113 and len(data) >= 16:
            pkttype, _ha, alen = struct.unpack_from(">HHH", data)
            p.direction = "out" if pkttype == 4 else "in"
            p.src_mac = _mac(data[6:6 + min(alen, 8)]) if alen else None
            _l3(p, struct.unpack_from(">H", data, 14)[0], data[16:])
        elif linktype in (101, 228, 229, 12, 14):
            _l3(p, 0x86DD if data and data[0] >> 4 == 6 else 0x0800, data)
    except (struct.error, IndexError, ValueError):
        pass
    return p


def _ether(p: Pkt, data: bytes, off: int) -> None:
    etype = struct.unpack_from(">H", data, off)[0]
    off += 2
    while etype in (0x8100, 0x88A8):
        etype = struct.unpack_from(">H", data, off + 2)[0]
        off += 4
    _l3(p, etype, data[off:])


def _l3(p: Pkt, etype: int, data: bytes) -> None:
    if etype == 0x0800 and len(data) >= 20:
        ihl = (data[0] & 0x0F) * 4
        frag = struct.unpack_from(">H", data, 6)[0] & 0x1FFF
        total = struct.unpack_from(">H", data, 2)[0]
        p.proto, p.src, p.dst = data[9], str(ipaddress.IPv4Address(data[12:16])), str(ipaddress.IPv4Address(data[16:20]))
        if frag == 0:
            _l4(p, data[ihl:total] if total >= ihl else data[ihl:])
    elif etype == 0x86DD and len(data) >= 40:
        nh, plen = data[6], struct.unpack_from(">H", data, 4)[0]
        p.src, p.dst = str(ipaddress.IPv6Address(data[8:24])), str(ipaddress.IPv6Address(data[24:40]))
        off, end = 40, 40 + plen
        while nh in (0, 43, 60, 44):
            if nh == 44:
                if struct.unpack_from(">H", data, off + 2)[0] & 0xFFF8:
                    p.proto = data[off]
                    return
                nh, off = data[off], off + 8
            else:
                nh, off = data[off], off + (data[off + 1] + 1) * 8
        p.proto = nh
        _l4(p, data[off:end])


def _l4(p: Pkt, seg: bytes) -> None:
    if p.proto in (6, 17) and 4 <= len(seg) < 8:  # quoted in an ICMP error: ports only
        p.sport, p.dport = struct.unpack_from(">HH", seg)
    elif p.proto == 6 and len(seg) >= 20:
        p.sport, p.dport, p.seq, p.ack = struct.unpack_from(">HHII", seg)
        off = (seg[12] >> 4) * 4
        p.flags = seg[13] | ((seg[12] & 1) << 8)
        p.payload_len = max(0, len(seg) - off)
    elif p.proto == 6 and len(seg) >= 8:
        p.sport, p.dport, p.seq = struct.unpack_from(">HHI", seg)
    elif p.proto == 17 and len(seg) >= 8:
        p.sport, p.dport, ulen = struct.unpack_from(">HHH", seg)
        p.payload_len = max(0, ulen - 8)
        body = seg[8:]
        if p.dport in VXLAN_PORTS and len(body) >= 22 and body[0] & 0x08:
            vni = struct.unpack_from(">I", body, 4)[0] >> 8
            outer = (vni, p.src, p.dst)
            inner = Pkt(ts_ns=p.ts_ns, iface=p.iface, direction=p.direction, src_mac=_mac(body[14:20]))
            _ether(inner, body[8:], 12)
            for name in ("proto", "src", "dst", "sport", "dport", "flags", "seq", "ack",
                         "payload_len", "icmp", "quoted"):
                setattr(p, name, getattr(inner, name))
            p.vxlan = outer
    elif p.proto in (1, 58) and len(seg) >= 8:
        p.icmp = (seg[0], seg[1])
        errors = (3, 11, 12) if p.proto == 1 else (1, 2, 3, 4)
        if seg[0] in errors:
            q = Pkt(ts_ns=0, iface=0, direction=None, src_mac=None)
            _l3(q, 0x0800 if p.proto == 1 else 0x86DD, seg[8:])
            if q.src:
                p.quoted = (q.proto, q.src, q.sport, q.dst, q.dport)
        elif len(seg) >= 8:
            p.sport = p.dport = struct.unpack_from(">H", seg, 4)[0]
