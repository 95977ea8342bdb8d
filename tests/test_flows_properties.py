"""Invariants of flow building on random packet sequences (hypothesis)."""

from __future__ import annotations

import numpy as np
from flowpkts import T0, packet, table
from hypothesis import given, settings
from hypothesis import strategies as st

from flowtrace.flows import build
from flowtrace.schema import CONN_STATES

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1", "fd00::2"]


@st.composite
def packets(draw):
    n = draw(st.integers(1, 60))
    rows = []
    t = T0
    for _ in range(n):
        v6 = draw(st.booleans())
        pool = HOSTS[3:] if v6 else HOSTS[:3]
        src, dst = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
        proto = draw(st.sampled_from([6, 6, 6, 17, 1, 47]))
        if proto == 1 and v6:
            proto = 58
        t += draw(st.sampled_from([1, 1000, 10**6, 10**9, 40 * 10**9]))
        fields = dict(src=src, dst=dst, proto=proto, ts_ns=t, payload_len=draw(st.sampled_from([0, 0, 10, 1400])),
                      direction=draw(st.sampled_from(["in", "out", "unknown"])),
                      ifindex=draw(st.sampled_from([-1, 2, 3])), capture=draw(st.sampled_from(["a", "b"])))
        if proto in (6, 17):
            fields.update(sport=draw(st.sampled_from([80, 4000, 4001])), dport=draw(st.sampled_from([80, 4000])))
        if proto == 6:
            fields.update(flags=draw(st.sampled_from(["S", "SA", "A", "PA", "FA", "R", "RA", "SF", "FR", ""])),
                          seq=draw(st.sampled_from([0, 1000, 1001, 2**32 - 1, 5000])),
                          ack=draw(st.sampled_from([0, 1001, 5001])),
                          window=draw(st.sampled_from([0, 100])), l4_checksum=draw(st.sampled_from([1, 0, -1])))
        if proto in (1, 58):
            fields.update(icmp_type=draw(st.sampled_from([0, 8, 3, 11, 128, 129, 1])), icmp_code=0,
                          icmp_id=draw(st.sampled_from([0, 7])))
        rows.append(packet(**fields))
    order = draw(st.permutations(list(range(n))))
    return [rows[i] for i in order]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(packets())
def test_invariants(rows):
    df = table(rows)
    fs = build(df)
    fl = fs.flows
    assert fl.flow_id.tolist() == list(range(len(fl)))
    assert (np.diff(fl.ts_ns.to_numpy()) >= 0).all()
    counted = (fs.flow_id >= 0) & ~fs.related
    assert counted.sum() == (fl.orig_pkts + fl.resp_pkts).sum()
    assert set(fl.conn_state.astype(str)) <= set(CONN_STATES)
    assert (fl.duration_ns >= 0).all() and (fl.last_ts_ns >= fl.ts_ns).all()
    src = df.src.astype(object).to_numpy()
    for k in range(len(fl)):
        rowsk = np.flatnonzero((fs.flow_id == k) & ~fs.related)
        assert rowsk.size == fl.orig_pkts[k] + fl.resp_pkts[k]
        mine = fs.from_orig[rowsk]
        assert (src[rowsk][mine] == fl.orig_h[k]).all()
        assert (src[rowsk][~mine] == fl.resp_h[k]).all()
        assert df.capture.iloc[rowsk].nunique() == 1
    again = build(df)
    assert again.flows.equals(fl) and (again.flow_id == fs.flow_id).all()


def test_more_than_65535_groups_sort_by_time_within_groups():
    groups = 66_000
    rows = []
    for g in range(groups):
        sport, dport = g % 60_000 + 1, 53 + g // 60_000
        for k in (1, 0):  # the later packet first in the file
            rows.append(packet(src="10.0.0.1", dst="10.0.0.2", proto=17, sport=sport, dport=dport,
                               ts_ns=T0 + g * 10 + k, payload_len=k + 1))
    fs = build(table(rows))
    fl = fs.flows
    assert len(fl) == groups
    assert (fl.orig_pkts == 2).all()
    assert (fl.orig_bytes == 3).all()
    assert (fl.last_ts_ns - fl.ts_ns == 1).all()
    assert (fl.first_frame == fl.last_frame + 1).all()  # first in time is the second in the file


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([0x02, 0x12, 0x10, 0x18, 0x11, 0x01, 0x04, 0x14, 0x05, 0x03, 0x00]),
                          st.booleans()), min_size=1, max_size=40))
def test_state_events_keep_exactly_what_the_state_machine_needs(packets):
    """Running the automaton on the reduced events equals running Zeek's step on every packet."""
    from flowtrace.flows.state import START, _step, automaton, event_codes, run, state_events

    fo = np.array([p[0] for p in packets])
    flags = np.array([p[1] for p in packets], dtype=np.uint16)
    data = np.array([p[2] for p in packets])
    code = event_codes(from_orig=fo, flags=flags, has_data=data)
    flow = np.zeros(len(packets), dtype=np.int64)
    start = np.zeros(len(packets), dtype=bool)
    start[0] = True
    ev = state_events(flow=flow, flow_start=start, code=code)
    out = run(n_flows=1, event_flow=flow[ev], event_code=code[ev])
    full = START
    closed_at = -1
    for k, c in enumerate(code.tolist()):
        nxt = _step(full, c)
        if closed_at < 0 and nxt.o_closed and nxt.r_closed:
            closed_at = k
        full = nxt
    assert automaton().states[out.state[0]] == full
    # the event that completed the close is the same packet
    assert (ev[out.closed_at[0]] if out.closed_at[0] >= 0 else -1) == closed_at
