"""The ladder model on the lab's fixtures: columns in path order, arrows, rewrites and missing marks."""

from __future__ import annotations

import numpy as np
import pytest
from test_report_golden import fresh

from flowtrace.report.ladder import Ladder, PacketIndex, _Coverage


def kinds(arrow) -> list[tuple[str, str]]:
    """(column title, mark kind) along an arrow."""
    return [(m.column, m.kind) for m in arrow.marks]


def test_cross_node_columns_and_nat_marks():
    a = fresh("cross-node")
    ladder = Ladder.build(a, 2)
    assert [c.title for c in ladder.columns] == ["client", "node1", "node2", "web-1"]
    assert [c.role for c in ladder.columns] == ["client", "node", "node", "pod"]
    assert ladder.packets == len(ladder.arrows) == 10
    syn = ladder.arrows[0]
    assert syn.label == "SYN seq 0" and syn.direction == "request" and syn.t_ns == 0
    assert kinds(syn) == [(0, "seen"), (1, "rewrite"), (2, "seen"), (3, "seen")]
    assert syn.new_rewrites == ("node1: dst 203.0.113.10:80 -> 10.244.2.7:8080",
                                "node1: src 198.51.100.10:45300 -> 10.0.1.11:29597")
    synack = ladder.arrows[1]
    assert synack.direction == "response" and synack.label == "SYN-ACK seq 0 ack 1"
    assert [m.column for m in synack.marks] == [3, 2, 1, 0]  # travels right to left
    # Later packets of the same direction carry the same rewrite without repeating the note.
    assert ladder.arrows[2].rewrites and not ladder.arrows[2].new_rewrites
    assert all(not x.missing_at for x in ladder.arrows)
    # Frames of every sighting are kept for the evidence.
    assert syn.marks[0].frames == "client #2"
    assert syn.marks[1].frames == "node1 if2 in #1, node1 if2 out #2"
    assert syn.marks[2].frames == "node2 if2 in #4, node2 if3 out #5, node2 if4 out #6"
    assert [x.t_ns for x in ladder.arrows] == sorted(x.t_ns for x in ladder.arrows)


def test_asymmetric_return_reply_bypasses_the_dnat_node():
    a = fresh("asymmetric-return")
    ladder = Ladder.build(a, 2)
    synacks = [x for x in ladder.arrows if x.label.startswith("SYN-ACK")]
    assert len(synacks) == 4  # the client retried 3 times; each SYN-ACK restarts its numbering
    assert all(x.label == "SYN-ACK seq 0 ack 1" for x in synacks)
    for x in synacks:
        assert [m.column for m in x.marks] == [3, 2, 0]  # web-1, node2, client: never node1
    rsts = [x for x in ladder.arrows if x.label.startswith("RST")]
    assert rsts and all(x.marks[0].kind == "offpath" for x in rsts)
    gaps = [x.gap_ns for x in ladder.arrows if x.gap_ns > 500_000_000]
    assert len(gaps) == 3


def test_mtu_blackhole_marks_the_segments_that_stop_before_node1():
    a = fresh("mtu-blackhole")
    ladder = Ladder.build(a, 1)
    lost = [x for x in ladder.arrows if x.missing_at]
    assert lost and all(x.direction == "response" for x in lost)
    assert {x.missing_at for x in lost} == {"node1 if2 in"}
    for x in lost:
        assert x.marks[-1].kind == "missing" and x.marks[-1].column == 1
        assert int(x.label.split(" len ")[1]) > 1000  # only the large segments; small ACKs pass
    small = [x for x in ladder.arrows if x.direction == "response" and " len " not in x.label]
    assert small and not any(x.missing_at for x in small)


def test_hairpin_columns_and_no_made_up_missing():
    a = fresh("hairpin")
    ladder = Ladder.build(a, 1)
    assert [c.title for c in ladder.columns] == ["web-0", "node1"]
    assert len(ladder.arrows) == 4 and all(x.label == "SYN seq 0" for x in ladder.arrows)
    assert all(x.marks[-1].kind == "rewrite" for x in ladder.arrows)


def test_vxlan_path_and_limit():
    a = fresh("cross-node-vxlan")
    full = Ladder.build(a, 2)
    cut = Ladder.build(a, 2, limit=3)
    assert len(cut.arrows) == 3 and cut.omitted == full.packets - 3
    assert [x.label for x in cut.arrows] == [x.label for x in full.arrows[:3]]


def test_unknown_connection():
    with pytest.raises(KeyError):
        Ladder.build(fresh("cross-node"), 999)


def test_packet_index_finds_rows_of_hops():
    a = fresh("cross-node")
    index = PacketIndex(a)
    hop_ids = a.hops.loc[a.hops["connection"] == 2, "hop_id"].to_numpy()
    rows = index.rows(hop_ids)
    assert np.array_equal(rows, np.flatnonzero(np.isin(a.packet_hop, hop_ids)))
    assert len(index.rows(np.zeros(0, dtype=np.int64))) == 0


def test_coverage_counts_bytes_however_segmented():
    # One 3000-byte GSO segment at hop 1; two 1500-byte segments of it at hop 2; hop 3 saw half.
    hop = np.array([1, 2, 2, 3])
    pdir = np.zeros(4, dtype=np.int8)
    seq = np.array([1001, 1001, 2501, 1001], dtype=np.uint32)
    plen = np.array([3000, 1500, 1500, 1500])
    cov = _Coverage(hop, pdir, seq, plen, 6, {0: 1000})
    assert cov.covered(0, 2)
    assert not cov.covered(0, 3)
    assert cov.covered(1, 1)
    udp = _Coverage(hop, pdir, seq, plen, 17, {})
    assert not udp.covered(0, 2)  # datagrams are matched by sighting only
