"""Detectors on crafted multi-capture packet sequences: the catalog's signatures the lab
cannot reproduce, each next to a near miss that must not fire."""

from __future__ import annotations

from pathlib import Path

import pytest
from craft import LINKTYPE_ETHERNET, Pcapng, ether
from detect_craft import (
    CLIENT,
    CLUSTER_IP,
    LB,
    NODE1,
    NODE2,
    POD,
    T0,
    Leg,
    World,
    client_to_pod,
    dns_query,
    dns_reply,
    handshake,
    icmp_error,
    pod_to_client,
    tcp,
    udp,
)
from scapy.layers.inet import IP, UDP

from flowtrace.analysis import Analysis
from flowtrace.detect.finding import Finding
from flowtrace.pipeline import analyze

POD_LOCAL = "10.244.1.5"
COREDNS = "10.244.2.3"
SECOND = 1_000_000_000


def codes(a: Analysis, *, above_info: bool = False) -> set[str]:
    return {f.code for f in a.findings if not above_info or f.severity != "info"}


def only(a: Analysis, code: str) -> list[Finding]:
    return [f for f in a.findings if f.code == code]


def frames(f: Finding, capture: str) -> set[int]:
    return {n for e in f.evidence if e.capture == capture for n in e.frames}


# ----------------------------------------------------------------------------- dns_conntrack_race


def _dns_world(*, race: bool) -> World:
    """A pod sends A and AAAA from one socket 0.2 ms apart through node1's DNAT; with
    ``race`` the AAAA query never leaves node1 and is asked again 5 s later."""
    c = "10.244.1.9"

    def query(passes: bool) -> list[Leg]:
        legs = [Leg("client-0"), Leg("node1", 4)]
        return [*legs, Leg("node1", 2, out=True, nat={"dst": COREDNS}, ttl=1)] if passes else legs

    back = [Leg("node1", 2), Leg("node1", 4, out=True, nat={"src": CLUSTER_IP}, ttl=1), Leg("client-0")]
    w = World().node("node1")
    w.send(udp(c, 40000, CLUSTER_IP, 53, dns_query(0x1111, qtype=1), ip_id=100), T0, query(True))
    w.send(udp(c, 40000, CLUSTER_IP, 53, dns_query(0x2222, qtype=28), ip_id=101), T0 + 200_000, query(not race))
    w.send(udp(COREDNS, 53, c, 40000, dns_reply(0x1111, qtype=1), ip_id=200, ttl=63), T0 + 1_000_000, back)
    if race:
        w.send(udp(c, 40000, CLUSTER_IP, 53, dns_query(0x2222, qtype=28), ip_id=102), T0 + 5 * SECOND, query(True))
        w.send(udp(COREDNS, 53, c, 40000, dns_reply(0x2222, qtype=28), ip_id=201, ttl=63), T0 + 5 * SECOND + 10**6,
               back)
    else:
        w.send(udp(COREDNS, 53, c, 40000, dns_reply(0x2222, qtype=28), ip_id=201, ttl=63), T0 + 1_100_000, back)
    return w


def test_dns_conntrack_race(tmp_path):
    a = analyze(_dns_world(race=True).write(tmp_path))
    (f,) = only(a, "dns_conntrack_race")
    assert f.severity == "high" and f.connection is not None
    assert "node1 saw it arrive and never forward it" in f.message
    assert frames(f, "node1") == {3}  # the AAAA query coming in, never going out
    assert {1, 2, 3, 4} <= frames(f, "client-0")
    assert "drop_between_hops" not in codes(a)  # explained by the race


def test_dns_queries_both_answered_are_no_race(tmp_path):
    a = analyze(_dns_world(race=False).write(tmp_path))
    assert codes(a, above_info=True) == set()


# ----------------------------------------------------------------------------- snat_port_collision


def _node1_only(snat: int) -> list[Leg]:
    return [Leg("client"), Leg("node1", 2, ttl=1),
            Leg("node1", 2, out=True, nat={"dst": POD, "dport": 8080, "src": NODE1, "sport": snat}, ttl=1)]


def _node1_back(client_port: int) -> list[Leg]:
    return [Leg("node1", 2),
            Leg("node1", 2, out=True, nat={"src": LB, "sport": 80, "dst": CLIENT, "dport": client_port}, ttl=1),
            Leg("client", ttl=1)]


