"""Grouping and splitting: orientation, observation points, port reuse, timeouts, packet map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flowpkts import T0, Tcp, icmp, packet, table, udp

import flowtrace
from flowtrace.errors import InputError
from flowtrace.flows import build
from flowtrace.schema import FLOWS

S = 1_000_000_000


def flows_of(rows_or_conv, **kw) -> pd.DataFrame:
    df = rows_or_conv.table() if isinstance(rows_or_conv, Tcp) else table(rows_or_conv)
    return build(df, **kw).flows


# --------------------------------------------------------------------------- orientation


def test_syn_sender_is_originator_whoever_sends_first_later():
    c = Tcp(a=("10.0.0.9", 80), b=("10.0.0.1", 50000))  # the server address is the lower one
    c.a("S").b("SA").a("A")
    row = flows_of(c).iloc[0]
    assert (row.orig_h, row.orig_p, row.resp_h, row.resp_p) == ("10.0.0.9", 80, "10.0.0.1", 50000)


def test_syn_ack_receiver_is_originator_without_syn():
    row = flows_of(Tcp().b("SA").a("A").a("PA", 10)).iloc[0]
    assert (row.orig_h, row.orig_p) == ("10.0.0.1", 40000)
    assert row.midstream
    assert row.history.startswith("^")


def test_first_sender_is_originator_without_handshake():
    row = flows_of(Tcp().b("PA", 100).a("A")).iloc[0]
    assert (row.orig_h, row.orig_p) == ("10.0.0.2", 80)
    assert row.midstream and "^" not in row.history


def test_udp_first_sender_is_originator():
    rows = [udp("10.0.0.9", 53, "10.0.0.1", 3333), udp("10.0.0.1", 3333, "10.0.0.9", 53, ts_ns=T0 + S // 10)]
    row = flows_of(rows).iloc[0]
    assert (row.orig_h, row.orig_p, row.orig_pkts, row.resp_pkts) == ("10.0.0.9", 53, 1, 1)


def test_timestamps_not_rows_order_packets():
    c = Tcp().handshake().a("PA", 10)
    rows = list(reversed(c.rows))  # capture order reversed, timestamps increasing
    row = flows_of(rows).iloc[0]
    assert row.history == "ShAD"
    assert row.first_frame == len(rows)


# --------------------------------------------------------------------------- observation points


def test_same_tuple_in_and_out_on_one_interface_is_two_flows():
    rows = []
    for direction in ("in", "out"):
        c = Tcp(ifindex=2, direction=direction, capture="node")
        c.a("S")
        rows += c.rows
    # replies cross the other way: in <-> out
    for direction in ("out", "in"):
        c = Tcp(ifindex=2, direction=direction, capture="node", t0=T0 + S)
        c.b("SA", ack=1001)
        rows += c.rows
    fl = flows_of(rows)
    assert sorted(fl.orig_direction.astype(str)) == ["in", "out"]
    assert (fl.orig_pkts == 1).all() and (fl.resp_pkts == 1).all()
    assert (fl.conn_state == "S1").all()


@pytest.mark.parametrize("direction", ["in", "out"])
def test_both_sides_crossing_one_way_is_one_flow(direction):
    # A loopback device in a `tcpdump -i any` capture shows every packet once, as received
    # (a bridge device and a mirror port the same): both sides "in", one connection there.
    c = Tcp(("127.0.0.1", 45210), ("127.0.0.1", 8080), ifindex=1, direction=direction, capture="node")
    c.handshake().a("PA", 18).b("A").b("PA", 21).a("A").b("FA").a("FA").b("A")
    fl = flows_of(c.rows)
    assert len(fl) == 1
    f = fl.iloc[0]
    assert (f.orig_p, f.resp_p, f.orig_pkts, f.resp_pkts) == (45210, 8080, 5, 5)
    assert (f.conn_state, f.history) == ("SF", "ShADadfF")
    assert f.orig_direction == direction


def test_one_way_traffic_keeps_its_direction():
    # Only one side sends (no reply seen): the direction says which way it crossed.
    rows = [udp("10.0.0.1", 5000, "10.0.0.2", 53, ifindex=2, direction=d, capture="node", ts_ns=T0 + i * S)
            for i, d in enumerate(("in", "in", "out"))]
    fl = flows_of(rows)
    assert sorted(fl.orig_direction.astype(str)) == ["in", "out"]
    assert sorted(fl.orig_pkts) == [1, 2]


def test_pre_and_post_dnat_are_separate_flows_with_their_own_tuple():
    pre = Tcp(a=("198.51.100.10", 45300), b=("203.0.113.10", 80), ifindex=2, direction="in", capture="node1")
    post = Tcp(a=("10.0.1.11", 29597), b=("10.244.2.7", 8080), ifindex=5, direction="out", capture="node1")
    for conv in (pre, post):
        conv.handshake().a("PA", 100).b("PA", 200).a("FA").b("FA").a("A")
    # post-NAT replies come in on ifindex 5, pre-NAT replies leave on ifindex 2
    for conv, back in ((pre, "out"), (post, "in")):
        for r in conv.rows:
            if r["src"] == conv.ends["b"][0]:
                r["direction"] = back
    fl = flows_of(pre.rows + post.rows)
    assert len(fl) == 2
    by_if = fl.set_index("ifindex")
    assert by_if.loc[2, "orig_h"] == "198.51.100.10" and by_if.loc[2, "orig_direction"] == "in"
    assert by_if.loc[5, "resp_h"] == "10.244.2.7" and by_if.loc[5, "orig_direction"] == "out"
    assert (fl.conn_state == "SF").all()
    assert fl.orig_isn.nunique() == 1  # the same ISN on both sides of the NAT


def test_vni_is_part_of_the_key():
    rows = [udp("10.1.0.1", 1000, "10.1.0.2", 53, encap="vxlan", vni=vni, outer_src="192.0.2.1",
                outer_dst="192.0.2.2") for vni in (1, 2)]
    fl = flows_of(rows)
    assert sorted(fl.vni) == [1, 2]
    assert (fl.encap == "vxlan").all()
    assert set(fl.outer_orig_h.astype(str)) == {"192.0.2.1"}


# --------------------------------------------------------------------------- port reuse


def test_new_isn_after_fin_close_is_a_new_flow():
    c = Tcp().handshake().a("FA").b("FA").a("A").wait(1)
    c.next_seq["a"] = 900_000
    c.a("S").b("SA").a("A")
    fl = flows_of(c)
    assert len(fl) == 2
    assert fl.orig_isn.tolist() == [1000, 900_000]
    assert fl.conn_state.tolist() == ["SF", "S1"]


def test_new_syn_after_rst_is_a_new_flow_even_with_the_same_isn():
    c = Tcp().a("S").b("RA").wait(1).a("S", seq=1000).b("RA")
    fl = flows_of(c)
    assert fl.conn_state.tolist() == ["REJ", "REJ"]


def test_syn_retransmission_is_the_same_flow():
    c = Tcp().a("S").wait(1).a("S", seq=1000).wait(2).a("S", seq=1000).b("SA").a("A")
    fl = flows_of(c)
    assert len(fl) == 1
    row = fl.iloc[0]
    assert row.syn_retransmissions == 2
    assert row.history == "ShA"
    assert row.handshake_rtt_ns == 1_000_000  # from the last SYN
    assert row.ack_rtt_ns == 1_000_000


def test_new_isn_without_close_is_a_new_flow():
    c = Tcp().handshake().a("PA", 10).wait(1)
    c.next_seq["a"] = 77_777
    c.a("S").b("SA", seq=9000).a("A")
    assert len(flows_of(c)) == 2


def test_syn_after_midstream_packets_starts_a_flow_unless_it_fits():
    late = Tcp().a("A").a("PA", 10).wait(1)
    late.next_seq["a"] = 50_000
    late.a("S")
    assert len(flows_of(late)) == 2
    # the SYN of this very connection, captured late: its ISN + 1 is the first sequence number
    c = Tcp()
    c.a("A", seq=1001, ts_ns=T0 + 10)
    c.a("S", seq=1000, ts_ns=T0 + 20)
    assert len(flows_of(c)) == 1


def test_syn_ack_seen_first_then_its_syn_is_one_flow():
    c = Tcp()
    c.b("SA", ack=1001, ts_ns=T0)
    c.a("S", seq=1000, ts_ns=T0 + 5)
    c.a("A", ts_ns=T0 + 9)
    assert len(flows_of(c)) == 1


# --------------------------------------------------------------------------- timeouts


def test_udp_timeout_30_seconds():
    rows = [udp("10.0.0.1", 5000, "10.0.0.2", 53, ts_ns=T0), udp("10.0.0.1", 5000, "10.0.0.2", 53, ts_ns=T0 + 29 * S)]
    assert len(flows_of(rows)) == 1
    rows[1]["ts_ns"] = T0 + 31 * S
    assert len(flows_of(rows)) == 2
    assert len(flows_of(rows, timeouts={"udp": 60})) == 1


def test_udp_stream_timeout_after_a_reply():
    rows = [udp("10.0.0.1", 5000, "10.0.0.2", 53, ts_ns=T0), udp("10.0.0.2", 53, "10.0.0.1", 5000, ts_ns=T0 + 3 * S),
            udp("10.0.0.1", 5000, "10.0.0.2", 53, ts_ns=T0 + 100 * S)]
    assert len(flows_of(rows)) == 1
    rows[2]["ts_ns"] = T0 + 130 * S
    assert len(flows_of(rows)) == 2


def test_udp_splits_repeat_with_fresh_state():
    # one query per minute from the same port: every query is a new flow
    rows = [udp("10.0.0.1", 5000, "10.0.0.2", 53, ts_ns=T0 + k * 60 * S) for k in range(6)]
    rows += [udp("10.0.0.2", 53, "10.0.0.1", 5000, ts_ns=T0 + k * 60 * S + S // 100) for k in range(6)]
    fl = flows_of(rows)
    assert len(fl) == 6
    assert (fl.conn_state == "SF").all()


def test_tcp_established_survives_an_hour_but_close_state_does_not():
    c = Tcp().handshake().wait(3600).a("PA", 10)
    assert len(flows_of(c)) == 1
    c = Tcp().handshake().a("RA").wait(11).a("A")
    assert len(flows_of(c)) == 2
    c = Tcp().handshake().a("RA").wait(9).a("A")
    assert len(flows_of(c)) == 1


def test_timeout_state_restarts_after_a_split():
    # After the RST (CLOSE, 10 s) the flow splits; the next flow is midstream (established)
    # and its own 15 s gap must not split it again.
    c = Tcp().handshake().a("RA").wait(15).a("A").wait(15).a("A")
    assert len(flows_of(c)) == 2


def test_syn_sent_timeout():
    c = Tcp().a("S").wait(121).a("S", seq=1000)
    assert len(flows_of(c)) == 2
    assert len(flows_of(c, timeouts={"tcp_syn_sent": 300})) == 1


@pytest.mark.parametrize("bad", [{"tcp_forever": 5}, {"udp": -1}, {"udp": "soon"}, {"udp": float("inf")}])
def test_bad_timeouts_raise_input_error(bad):
    with pytest.raises(InputError):
        build(table([udp("10.0.0.1", 1, "10.0.0.2", 2)]), timeouts=bad)


# --------------------------------------------------------------------------- packet map and table


def test_packet_map_is_aligned_and_counts_add_up():
    c = Tcp().handshake().a("PA", 10).b("FA").a("FA").b("A")
    rows = [*c.rows, packet(src=None, dst=None, ip_version=0, proto=-1, ethertype=2054, decode_status="unsupported", ts_ns=T0 + 5)]
    rows.append(udp("10.0.0.3", 1, "10.0.0.4", 2, ts_ns=T0 + 6))
    df = table(rows)
    fs = build(df)
    assert fs.flow_id.shape == (len(df),) and fs.flow_id.dtype == np.int64
    assert fs.flow_id[len(c.rows)] == -1  # ARP
    tcp_id = fs.flow_id[0]
    assert (fs.flow_id[: len(c.rows)] == tcp_id).all()
    assert fs.from_orig[: len(c.rows)].tolist() == [r["src"] == "10.0.0.1" for r in c.rows]
    fl = fs.flows
    counted = (fs.flow_id >= 0) & ~fs.related
    assert counted.sum() == (fl.orig_pkts + fl.resp_pkts).sum()
    assert fl.flow_id.tolist() == list(range(len(fl)))


def test_flow_ids_follow_first_packet_time():
    rows = [udp("10.0.0.5", 1, "10.0.0.6", 2, ts_ns=T0 + 2), udp("10.0.0.1", 1, "10.0.0.2", 2, ts_ns=T0 + 1)]
    fl = flows_of(rows)
    assert fl.orig_h.astype(str).tolist() == ["10.0.0.1", "10.0.0.5"]


def test_table_has_declared_columns_and_dtypes():
    fl = flows_of(Tcp().handshake())
    assert list(fl.columns) == FLOWS.names
    assert FLOWS.conform(fl).equals(fl)
    for col in FLOWS.columns:
        if col.dtype == "category":
            assert isinstance(fl[col.name].dtype, pd.CategoricalDtype), col.name
        elif col.dtype != "str":
            assert fl[col.name].dtype == np.dtype(col.dtype), col.name


def test_empty_and_non_ip_inputs_give_empty_tables():
    empty = flowtrace.PACKETS.empty()
    fs = build(empty)
    assert list(fs.flows.columns) == FLOWS.names and len(fs.flows) == 0
    arp = table([packet(src=None, dst=None, ip_version=0, proto=-1, decode_status="unsupported")])
    fs = build(arp)
    assert len(fs.flows) == 0 and fs.flow_id.tolist() == [-1]


def test_missing_columns_raise_key_error():
    with pytest.raises(KeyError):
        build(pd.DataFrame({"src": []}))


def test_input_is_not_modified():
    df = Tcp().handshake().table()
    before = df.copy()
    build(df)
    pd.testing.assert_frame_equal(df, before)


def test_python_api_returns_the_table():
    df = Tcp().handshake().table()
    assert flowtrace.flows(df).equals(build(df).flows)


def test_correlation_fields():
    c = Tcp().a("S", tsval=111, tcp_opts=16, ip_id=7, ttl=63).b("SA", tsval=222, tcp_opts=16, ttl=61).a("A")
    row = flows_of(c).iloc[0]
    assert (row.orig_first_tsval, row.resp_first_tsval, row.orig_first_ip_id) == (111, 222, 7)
    assert (row.orig_ttl, row.resp_ttl) == (63, 61)


def test_icmp_echo_ports_and_ids():
    rows = [icmp("10.0.0.1", "10.0.0.2", 8, icmp_id=7, ts_ns=T0), icmp("10.0.0.2", "10.0.0.1", 0, icmp_id=7, ts_ns=T0 + 1),
            icmp("10.0.0.1", "10.0.0.2", 8, icmp_id=9, ts_ns=T0 + 2)]
    fl = flows_of(rows)
    assert len(fl) == 2
    first = fl.iloc[0]
    assert (first.orig_p, first.resp_p, first.icmp_id, first.orig_pkts, first.resp_pkts) == (8, 0, 7, 1, 1)
    assert (first.orig_bytes, first.conn_state) == (56, "OTH")


def test_icmp_reply_first_then_request_orients_by_the_request():
    rows = [icmp("10.0.0.2", "10.0.0.1", 0, icmp_id=7, ts_ns=T0), icmp("10.0.0.1", "10.0.0.2", 8, icmp_id=7, ts_ns=T0 + 1)]
    row = flows_of(rows).iloc[0]
    assert (row.orig_h, row.orig_p, row.resp_p) == ("10.0.0.1", 8, 0)


def test_non_first_fragments_join_their_flow():
    rows = [udp("10.0.0.1", 5000, "10.0.0.2", 53, n=1472, ip_flags=0x4 | 0x2 | 0x1, ip_id=99, ts_ns=T0),
            packet(src="10.0.0.1", dst="10.0.0.2", proto=17, frag_offset=1480, ip_flags=0x4, ip_id=99,
                   payload_len=500, ts_ns=T0 + 1)]
    fs = build(table(rows))
    assert fs.flow_id.tolist() == [0, 0]
    assert fs.flows.orig_pkts.tolist() == [2]
