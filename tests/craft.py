"""Writers of crafted captures for the tests: pcap, pcapng, gzip and link-layer headers.

Everything here builds bytes by hand from the file-format specifications (pcap, pcapng
draft-ietf-opsawg-pcapng, tcpdump's LINKTYPE list) so that a reader bug cannot be hidden
by a writer that shares its assumptions. Packets themselves are crafted with scapy in the
tests; scapy never reads captures.
"""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_ARP = 0x0806
ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8
ETH_TEB = 0x6558

SLL_HOST = 0
SLL_BROADCAST = 1
SLL_MULTICAST = 2
SLL_OTHERHOST = 3
SLL_OUTGOING = 4

T0 = 1_700_000_000
"""A round epoch second used as the default capture time (2023-11-14T22:13:20Z)."""


# --------------------------------------------------------------------------- pcap


@dataclass(frozen=True, slots=True)
class Rec:
    """One pcap record: frame bytes, timestamp (seconds + fraction in file units)."""

    data: bytes
    sec: int = T0
    frac: int = 0
    """Microseconds (µs magic) or nanoseconds (ns magic)."""
    wirelen: int | None = None
    """Original length; defaults to len(data) before snaplen truncation."""


def pcap(
    records: Iterable[Rec | bytes],
    *,
    linktype: int = LINKTYPE_ETHERNET,
    big_endian: bool = False,
    nanosecond: bool = False,
    snaplen: int = 262144,
    version: tuple[int, int] = (2, 4),
    thiszone: int = 0,
) -> bytes:
    """A pcap file. Frames longer than ``snaplen`` are cut like tcpdump does.

    Plain ``bytes`` records get the timestamp T0 + i µs (or ns) for record i.
    """
    e = ">" if big_endian else "<"
    magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
    out = [
        struct.pack(e + "IHHiIII", magic, version[0], version[1], thiszone, 0, snaplen, linktype)
    ]
    for i, r in enumerate(records):
        if not isinstance(r, Rec):
            r = Rec(bytes(r), T0, i)
        wirelen = len(r.data) if r.wirelen is None else r.wirelen
        data = r.data[:snaplen]
        out.append(struct.pack(e + "IIII", r.sec, r.frac, len(data), wirelen))
        out.append(data)
    return b"".join(out)


def pcap_record_offsets(data: bytes, *, big_endian: bool = False) -> list[tuple[int, int]]:
    """(start, end) byte offsets of every complete record of a pcap file we wrote."""
    e = ">" if big_endian else "<"
    off, out = 24, []
    while off + 16 <= len(data):
        caplen = struct.unpack_from(e + "I", data, off + 8)[0]
        end = off + 16 + caplen
        if end > len(data):
            break
        out.append((off, end))
        off = end
    return out


def gz(data: bytes) -> bytes:
    """gzip-compress a capture (fixed mtime so the bytes are reproducible)."""
    return gzip.compress(data, mtime=0)


# --------------------------------------------------------------------------- pcapng

BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_OPB = 0x00000002
BT_SPB = 0x00000003
BT_NRB = 0x00000004
BT_ISB = 0x00000005
BT_EPB = 0x00000006
BT_DSB = 0x0000000A
BT_CUSTOM = 0x00000BAD

EPB_INBOUND = 1
EPB_OUTBOUND = 2


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


