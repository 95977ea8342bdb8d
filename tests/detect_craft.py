"""Crafted multi-capture scenarios for the detector tests.

A ``World`` records what each vantage point would capture: a client or pod's single
interface (pcap, Ethernet) and nodes' ``tcpdump -i any`` (pcap, LINUX_SLL2 with the
interface index and direction). ``World.send`` walks one packet along a list of ``Leg``s,
applying NAT and TTL changes where a real node would, and ``World.write`` turns it into
capture files (tests/craft.py writes the bytes) for ``flowtrace.pipeline.analyze``.

Addresses follow the lab (docs/lab.md): client 198.51.100.10, LoadBalancer 203.0.113.10:80,
node1 10.0.1.11 (eth0 = if2, cni0 = if3, pod veth = if4), node2 10.0.1.12, pod web-1
10.244.2.7:8080, ClusterIP 10.96.0.10.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from craft import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL2,
    SLL_HOST,
    SLL_OUTGOING,
    Rec,
    ether,
    pcap,
    sll2,
)
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet

T0 = 1_700_000_000_000_000_000
"""Time of the first packet (ns)."""
HOP_NS = 20_000
"""Time between consecutive legs of one packet."""

CLIENT, LB, NODE1, NODE2, POD = "198.51.100.10", "203.0.113.10", "10.0.1.11", "10.0.1.12", "10.244.2.7"
CLUSTER_IP = "10.96.0.10"


@dataclass
class Leg:
    """One observation point a packet passes, and what changed just before it."""

    capture: str
    ifindex: int = -1
    """SLL2 interface index for node captures; -1 for Ethernet endpoint captures."""
    out: bool = False
    """The capturing host sends it (SLL 'outgoing'); else it receives it."""
    nat: dict[str, Any] = field(default_factory=dict)
    """Header fields rewritten before this leg: src, dst, sport, dport."""
    ttl: int = 0
    """TTL decrement before this leg (a router or a node routing)."""


class World:
    """Packets as each capture saw them, written as pcap files."""

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[int, bytes]]] = {}
        self.sll2: set[str] = set()

    def node(self, *names: str) -> World:
        """Declare node captures (``tcpdump -i any``: SLL2)."""
        self.sll2.update(names)
        for n in names:
            self.records.setdefault(n, [])
        return self

    def see(self, capture: str, pkt: Packet, ts_ns: int, *, ifindex: int = 2, out: bool = False) -> None:
        """Record ``pkt`` (an IP/IPv6 packet) in ``capture`` at ``ts_ns``."""
        raw = bytes(pkt)
        if capture in self.sll2:
            frame = sll2(raw, ifindex=ifindex, pkttype=SLL_OUTGOING if out else SLL_HOST)
        else:
            frame = ether(raw)
        self.records.setdefault(capture, []).append((ts_ns, frame))

    def send(self, pkt: Packet, ts_ns: int, legs: list[Leg], *, keep: bool = False) -> Packet:
        """Walk ``pkt`` along ``legs`` from ``ts_ns`` (HOP_NS apart); return it as last seen.

        Checksums are recomputed after every rewrite unless ``keep`` (a corrupt checksum
        stays corrupt)."""
        cur = pkt.copy()
        for i, leg in enumerate(legs):
            cur = cur.copy()
            ip = cur[IP] if IP in cur else cur[IPv6]
            l4 = cur.getlayer(TCP)
            if l4 is None:
                l4 = cur.getlayer(UDP)
            for k, v in leg.nat.items():
                if k in ("src", "dst"):
                    setattr(ip, k, v)
                elif l4 is not None:
                    setattr(l4, k, v)
            if leg.ttl:
                if IP in cur:
                    ip.ttl -= leg.ttl
                else:
                    ip.hlim -= leg.ttl
            if not keep:
                if IP in cur:
                    del ip.chksum
                if l4 is not None:
                    del l4.chksum
            cur = cur.__class__(bytes(cur))
            self.see(leg.capture, cur, ts_ns + i * HOP_NS, ifindex=leg.ifindex, out=leg.out)
        return cur

    def write(self, directory: Path) -> Path:
        """Write every capture as ``NAME.pcap`` (ns timestamps) into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, recs in self.records.items():
            recs = sorted(recs, key=lambda r: r[0])
            data = pcap([Rec(frame, ts // 1_000_000_000, ts % 1_000_000_000) for ts, frame in recs],
                        linktype=LINKTYPE_LINUX_SLL2 if name in self.sll2 else LINKTYPE_ETHERNET,
                        nanosecond=True)
            (directory / f"{name}.pcap").write_bytes(data)
        return directory


def tcp(src: str, sport: int, dst: str, dport: int, flags: str, seq: int, ack: int = 0, *, payload: bytes = b"",
        ip_id: int = 1, ttl: int = 64, **tcp_fields: Any) -> Packet:
    """An IPv4 TCP segment (DF set, like Linux)."""
    return (IP(src=src, dst=dst, id=ip_id, ttl=ttl, flags="DF")
            / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=64240, **tcp_fields) / payload)


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes, *, ip_id: int = 1, ttl: int = 64) -> Packet:
    """An IPv4 UDP datagram."""
    return IP(src=src, dst=dst, id=ip_id, ttl=ttl) / UDP(sport=sport, dport=dport) / payload


