"""Unit tests of the correlation building blocks on small, exact inputs."""

from __future__ import annotations

import numpy as np
import pytest

from flowtrace.correlate.clock import PairBound, solve_offsets
from flowtrace.correlate.conntrack import (
    S_CL,
    S_ES,
    S_FW,
    S_LA,
    S_SR,
    S_SS,
    S_TW,
    TCP_TRANSITIONS,
    _positions,
    tcp_index,
)
from flowtrace.correlate.coverage import covered
from flowtrace.correlate.link import components
from flowtrace.correlate.nat import DNAT, ROUTED, SNAT, SNAT_PORT, change_labels


def test_components_join_chains_and_keep_singletons():
    label = components(6, np.array([0, 2, 3]), np.array([1, 3, 4]))
    assert label.tolist() == [0, 0, 2, 2, 2, 5]


def test_components_of_a_long_chain_converge():
    n = 1000
    a = np.arange(n - 1)[::-1]
    label = components(n, a, a + 1)
    assert (label == 0).all()


def test_offsets_from_two_sided_bounds_take_the_middle_when_zero_is_excluded():
    # theta_b - theta_a in [2.0 s - 30 us, 2.0 s + 10 us]
    b = [PairBound(a=0, b=1, upper_ns=2_000_010_000, lower_ns=1_999_970_000, forward=5, backward=5)]
    off = solve_offsets(b, ["a", "b"], reference="a")
    assert off["a"].offset_ns == 0
    assert off["b"].offset_ns == 1_999_990_000
    assert off["b"].uncertainty_ns == 20_000


def test_offsets_prefer_zero_when_the_packets_allow_it():
    b = [PairBound(a=0, b=1, upper_ns=5_000, lower_ns=-3_000, forward=5, backward=5)]
    assert solve_offsets(b, ["a", "b"], reference="a")["b"].offset_ns == 0


def test_offsets_chain_through_a_middle_capture():
    bounds = [PairBound(a=0, b=1, upper_ns=1_000_010, lower_ns=999_990, forward=1, backward=1),
              PairBound(a=1, b=2, upper_ns=-499_990, lower_ns=-500_010, forward=1, backward=1)]
    off = solve_offsets(bounds, ["a", "b", "c"], reference="a")
    assert abs(off["c"].offset_ns - 500_000) <= 20
    assert off["c"].uncertainty_ns is not None and off["c"].uncertainty_ns <= 20


def test_one_sided_bound_is_reported_without_uncertainty():
    b = [PairBound(a=0, b=1, upper_ns=-7_000_000, lower_ns=float("-inf"), forward=3, backward=0)]
    off = solve_offsets(b, ["a", "b"], reference="a")["b"]
    assert off.uncertainty_ns is None and off.offset_ns <= -7_000_000


def test_captures_sharing_a_clock_get_the_same_offset():
    b = [PairBound(a=0, b=1, upper_ns=3_000_000_100, lower_ns=2_999_999_900, forward=2, backward=2)]
    off = solve_offsets(b, ["a", "b", "c"], reference="a", same_clock=[{"b", "c"}])
    assert off["c"].offset_ns == off["b"].offset_ns == 3_000_000_000


def test_byte_ranges_cover_a_segment_split_differently():
    # One 4344-byte super-segment covers three 1448-byte segments but not a fourth.
    flow = np.array([7])
    start, end = np.array([1000]), np.array([1000 + 3 * 1448])
    q = np.array([1000, 2448, 3896, 5344])
    assert covered(np.full(4, 7), q, q + 1448, flow, start, end).tolist() == [True, True, True, False]
    # Two adjacent segments together cover a range neither covers alone.
    assert covered(np.array([1]), np.array([10]), np.array([30]), np.array([1, 1]),
                   np.array([0, 20]), np.array([20, 40])).tolist() == [True]


@pytest.mark.parametrize(
    ("direction", "flags", "state", "expected"),
    [
        (0, 0x02, 0, S_SS),    # SYN opens
        (1, 0x12, S_SS, S_SR),  # SYN-ACK answers
        (0, 0x10, S_SR, S_ES),  # ACK completes
        (0, 0x11, S_ES, S_FW),  # FIN starts the close
        (0, 0x04, S_ES, S_CL),  # RST closes
        (0, 0x02, S_CL, S_SS),  # SYN after close reopens (a new entry)
    ],
)
def test_conntrack_tcp_transitions(direction, flags, state, expected):
    idx = tcp_index(np.array([flags]))[0]
    assert TCP_TRANSITIONS[direction, idx, state] == expected