class Pcapng:
    """Builds a pcapng file block by block.

    The first Section Header Block is written on construction (``shb=False`` leaves it
    out, for headerless fragments). Interface ids count from 0 in every section, as the
    format says.
    """

    def __init__(self, *, big_endian: bool = False, shb: bool = True) -> None:
        self._e = ">" if big_endian else "<"
        self._blocks: list[bytes] = []
        self._snaplens: list[int] = []
        if shb:
            self.section(big_endian=big_endian)

    # -- low level

    def _opts(self, options: Sequence[tuple[int, bytes]]) -> bytes:
        if not options:
            return b""
        out = []
        for code, value in options:
            out.append(struct.pack(self._e + "HH", code, len(value)))
            out.append(_pad4(value))
        out.append(struct.pack(self._e + "HH", 0, 0))
        return b"".join(out)

    def block(self, btype: int, body: bytes) -> Pcapng:
        """Append a raw block of any type (body is padded to 32 bits)."""
        body = _pad4(body)
        total = 12 + len(body)
        self._blocks.append(
            struct.pack(self._e + "II", btype, total) + body + struct.pack(self._e + "I", total)
        )
        return self

    # -- blocks

    def section(
        self,
        *,
        big_endian: bool | None = None,
        version: tuple[int, int] = (1, 0),
        options: Sequence[tuple[int, bytes]] = (),
    ) -> Pcapng:
        """Start a new section (SHB); interface ids restart at 0."""
        if big_endian is not None:
            self._e = ">" if big_endian else "<"
        self._snaplens = []
        body = struct.pack(self._e + "IHHq", 0x1A2B3C4D, version[0], version[1], -1)
        return self.block(BT_SHB, body + self._opts(options))

    def interface(
        self,
        linktype: int = LINKTYPE_ETHERNET,
        *,
        snaplen: int = 0,
        name: str | None = None,
        description: str | None = None,
        tsresol: int | None = None,
        tsoffset: int | None = None,
        options: Sequence[tuple[int, bytes]] = (),
    ) -> int:
        """Append an IDB; returns the interface id inside the current section.

        ``tsresol`` is the raw if_tsresol byte: k for 10^-k s, 0x80 | k for 2^-k s.
        ``tsoffset`` is if_tsoffset in seconds.
        """
        opts: list[tuple[int, bytes]] = []
        if name is not None:
            opts.append((2, name.encode()))
        if description is not None:
            opts.append((3, description.encode()))
        if tsresol is not None:
            opts.append((9, bytes([tsresol])))
        if tsoffset is not None:
            opts.append((14, struct.pack(self._e + "q", tsoffset)))
        opts.extend(options)
        body = struct.pack(self._e + "HHI", linktype, 0, snaplen) + self._opts(opts)
        self.block(BT_IDB, body)
        self._snaplens.append(snaplen)
        return len(self._snaplens) - 1

    def _cut(self, iface: int, data: bytes) -> bytes:
        snaplen = self._snaplens[iface] if iface < len(self._snaplens) else 0
        return data[:snaplen] if snaplen else data

    def packet(
        self,
        iface: int,
        data: bytes,
        *,
        ts: int = 0,
        wirelen: int | None = None,
        flags: int | None = None,
        options: Sequence[tuple[int, bytes]] = (),
    ) -> Pcapng:
        """Append an EPB; ``ts`` is in the interface's units, ``flags`` is epb_flags."""
        wirelen = len(data) if wirelen is None else wirelen
        data = self._cut(iface, data)
        opts = list(options)
        if flags is not None:
            opts.insert(0, (2, struct.pack(self._e + "I", flags)))
        body = struct.pack(
            self._e + "IIIII", iface, (ts >> 32) & 0xFFFFFFFF, ts & 0xFFFFFFFF, len(data), wirelen
        )
        return self.block(BT_EPB, body + _pad4(data) + self._opts(opts))

    def simple(self, data: bytes, *, wirelen: int | None = None) -> Pcapng:
        """Append an SPB (interface 0, no timestamp)."""
        wirelen = len(data) if wirelen is None else wirelen
        data = self._cut(0, data)
        return self.block(BT_SPB, struct.pack(self._e + "I", wirelen) + data)

    def obsolete(
        self, iface: int, data: bytes, *, ts: int = 0, wirelen: int | None = None, drops: int = 0
    ) -> Pcapng:
        """Append an obsolete Packet Block (type 2)."""
        wirelen = len(data) if wirelen is None else wirelen
        data = self._cut(iface, data)
        body = struct.pack(
            self._e + "HHIIII",
            iface,
            drops,
            (ts >> 32) & 0xFFFFFFFF,
            ts & 0xFFFFFFFF,
            len(data),
            wirelen,
        )
        return self.block(BT_OPB, body + _pad4(data))

    def stats(
        self,
        iface: int,
        *,
        ts: int = 0,
        ifrecv: int | None = None,
        ifdrop: int | None = None,
        filteraccept: int | None = None,
        osdrop: int | None = None,
        usrdeliv: int | None = None,
    ) -> Pcapng:
        """Append an ISB with the given counters (absent ones are left out)."""
        opts = [
            (code, struct.pack(self._e + "Q", value))
            for code, value in (
                (4, ifrecv),
                (5, ifdrop),
                (6, filteraccept),
                (7, osdrop),
                (8, usrdeliv),
            )
            if value is not None
        ]
        body = struct.pack(self._e + "III", iface, (ts >> 32) & 0xFFFFFFFF, ts & 0xFFFFFFFF)
        return self.block(BT_ISB, body + self._opts(opts))

    def name_resolution(self, ipv4: str = "10.0.0.1", name: str = "pod-a") -> Pcapng:
        """Append an NRB with one IPv4 record (readers must skip it)."""
        addr = bytes(int(x) for x in ipv4.split("."))
        rec_value = addr + name.encode() + b"\0"
        rec = struct.pack(self._e + "HH", 1, len(rec_value)) + _pad4(rec_value)
        return self.block(BT_NRB, rec + struct.pack(self._e + "HH", 0, 0))

    def unknown(self, btype: int = 0x0BAD0BAD, body: bytes = b"not a packet, skip me") -> Pcapng:
        """Append a block of a type readers do not know (they must skip it)."""
        return self.block(btype, body)

    def to_bytes(self) -> bytes:
        return b"".join(self._blocks)

    __bytes__ = to_bytes


