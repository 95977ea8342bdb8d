"""ICMP errors attach to the flow whose packet they quote, by the quoted tuple, never by their own addresses."""

from __future__ import annotations

from flowpkts import T0, Tcp, icmp, table, udp

from flowtrace.flows import build

S = 1_000_000_000


def unreachable(router: str, to: str, quoted: tuple[str, int, str, int], proto: int = 17, code: int = 3, **kw):
    qsrc, qsport, qdst, qdport = quoted
    return icmp(router, to, 3, code, n=28, quoted_src=qsrc, quoted_dst=qdst, quoted_proto=proto,
                quoted_sport=qsport, quoted_dport=qdport, **kw)


def test_error_from_a_router_attaches_to_the_quoted_udp_flow():
    rows = [udp("10.0.0.1", 5000, "10.0.0.2", 53, ts_ns=T0),
            unreachable("192.0.2.254", "10.0.0.1", ("10.0.0.1", 5000, "10.0.0.2", 53), ts_ns=T0 + S // 100)]
    fs = build(table(rows))
    assert len(fs.flows) == 1
    row = fs.flows.iloc[0]
    assert (row.icmp_error_count, row.icmp_error_types, row.icmp_error_frames) == (1, "3/3", "2")
    assert (row.orig_pkts, row.resp_pkts, row.conn_state) == (1, 0, "S0")
    assert fs.flow_id.tolist() == [0, 0]
    assert fs.related.tolist() == [False, True]
    assert fs.from_orig.tolist() == [True, False]  # the error travels back to the originator


def test_error_attaches_to_tcp_flow_and_keeps_its_state():
    c = Tcp().a("S")
    c.rows.append(unreachable("10.0.0.2", "10.0.0.1", ("10.0.0.1", 40000, "10.0.0.2", 80), proto=6, code=13,
                              ts_ns=T0 + 1000))
    fl = build(c.table()).flows
    assert len(fl) == 1
    assert (fl.iloc[0].conn_state, fl.iloc[0].icmp_error_types) == ("S0", "3/13")


def test_error_picks_the_flow_active_at_its_time():
    rows = [udp("10.0.0.1", 5000, "10.0.0.2", 53, ts_ns=T0),
            udp("10.0.0.1", 5000, "10.0.0.2", 53, ts_ns=T0 + 100 * S),  # a second flow (UDP timeout)
            unreachable("10.0.0.2", "10.0.0.1", ("10.0.0.1", 5000, "10.0.0.2", 53), ts_ns=T0 + 100 * S + 5)]
    fl = build(table(rows)).flows
    assert fl.icmp_error_count.tolist() == [0, 1]


def test_error_matches_the_observation_point_first_then_the_capture():
    flow_a = udp("10.0.0.1", 5000, "10.0.0.2", 53, ifindex=2, direction="out", capture="node", ts_ns=T0)
    flow_b = udp("10.0.0.1", 5000, "10.0.0.2", 53, ifindex=7, direction="out", capture="node", ts_ns=T0 + 1)
    err = unreachable("10.0.0.2", "10.0.0.1", ("10.0.0.1", 5000, "10.0.0.2", 53), ifindex=7, direction="in",
                      capture="node", ts_ns=T0 + 10)
    fl = build(table([flow_a, flow_b, err])).flows.set_index("ifindex")
    assert fl.loc[7, "icmp_error_count"] == 1 and fl.loc[2, "icmp_error_count"] == 0
    # seen on an interface without the flow: still attached within the capture
    err_elsewhere = {**err, "ifindex": 9}
    fl = build(table([flow_a, err_elsewhere])).flows
    assert fl.icmp_error_count.tolist() == [1]


def test_unmatched_errors_become_their_own_icmp_flow():
    rows = [unreachable("192.0.2.254", "10.0.0.1", ("10.0.0.1", 1, "10.9.9.9", 2), ts_ns=T0),
            unreachable("192.0.2.254", "10.0.0.1", ("10.0.0.1", 1, "10.9.9.9", 2), ts_ns=T0 + S)]
    fs = build(table(rows))
    row = fs.flows.iloc[0]
    assert len(fs.flows) == 1
    assert (row.orig_h, row.resp_h, row.orig_p, row.resp_p, row.orig_pkts) == ("192.0.2.254", "10.0.0.1", 3, 3, 2)
    assert fs.related.tolist() == [False, False]


def test_error_in_another_capture_does_not_attach():
    rows = [udp("10.0.0.1", 5000, "10.0.0.2", 53, capture="a", ts_ns=T0),
            unreachable("10.0.0.2", "10.0.0.1", ("10.0.0.1", 5000, "10.0.0.2", 53), capture="b", ts_ns=T0 + 5)]
    fl = build(table(rows)).flows
    assert len(fl) == 2 and fl.icmp_error_count.sum() == 0


def test_icmp6_packet_too_big_attaches():
    rows = [udp("fd00::1", 5000, "fd00::2", 443, ts_ns=T0),
            icmp("fd00::ff", "fd00::1", 2, 0, quoted_src="fd00::1", quoted_dst="fd00::2", quoted_proto=17,
                 quoted_sport=5000, quoted_dport=443, ts_ns=T0 + 9)]
    fl = build(table(rows)).flows
    assert fl.icmp_error_types.tolist() == ["2/0"]


def test_time_exceeded_for_a_ping_attaches_to_the_ping():
    rows = [icmp("10.0.0.1", "192.0.2.50", 8, icmp_id=3, ts_ns=T0),
            icmp("10.0.0.254", "10.0.0.1", 11, 0, quoted_src="10.0.0.1", quoted_dst="192.0.2.50", quoted_proto=1,
                 ts_ns=T0 + 100)]
    fs = build(table(rows))
    assert len(fs.flows) == 1
    row = fs.flows.iloc[0]
    assert (row.orig_p, row.resp_p, row.icmp_error_types) == (8, 0, "11/0")
    assert fs.related.tolist() == [False, True]