def test_change_labels_fold_ports_into_address_rewrites():
    assert change_labels(DNAT | SNAT | SNAT_PORT | ROUTED, 0) == ["DNAT", "SNAT", "routed"]
    assert change_labels(SNAT_PORT, 0) == ["SNAT port"]
    assert change_labels(DNAT, 1) == ["reverse DNAT"]


def _tcp_fields(packets, **columns):
    """``packets`` with the TCP columns the timer caps read: by default sequence and
    acknowledgement numbers 0, no payload and a 64 KiB window (no cap applies)."""
    n = len(packets)
    base = {"seq": np.zeros(n, dtype=np.uint32), "ack": np.zeros(n, dtype=np.uint32),
            "payload_len": np.zeros(n, dtype=np.uint32), "window": np.full(n, 65535, dtype=np.uint16)}
    base.update({k: np.asarray(v, dtype=base[k].dtype) for k, v in columns.items()})
    return packets.assign(**base)


def _walk(times_s, *, proto=17, replies=(), limits=None, flags=None):
    """The entries conntrack creates for one key's packets at ``times_s`` (requests, but
    the indices in ``replies``; TCP ``flags`` per packet), through the same event filter
    the rebuild uses."""
    import pandas as pd

    from flowtrace.correlate.conntrack import Limits, _lifecycle, _relevant
    from flowtrace.correlate.path import REQUEST

    n = len(times_s)
    tcp_flags = np.zeros(n, dtype=np.uint16) if flags is None else np.asarray(flags, dtype=np.uint16)
    packets = _tcp_fields(pd.DataFrame({"proto": np.full(n, proto, dtype=np.uint8), "tcp_flags": tcp_flags}))
    ev = pd.DataFrame({"key": np.zeros(n, dtype=np.int64),
                       "ts": (np.asarray(times_s, dtype=np.float64) * 1e9).astype(np.int64),
                       "direction": ["reply" if i in replies else REQUEST for i in range(n)],
                       "row": np.arange(n)})
    limits = limits or Limits.of()
    return _lifecycle(_relevant(ev, packets, limits.shortest), packets, limits)


def test_steady_one_way_udp_keeps_one_entry():
    # A packet a second for a minute: each refreshes the 30 s timer, though the walk
    # only sees a few of them.
    life = _walk(range(61))
    assert len(life) == 1
    assert life["last"].iloc[0] == 60_000_000_000
    assert life["ended"].iloc[0] is None


def test_udp_silence_longer_than_the_timeout_expires_the_entry():
    life = _walk([*range(10), *range(50, 60)])
    assert life["ended"].tolist()[0] == "expired"
    assert life["created"].tolist() == [0, 50_000_000_000]
    assert life["recreated"].tolist() == [False, True]


def test_timeout_overrides_reach_the_walk():
    from flowtrace.correlate.conntrack import Limits

    assert Limits.of({"udp": 5}).udp == 5_000_000_000
    assert Limits.of({"tcp_established": 86400}).ns(6, S_ES, False) == 86400 * 10**9
    # 8 s between packets: one entry by default, one per packet with a 5 s UDP timeout.
    assert len(_walk([0, 8, 16, 24])) == 1
    assert len(_walk([0, 8, 16, 24], limits=Limits.of({"udp": 5}))) == 4
    # Gaps of 3 s are left out of the walk by default (below 5 s); a 2 s timeout sees them.
    assert len(_walk([0, 3, 6, 9], limits=Limits.of({"udp": 2}))) == 4


def test_icmp_entries_keep_the_icmp_timeout_after_a_reply():
    from flowtrace.correlate.conntrack import Limits

    # An echo answered, then 60 s of silence: past ICMP's 30 s (UDP's 120 s stream timeout
    # does not apply to ICMP, whatever the replies).
    times = [0, 0.1, 3, 3.1, 63]
    life = _walk(times, proto=1, replies={1, 3})
    assert life["ended"].tolist()[0] == "expired"
    assert len(life) == 2
    assert len(_walk(times, proto=1, replies={1, 3}, limits=Limits.of({"icmp": 90}))) == 1


