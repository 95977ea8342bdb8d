"""Bridge flows: a point that saw only part of two connections must not merge them.

fixtures/pcaps/snat-timewait-collision/ is cut from a 17,000-connection lab run (client
port 40038 over about a second): node1 SNATs a new attempt to port 1643, whose previous
connection the pod still holds in TIME_WAIT; the pod answers with a challenge ACK, the
client resets, its SYN retransmission gets port 26144 and the same fate, and a later
retransmission succeeds through node2 on a third port. Between the reverse SNAT and the
reverse DNAT, node1 sees the pod's replies under one tuple (pod:8080 -> client:40038) for
the connection before and for the failed attempts: one flow, no SYN between them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowtrace.context.conntrack import compare, created_entries, read_dump
from flowtrace.correlate import assemble
from flowtrace.correlate.bridges import bridge_splits
from flowtrace.correlate.sightings import build_sightings
from flowtrace.flows import build as build_flows
from flowtrace.pipeline import analyze, read_packets

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"
COLLISION = FIXTURES / "snat-timewait-collision"


def _precision_recall(a, node: str) -> tuple[float, float]:
    dumped = created_entries(read_dump(COLLISION / f"{node}.conntrack-events.txt", node=node))
    c = compare([e.created for e in a.conntrack_table(node, ended=True)], dumped)
    return c.precision, c.recall


def test_every_snat_binding_is_its_own_connection():
    a = analyze([str(COLLISION)])
    assert _precision_recall(a, "node1") == (1.0, 1.0)
    assert _precision_recall(a, "node2") == (1.0, 1.0)
    # Each SNAT port node1 chose belongs to exactly one connection.
    hops = a.hops[(a.hops["capture"] == "node1") & (a.hops["direction"] == "request")
                  & (a.hops["packet_direction"] == "out")]
    for port in (33364, 1643, 26144, 45931, 60466, 14120):
        assert hops.loc[hops["sport"] == port, "connection"].nunique() == 1, port
    assert any("flows were cut" in n for n in a.notes)


def test_without_cutting_the_attempts_merge(monkeypatch):
    monkeypatch.setattr(assemble, "BRIDGE_ROUNDS", 0)
    a = analyze([str(COLLISION)])
    assert _precision_recall(a, "node1") != (1.0, 1.0)


@pytest.mark.parametrize("scenario", ["asymmetric-return", "cross-node", "hairpin", "many-connections"])
def test_no_cuts_where_one_binding_carries_the_connection(scenario):
    # asymmetric-return: the client retransmits its SYN, the pod answers each one past the
    # NAT and the client resets each answer: one attempt, four flows at the pod, one tuple.
    packets = read_packets(str(FIXTURES / scenario))
    fs = build_flows(packets)
    assert bridge_splits(build_sightings(packets), fs.flow_id, fs.from_orig, packets)[0].size == 0


def test_split_before_cuts_flows_there():
    packets = read_packets(str(COLLISION / "client.pcap"))
    fs = build_flows(packets)
    row = int(np.flatnonzero(fs.flow_id == fs.flow_id[0])[1])
    again = build_flows(packets, split_before=np.array([row]))
    assert len(again.flows) == len(fs.flows) + 1
    assert again.flow_id[row] != again.flow_id[0]


def test_a_later_round_looks_only_at_the_suspects_and_finds_what_all_sightings_show():
    packets = read_packets(str(COLLISION))
    fs = build_flows(packets)
    s = build_sightings(packets)
    cuts, again = bridge_splits(s, fs.flow_id, fs.from_orig, packets)
    assert cuts.size
    assert 0 < len(again) < len(s)
    # Whole groups: every sighting of a group that has one in ``again`` is in it.
    in_again = np.isin(s.group, np.unique(again.group))
    assert np.array_equal(np.sort(s.row[in_again]), np.sort(again.row))
    # Made with the first cut only, the flows still hold the second bridge: the suspects
    # alone show it as all sightings do.
    assert cuts.size == 2
    starts = assemble.flow_starts(fs.flow_id, packets["ts_ns"].to_numpy())
    cut = build_flows(packets, split_before=np.union1d(cuts[:1], starts))
    full, _ = bridge_splits(s, cut.flow_id, cut.from_orig, packets)
    part, _ = bridge_splits(again, cut.flow_id, cut.from_orig, packets)
    assert np.array_equal(full, cuts[1:])
    assert np.array_equal(part, full)

