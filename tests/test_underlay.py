"""The tunnels' own UDP flows: outer ports read again from the capture, and the conntrack
entries a node holds for them (what ``conntrack -L`` lists beside the Service's entries).

The lab's VXLAN fixtures check the same against the kernel (test_correlate_fixtures,
test_analyze_cli's byte-for-byte events); these check what the lab does not make:
Geneve, IPv6 underlays, replies on the reverse tuple, expiry, nested and other tunnels.
"""

from __future__ import annotations

from pathlib import Path

import craft
import numpy as np
import pytest
from craft import ETH_IPV4, T0, Rec, ether, geneve, gre, pcap, sll2, vxlan
from scapy.all import IP, TCP, UDP, IPv6

import flowtrace
from flowtrace.capture.files import CaptureSource
from flowtrace.decode.outer import tunnel_ports

NODE_A, NODE_B = "192.168.1.1", "192.168.1.2"
NODE6_A, NODE6_B = "fd00:10::1", "fd00:10::2"


def inner(i: int, *, reply: bool = False) -> bytes:
    """Packet ``i`` of a TCP connection between two pods: the SYN, then ACKs; a reply is
    the SYN-ACK (distinct IP IDs, so that no two are one packet)."""
    if reply:
        return bytes(IP(src="10.244.2.3", dst="10.244.1.2", id=1000 + i)
                     / TCP(sport=8080, dport=40000, seq=500, ack=101, flags="SA"))
    return bytes(IP(src="10.244.1.2", dst="10.244.2.3", id=i)
                 / TCP(sport=40000, dport=8080, seq=100 if i == 0 else 101, ack=0 if i == 0 else 501,
                       flags="S" if i == 0 else "A"))


def datagram(payload: bytes, *, sport: int, dport: int, v6: bool = False, reverse: bool = False,
             inner_packet: bytes | None = None) -> bytes:
    """An Ethernet frame of the tunnel datagram carrying ``payload`` between the nodes; with
    ``inner_packet``, the outer IP datagram alone (for node_capture, which remembers the
    inner packet to show it decapsulated)."""
    a, b = (NODE6_A, NODE6_B) if v6 else (NODE_A, NODE_B)
    if reverse:
        a, b = b, a
    ip = IPv6(src=a, dst=b) if v6 else IP(src=a, dst=b, ttl=64)
    dg = bytes(ip / UDP(sport=sport, dport=dport) / payload)
    if inner_packet is None:
        return ether(dg)
    INNER_OF[dg] = inner_packet
    return dg


def test_outer_ports_of_the_frames_asked(tmp_path: Path) -> None:
    frames = [
        datagram(vxlan(1, ether(inner(0))), sport=41000, dport=8472),  # frame 1
        ether(inner(1)),  # frame 2: not tunnelled
        datagram(geneve(5, inner(2), protocol=ETH_IPV4), sport=42000, dport=6081, v6=True),  # frame 3
        # frame 4: VXLAN inside GRE: the outermost tunnel is GRE, which has no ports
        ether(bytes(IP(src=NODE_A, dst=NODE_B, proto=47) / gre(ether(bytes(
            IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=43000, dport=4789) / vxlan(2, ether(inner(3))))),
            protocol=0x6558))),
    ]
    path = tmp_path / "node.pcap"
    path.write_bytes(pcap(frames))
    source = CaptureSource(name="node", path=path)
    sport, dport = tunnel_ports(source, np.array([3, 1, 2, 4, 99]))
    assert sport.tolist() == [42000, 41000, -1, -1, -1]
    assert dport.tolist() == [6081, 8472, -1, -1, -1]
    packets = flowtrace.read_packets(str(path))
    assert packets["encap"].astype(str).tolist() == ["vxlan", "none", "geneve", "gre"]


def node_capture(tmp_path: Path, packets: list[tuple[int, bytes, bool]], *, name: str = "node1",
                 mirror: bool = False) -> str:
    """A node's ``tcpdump -i any`` (SLL2): each (microseconds, outer IP datagram, reverse)
    arrives on eth0 (ifindex 2) and its inner packet leaves on cni0 (3) to the pod 10 µs
    later; a ``reverse`` one is the pod's reply, in on cni0 and out on eth0 encapsulated.
    ``mirror``: the datagrams alone, as a mirror port shows them."""
    records = []
    for us, dg, reverse in packets:
        pair = [(2, craft.SLL_HOST, dg), (3, craft.SLL_OUTGOING, INNER_OF[dg])]
        if reverse:
            pair = [(3, craft.SLL_HOST, INNER_OF[dg]), (2, craft.SLL_OUTGOING, dg)]
        for k, (ifindex, pkttype, data) in enumerate(pair):
            if mirror and ifindex == 3:
                continue
            records.append(Rec(sll2(data, ifindex=ifindex, pkttype=pkttype), T0 + us // 1_000_000,
                               us % 1_000_000 + 10 * k))
    path = tmp_path / f"{name}.pcap"
    path.write_bytes(pcap(records, linktype=craft.LINKTYPE_LINUX_SLL2))
    return str(path)


