"""What is in a capture: the format facts from its reader plus counts over its packets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from flowtrace.capture import linktypes
from flowtrace.capture.reader import CaptureMeta, CaptureReader
from flowtrace.schema import DECODE_STATUSES

IP_PROTOCOLS = {
    1: "icmp", 2: "igmp", 4: "ipip", 6: "tcp", 17: "udp", 41: "ipv6", 47: "gre", 50: "esp",
    51: "ah", 58: "icmpv6", 59: "ipv6-nonxt", 89: "ospf", 103: "pim", 112: "vrrp", 132: "sctp",
}
ETHERTYPES = {
    0x0806: "arp", 0x8035: "rarp", 0x88CC: "lldp", 0x888E: "eapol", 0x8809: "slow-protocols",
    0x88F7: "ptp", 0x8100: "vlan", 0x9000: "loopback", 0x0842: "wake-on-lan", 0x86DD: "ipv6",
    0x0800: "ipv4", 0x8847: "mpls", 0x8863: "pppoe-discovery", 0x88E5: "macsec",
}


def protocol_labels(packets: pd.DataFrame) -> pd.Series:
    """Innermost protocol label of each packet: tcp, udp, icmp, arp, ip-proto-N, ethertype-0xXXXX, …"""
    proto = packets["proto"].to_numpy()
    etype = packets["ethertype"].to_numpy()
    labels = np.empty(len(packets), dtype=object)
    ip = proto >= 0
    for value in np.unique(proto[ip]).tolist():
        labels[ip & (proto == value)] = IP_PROTOCOLS.get(value, f"ip-proto-{value}")
    for value in np.unique(etype[~ip]).tolist():
        sel = ~ip & (etype == value)
        labels[sel] = "unknown" if value == 0 else ETHERTYPES.get(value, f"ethertype-0x{value:04x}")
    return pd.Series(labels, index=packets.index, dtype=object)


def _iso(ts_ns: int | None) -> str | None:
    if ts_ns is None:
        return None
    dt = datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ts_ns % 1_000_000_000:09d}Z"


@dataclass(slots=True, kw_only=True)
class CaptureSummary:
    """Everything ``flowtrace info`` reports about one capture."""

    capture: str
    """Capture name."""
    path: str
    """File path."""
    format: str
    """pcap or pcapng."""
    compression: str | None
    """gzip, bzip2, xz, or None."""
    byte_order: str
    """little or big (first section for pcapng)."""
    time_resolution: str
    """us, ns, … or mixed."""
    sections: int
    """pcapng sections (1 for pcap)."""
    version: str = ""
    """pcap file format version."""
    interfaces: list[dict[str, Any]] = field(default_factory=list)
    """One entry per interface: id, section, name, description, link_type, snaplen, stats, …"""
    sll2_ifindexes: list[dict[str, int]] = field(default_factory=list)
    """Per SLL2 interface index: packets, in, out."""
    packets: int = 0
    """Frames read."""
    bytes: int = 0
    """Sum of captured lengths."""
    wire_bytes: int = 0
    """Sum of wire lengths."""
    first_ts_ns: int | None = None
    """Earliest timestamp."""
    last_ts_ns: int | None = None
    """Latest timestamp."""
    time_order_violations: int = 0
    """Frames whose timestamp is earlier than the frame before them."""
    decode_status: dict[str, int] = field(default_factory=dict)
    """Frames per decode_status."""
    protocols: dict[str, int] = field(default_factory=dict)
    """Frames per innermost protocol label."""
    encapsulations: dict[str, int] = field(default_factory=dict)
    """Frames per tunnel kind."""
    directions: dict[str, int] = field(default_factory=dict)
    """Frames per direction."""
    vlan_tagged: int = 0
    """Frames with an 802.1Q/802.1ad tag."""
    snaplen_truncated: int = 0
    """Frames with caplen < wirelen."""
    checksum_errors: int = 0
    """Frames whose transport checksum was verified wrong."""
    capture_drops: int | None = None
    """Sum of ISB ifdrop + osdrop over interfaces, None without any ISB."""
    warnings: list[str] = field(default_factory=list)
    """What was off while reading."""

    @property
    def duration_s(self) -> float:
        """Seconds between the first and last frame."""
        if self.first_ts_ns is None or self.last_ts_ns is None:
            return 0.0
        return (self.last_ts_ns - self.first_ts_ns) / 1e9

    @property
    def link_types(self) -> list[dict[str, Any]]:
        """Distinct link types with their names, in interface order."""
        seen: dict[int, str] = {}
        for i in self.interfaces:
            seen.setdefault(i["link_type"], linktypes.name(i["link_type"]))
        return [{"link_type": k, "name": v} for k, v in seen.items()]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``flowtrace info --json``."""
        drops = self.capture_drops
        return {
            "capture": self.capture,
            "path": self.path,
            "format": self.format,
            "gzip": self.compression == "gzip",
            "compression": self.compression,
            "byte_order": self.byte_order,
            "time_resolution": self.time_resolution,
            "sections": self.sections,
            "version": self.version,
            "link_types": self.link_types,
            "interfaces": self.interfaces,
            "sll2_ifindexes": self.sll2_ifindexes,
            "packets": self.packets,
            "bytes": self.bytes,
            "wire_bytes": self.wire_bytes,
            "first_ts_ns": self.first_ts_ns,
            "last_ts_ns": self.last_ts_ns,
            "first_time": _iso(self.first_ts_ns),
            "last_time": _iso(self.last_ts_ns),
            "duration_s": self.duration_s,
            "time_order_violations": self.time_order_violations,
            "decode_status": self.decode_status,
            "protocols": self.protocols,
            "encapsulations": self.encapsulations,
            "directions": self.directions,
            "vlan_tagged": self.vlan_tagged,
            "snaplen_truncated": self.snaplen_truncated,
            "checksum_errors": self.checksum_errors,
            "capture_drops": drops,
            "warnings": self.warnings,
        }


