"""Correlation against the lab's ground truth: the kernel's conntrack events and the truth files.

Every scenario in fixtures/pcaps/ was captured in network namespaces with the kernel's
own NAT; its truth.json records the path of every connection and which conntrack events
belong to traffic outside the captured connections (tunnel underlay flows, which flowtrace
rebuilds too, and IGMP).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

from flowtrace.analysis import Analysis
from flowtrace.context.conntrack import compare, compare_events, created_entries, read_dump
from flowtrace.lab.truth import expected_hops, matching_connection
from flowtrace.pipeline import UNDERLAY_PORTS, analyze, dump_cutoffs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"
SCENARIOS = sorted(p.name for p in FIXTURES.iterdir() if (p / "truth.json").exists())


@cache
def result(scenario: str) -> tuple[Analysis, dict]:
    truth = json.loads((FIXTURES / scenario / "truth.json").read_text())
    return analyze([str(FIXTURES / scenario)]), truth


def _not_rebuilt(truth: dict) -> set[tuple[str, int]]:
    """(node, line) of the conntrack events outside the captured connections that flowtrace
    does not rebuild: all but the VXLAN underlay's own UDP flows."""
    return {(o["node"], o["event_line"]) for o in truth.get("other_conntrack_events", [])
            if not (o["orig"]["proto"] == "udp" and o["orig"]["dport"] in UNDERLAY_PORTS)}


def _in_capture(a: Analysis, node: str, dump: list) -> list:
    """The lines of an -E ``dump`` of ``node`` stamped before its capture ended (and the
    margin analyze allows): the later ones (a retransmission after tcpdump stopped) are
    not the captured packets' doing."""
    cut = dump_cutoffs(a).get(node)
    if cut is None:  # an empty capture: analyze has no time to cut at either
        return dump
    return [e for e in dump if e.ts_ns is None or e.ts_ns <= cut]


def _match_connection(a: Analysis, conn: dict) -> int:
    cid = matching_connection(a.connections, conn)
    assert cid is not None, f"connection {conn['id']} {conn['client']}: no single candidate"
    return cid


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_path_matches_the_truth(scenario):
    a, truth = result(scenario)
    for conn in truth["connections"]:
        cid = _match_connection(a, conn)
        for direction in ("request", "response"):
            expected = expected_hops(truth, conn, direction)
            got = a.hops[(a.hops["connection"] == cid) & (a.hops["direction"] == direction) & a.hops["on_path"]]
            got = got.sort_values("hop")
            assert len(got) == len(expected), (scenario, conn["id"], direction, got[["capture", "ifindex"]])
            for e, g in zip(expected, got.itertuples(), strict=True):
                where = (scenario, conn["id"], direction, int(g.hop))
                assert g.capture == Path(e["capture"]).stem, where
                if g.ifindex >= 0:
                    assert g.ifindex == e["ifindex"], where
                if g.packet_direction != "unknown":
                    assert g.packet_direction == e["direction"], where
                if e.get("src") and not e.get("icmp_error"):
                    assert (g.src, g.sport, g.dst, g.dport) == (e["src"], e.get("sport", -1), e["dst"],
                                                                e.get("dport", -1)), where


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conntrack_new_events_are_rebuilt_exactly(scenario):
    a, truth = result(scenario)
    other = _not_rebuilt(truth)
    for events in sorted((FIXTURES / scenario).glob("*.conntrack-events.txt")):
        node = events.name.split(".")[0]
        dumped = [e for e in created_entries(_in_capture(a, node, read_dump(events, node=node)))
                  if (node, e.line) not in other]
        rebuilt = [e.created for e in a.conntrack_table(node, ended=True)]
        c = compare(rebuilt, dumped)
        assert (c.precision, c.recall) == (1.0, 1.0), (scenario, node, c.missing_in_dump[:2],
                                                       c.missing_in_reconstruction[:2], c.differing[:2])
        assert len(c.matched) == len(dumped)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conntrack_update_and_destroy_events_are_rebuilt_exactly(scenario):
    """Every UPDATE and DESTROY line of the kernel's conntrack -E (state and flags after each
    packet that changed them, the deletions), but the ones of entries from before the
    capture, is one of the rebuilt entries' events, and no rebuilt event is missing."""
    a, truth = result(scenario)
    other = _not_rebuilt(truth)
    for events in sorted((FIXTURES / scenario).glob("*.conntrack-events.txt")):
        node = events.name.split(".")[0]
        dump = _in_capture(a, node, read_dump(events, node=node))
        made = {e.key() for e in created_entries(dump)}
        later = [e for e in dump if e.event in ("UPDATE", "DESTROY") and (node, e.line) not in other
                 and e.key() in made]
        kinds = {e.event for e in later}
        rebuilt = [ev for e in a.conntrack_table(node, ended=True) for ev in e.events(kinds)]
        c = compare_events(rebuilt, later)
        assert c.agrees, (scenario, node, c.missing_in_dump[:2], c.missing_in_reconstruction[:2], c.differing[:2])
        assert len(c.matched) == len(later)
        if dump:  # analyze compares the dumps it finds beside the captures the same way
            comparison = a.comparisons[f"{node} ({events.name})"]
            assert comparison.agrees
            if later:
                assert comparison.events is not None and len(comparison.events.matched) == len(later)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conntrack_table_at_the_end_matches_conntrack_list(scenario):
    a, _ = result(scenario)
    for listing in sorted((FIXTURES / scenario).glob("*.conntrack.txt")):
        node = listing.name.split(".")[0]
        # Not the entries made after the capture ended (their NEW events say when).
        events = listing.with_name(f"{node}.conntrack-events.txt")
        late = ({e.key() for e in read_dump(events, node=node) if e.event == "NEW"}
                - {e.key() for e in _in_capture(a, node, read_dump(events, node=node))}) if events.exists() else set()
        dumped = [e for e in read_dump(listing, node=node)
                  if e.proto in ("tcp", "udp", "icmp", "icmpv6") and e.key() not in late]
        c = compare([e.entry for e in a.conntrack_table(node)], dumped, check_state=True)
        assert (c.precision, c.recall) == (1.0, 1.0), (scenario, node, c.differing[:2])