INNER_OF: dict[bytes, bytes] = {}
"""The inner packet of each datagram ``datagram`` made."""


def underlay(a: flowtrace.Analysis) -> list:
    return sorted((e for e in a.conntrack if e.connection == -1), key=lambda e: e.created_ns)


def vx(i: int) -> bytes:
    return datagram(vxlan(1, ether(inner(i))), sport=41000, dport=8472, inner_packet=inner(i))


def test_a_datagram_flow_without_reply_is_one_unreplied_entry(tmp_path: Path) -> None:
    a = flowtrace.analyze(node_capture(tmp_path, [(i * 1000, vx(i), False) for i in range(3)]))
    (e,) = underlay(a)
    assert e.node == "node1" and e.ended is None and not e.updates
    assert e.entry.format() == ("udp      17 30 src=192.168.1.1 dst=192.168.1.2 sport=41000 dport=8472 [UNREPLIED] "
                                "src=192.168.1.2 dst=192.168.1.1 sport=8472 dport=41000 mark=0 use=1")
    first, last = np.flatnonzero(a.packets["encap"].astype(str).to_numpy() == "vxlan")[[0, -1]]
    assert e.created_ns == a.corrected_ts[first] and e.last_ns == a.corrected_ts[last]
    # beside the entry of the connection the node forwarded
    assert [x.connection for x in a.conntrack if x.connection != -1] == [0]


def test_geneve_over_ipv6_with_replies_expiry_and_a_new_entry(tmp_path: Path) -> None:
    """Tunnels with a fixed source port (6081 both ways) reply on the reverse tuple, which
    sets [SEEN_REPLY]; 2 s after creation a replied flow is a stream ([ASSURED], 120 s);
    200 s of silence expires it and the next datagram makes a new entry, [UNREPLIED] again."""
    def gen(i: int, *, reverse: bool = False) -> bytes:
        payload = geneve(9, inner(i, reply=reverse), protocol=ETH_IPV4)
        return datagram(payload, sport=6081, dport=6081, v6=True, reverse=reverse, inner_packet=inner(i, reply=reverse))

    a = flowtrace.analyze(node_capture(tmp_path, [(0, gen(0), False), (1000, gen(1, reverse=True), True),
                                                  (3_000_000, gen(2), False), (203_000_000, gen(3), False)]))
    first, second = underlay(a)
    assert first.entry.family == "ipv6" and first.entry.proto == "udp"
    assert (first.entry.orig.src, first.entry.orig.sport, first.entry.orig.dport) == (NODE6_A, 6081, 6081)
    assert [(u[2], u[3], u[4]) for u in first.updates] == [(True, False, 30), (True, True, 120)]
    assert first.ended == "expired" and first.destroyed is not None
    assert first.destroyed[0] == first.last_ns + 120 * 10**9
    assert second.recreated and second.ended is None and "UNREPLIED" in second.entry.flags
    kinds = [ev.event for ev in first.events()] + [ev.event for ev in second.events()]
    assert kinds == ["NEW", "UPDATE", "UPDATE", "DESTROY", "NEW"]


def test_each_node_holds_its_own_entries(tmp_path: Path) -> None:
    """The same datagrams seen at two nodes are an entry at each."""
    for name in ("node1", "node2"):
        node_capture(tmp_path, [(0, vx(0), False)], name=name)
    a = flowtrace.analyze(str(tmp_path))
    assert sorted(e.node for e in underlay(a)) == ["node1", "node2"]


def test_a_capture_of_datagrams_passing_holds_no_table(tmp_path: Path) -> None:
    """A mirror port (or a node's underlay interface alone) shows the datagrams but no
    connection entering and leaving a host: no conntrack table is made up for it."""
    a = flowtrace.analyze(node_capture(tmp_path, [(i * 1000, vx(i), False) for i in range(3)], mirror=True))
    assert a.conntrack == []


def test_a_capture_that_cannot_be_read_again_is_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = node_capture(tmp_path, [(0, vx(0), False)])

    def gone(source, frames):
        raise FileNotFoundError(2, "No such file or directory", str(source.path))

    monkeypatch.setattr("flowtrace.correlate.underlay.tunnel_ports", gone)
    a = flowtrace.analyze(path)
    assert not underlay(a)
    assert any("node1: the outer UDP ports of its tunnelled packets could not be read again" in n for n in a.notes)
