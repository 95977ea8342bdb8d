"""Packets that vanished on the way: last seen at one hop, never at the next.

For every packet of a connection (a sighting group) the furthest hop that saw it is
found. If the path of its direction continues past that hop, the packet should have been
seen at the next on-path hop; if the path ends at a host's incoming interface of a
capture that sees all of the host's interfaces (``tcpdump -i any``), it should have left
that host (unless addressed to it). TCP data is judged by bytes, as the hops table's
``missing`` column is: a segment is not missing where the next hop saw its bytes cut
differently (GSO, GRO) at about the same time — unlike that column, a later
retransmission of the bytes does not count. Each vanished packet says whether the capture that should have
seen it covered that moment without loss; only those are evidence of a drop.

Only connections the correlation already flags (``hops.missing > 0``, TCP data sent again,
or a path ending inside a host) are examined, so the cost follows the anomalies, not the
traffic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from flowtrace.correlate.coverage import covered
from flowtrace.detect.context import DIR_IN, DIR_OUT, codes_of

if TYPE_CHECKING:
    from flowtrace.detect.context import Context

SEQ_SPACE = 1 << 32
_POS = 1 << 20
COVER_WINDOW_NS = 200_000_000
"""TCP bytes count as seen at a hop when segments carrying them passed it about the same
time; a retransmission (at least the 200 ms minimum RTO later) does not make up for a loss."""

COLUMNS = ("row", "connection", "direction", "group", "last_hop", "next_hop", "inside", "capture",
           "ts", "covered", "handshake", "data")
"""row: packets row at the last hop that saw it; direction: 0 request, 1 response;
last_hop/next_hop: hop ids (next_hop -1 when it should have left the last hop's host);
inside: the expected point is in the same capture as the last one; capture: index of the
capture that should have seen it; ts: corrected time at the last hop; covered: that
capture covered the moment without loss; handshake: SYN or SYN-ACK; data: TCP payload."""


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: np.zeros(0, dtype=np.int64) for c in COLUMNS})


def candidate_connections(ctx: Context) -> np.ndarray:
    """Connections with packets missing between hops (the hops table's count, or TCP data
    retransmitted somewhere, which that count forgives) or a path ending inside a host."""
    h = ctx.analysis.hops
    if h.empty:
        return np.zeros(0, dtype=np.int64)
    conn = h["connection"].to_numpy()
    fl = ctx.analysis.flows
    again = fl["flow_id"].to_numpy()[(fl["orig_retransmissions"].to_numpy() > 0)
                                     | (fl["resp_retransmissions"].to_numpy() > 0)]
    missing = conn[(h["missing"].to_numpy() > 0) | np.isin(h["flow"].to_numpy(), again)]
    on = np.flatnonzero(h["on_path"].to_numpy())
    key = conn[on] * 2 + ctx.hop.dirc[h["hop_id"].to_numpy()[on]]
    last = on[np.r_[key[1:] != key[:-1], True]] if on.size else on
    ids = h["hop_id"].to_numpy()[last]
    multi = np.array([n in ctx.multi_interface for n in ctx.capture_names] + [False], dtype=bool)
    ends_in = (ctx.hop.pdir[ids] == DIR_IN) & multi[ctx.hop.capture[ids]]
    return np.unique(np.r_[missing, conn[last][ends_in]]).astype(np.int64)


def vanished_packets(ctx: Context) -> pd.DataFrame:
    """One row per vanished packet (columns: COLUMNS), in connection and time order."""
    a = ctx.analysis
    cand = candidate_connections(ctx)
    if not cand.size:
        return _empty()
    all_rows = ctx.connection_rows(cand)
    hi = ctx.hop
    proto = ctx.col("proto")
    icmp_type = ctx.col("icmp_type")
    dst = ctx.col("dst")
    group = a.packet_group
    usable = (np.isin(proto[all_rows], (6, 17, 132)) | (proto[all_rows] == 1)
              | ((proto[all_rows] == 58) & (icmp_type[all_rows] < 130)))
    d = dst[all_rows]
    usable &= (group[all_rows] >= 0) & ~ctx.multicast_address[np.maximum(d, 0)] & (d >= 0)
    rows = all_rows[usable]
    if not rows.size:
        return _empty()
    hop = a.packet_hop[rows]
    conn, dirc, pos = hi.conn[hop], hi.dirc[hop].astype(np.int64), hi.pos[hop]
    ts, grp = a.corrected_ts[rows], group[rows]
    key = conn * 2 + dirc
    order = np.lexsort((ts, pos, grp, key))
    rows, hop, key, pos, ts, grp = rows[order], hop[order], key[order], pos[order], ts[order], grp[order]
    last = np.r_[(key[1:] != key[:-1]) | (grp[1:] != grp[:-1]), True]
    rows, hop, key, pos, ts, grp = rows[last], hop[last], key[last], pos[last], ts[last], grp[last]
    on = hi.on_path[hop]
    rows, hop, key, pos, ts, grp = rows[on], hop[on], key[on], pos[on], ts[on], grp[on]
    # The next on-path hop of the same connection and direction, if the path goes on.
    path_ids = np.flatnonzero(hi.on_path & np.isin(hi.conn, cand))
    path_key = (hi.conn[path_ids] * 2 + hi.dirc[path_ids]) * _POS + hi.pos[path_ids]
    srt = np.argsort(path_key)
    path_key, path_ids = path_key[srt], path_ids[srt]
    want = key * _POS + pos
    i = np.searchsorted(path_key, want, side="right")
    has_next = (i < path_key.size) & ((path_key[np.minimum(i, path_key.size - 1)] // _POS) == key)
    next_hop = np.where(has_next, path_ids[np.minimum(i, max(path_key.size - 1, 0))], -1)
    # Path ends: vanished inside the host when it came in on a host-wide capture and
    # was not addressed to that host.
    multi = np.array([n in ctx.multi_interface for n in ctx.capture_names] + [False], dtype=bool)
    own = _own_codes(ctx)
    cap_last = hi.capture[hop]
    ends_inside = ~has_next & (hi.pdir[hop] == DIR_IN) & multi[cap_last]
    if ends_inside.any():
        # A packet may end inside a host because it was addressed to it. It was dropped
        # when it was a SYN nobody answered (a host's stack answers every SYN, only a
        # firewall stays silent), or when it was going to an address hosts forward to
        # (a pod, a Service) that is not this host's own.
        idx = np.flatnonzero(ends_inside)
        local = np.array([int(dst[r]) in own.get(int(c), ()) for r, c in zip(rows[idx], cap_last[idx], strict=True)],
                         dtype=bool)
        answered = np.isin(key[idx] // 2, hi.conn[hi.dirc == 1])
        syn = (ctx.tcp_flags[rows[idx]] & 0x12) == 0x02
        onward = np.isin(dst[rows[idx]], forwarded_addresses(ctx))
        # A host talking to itself (a loopback address, or its own address both ways)
        # never sends it on.
        itself = (local & (ctx.col("src")[rows[idx]] == dst[rows[idx]])) | ctx.loopback_address[dst[rows[idx]]]
        ends_inside[idx[itself | ~((syn & ~answered) | (onward & ~local))]] = False
    keep = has_next | ends_inside
    rows, hop, key, ts, grp, next_hop = rows[keep], hop[keep], key[keep], ts[keep], grp[keep], next_hop[keep]
    if not rows.size:
        return _empty()
    flags = ctx.tcp_flags[rows]
    plen = ctx.col("payload_len")[rows].astype(np.int64)
    data = (proto[rows] == 6) & (plen > 0)
    # TCP data: not missing where the next hop holds the same bytes in other segments.
    check = data & (next_hop >= 0)
    if check.any():
        ref = all_rows[(proto[all_rows] == 6) & (ctx.col("payload_len")[all_rows] > 0)]
        ref_hop = a.packet_hop[ref]
        ref = ref[np.isin(ref_hop, next_hop[check])]
        ref_hop = a.packet_hop[ref]
        seq = ctx.col("seq").astype(np.int64)
        q = np.flatnonzero(check)
        qh = next_hop[q]
        base = pd.Series(seq[rows[q]]).groupby(qh).first() - SEQ_SPACE // 2
        qs = (seq[rows[q]] - base.reindex(qh).to_numpy()) % SEQ_SPACE
        rbase = base.reindex(ref_hop).to_numpy()
        ok = ~np.isnan(rbase)
        rs = (seq[ref[ok]] - rbase[ok].astype(np.int64)) % SEQ_SPACE
        rl = ctx.col("payload_len")[ref[ok]].astype(np.int64)
        cov = _covered_in_time(qh, qs, qs + plen[q], ts[q], ref_hop[ok], rs, rs + rl, a.corrected_ts[ref[ok]])
        drop = np.zeros(rows.size, dtype=bool)
        drop[q[cov]] = True
        keep = ~drop
        rows, hop, key, ts, grp, next_hop = rows[keep], hop[keep], key[keep], ts[keep], grp[keep], next_hop[keep]
        flags, data = flags[keep], data[keep]
    if not rows.size:
        return _empty()
    inside = np.where(next_hop >= 0, hi.capture[np.maximum(next_hop, 0)] == hi.capture[hop], True)
    cap = np.where(next_hop >= 0, hi.capture[np.maximum(next_hop, 0)], hi.capture[hop])
    cov = np.zeros(rows.size, dtype=bool)
    for c in np.unique(cap):
        sel = cap == c
        cov[sel] = ctx.coverage.covers(ctx.capture_names[int(c)], ts[sel])
    out = pd.DataFrame({
        "row": rows, "connection": key // 2, "direction": key % 2, "group": grp, "last_hop": hop,
        "next_hop": next_hop, "inside": inside, "capture": cap, "ts": ts, "covered": cov,
        "handshake": (flags & 0x02) != 0, "data": data,
    })
    return out.sort_values(["connection", "direction", "ts"], kind="stable").reset_index(drop=True)


def _covered_in_time(qh: np.ndarray, qs: np.ndarray, qe: np.ndarray, qt: np.ndarray,
                     rh: np.ndarray, rs: np.ndarray, re: np.ndarray, rt: np.ndarray) -> np.ndarray:
    """Mask: the bytes [qs, qe) of each query were seen at hop ``qh`` by segments sent about
    the same time (GSO/GRO cut them differently, microseconds apart), not by a later
    retransmission: segments within COVER_WINDOW_NS / 2 always count, beyond
    COVER_WINDOW_NS never (two bucket grids offset by half a window)."""
    out = np.zeros(qh.size, dtype=bool)
    if not qh.size or not rh.size:
        return out
    t0 = int(min(qt.min(), rt.min()))
    for shift in (0, COVER_WINDOW_NS // 2):
        qb = (qt - t0 + shift) // COVER_WINDOW_NS
        rb = (rt - t0 + shift) // COVER_WINDOW_NS
        _, ids = np.unique(np.r_[qh * (1 << 32) + qb, rh * (1 << 32) + rb], return_inverse=True)
        ids = ids.reshape(-1)
        out |= covered(ids[: qh.size], qs, qe, ids[qh.size:], rs, re)
    return out


def forwarded_addresses(ctx: Context) -> np.ndarray:
    """Address codes that hosts forward traffic to: destinations of packets leaving a node
    (not ones it originated), Service addresses translated by a DNAT, the endpoints they
    were translated to, and the addresses of endpoint captures."""
    def _build(ctx: Context) -> np.ndarray:
        h = ctx.analysis.hops
        if h.empty:
            return np.zeros(0, dtype=np.int64)
        hid = h["hop_id"].to_numpy()
        multi = np.array([n in ctx.multi_interface for n in ctx.capture_names] + [False], dtype=bool)
        dst = codes_of(h["dst"], list(ctx.addresses))
        out = (ctx.hop.pdir[hid] == DIR_OUT) & multi[ctx.hop.capture[hid]] & (h["hop"].to_numpy() > 0)
        c = ctx.analysis.connections
        nat = c[c["dnat"].to_numpy()]
        extra = [ctx.addr_code(x) for x in (*nat["client_dst"].astype(object), *nat["server_dst"].astype(object),
                                            *ctx.endpoint_capture)]
        return np.unique(np.r_[dst[out], np.array(extra, dtype=np.int64)])

    return ctx.shared("forwarded_addresses", _build)


def endpoint_addresses(ctx: Context) -> np.ndarray:
    """Address codes of endpoints (pods, servers) rather than Services: what DNAT
    translated to, what endpoint captures own, and what nodes forward to unchanged —
    minus the addresses some DNAT translated away (Service and LoadBalancer addresses)."""
    def _build(ctx: Context) -> np.ndarray:
        c = ctx.analysis.connections
        nat = c[c["dnat"].to_numpy()]
        services = np.array([ctx.addr_code(x) for x in nat["client_dst"].astype(object)], dtype=np.int64)
        targets = np.array([ctx.addr_code(x) for x in (*nat["server_dst"].astype(object), *ctx.endpoint_capture)],
                           dtype=np.int64)
        return np.unique(np.r_[np.setdiff1d(forwarded_addresses(ctx), services), targets])

    return ctx.shared("endpoint_addresses", _build)


def _own_codes(ctx: Context) -> dict[int, set[int]]:
    """Address codes of each capture's own host, by capture index."""
    out: dict[int, set[int]] = {}
    for name, addrs in ctx.own_addresses.items():
        i = ctx.capture_index(name)
        if i >= 0:
            out[i] = {ctx.addr_code(x) for x in addrs} - {-1}
    return out