# --------------------------------------------------------------------------- link layers


def mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def ip_ethertype(ip: bytes) -> int:
    """0x0800 or 0x86dd from the IP version nibble."""
    return ETH_IPV6 if ip and ip[0] >> 4 == 6 else ETH_IPV4


def ether(
    payload: bytes,
    *,
    ethertype: int | None = None,
    src: str = "02:00:00:00:00:01",
    dst: str = "02:00:00:00:00:02",
    vlans: Sequence[tuple[int, int]] = (),
) -> bytes:
    """An Ethernet II frame; ``vlans`` are (TPID, VLAN id) tags, outermost first."""
    if ethertype is None:
        ethertype = ip_ethertype(payload)
    tags = b"".join(struct.pack(">HH", tpid, vid & 0x0FFF) for tpid, vid in vlans)
    return mac(dst) + mac(src) + tags + struct.pack(">H", ethertype) + payload


def sll(
    payload: bytes,
    *,
    protocol: int | None = None,
    pkttype: int = SLL_HOST,
    hatype: int = 1,
    addr: bytes = b"\x02\x00\x00\x00\x00\x01",
) -> bytes:
    """A Linux cooked (SLL, link type 113) header + payload."""
    if protocol is None:
        protocol = ip_ethertype(payload)
    return struct.pack(">HHH8sH", pkttype, hatype, len(addr), addr, protocol) + payload


def sll2(
    payload: bytes,
    *,
    protocol: int | None = None,
    ifindex: int = 1,
    pkttype: int = SLL_HOST,
    hatype: int = 1,
    addr: bytes = b"\x02\x00\x00\x00\x00\x01",
) -> bytes:
    """A Linux cooked v2 (SLL2, link type 276) header + payload."""
    if protocol is None:
        protocol = ip_ethertype(payload)
    return (
        struct.pack(">HHIHBB8s", protocol, 0, ifindex, hatype, pkttype, len(addr), addr) + payload
    )


AF_INET = 2
AF_INET6_BSD = 24
AF_INET6_FREEBSD = 28
AF_INET6_DARWIN = 30


def null(payload: bytes, *, family: int | None = None, big_endian: bool = False) -> bytes:
    """A BSD loopback header: 4-byte address family in host (NULL, 0) or network (LOOP, 108) order."""
    if family is None:
        family = AF_INET6_DARWIN if ip_ethertype(payload) == ETH_IPV6 else AF_INET
    return struct.pack(">I" if big_endian else "<I", family) + payload


def loop(payload: bytes, *, family: int | None = None) -> bytes:
    """LINKTYPE_LOOP (108): the family in network byte order."""
    return null(payload, family=family, big_endian=True)


# --------------------------------------------------------------------------- tunnels


def vxlan(vni: int, inner_frame: bytes, *, flags: int = 0x08) -> bytes:
    """A VXLAN header (8 bytes) + inner Ethernet frame: UDP payload."""
    return struct.pack(">B3xI", flags, (vni & 0xFFFFFF) << 8) + inner_frame