SYN, SYNACK, ACK, FIN_ACK, RST = 0x02, 0x12, 0x10, 0x11, 0x04
S = 1_000_000_000


def test_updates_are_the_packets_that_change_state_seen_reply_or_assured():
    # A whole TCP connection: every state change is an UPDATE with its full timeout; data
    # in ESTABLISHED changes nothing. As the lab's conntrack -E shows it.
    times = [0, 0.001, 0.002, 0.003, 0.004, 0.010, 0.011, 0.012]
    flags = [SYN, SYNACK, ACK, ACK, ACK, FIN_ACK, FIN_ACK, ACK]
    life = _walk(times, proto=6, flags=flags, replies={1, 4, 6})
    ms = 1_000_000
    assert life["updates"].iloc[0] == [(1 * ms, S_SR, True, False, 60), (2 * ms, S_ES, True, True, 432000),
                                       (10 * ms, S_FW, True, True, 120), (11 * ms, S_LA, True, True, 30),
                                       (12 * ms, S_TW, True, True, 120)]
    assert life["killed"].iloc[0] is None


def test_udp_updates_when_answered_and_when_a_stream():
    life = _walk([0, 0.5, 3], replies={1})
    assert life["updates"].iloc[0] == [(S // 2, 0, True, False, 30), (3 * S, 0, True, True, 120)]


def test_a_rst_before_any_reply_kills_the_entry_in_close_with_its_old_timer():
    life = _walk([0, 1.5], proto=6, flags=[SYN, RST])
    assert life["ended"].tolist() == ["reset"]
    assert life["killed"].iloc[0] == (int(1.5 * S), S_CL, False, False, 118)


def test_a_syn_reopening_a_closed_entry_kills_it_with_the_seconds_left():
    # Reset after the handshake (CLOSE, 10 s), then the client's SYN again 1.02 s later:
    # the kernel prints [DESTROY] ... 8 CLOSE, then a NEW.
    life = _walk([0, 0.001, 0.002, 1.022], proto=6, flags=[SYN, SYNACK, RST, SYN], replies={1})
    assert len(life) == 2 and life["ended"].iloc[0] == "reopened"
    assert life["killed"].iloc[0] == (int(1.022 * S), S_CL, True, False, 8)
    assert life["updates"].iloc[0][-1] == (2_000_000, S_CL, True, False, 10)


def _caps(flags, replies, seq, ack, payload, window=None):
    """The timer cap of each packet of one TCP entry (``replies``: indices sent by the server)."""
    import pandas as pd

    from flowtrace.correlate.conntrack import _timer_caps

    n = len(flags)
    packets = _tcp_fields(pd.DataFrame({"proto": np.full(n, 6, dtype=np.uint8),
                                        "tcp_flags": np.asarray(flags, dtype=np.uint16)}),
                          seq=seq, ack=ack, payload_len=payload, **({"window": window} if window else {}))
    reply = np.isin(np.arange(n), list(replies))
    return _timer_caps(packets, np.arange(n), reply, np.r_[True, np.zeros(n - 1, dtype=bool)]).tolist()


def test_timer_caps_follow_unacknowledged_data_retransmissions_and_zero_windows():
    from flowtrace.correlate.conntrack import CAP_NONE as N
    from flowtrace.correlate.conntrack import CAP_RETRANS as R
    from flowtrace.correlate.conntrack import CAP_UNACK as U

    c, s = 1000, 5000  # the two sides' initial sequence numbers (near the wrap: modular)
    hand = dict(flags=[SYN, SYNACK, ACK], replies={1}, seq=[c, s, c + 1], ack=[0, c + 1, s + 1], payload=[0, 0, 0])
    # 100 bytes sent, then acknowledged: capped until the ACK covers exactly their end
    caps = _caps(hand["flags"] + [ACK, ACK], {1, 4}, hand["seq"] + [c + 1, s + 1], hand["ack"] + [s + 1, c + 101],
                 hand["payload"] + [100, 0])
    assert caps == [N, N, N, U, N]
    # sequence numbers wrap around 2**32; an ACK short of the end leaves the cap
    w = (1 << 32) - 40
    m = 1 << 32
    wrap = dict(flags=[SYN, SYNACK, ACK, ACK, ACK], replies={1, 4}, seq=[w, s, (w + 1) % m, (w + 1) % m, s + 1],
                payload=[0, 0, 0, 100, 0])
    assert _caps(**wrap, ack=[0, (w + 1) % m, s + 1, s + 1, (w + 101) % m]) == [N, N, N, U, N]
    assert _caps(**wrap, ack=[0, (w + 1) % m, s + 1, s + 1, (w + 51) % m]) == [N, N, N, U, U]
    # the same segment four times in a row: the fourth is a retransmission past the limit
    caps = _caps(hand["flags"] + [ACK] * 4, {1}, hand["seq"] + [c + 1] * 4, hand["ack"] + [s + 1] * 4,
                 hand["payload"] + [100] * 4)
    assert caps == [N, N, N, U, U, U, R]
    # a zero window caps too; a RST with one does not
    assert _caps([SYN, SYNACK, ACK, RST], {1, 2}, [c, s, s + 1, c + 1], [0, c + 1, c + 1, 0], [0, 0, 0, 0],
                 window=[65535, 65535, 0, 0]) == [N, N, R, N]


def test_unacknowledged_data_expires_an_established_entry_after_five_idle_minutes():
    # The kernel's tcp_timeout_unacknowledged (300 s) instead of ESTABLISHED's 432000 s:
    # a request never acknowledged, then silence, then a retransmission 301 s later.
    import pandas as pd

    from flowtrace.correlate.conntrack import Limits, _lifecycle, _relevant
    from flowtrace.correlate.path import REQUEST

    c, s = 1000, 5000

    def life(acked: bool):
        flags = [SYN, SYNACK, ACK, ACK] + ([ACK] if acked else []) + [ACK]
        direction = [REQUEST, "reply", REQUEST, REQUEST] + (["reply"] if acked else []) + [REQUEST]
        times = [0, 0.001, 0.002, 0.003] + ([0.004] if acked else []) + [301.0]
        seq = [c, s, c + 1, c + 1] + ([s + 1] if acked else []) + [c + 101]
        ack = [0, c + 1, s + 1, s + 1] + ([c + 101] if acked else []) + [s + 1]
        payload = [0, 0, 0, 100] + ([0] if acked else []) + [0]
        n = len(flags)
        packets = _tcp_fields(pd.DataFrame({"proto": np.full(n, 6, dtype=np.uint8),
                                            "tcp_flags": np.asarray(flags, dtype=np.uint16)}),
                              seq=seq, ack=ack, payload_len=payload)
        ev = pd.DataFrame({"key": np.zeros(n, dtype=np.int64), "ts": (np.asarray(times) * 1e9).astype(np.int64),
                           "direction": direction, "row": np.arange(n)})
        limits = Limits.of()
        return _lifecycle(_relevant(ev, packets, limits.shortest), packets, limits)

    assert life(acked=True)["ended"].tolist() == [None]
    unacked = life(acked=False)
    assert unacked["ended"].iloc[0] == "expired"
    assert unacked["last_cap"].iloc[0] == 2  # CAP_UNACK: the entry's last packet left data unacknowledged


def test_no_packet_creates_no_entry():
    assert _walk([]).empty
    assert list(_walk([]).columns)[:3] == ["key", "created", "last"]


def test_flow_edges_leave_out_groups_where_one_point_shows_two_flows():
    from flowtrace.correlate.link import flow_edges
    from flowtrace.correlate.sightings import Sightings

    def sightings(group, point):
        n = len(group)
        z = np.zeros(n, dtype=np.int64)
        return Sightings(row=np.arange(n), group=np.asarray(group, dtype=np.int64), capture=z.astype(np.int32),
                         ts=z, ttl=z.astype(np.int16), direction=z.astype(np.int8), strength=z.astype(np.int8) + 2,
                         point=np.asarray(point, dtype=np.int32), capture_names=["a"])

    flow_id = np.array([0, 1, 2, 3])
    from_orig = np.array([True, True, False, True])
    # Group 0: point 0 sees flows 0 and 1 (ambiguous); group 1: flows 2 and 3 at two points.
    a, b, parity, ambiguous = flow_edges(sightings([0, 0, 1, 1], [0, 0, 0, 1]), flow_id, from_orig)
    assert (a.tolist(), b.tolist(), parity.tolist(), ambiguous) == ([2], [3], [True], 1)
    # Every group ambiguous: no edge at all.
    a, b, parity, ambiguous = flow_edges(sightings([0, 0], [0, 0]), flow_id[:2], from_orig[:2])
    assert (a.size, b.size, parity.size, ambiguous) == (0, 0, 0, 1)


def test_host_events_of_sightings_no_host_holds_are_none():
    import pandas as pd

    from flowtrace.correlate.conntrack import host_events

    packets = _tcp_fields(pd.DataFrame({"capture": pd.Categorical(["node1", "node1"]),
                                        "proto": np.array([6, 6], dtype=np.uint8),
                                        "tcp_flags": np.array([2, 18], dtype=np.uint16)}))
    st = pd.DataFrame({"row": np.array([0, 1]), "connection": np.array([7, 7]), "group": np.array([0, 1]),
                       "ts": np.array([10, 20]), "direction": np.array([0, 1], dtype=np.int8)})
    hosts = pd.DataFrame({"capture": [0], "connection": [7], "key": [0], "proto": [6]})
    ev = host_events(packets, st, hosts)
    assert ev["row"].tolist() == [0, 1] and ev["idle"].tolist() == [0, 10]
    for other in (hosts.assign(connection=[8]), hosts.assign(proto=[17]), hosts.iloc[:0]):
        ev = host_events(packets, st, other)
        assert ev.empty and {"key", "ts", "row", "direction", "idle"} <= set(ev.columns)


def _order_hops_by_pandas(hops, capture_code, guessed_dir, tuples):
    """The pandas formulation order_hops was first written in: the oracle for its numpy one."""

    from flowtrace.correlate.sightings import DIR_IN, DIR_OUT

    seen = ["_src", "_sport", "_dst", "_dport"]
    h = hops.assign(_cap=capture_code, _dir=guessed_dir, **{t: tuples[:, i] for i, t in enumerate(seen)})
    unit = ["connection", "direction", "ttl", "_cap"]
    h = h.sort_values([*unit, "delay_ns", "first_ts_ns", "first_row"], kind="stable")
    first_dir = h.groupby(unit, sort=False)["_dir"].transform("first")
    last_dir = h.groupby(unit, sort=False)["_dir"].transform("last")
    h["_rank"] = np.where(first_dir.to_numpy() == DIR_OUT, 0, np.where(last_dir.to_numpy() == DIR_IN, 2, 1))
    h["_unit_delay"] = h.groupby(unit, sort=False)["delay_ns"].transform("min")
    o = h.sort_values(["connection", "direction", "ttl", "first_ts_ns"], ascending=[True, True, False, True],
                      kind="stable")
    origin = o.groupby(["connection", "direction"], sort=False)[seen].transform("first")
    h["_changed"] = (o[seen] != origin).any(axis=1)
    h = h.sort_values(["connection", "direction", "ttl", "_rank", "_unit_delay", "_cap", "delay_ns", "first_ts_ns",
                       "_changed", "first_row"], ascending=[True, True, False, True, True, True, True, True, True, True],
                      kind="stable")
    h["hop"] = h.groupby(["connection", "direction"], sort=False).cumcount().astype(np.int32)
    return h.drop(columns=["_cap", "_dir", "_rank", "_unit_delay", "_changed", *seen]).reset_index(drop=True)


@pytest.mark.parametrize("seed", range(5))
def test_order_hops_sorts_as_its_pandas_formulation_ties_included(seed):
    import pandas as pd

    from flowtrace.correlate.hops import order_hops

    rng = np.random.default_rng(seed)
    n = 400
    # Few distinct values everywhere: ties of TTL, time and delay inside and across units.
    hops = pd.DataFrame({"connection": rng.integers(0, 8, n), "direction": rng.integers(0, 2, n),
                         "ttl": rng.integers(60, 64, n), "delay_ns": rng.integers(0, 4, n) * 1000,
                         "first_ts_ns": rng.integers(0, 3, n) * 1000, "first_row": rng.permutation(n),
                         "hop_id": np.arange(n)})
    capture_code = rng.integers(0, 4, n)
    guessed_dir = rng.integers(0, 3, n).astype(np.int8)
    tuples = rng.integers(0, 2, (n, 4))
    got = order_hops(hops, capture_code, guessed_dir, tuples)
    want = _order_hops_by_pandas(hops, capture_code, guessed_dir, tuples)
    assert got["hop_id"].tolist() == want["hop_id"].tolist()
    assert got["hop"].tolist() == want["hop"].tolist()


def _flow_edges_by_hashing(group, point, flow, fo):
    """The hash-table formulation flow_edges was first written in: the oracle for its sorts."""
    import pandas as pd

    n = int(flow.max()) + 1
    gp = pd.factorize(group * np.int64(int(point.max()) + 1) + point)[0].astype(np.int64)
    triples = pd.unique(gp * np.int64(n) + flow)
    two_flows = pd.Series(triples // n).duplicated().to_numpy()
    bad_gp = np.zeros(int(gp.max()) + 1, dtype=bool)
    bad_gp[triples[two_flows] // n] = True
    bad = np.zeros(int(group.max()) + 1, dtype=bool)
    bad[group[bad_gp[gp]]] = True
    keep = ~bad[group]
    group, flow, fo = group[keep], flow[keep], fo[keep]
    codes = pd.factorize(group)[0]
    top = np.maximum.accumulate(codes)
    hub = np.flatnonzero(np.r_[True, codes[1:] > top[:-1]])[codes]
    a, b = flow[hub], flow
    differ = a != b
    code = np.unique((a[differ].astype(np.int64) * n + b[differ]) * 2 + (fo[hub] != fo)[differ])
    return (code // 2) // n, (code // 2) % n, (code % 2).astype(bool), int(bad.sum())


@pytest.mark.parametrize("seed", range(5))
def test_flow_edges_match_their_hashing_formulation(seed):
    from flowtrace.correlate.link import flow_edges
    from flowtrace.correlate.sightings import Sightings

    rng = np.random.default_rng(seed)
    n = 3000
    # Groups nearly sorted, as split_groups leaves them (renumbered inside a group), some
    # sightings outside any flow, and points that see two flows of one group.
    group = np.sort(rng.integers(0, 800, n))
    group = np.where(rng.random(n) < 0.1, np.maximum(group - 1, 0), group)
    z = np.zeros(n, dtype=np.int64)
    s = Sightings(row=np.arange(n), group=group, capture=z.astype(np.int32), ts=z, ttl=z.astype(np.int16),
                  direction=z.astype(np.int8), strength=z.astype(np.int8) + 2,
                  point=rng.integers(0, 6, n).astype(np.int32), capture_names=["a"])
    flow_id = np.where(rng.random(n) < 0.05, -1, rng.integers(0, 300, n))
    from_orig = rng.random(n) < 0.5
    got = flow_edges(s, flow_id, from_orig)
    valid = flow_id >= 0
    want = _flow_edges_by_hashing(group[valid], s.point[valid].astype(np.int64), flow_id[valid], from_orig[valid])
    assert got[3] == want[3] > 0
    for g, w in zip(got[:3], want[:3], strict=True):
        assert np.array_equal(g, w)


def _on_path_by_grouping(hops, st):
    """The grouping formulation _on_path was first written in: the oracle for its runs."""
    import pandas as pd

    g = st["group"].to_numpy()
    cd = st["connection"].to_numpy() * 2 + st["direction"].to_numpy().astype(np.int64)
    size = np.bincount(g)
    first_ts = np.full(size.size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_ts, g, st["ts"].to_numpy())
    gid, gpos = np.unique(g, return_index=True)
    gcd = cd[gpos]
    order = np.lexsort((first_ts[gid], -size[gid], gcd))
    best = order[np.r_[True, gcd[order][1:] != gcd[order][:-1]]]
    anchor_group = np.zeros(size.size, dtype=bool)
    anchor_group[gid[best]] = True
    in_anchor = anchor_group[g]
    hop_ids = st["hop_id"].to_numpy()
    hops_cd = hops["connection"].to_numpy() * 2 + hops["direction"].to_numpy().astype(np.int64)
    on = ~np.isin(hops_cd, np.unique(gcd[best])) | np.isin(hops["hop_id"].to_numpy(), np.unique(hop_ids[in_anchor]))
    at = pd.Series(st["ttl"].to_numpy()[in_anchor]).groupby(hop_ids[in_anchor]).max()
    return on, at.reindex(hops["hop_id"].to_numpy()).fillna(-1).to_numpy().astype(np.int64)


@pytest.mark.parametrize("seed", range(5))
def test_on_path_matches_its_grouping_formulation(seed):
    import pandas as pd

    from flowtrace.correlate.hops import _on_path

    rng = np.random.default_rng(seed)
    n_hops, n = 120, 2000
    hops = pd.DataFrame({"hop_id": np.arange(n_hops), "connection": rng.integers(0, 15, n_hops),
                         "direction": rng.integers(0, 2, n_hops)})
    hop = rng.integers(0, n_hops - 10, n)  # the last ten hops never seen
    group = rng.integers(0, 400, n)
    # Sightings of a group share a connection and direction, as the table's do.
    conn_of_group, dir_of_group = rng.integers(0, 15, 400), rng.integers(0, 2, 400)
    st = pd.DataFrame({"group": group, "connection": conn_of_group[group], "direction": dir_of_group[group],
                       "ts": rng.integers(0, 50, n), "hop_id": hop, "ttl": rng.integers(50, 64, n)})
    st = st.sort_values(["group", "ts"], kind="stable").reset_index(drop=True)
    got_on, got_ttl = _on_path(hops, st)
    want_on, want_ttl = _on_path_by_grouping(hops, st)
    assert np.array_equal(got_on, want_on) and not got_on.all()
    assert np.array_equal(got_ttl, want_ttl) and (got_ttl == -1).any()


@pytest.mark.parametrize("bound", [1_000, 1 << 40], ids=["lookup-table", "binary-search"])
def test_positions_find_each_key_or_minus_one(bound: int) -> None:
    rng = np.random.default_rng(7)
    keys = rng.choice(1_000, size=300, replace=False).astype(np.int64)
    want = rng.integers(0, 1_000, size=5_000).astype(np.int64)
    index = {int(k): i for i, k in enumerate(keys.tolist())}
    expected = np.array([index.get(int(w), -1) for w in want.tolist()])
    assert np.array_equal(_positions(keys, want, bound), expected)
    # Keys at or above the bound are never asked for; the table leaves them out.
    assert np.array_equal(_positions(np.r_[keys, 5_000], want, 1_000), expected)


def test_a_real_router_caps_an_entry_with_unacknowledged_data_at_300_seconds():
    """tests/data/unacknowledged-router.*: the kernel listed the entry ESTABLISHED with 297 s
    left (300 s for unacknowledged data, read 3 s after its last packet), not 432000."""
    from pathlib import Path

    import flowtrace
    from flowtrace.context.conntrack import compare, read_dump

    data = Path(__file__).resolve().parent / "data"
    a = flowtrace.analyze(f"router={data / 'unacknowledged-router.pcap'}")
    (entry,) = [e.entry for e in a.conntrack_table("router")]
    (kernel,) = read_dump(data / "unacknowledged-router.conntrack.txt", node="router")
    assert compare([entry], [kernel], check_state=True).agrees
    assert entry.timeout_s == 300 and 290 <= kernel.timeout_s <= 300
    # its last packets are the fourth and later sendings of one segment: the retransmission
    # cap comes first, as in tcp_packet(); each cap is the timeout of its own key
    for key, left in (("tcp_max_retrans", 100), ("tcp_unacknowledged", 300)):
        other = flowtrace.analyze(f"router={data / 'unacknowledged-router.pcap'}", timeouts={key: 100})
        assert [e.entry.timeout_s for e in other.conntrack_table("router")] == [left], key


def test_a_connection_picked_up_midstream_has_the_unacknowledged_timeout_until_a_reply():
    # No SYN in the capture: the first ACK makes an ESTABLISHED entry (nf_conntrack_tcp_loose)
    # whose timeout stays at tcp_unacknowledged (300 s) until a reply, as the kernel does.
    life = _walk([0, 200, 400], proto=6, flags=[ACK, ACK, ACK])
    assert life["ended"].iloc[0] is None and life["state"].iloc[0] == S_ES
    assert len(_walk([0, 301], proto=6, flags=[ACK, ACK])) == 2  # expired: a second pickup
    answered = _walk([0, 0.001, 400], proto=6, flags=[ACK, ACK, ACK], replies={1})
    # the reply sets [SEEN_REPLY]; the originator's next packet, [ASSURED] ("a valid answer
    # for a picked up connection")
    assert len(answered) == 1 and answered["updates"].iloc[0] == [(1_000_000, S_ES, True, False, 432000),
                                                                  (400 * S, S_ES, True, True, 432000)]