def dns_query(txid: int, name: str = "web.default.svc.cluster.local", qtype: int = 1) -> bytes:
    """A DNS query message (RFC 1035 wire format)."""
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return txid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + q + qtype.to_bytes(2, "big") + b"\0\1"


def dns_reply(txid: int, name: str = "web.default.svc.cluster.local", qtype: int = 1) -> bytes:
    """A DNS reply to ``dns_query(txid, name, qtype)`` with no answer records (NOERROR)."""
    query = dns_query(txid, name, qtype)
    return query[:2] + b"\x81\x80" + query[4:]


def icmp_error(src: str, dst: str, kind: int, code: int, quoted: Packet, *, ttl: int = 64) -> Packet:
    """An ICMP error from ``src`` quoting the first bytes of ``quoted``."""
    return IP(src=src, dst=dst, ttl=ttl) / ICMP(type=kind, code=code) / bytes(quoted)[:28]


def client_to_pod(snat_port: int, *, pod_capture: str = "web-1") -> list[Leg]:
    """Client -> node1 (DNAT to the pod, SNAT to node1) -> node2 -> the pod, as in cross-node."""
    return [Leg("client"), Leg("node1", 2, ttl=1),
            Leg("node1", 2, out=True, nat={"dst": POD, "dport": 8080, "src": NODE1, "sport": snat_port}, ttl=1),
            Leg("node2", 2, ttl=1), Leg("node2", 4, out=True, ttl=1), Leg(pod_capture)]


def pod_to_client(client_port: int, *, pod_capture: str = "web-1") -> list[Leg]:
    """The reply path of ``client_to_pod``: the pod -> node2 -> node1 (reversed NAT) -> client."""
    return [Leg(pod_capture), Leg("node2", 4), Leg("node2", 2, out=True, ttl=1), Leg("node1", 2, ttl=1),
            Leg("node1", 2, out=True, nat={"src": LB, "sport": 80, "dst": CLIENT, "dport": client_port}, ttl=1),
            Leg("client", ttl=1)]


def handshake(w: World, t: int, client_port: int, snat_port: int, isn: int, server_isn: int,
              *, forward: list[Leg] | None = None, back: list[Leg] | None = None) -> int:
    """SYN, SYN-ACK, ACK of one connection through ``client_to_pod``; returns the time after it."""
    fwd = forward or client_to_pod(snat_port)
    rev = back or pod_to_client(client_port)
    w.send(tcp(CLIENT, client_port, LB, 80, "S", isn, ip_id=10), t, fwd)
    w.send(tcp(POD, 8080, NODE1, snat_port, "SA", server_isn, isn + 1, ip_id=0), t + 200_000, rev)
    w.send(tcp(CLIENT, client_port, LB, 80, "A", isn + 1, server_isn + 1, ip_id=11), t + 400_000, fwd)
    return t + 600_000