def test_nat_node_entries_are_nat_entries():
    a, _ = result("cross-node")
    entries = a.conntrack_table("node1")
    assert entries and all(e.entry.dnat and e.entry.snat for e in entries)
    assert all(not e.entry.dnat and not e.entry.snat for e in a.conntrack_table("node2"))


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.endswith("-skewed")])
def test_clock_offsets_recover_the_applied_shifts(scenario):
    a, truth = result(scenario)
    shifts = truth["clock_offsets_ns"]
    assert shifts, "a skewed scenario shifts some captures"
    for capture, offset in a.offsets.items():
        assert abs(offset.offset_ns - shifts.get(capture, 0)) < 1_000_000, (capture, offset)
        assert offset.uncertainty_ns is not None and offset.uncertainty_ns < 1_000_000


def test_skewed_captures_give_the_same_paths_and_latencies():
    plain, _ = result("cross-node")
    skewed, _ = result("cross-node-skewed")
    for a in (plain, skewed):
        conn = a.connections[a.connections["dnat"]].iloc[0]
        hops = a.connection_hops(int(conn["connection"]), "request")
        assert list(hops["capture"].astype(str)) == ["client", "node1", "node1", "node2", "node2", "node2", "web-1"]
        # Every hop after the first is a few microseconds downstream: no negative latency
        # survives clock correction, none is seconds long.
        lat = hops["latency_ns"].to_numpy()[1:]
        assert (lat >= 0).all() and (lat < 1_000_000).all(), lat


def test_nat_is_located_inside_the_node_that_did_it():
    a, _ = result("cross-node")
    conn = a.connections[a.connections["dnat"]].iloc[0]
    assert "DNAT 203.0.113.10:80 -> 10.244.2.7:8080 at node1" in conn["nat"]
    assert "SNAT 198.51.100.10:" in conn["nat"] and "-> 10.0.1.11:" in conn["nat"]
    hops = a.connection_hops(int(conn["connection"]), "response")
    reversal = hops[hops["change_labels"].str.contains("reverse DNAT")]
    assert list(reversal["capture"].astype(str)) == ["node1"]


def test_roles_are_inferred():
    a, _ = result("cross-node")
    assert a.roles == {"client": "client", "node1": "node", "node2": "node", "web-1": "pod"}


def test_asymmetric_return_bypasses_the_dnat_node():
    a, _ = result("asymmetric-return")
    conn = a.connections[a.connections["dnat"]].iloc[0]
    response = a.connection_hops(int(conn["connection"]), "response")
    on = response[response["on_path"]]
    assert "node1" not in set(on["capture"].astype(str))
    assert on.iloc[-1]["capture"] == "client" and on.iloc[-1]["src"] == "10.244.2.7"


def test_vxlan_hop_is_marked_encapsulated():
    a, _ = result("cross-node-vxlan")
    conn = a.connections[a.connections["dnat"]].iloc[0]
    hops = a.connection_hops(int(conn["connection"]), "request")
    assert "vxlan" in set(hops["encap"].astype(str))
    assert hops["change_labels"].str.contains("encapsulation").any()
    assert hops["change_labels"].str.contains("decapsulation").any()


def test_many_connections_with_port_reuse_are_kept_apart():
    a, truth = result("many-connections")
    tcp = a.connections[a.connections["proto"] == 6]
    assert len(tcp) == len(truth["connections"])
    reused = tcp.groupby(["client_src", "client_sport"], observed=True).size()
    assert (reused > 1).any(), "the scenario reuses client ports"


def test_captures_that_start_mid_connection_still_link(tmp_path):
    """A client capture that starts after the third connection's handshake (its first frame is
    that connection's request data) still links to the node and pod captures."""
    import struct

    src = FIXTURES / "cross-node"
    data = (src / "client.pcap").read_bytes()
    header, pos, records = data[:24], 24, []
    while pos + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        records.append(data[pos:pos + 16 + caplen])
        pos += 16 + caplen
    (tmp_path / "client.pcap").write_bytes(header + b"".join(records[24:]))  # from frame 25 on
    for name in ("node1", "node2", "web-1"):
        (tmp_path / f"{name}.pcap").write_bytes((src / f"{name}.pcap").read_bytes())
    a = analyze([str(tmp_path)])
    nat = a.connections[a.connections["dnat"]]
    assert len(nat) == 3
    mid = a.flows[(a.flows["capture"] == "client") & (a.flows["proto"] == 6)]
    assert len(mid) == 1 and bool(mid["midstream"].iloc[0])
    linked = [int(c) for c in nat["connection"] if "client" in set(a.connection_hops(int(c))["capture"].astype(str))]
    assert len(linked) == 1
    hops = a.connection_hops(linked[0], "request")
    assert str(hops[hops["on_path"]]["capture"].iloc[0]) == "client"
