"""Small helpers for writing findings: addresses, endpoints, durations, evidence text."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from flowtrace.detect.finding import Evidence

PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}


def proto_name(proto: int) -> str:
    """'TCP', 'UDP', … or 'IP proto N'."""
    return PROTO_NAMES.get(int(proto), f"IP proto {int(proto)}")


def is_multicast(address: str) -> bool:
    """Multicast, broadcast or unspecified: traffic that is flooded, not routed to one host."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_multicast or ip.is_unspecified:
        return True
    return isinstance(ip, ipaddress.IPv4Address) and str(ip) == "255.255.255.255"


def is_loopback(address: str) -> bool:
    """127.0.0.0/8 or ::1: traffic that never leaves its host."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def endpoint(address: object, port: object) -> str:
    """'10.0.0.1:80', '[fd00::1]:80', or the bare address when there is no port."""
    a = str(address)
    try:
        p = int(port)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        p = -1
    if p < 0:
        return a
    return f"[{a}]:{p}" if ":" in a else f"{a}:{p}"


def seconds(ns: int | float) -> str:
    """A duration for people: '850 µs', '12 ms', '1.03 s'."""
    ns = float(ns)
    if abs(ns) < 1e6:
        return f"{ns / 1e3:.0f} µs"
    if abs(ns) < 1e9:
        return f"{ns / 1e6:.0f} ms"
    return f"{ns / 1e9:.2f} s"


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 SYN', '3 SYNs'."""
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"


def evidence_text(evidence: Iterable[Evidence]) -> str:
    """Evidence as one line: 'client:5,7;node1:1,2' (the anomalies table's column)."""
    return ";".join(f"{e.capture}:{','.join(str(f) for f in e.frames)}" for e in evidence)