@pytest.mark.parametrize("rival", [True, False])
def test_snat_port_collision_first_syn_dropped(tmp_path, rival):
    """Two SYNs to one endpoint 0.3 ms apart: one leaves node1, the other does not; its
    retransmission 1 s later does. Without the rival SYN it is a plain drop."""
    w = World().node("node1")
    if rival:
        w.send(tcp(CLIENT, 40000, LB, 80, "S", 1000, ip_id=1), T0, _node1_only(5000))
        w.send(tcp(POD, 8080, NODE1, 5000, "SA", 7000, 1001, ip_id=0, ttl=63), T0 + 10**6, _node1_back(40000))
    w.send(tcp(CLIENT, 40001, LB, 80, "S", 9000, ip_id=2), T0 + 300_000, _node1_only(5001)[:2])
    w.send(tcp(CLIENT, 40001, LB, 80, "S", 9000, ip_id=4), T0 + SECOND + 300_000, _node1_only(5001))
    w.send(tcp(POD, 8080, NODE1, 5001, "SA", 8000, 9001, ip_id=0, ttl=63), T0 + SECOND + 10**6, _node1_back(40001))
    a = analyze(w.write(tmp_path))
    found = only(a, "snat_port_collision")
    if not rival:
        assert not found
        assert "drop_between_hops" in codes(a)
        return
    (f,) = found
    assert f.severity == "high" and "retransmission 1.00 s later went through" in f.message
    assert "drop_between_hops" not in codes(a)
    syn = only(a, "syn_retransmission")
    assert syn and "1 s fingerprint" in syn[0].message


def test_snat_port_collision_two_tuples_one_post_nat_tuple(tmp_path):
    w = World().node("node1")
    w.send(tcp(CLIENT, 40000, LB, 80, "S", 1000, ip_id=1), T0, _node1_only(5000))
    w.send(tcp(CLIENT, 40001, LB, 80, "S", 9000, ip_id=2), T0 + 300_000, _node1_only(5000))
    w.send(tcp(POD, 8080, NODE1, 5000, "SA", 7000, 1001, ip_id=0, ttl=63), T0 + 10**6, _node1_back(40000))
    a = analyze(w.write(tmp_path))
    (f,) = only(a, "snat_port_collision")
    assert "198.51.100.10:40000 and 198.51.100.10:40001 to the same tuple 10.0.1.11:5000" in f.message


def test_reused_post_nat_tuple_after_a_close_is_no_collision(tmp_path):
    w = World().node("node1")
    w.send(tcp(CLIENT, 40000, LB, 80, "S", 1000, ip_id=1), T0, _node1_only(5000))
    w.send(tcp(POD, 8080, NODE1, 5000, "SA", 7000, 1001, ip_id=0, ttl=63), T0 + 10**6, _node1_back(40000))
    w.send(tcp(CLIENT, 40000, LB, 80, "R", 1001, ip_id=2), T0 + 2 * 10**6, _node1_only(5000))
    w.send(tcp(CLIENT, 40001, LB, 80, "S", 9000, ip_id=3), T0 + 3 * 10**6, _node1_only(5000))
    w.send(tcp(POD, 8080, NODE1, 5000, "SA", 8000, 9001, ip_id=0, ttl=63), T0 + 4 * 10**6, _node1_back(40001))
    assert not only(analyze(w.write(tmp_path)), "snat_port_collision")


# ----------------------------------------------------------------------------- conntrack_table_full