def geneve(
    vni: int,
    inner: bytes,
    *,
    protocol: int = ETH_TEB,
    options: Sequence[tuple[int, int, bytes]] = (),
) -> bytes:
    """A Geneve header + options (class, type, data padded to 4) + inner: UDP payload."""
    opts = b""
    for cls, typ, data in options:
        data = _pad4(data)
        opts += struct.pack(">HBB", cls, typ, len(data) // 4) + data
    first = len(opts) // 4  # version 0 in the top two bits
    return struct.pack(">BBHI", first, 0, protocol, (vni & 0xFFFFFF) << 8) + opts + inner


def gre(
    inner: bytes,
    *,
    protocol: int | None = None,
    key: int | None = None,
    seq: int | None = None,
    checksum: bool = False,
) -> bytes:
    """A GRE header (RFC 2784/2890) + inner packet: IP protocol 47 payload."""
    if protocol is None:
        protocol = ip_ethertype(inner)
    flags = (0x8000 if checksum else 0) | (0x2000 if key is not None else 0)
    flags |= 0x1000 if seq is not None else 0
    out = struct.pack(">HH", flags, protocol)
    if checksum:
        out += b"\0\0\0\0"
    if key is not None:
        out += struct.pack(">I", key)
    if seq is not None:
        out += struct.pack(">I", seq)
    return out + inner


# --------------------------------------------------------------------------- checks


def assert_packets_schema(df: pd.DataFrame) -> None:
    """Fail unless ``df`` has exactly the packets columns, in order, with declared dtypes."""
    from flowtrace.schema import PACKETS

    assert isinstance(df, pd.DataFrame), type(df)
    assert list(df.columns) == PACKETS.names
    bad = []
    for c in PACKETS.columns:
        s = df[c.name]
        if c.dtype == "category":
            if not isinstance(s.dtype, pd.CategoricalDtype):
                bad.append(f"{c.name}: {s.dtype} is not categorical")
            elif c.categories and not set(s.cat.categories) <= set(c.categories):
                bad.append(f"{c.name}: categories {list(s.cat.categories)} not in {c.categories}")
            elif c.categories and s.isna().any():
                bad.append(f"{c.name}: NaN in a fixed-vocabulary column")
        elif c.dtype == "str":
            if s.dtype != object and not pd.api.types.is_string_dtype(s.dtype):
                bad.append(f"{c.name}: {s.dtype} is not a string column")
        elif str(s.dtype) != c.dtype:
            bad.append(f"{c.name}: {s.dtype} != {c.dtype}")
    assert not bad, "; ".join(bad)
    if len(df):
        for _, frames in df.groupby("capture", observed=True)["frame"]:
            f = frames.to_numpy()
            assert f[0] == 1 and (f[1:] == f[:-1] + 1).all(), f"frames not 1..N: {f[:20]}"


def _same(actual: object, expected: object) -> bool:
    if expected is None:
        return (
            actual is None or (isinstance(actual, float) and math.isnan(actual)) or pd.isna(actual)
        )
    if isinstance(actual, float) and math.isnan(actual):
        return False
    return actual == expected


def check_row(df: pd.DataFrame, index: int, **expected: object) -> None:
    """Compare row ``index`` (positional) with ``expected``; None means missing (NaN).

    Reports every mismatch at once.
    """
    row = df.iloc[index]
    bad = []
    for name, value in expected.items():
        actual = row[name]
        if hasattr(actual, "item"):
            actual = actual.item()
        if not _same(actual, value):
            bad.append(f"{name}: got {actual!r}, expected {value!r}")
    assert not bad, f"row {index}: " + "; ".join(bad)


def sentinel(column: str) -> object:
    """The missing-value sentinel the schema declares for ``column`` (None for NaN)."""
    from flowtrace.schema import PACKETS

    text = PACKETS.column(column).missing.split()
    if not text or text[0] == "NaN":
        return None
    try:
        return int(text[0], 0)
    except ValueError:
        return text[0]


def sentinels(*columns: str) -> dict[str, object]:
    return {c: sentinel(c) for c in columns}


NO_TUNNEL = sentinels("outer_src", "outer_dst", "vni") | {"encap": "none"}
NO_ICMP = sentinels(
    "icmp_type",
    "icmp_code",
    "icmp_id",
    "icmp_seq",
    "icmp_mtu",
    "quoted_src",
    "quoted_dst",
    "quoted_proto",
    "quoted_sport",
    "quoted_dport",
    "quoted_ip_id",
    "quoted_seq",
)
NO_TCP = sentinels(
    "tcp_flags", "seq", "ack", "window", "tcp_opts", "mss", "wscale", "tsval", "tsecr"
)
"""Sentinels of the columns that do not apply, to check along with a row's own fields."""