def _counts(series: pd.Series) -> dict[str, int]:
    vc = series.value_counts(sort=True)
    return {str(k): int(v) for k, v in vc.items() if v}


def summarize(reader: CaptureReader | CaptureMeta, packets: pd.DataFrame) -> CaptureSummary:
    """Build the summary of one capture from its reader and its rows of the packets table."""
    ifaces = []
    drops: int | None = None
    for i in reader.interfaces:
        stats = i.stats.as_dict() if i.stats else None
        if i.stats:
            dropped = (i.stats.ifdrop or 0) + (i.stats.osdrop or 0)
            drops = dropped if drops is None else drops + dropped
        ifaces.append({
            "id": i.id, "section": i.section, "name": i.name, "description": i.description,
            "link_type": i.link_type, "link_type_name": linktypes.name(i.link_type),
            "snaplen": i.snaplen, "time_resolution": i.time_resolution, "ts_offset_s": i.ts_offset_s,
            "packets": i.packets, "stats": stats,
        })
    s = CaptureSummary(
        capture=reader.source.name, path=str(reader.path), format=reader.format,
        compression=reader.compression, byte_order=reader.byte_order,
        time_resolution=reader.time_resolution, sections=max(reader.sections, 1),
        version=getattr(reader, "version", ""), interfaces=ifaces, capture_drops=drops,
        warnings=list(reader.warnings),
    )
    n = len(packets)
    s.packets = n
    if not n:
        s.decode_status = {k: 0 for k in DECODE_STATUSES}
        return s
    ts = packets["ts_ns"].to_numpy()
    s.first_ts_ns, s.last_ts_ns = int(ts.min()), int(ts.max())
    s.time_order_violations = int((np.diff(ts) < 0).sum())
    s.bytes = int(packets["caplen"].sum())
    s.wire_bytes = int(packets["wirelen"].sum())
    s.decode_status = {k: int(v) for k, v in packets["decode_status"].value_counts(sort=False).items()}
    s.protocols = _counts(protocol_labels(packets))
    s.encapsulations = _counts(packets["encap"])
    s.directions = _counts(packets["direction"])
    s.vlan_tagged = int((packets["vlan"] >= 0).sum())
    s.snaplen_truncated = int((packets["caplen"] < packets["wirelen"]).sum())
    s.checksum_errors = int((packets["l4_checksum"] == 0).sum())
    sll2 = packets[packets["ifindex"] >= 0]
    if len(sll2):
        g = sll2.groupby("ifindex", sort=True)["direction"]
        for ifindex, dirs in g:
            s.sll2_ifindexes.append({
                "ifindex": int(ifindex), "packets": int(dirs.size),
                "in": int((dirs == "in").sum()), "out": int((dirs == "out").sum()),
            })
    return s