def _full_table(tmp_path: Path, destinations: list[tuple[str, int]], *, established: bool = True) -> Analysis:
    w = World().node("node1")
    est = [Leg("client"), Leg("node1", 2, ttl=1),
           Leg("node1", 3, out=True, nat={"dst": POD_LOCAL, "dport": 8080}, ttl=1)]
    back = [Leg("node1", 3), Leg("node1", 2, out=True, nat={"src": LB, "sport": 80}, ttl=1), Leg("client", ttl=1)]
    if established:
        for i in range(20):
            w.send(tcp(CLIENT, 39000, LB, 80, "PA", 5000 + 100 * i, 800, payload=b"x" * 100, ip_id=500 + i),
                   T0 + i * SECOND // 2, est)
            w.send(tcp(POD_LOCAL, 8080, CLIENT, 39000, "A", 800, 5100 + 100 * i, ip_id=900 + i),
                   T0 + i * SECOND // 2 + 300_000, back)
    for k, (d, p) in enumerate(destinations):
        for r in range(2):
            w.send(tcp(CLIENT, 41000 + k, d, p, "S", 100_000 * (k + 1), ip_id=2000 + 10 * k + r),
                   T0 + SECOND // 10 + k * 3 * SECOND // 10 + r * SECOND, [Leg("client"), Leg("node1", 2, ttl=1)])
    return analyze(w.write(tmp_path))


MANY = [(LB, 80), (LB, 443), ("203.0.113.11", 80), ("203.0.113.12", 8443), (LB, 80), ("203.0.113.11", 80)]


def test_conntrack_table_full(tmp_path):
    a = _full_table(tmp_path, MANY)
    (f,) = only(a, "conntrack_table_full")
    assert f.severity == "critical" and f.capture == "node1"
    assert len(f.details["connections"]) == 6
    # It explains the drops: no blackhole, drop or no_reply findings on those connections.
    assert not codes(a) & {"no_local_endpoint_blackhole", "drop_between_hops", "no_reply"}


def test_new_connections_dropped_without_established_traffic_is_not_a_full_table(tmp_path):
    a = _full_table(tmp_path, MANY, established=False)
    assert not only(a, "conntrack_table_full")


def test_one_destination_blackholed_is_not_a_full_table(tmp_path):
    a = _full_table(tmp_path, [(LB, 80)] * 6)
    assert not only(a, "conntrack_table_full")
    assert only(a, "no_local_endpoint_blackhole")


def test_retransmitted_syns_without_timestamps_link_across_captures(tmp_path):
    """Identical SYN retransmissions (no TCP timestamps) are split into one group per
    sending; the client's and node1's flows must still be one connection."""
    a = _full_table(tmp_path, [(LB, 80)], established=False)
    assert len(a.connections) == 1 and a.connections["flows"].iloc[0] == 2


# ----------------------------------------------------------------------------- invalid_conntrack_rst


def _leak_world(*, leak: bool) -> World:
    fwd = [Leg("client"), Leg("node1", 2, ttl=1), Leg("node1", 4, out=True, nat={"dst": POD_LOCAL, "dport": 8080},
                                                        ttl=1), Leg("web-0")]
    back = [Leg("web-0"), Leg("node1", 4), Leg("node1", 2, out=True, nat={"src": LB, "sport": 80}, ttl=1),
            Leg("client", ttl=1)]
    w = World().node("node1")
    w.send(tcp(CLIENT, 40000, LB, 80, "S", 1000, ip_id=1), T0, fwd)
    w.send(tcp(POD_LOCAL, 8080, CLIENT, 40000, "SA", 5000, 1001, ip_id=0), T0 + 200_000, back)
    w.send(tcp(CLIENT, 40000, LB, 80, "A", 1001, 5001, ip_id=2), T0 + 400_000, fwd)
    w.send(tcp(CLIENT, 40000, LB, 80, "PA", 1001, 5001, payload=b"G" * 100, ip_id=3), T0 + 600_000, fwd)
    w.send(tcp(POD_LOCAL, 8080, CLIENT, 40000, "PA", 5001, 1101, payload=b"H" * 1000, ip_id=100), T0 + 800_000, back)
    w.send(tcp(CLIENT, 40000, LB, 80, "A", 1101, 6001, ip_id=4), T0 + 10**6, fwd)
    # The pod retransmits an old segment; conntrack calls it INVALID and node1 forwards it
    # untranslated. The client answers RST (to the pod address), which resets the pod.
    again = tcp(POD_LOCAL, 8080, CLIENT, 40000, "PA", 5001, 1101, payload=b"H" * 1000, ip_id=101)
    if leak:
        w.send(again, T0 + 300 * 10**6, [Leg("web-0"), Leg("node1", 4), Leg("node1", 2, out=True, ttl=1),
                                          Leg("client", ttl=1)])
        w.send(tcp(CLIENT, 40000, POD_LOCAL, 8080, "R", 1101, 0, ip_id=0), T0 + 300_200_000,
               [Leg("client"), Leg("node1", 2, ttl=1), Leg("node1", 4, out=True, ttl=1), Leg("web-0")])
    else:
        w.send(again, T0 + 300 * 10**6, back)
        w.send(tcp(CLIENT, 40000, LB, 80, "A", 1101, 6001, ip_id=5), T0 + 300_200_000, fwd)
    return w


def test_invalid_conntrack_rst(tmp_path):
    a = analyze(_leak_world(leak=True).write(tmp_path))
    (f,) = only(a, "invalid_conntrack_rst")
    assert f.severity == "high" and "10.244.1.5:8080" in f.message
    assert frames(f, "client") == {7, 8}  # the untranslated segment and the client's RST
    assert "connection_reset" not in codes(a)


def test_translated_retransmission_is_harmless(tmp_path):
    a = analyze(_leak_world(leak=False).write(tmp_path))
    assert codes(a, above_info=True) == set()


# ----------------------------------------------------------------------------- stale_conntrack_endpoint


def _stale_world(*, stale: bool, untranslated: bool = False) -> World:
    """A long-lived UDP socket to the DNS ClusterIP, DNAT'd by node1 to 10.244.2.5, whose pod
    goes away at 2 s; a new socket from 2.5 s is DNAT'd to 10.244.2.9 and answered."""
    c, old, new = "10.244.1.9", "10.244.2.5", "10.244.2.9"
    w = World().node("node1")

    def ask(port: int, to: str | None, txid: int, t: int, answered: bool) -> None:
        legs = [Leg("client-0"), Leg("node1", 4)]
        legs.append(Leg("node1", 2, out=True, nat={"dst": to} if to else {}, ttl=1))
        w.send(udp(c, port, CLUSTER_IP, 53, dns_query(txid), ip_id=txid), t, legs)
        if answered and to:
            w.send(udp(to, 53, c, port, dns_reply(txid), ip_id=txid + 1000, ttl=63), t + 10**6,
                   [Leg("node1", 2), Leg("node1", 4, out=True, nat={"src": CLUSTER_IP}, ttl=1), Leg("client-0")])

    for i in range(2):
        ask(5000, old, 10 + i, T0 + i * SECOND, True)
    for i in range(2, 6):
        target = None if untranslated else old
        ask(5000, target, 10 + i, T0 + i * SECOND, not stale)
    for i in range(3):
        ask(5001, new, 50 + i, T0 + 2 * SECOND + SECOND // 2 + i * SECOND, True)
    return w


def test_stale_conntrack_endpoint_old_endpoint(tmp_path):
    a = analyze(_stale_world(stale=True).write(tmp_path))
    (f,) = only(a, "stale_conntrack_endpoint")
    assert "still goes to 10.244.2.5:53" in f.message and "10.244.2.9:53" in f.message
    assert f.severity == "medium"


def test_stale_conntrack_endpoint_not_translated(tmp_path):
    a = analyze(_stale_world(stale=True, untranslated=True).write(tmp_path))
    found = only(a, "stale_conntrack_endpoint")
    assert found and any("without being DNAT'd" in f.message or "still goes to" in f.message for f in found)


def test_endpoint_that_still_answers_is_not_stale(tmp_path):
    a = analyze(_stale_world(stale=False).write(tmp_path))
    assert not only(a, "stale_conntrack_endpoint")


# ----------------------------------------------------------------------------- ttl_expired


def test_ttl_expired_by_icmp_time_exceeded(tmp_path):
    w = World()
    syn = tcp(CLIENT, 40000, "10.9.9.9", 80, "S", 1000, ip_id=1)
    w.send(syn, T0, [Leg("client")])
    w.send(icmp_error("10.0.0.1", CLIENT, 11, 0, syn), T0 + 10**6, [Leg("client")])
    a = analyze(w.write(tmp_path))
    (f,) = only(a, "ttl_expired")
    assert f.severity == "high" and "10.0.0.1" in f.message and frames(f, "client") == {2}


@pytest.mark.parametrize("loop", [True, False])
def test_ttl_expired_by_a_routing_loop(tmp_path, loop):
    """A packet bouncing between node1 and the router passes node1's eth0 again and again
    with a falling TTL; a single forward (in, then out) is no loop."""
    w = World().node("node1")
    syn = tcp(CLIENT, 40000, "10.244.9.9", 80, "S", 1000, ip_id=1)
    legs = [Leg("client"), Leg("node1", 2, ttl=1), Leg("node1", 2, out=True, ttl=1)]
    if loop:
        legs += [Leg("node1", 2, ttl=1), Leg("node1", 2, out=True, ttl=1)] * 3
    w.send(syn, T0, legs)
    a = analyze(w.write(tmp_path))
    assert bool(only(a, "ttl_expired")) == loop


# ----------------------------------------------------------------------------- bad_checksum_received


def _checksum_world(*, corrupt: bool, pod_only: bool = False) -> World:
    """Client -> node1 -> web-0 on node1; a data segment arrives at node1 with a corrupt
    checksum (not the offload placeholder) and goes no further; its retransmission does."""
    fwd = [Leg("client"), Leg("node1", 2, ttl=1), Leg("node1", 4, out=True, nat={"dst": POD_LOCAL, "dport": 8080},
                                                        ttl=1), Leg("web-0")]
    back = [Leg("web-0"), Leg("node1", 4), Leg("node1", 2, out=True, nat={"src": LB, "sport": 80}, ttl=1),
            Leg("client", ttl=1)]
    if pod_only:
        fwd, back = [fwd[-1]], [back[0]]
    w = World().node("node1")
    w.send(tcp(CLIENT, 40000, LB if not pod_only else POD_LOCAL, 80 if not pod_only else 8080, "S", 1000, ip_id=1),
           T0, fwd)
    w.send(tcp(POD_LOCAL, 8080, CLIENT, 40000, "SA", 5000, 1001, ip_id=0), T0 + 200_000, back)
    dst = (LB, 80) if not pod_only else (POD_LOCAL, 8080)
    w.send(tcp(CLIENT, 40000, *dst, "A", 1001, 5001, ip_id=2), T0 + 400_000, fwd)
    data = tcp(CLIENT, 40000, *dst, "PA", 1001, 5001, payload=b"Q" * 500, ip_id=3)
    if corrupt:
        bad = data.copy()
        bad["TCP"].chksum = 0x1234
        bad = bad.__class__(bytes(bad))
        w.send(bad, T0 + 600_000, fwd[:2] if not pod_only else fwd, keep=True)
        w.send(tcp(CLIENT, 40000, *dst, "PA", 1001, 5001, payload=b"Q" * 500, ip_id=4), T0 + 300 * 10**6 + 600_000,
               fwd)
        t_ack = T0 + 300 * 10**6 + 800_000
    else:
        w.send(data, T0 + 600_000, fwd)
        t_ack = T0 + 800_000
    w.send(tcp(POD_LOCAL, 8080, CLIENT, 40000, "A", 5001, 1501, ip_id=5), t_ack, back)
    return w


def test_bad_checksum_received(tmp_path):
    a = analyze(_checksum_world(corrupt=True).write(tmp_path))
    (f,) = only(a, "bad_checksum_received")
    assert f.severity == "high" and "wrong TCP/UDP checksum" in f.message
    assert frames(f, "node1") == {7}  # the corrupt segment coming in (never going out)
    assert "drop_between_hops" not in codes(a)


def test_bad_checksum_seen_only_at_the_receiving_pod(tmp_path):
    a = analyze(_checksum_world(corrupt=True, pod_only=True).write(tmp_path))
    (f,) = only(a, "bad_checksum_received")
    assert "retransmit" in f.message


def test_good_checksums_are_no_finding(tmp_path):
    a = analyze(_checksum_world(corrupt=False).write(tmp_path))
    assert codes(a, above_info=True) == set()


def test_offload_placeholder_checksums_are_artefacts_not_faults(tmp_path):
    """The checksum field holding only the pseudo-header sum is checksum offload's
    placeholder: offload_artifact (info), never bad_checksum_received."""
    w = World().node("node1")
    seg = tcp(CLIENT, 40000, LB, 80, "PA", 1001, 5001, payload=b"Q" * 500, ip_id=3)
    src = bytes(int(x) for x in CLIENT.split(".")) + bytes(int(x) for x in LB.split("."))
    length = 20 + 500
    total = sum(int.from_bytes(src[i:i + 2], "big") for i in range(0, 8, 2)) + 6 + length
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    seg["TCP"].chksum = total
    seg = seg.__class__(bytes(seg))
    w.send(seg, T0, [Leg("client"), Leg("node1", 2, ttl=1)], keep=True)
    a = analyze(w.write(tmp_path))
    assert a.packets["l4_checksum"].tolist() == [2, 2]
    assert not only(a, "bad_checksum_received")
    assert {f.capture for f in only(a, "offload_artifact")} == {"client", "node1"}


# ----------------------------------------------------------------------------- duplicate_packet


@pytest.mark.parametrize("same_id", [True, False])
def test_duplicate_packet(tmp_path, same_id):
    """The same packet twice on one interface with one IP ID is a duplicate; with a new IP
    ID it is a retransmission."""
    w = World()
    w.send(tcp(CLIENT, 40000, LB, 80, "S", 1000, ip_id=7), T0, [Leg("client")])
    w.send(tcp(CLIENT, 40000, LB, 80, "S", 1000, ip_id=7 if same_id else 8), T0 + 50_000, [Leg("client")])
    a = analyze(w.write(tmp_path))
    found = only(a, "duplicate_packet")
    assert bool(found) == same_id
    if same_id:
        assert found[0].severity == "low" and frames(found[0], "client") == {1, 2}


# ----------------------------------------------------------------------------- capture_drops, capture_gap


def test_capture_drops_reported_by_pcapng(tmp_path):
    f = Pcapng()
    i = f.interface(LINKTYPE_ETHERNET, name="eth0", tsresol=9)
    f.packet(i, ether(bytes(tcp(CLIENT, 40000, LB, 80, "S", 1000))), ts=T0)
    f.stats(i, ts=T0 + 10**6, ifdrop=5, osdrop=2)
    (tmp_path / "client.pcapng").write_bytes(bytes(f))
    a = analyze(tmp_path)
    (found,) = only(a, "capture_drops")
    assert found.severity == "low" and found.capture == "client" and found.details["dropped"] == 7


@pytest.mark.parametrize("lost", [True, False])
def test_capture_drops_from_acknowledged_bytes_never_captured(tmp_path, lost):
    """The client acknowledges 2000 bytes while its capture holds only the second 1000:
    the capture lost the first segment. Without the gap there is nothing to say."""
    w = World()
    w.send(tcp(CLIENT, 40000, POD, 8080, "S", 1000, ip_id=1), T0, [Leg("client")])
    w.send(tcp(POD, 8080, CLIENT, 40000, "SA", 5000, 1001, ip_id=0), T0 + 10**6, [Leg("client")])
    w.send(tcp(CLIENT, 40000, POD, 8080, "A", 1001, 5001, ip_id=2), T0 + 2 * 10**6, [Leg("client")])
    if not lost:
        w.send(tcp(POD, 8080, CLIENT, 40000, "A", 5001, 1001, payload=b"a" * 1000, ip_id=3), T0 + 3 * 10**6,
               [Leg("client")])
    w.send(tcp(POD, 8080, CLIENT, 40000, "A", 6001, 1001, payload=b"b" * 1000, ip_id=4), T0 + 4 * 10**6,
           [Leg("client")])
    w.send(tcp(CLIENT, 40000, POD, 8080, "A", 1001, 7001, ip_id=5), T0 + 5 * 10**6, [Leg("client")])
    a = analyze(w.write(tmp_path))
    found = only(a, "capture_drops")
    assert bool(found) == lost
    if lost:
        assert found[0].details["bytes"] == 1000 and frames(found[0], "client") == {2, 5}


def _gap_world(*, node_running: bool) -> World:
    """The client's first SYN is missing at node1; node1's capture either was running then
    (its first packet is an earlier, unrelated datagram) or starts only afterwards."""
    w = World().node("node1")
    if node_running:
        w.see("node1", udp(NODE1, 123, "10.0.0.123", 123, b"ntp", ip_id=9), T0 - SECOND, ifindex=2, out=True)
    w.send(tcp(CLIENT, 40000, LB, 80, "S", 1000, ip_id=1), T0, [Leg("client")])
    handshake(w, T0 + SECOND, 40000, 5000, 1000, 7000,
              forward=[*client_to_pod(5000)[:3], Leg("node2", 2, ttl=1), Leg("node2", 4, out=True, ttl=1)],
              back=[Leg("node2", 4), Leg("node2", 2, out=True, ttl=1), *pod_to_client(40000)[3:]])
    return w


def test_capture_gap_makes_an_absence_unknown(tmp_path):
    a = analyze(_gap_world(node_running=False).write(tmp_path))
    assert "drop_between_hops" not in codes(a)
    (gap,) = [f for f in only(a, "capture_gap") if f.capture == "node1"]
    assert gap.severity == "info" and "starts" in gap.message


def test_absence_while_the_capture_ran_is_a_drop(tmp_path):
    a = analyze(_gap_world(node_running=True).write(tmp_path))
    (drop,) = only(a, "drop_between_hops")
    assert drop.segment == "client -> node1" and drop.severity == "high"
    assert not [f for f in only(a, "capture_gap") if f.capture == "node1"]


# ----------------------------------------------------------------------------- opaque_encapsulation


@pytest.mark.parametrize("port", [51820, 51999])
def test_opaque_encapsulation(tmp_path, port):
    w = World().node("node1")
    for i in range(3):
        wg = IP(src=NODE1, dst=NODE2) / UDP(sport=port, dport=port) / (b"\x04\x00\x00\x00" + bytes(60))
        w.see("node1", wg, T0 + i * 10**6, ifindex=2, out=True)
    a = analyze(w.write(tmp_path))
    found = only(a, "opaque_encapsulation")
    assert bool(found) == (port == 51820)
    if found:
        assert "WireGuard" in found[0].message and found[0].severity == "info"


# ----------------------------------------------------------------------------- no_local_endpoint_blackhole


@pytest.mark.parametrize("answered", [False, True])
def test_nodeport_blackhole(tmp_path, answered):
    """SYNs to node2's NodePort enter node2 and nothing leaves (externalTrafficPolicy=Local
    on a node without endpoints); node2 is known to own the address (it sends its own
    traffic from it). A node that answers with RST is not a blackhole."""
    w = World().node("node2")
    w.send(udp(NODE2, 5353, "10.0.0.53", 53, dns_query(5), ip_id=1), T0 - SECOND,
           [Leg("node2", 2, out=True), Leg("client", ttl=1)])
    for r in range(3):
        w.send(tcp(CLIENT, 40000, NODE2, 30080, "S", 1000, ip_id=10 + r), T0 + r * SECOND,
               [Leg("client"), Leg("node2", 2, ttl=1)])
        if answered:
            w.send(tcp(NODE2, 30080, CLIENT, 40000, "RA", 0, 1001, ip_id=0), T0 + r * SECOND + 10**6,
                   [Leg("node2", 2, out=True), Leg("client", ttl=1)])
    a = analyze(w.write(tmp_path))
    found = only(a, "no_local_endpoint_blackhole")
    assert bool(found) == (not answered)
    if found:
        assert found[0].segment == "inside node2" and "10.0.1.12:30080" in found[0].message


# ----------------------------------------------------------------------------- missing_nat_reversal on one capture


def test_missing_nat_reversal_single_client_capture(tmp_path):
    """Only the client's capture: the SYN-ACK for the LoadBalancer address comes from the
    pod address. asymmetric_return cannot be told apart and says so once."""
    w = World()
    w.send(tcp(CLIENT, 40000, LB, 80, "S", 1000, ip_id=1), T0, [Leg("client")])
    w.send(tcp(POD, 8080, CLIENT, 40000, "SA", 5000, 1001, ip_id=0), T0 + 10**6, [Leg("client")])
    w.send(tcp(CLIENT, 40000, POD, 8080, "R", 1001, ip_id=0), T0 + 2 * 10**6, [Leg("client")])
    a = analyze(w.write(tmp_path))
    (f,) = only(a, "missing_nat_reversal")
    assert "came from 10.244.2.7:8080 instead of 203.0.113.10:80" in f.message and "answered RST" in f.message
    assert frames(f, "client") == {1, 2, 3}
    assert sum("asymmetric_return needs captures from at least 2 vantage points" in n for n in a.notes) == 1


def test_missing_nat_reversal_dns(tmp_path):
    w = World()
    c = "10.244.1.9"
    w.send(udp(c, 40000, CLUSTER_IP, 53, dns_query(7), ip_id=1), T0, [Leg("client-0")])
    w.send(udp(COREDNS, 53, c, 40000, dns_reply(7), ip_id=2, ttl=63), T0 + 10**6, [Leg("client-0")])
    a = analyze(w.write(tmp_path))
    (f,) = only(a, "missing_nat_reversal")
    assert "DNS reply (id 7)" in f.message and "10.244.2.3" in f.message


def test_one_capture_notes_each_detector_that_needs_more_once(tmp_path):
    w = World()
    w.send(tcp(CLIENT, 40000, LB, 80, "S", 1000, ip_id=1), T0, [Leg("client")])
    w.send(tcp(CLIENT, 40000, LB, 80, "S", 1000, ip_id=2), T0 + SECOND, [Leg("client")])
    a = analyze(w.write(tmp_path))
    needs = [n for n in a.notes if "needs captures from at least" in n]
    assert len(needs) == len(set(needs)) >= 3
    assert any(n.startswith("mtu_blackhole") for n in needs)
    assert codes(a) >= {"syn_retransmission", "no_reply"}  # one-vantage-point detectors still run


def test_one_packet_on_two_interfaces_of_a_pcapng_capture_is_no_duplicate(tmp_path):
    """dumpcap on a bridge and its port (no direction recorded) shows a bridged packet on
    both with the same TTL and IP ID: two observation points, not a duplicate; twice on
    one interface is."""
    frame = ether(bytes(tcp(CLIENT, 40000, POD_LOCAL, 8080, "S", 1000, ip_id=7)))
    f = Pcapng()
    cni0 = f.interface(LINKTYPE_ETHERNET, name="cni0", tsresol=9)
    veth = f.interface(LINKTYPE_ETHERNET, name="veth1", tsresol=9)
    f.packet(cni0, frame, ts=T0)
    f.packet(veth, frame, ts=T0 + 2_000)
    (tmp_path / "node1.pcapng").write_bytes(bytes(f))
    assert not only(analyze(tmp_path), "duplicate_packet")
    f.packet(veth, frame, ts=T0 + 4_000)
    (tmp_path / "node1.pcapng").write_bytes(bytes(f))
    (found,) = only(analyze(tmp_path), "duplicate_packet")
    assert found.capture == "node1" and "veth1" in found.message


@pytest.mark.parametrize(("dst", "dropped"), [(POD_LOCAL, True), ("10.0.1.99", False)])
def test_a_datagram_ending_inside_a_node_is_a_drop_only_toward_a_forwarded_address(tmp_path, dst, dropped):
    """UDP entering node1 and never leaving: toward a pod (an address node1 forwards to) it
    was dropped; toward an address nobody forwards to it may simply have been delivered to
    the node itself."""
    w = World().node("node1")
    for i in range(3):  # node1 forwards to the pod for another client
        w.send(udp("198.51.100.20", 5000 + i, POD_LOCAL, 9000, b"ok", ip_id=50 + i), T0 - SECOND + i * 10**6,
               [Leg("node1", 2), Leg("node1", 4, out=True, ttl=1)])
    w.send(udp(CLIENT, 6000, dst, 9000, b"lost", ip_id=7), T0, [Leg("client"), Leg("node1", 2, ttl=1)])
    w.see("node1", udp(NODE1, 123, "10.0.0.123", 123, b"ntp", ip_id=9), T0 + SECOND, ifindex=2, out=True)
    a = analyze(w.write(tmp_path))
    assert bool(only(a, "drop_between_hops")) == dropped


@pytest.mark.parametrize(("answered_by", "refused"), [(NODE1, True), (CLUSTER_IP, False)])
def test_port_unreachable_from_a_node_is_a_service_without_endpoints(tmp_path, answered_by, refused):
    """kube-proxy's REJECT answers from the node; the contacted host answering for itself
    only says that its port is closed."""
    w = World()
    c = "10.244.1.9"
    q = udp(c, 40000, CLUSTER_IP, 53, dns_query(9), ip_id=1)
    w.send(q, T0, [Leg("client-0")])
    w.send(icmp_error(answered_by, c, 3, 3, q), T0 + 100_000, [Leg("client-0")])
    a = analyze(w.write(tmp_path))
    assert bool(only(a, "service_no_endpoints")) == refused


def test_a_capture_without_packets_still_reports_its_drops(tmp_path):
    f = Pcapng()
    i = f.interface(LINKTYPE_ETHERNET, name="eth0", tsresol=9)
    f.stats(i, ts=T0, ifdrop=3)
    (tmp_path / "node1.pcapng").write_bytes(bytes(f))
    a = analyze(tmp_path)
    assert [(x.code, x.capture) for x in a.findings] == [("capture_drops", "node1")]
    assert sum("needs captures from at least 2" in n for n in a.notes) == 4


@pytest.mark.parametrize("address", ["127.0.0.1", NODE1])
def test_a_node_talking_to_itself_is_no_drop_and_no_silence(tmp_path, address):
    """tcpdump -i any shows loopback traffic once, as received on lo: the SYN never
    'leaves' the node, and its SYN-ACK comes from the same address."""
    w = World().node("node1")
    w.see("node1", udp(NODE1, 123, "10.0.0.123", 123, b"ntp", ip_id=9), T0 - SECOND, ifindex=2, out=True)
    lo = [Leg("node1", 1)]
    w.send(tcp(address, 54026, address, 2381, "S", 1000, ip_id=1), T0, lo)
    w.send(tcp(address, 2381, address, 54026, "SA", 5000, 1001, ip_id=0), T0 + 20_000, lo)
    w.send(tcp(address, 54026, address, 2381, "A", 1001, 5001, ip_id=2), T0 + 40_000, lo)
    w.see("node1", udp(NODE1, 123, "10.0.0.123", 123, b"ntp", ip_id=10), T0 + SECOND, ifindex=2, out=True)
    assert codes(analyze(w.write(tmp_path)), above_info=True) == set()


# ----------------------------------------------------------------------------- connection_reset


def _timewait_world(*, second_port: int, gap_ns: int, challenge_ack: int = 1002, retry: bool = True) -> World:
    """Client port 40000 -> SNAT port 5000 -> web-1, closed with FINs; ``gap_ns`` later a
    connection from ``second_port`` gets SNAT port 5000 again. web-1 still holds the first in
    TIME_WAIT: it answers the SYN with a challenge ACK (the old connection's numbers), the
    client resets, and its retransmission a second later gets port 5001 and succeeds.
    ``challenge_ack`` is what the challenge ACK acknowledges (1002: where the first ended);
    without ``retry`` the client does not send its SYN again."""
    w = World().node("node1", "node2")
    t = handshake(w, T0, 40000, 5000, 1000, 7000)
    fwd, back = client_to_pod(5000), pod_to_client(40000)
    w.send(tcp(CLIENT, 40000, LB, 80, "FA", 1001, 7001, ip_id=12), t, fwd)
    w.send(tcp(POD, 8080, NODE1, 5000, "FA", 7001, 1002, ip_id=0), t + 200_000, back)
    w.send(tcp(CLIENT, 40000, LB, 80, "A", 1002, 7002, ip_id=13), t + 400_000, fwd)
    t2 = t + 400_000 + gap_ns
    fwd2, back2 = client_to_pod(5000), pod_to_client(second_port)
    w.send(tcp(CLIENT, second_port, LB, 80, "S", 90000, ip_id=20), t2, fwd2)
    w.send(tcp(POD, 8080, NODE1, 5000, "A", 7002, challenge_ack, ip_id=0), t2 + 200_000, back2)  # challenge ACK
    w.send(tcp(CLIENT, second_port, LB, 80, "R", 1002, ip_id=21), t2 + 400_000, fwd2)
    if retry:
        handshake(w, t2 + SECOND, second_port, 5001, 90000, 30000)
    return w


@pytest.mark.parametrize("second_port", [40001, 40000], ids=["snat-port-reused", "client-port-reused"])
def test_a_reset_names_the_connection_the_server_still_held(tmp_path, second_port):
    a = analyze(_timewait_world(second_port=second_port, gap_ns=300_000_000).write(tmp_path))
    (f,) = only(a, "connection_reset")
    held = f.details["previous_connection"]
    first = a.connections.set_index("connection").loc[held]
    assert (int(first["client_sport"]), int(first["server_sport"])) == (40000, 5000)
    assert f.connection != held and f.details["server_tuple"] == "10.0.1.11:5000 -> 10.244.2.7:8080"
    assert 299_000_000 < f.details["previous_ended_ns_before"] < 301_000_000
    assert f"web-1 still held connection {held} on the same tuple 10.0.1.11:5000 -> 10.244.2.7:8080, " \
           "which ended 300 ms before" in f.message
    if second_port == 40001:
        assert f"connection {held} came from 198.51.100.10:40000: the SNAT gave" in f.message
        assert f.causes[0].startswith("the node's SNAT gave a new connection a port")
    else:
        assert "came from the same client port: the client reused it" in f.message
        assert f.causes[0].startswith("the client reused its source port")
    ends = [e for e in f.evidence if e.note == f"the end of connection {held} on the same tuple"]
    assert [e.capture for e in ends] == ["web-1"] and len(ends[0].frames) == 2
    # The client's SYN sent again a second later (same ISN, SNAT port 5001) is another connection.
    again = a.connections.set_index("connection").loc[f.details["retry_connection"]]
    assert (int(again["client_sport"]), int(again["server_sport"])) == (second_port, 5001)
    assert 999_000_000 < f.details["retry_after_ns"] < 1_001_000_000
    assert f"Its SYN, sent again 1.00 s later, is connection {f.details['retry_connection']} ({again['status']})" \
        in f.message


@pytest.mark.parametrize("world", [{"gap_ns": 200 * SECOND}, {"gap_ns": 300_000_000, "challenge_ack": 5555}],
                         ids=["ended-200-s-before", "acknowledges-something-else"])
def test_a_reset_names_no_connection_the_server_may_not_hold(tmp_path, world):
    """The earlier connection on the tuple ended too long ago, or the challenge ACK does not
    acknowledge where it ended: the server held something else."""
    a = analyze(_timewait_world(second_port=40001, **world).write(tmp_path))
    (f,) = only(a, "connection_reset")
    assert "previous_connection" not in f.details
    assert "it still held an older connection on the same tuple" in f.message
    assert "Its SYN, sent again 1.00 s later" in f.message


def test_a_new_syn_on_the_same_client_tuple_is_no_retry(tmp_path):
    """After the reset the client opens a new connection from the same port (another ISN):
    that is not the reset connection's SYN sent again."""
    w = _timewait_world(second_port=40001, gap_ns=300_000_000, retry=False)
    handshake(w, T0 + 5 * SECOND, 40001, 5002, 123456, 40000)
    a = analyze(w.write(tmp_path))
    (f,) = only(a, "connection_reset")
    assert "retry_connection" not in f.details and "sent again" not in f.message
    assert len(a.connections) == 3
