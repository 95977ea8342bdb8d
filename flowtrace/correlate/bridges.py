"""Bridge flows: one flow at an observation point that carries two connections.

Flows are cut where a connection's packets say so (a SYN after a close, a new ISN, an idle
gap). A point that sees only part of a connection's packets may miss the cut: between
kube-proxy's reverse SNAT and reverse DNAT, a node sees replies with the pod's address and
the client's port; when the client reuses its port and the new attempt meets a pod socket
still in TIME_WAIT from an older connection on the same SNAT port, the pod's challenge ACK
passes there without any SYN or SYN-ACK before it, so the old connection's reply flow
absorbs it. Linking by shared packets would then merge two connections into one.

Other points do see the cut: the packets of the bridge flow appear, at some other point,
in flows of two or more tuples (two NAT bindings: two conntrack entries) that follow one
another without overlapping. Such a flow is cut before the first packet that links to each later
tuple, and the flows are built again with those cuts (``flowtrace.flows.build(...,
split_before=...)``). Flows of one tuple at the other point count as one partner: SYN
retransmissions that a pod answers and the client resets make a new flow there each time,
yet they are one connection attempt under one binding. Overlapping partners never cut: a
reply that bypassed the NAT reaches the client under the pod's address while the client's
own flow to the Service address is still open.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.correlate.link import components, flow_edges
from flowtrace.correlate.sightings import Sightings
from flowtrace.correlate.signature import STRONG
from flowtrace.hashing import GOLDEN


def bridge_splits(s: Sightings, flow_id: np.ndarray, from_orig: np.ndarray,
                  packets: pd.DataFrame) -> tuple[np.ndarray, Sightings]:
    """Packet rows before which a flow must be cut: where its packets start to link, at some
    other observation point, to the next of several tuples that follow one another in time;
    and the sightings worth a look after those cuts.

    ``flow_id`` is each packet's flow (-1: none) and ``from_orig`` whether its flow's
    originator sent it, aligned with ``packets`` rows. Only TCP
    sightings (strong signatures) are used; groups where one point sees the packet in two
    flows are ambiguous and left out. Returns sorted unique int64 rows, and the sightings
    of every group that has one in a suspect connection (``_suspects``): cuts split flows of
    suspect connections only, and splitting flows never joins connections, so the flows
    built again with the cuts can hold another bridge only there.
    """
    none = np.zeros(0, dtype=np.int64)
    tuple_key = _tuple_keys(packets, s.row)
    ts_all = packets["ts_ns"].to_numpy()
    flow = flow_id[s.row]
    keep = (flow >= 0) & (s.strength == STRONG)
    if not keep.any():
        return none, s.subset(keep)
    keep &= _suspects(s, flow_id, from_orig, flow, tuple_key)
    if not keep.any():
        return none, s.subset(keep)
    in_suspect_group = np.zeros(int(s.group.max()) + 1, dtype=bool)
    in_suspect_group[s.group[keep]] = True
    again = s.subset(in_suspect_group[s.group])
    group, point, flow, ts, row = s.group[keep], s.point[keep].astype(np.int64), flow[keep], s.ts[keep], s.row[keep]
    tkey = tuple_key[keep]
    # One sighting per (group, point): the earliest. Points that see a packet in two flows
    # make the group ambiguous.
    order = np.lexsort((ts, point, group))
    group, point, flow, ts, row, tkey = group[order], point[order], flow[order], ts[order], row[order], tkey[order]
    first = np.r_[True, (group[1:] != group[:-1]) | (point[1:] != point[:-1])]
    clash = ~first & (flow != np.r_[-1, flow[:-1]])
    bad = np.unique(group[clash])
    first &= ~np.isin(group, bad)
    group, point, flow, ts, row, tkey = group[first], point[first], flow[first], ts[first], row[first], tkey[first]
    # Every ordered pair of sightings of one group at two points: (flow, other point, partner).
    start = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    size = np.diff(np.r_[start, group.size])
    multi = size > 1
    if not multi.any():
        return none, again
    k = np.repeat(size, size)  # group size of each sighting
    k_start = np.repeat(start, size)
    sel = k > 1
    i_idx = np.repeat(np.flatnonzero(sel), k[sel])
    offsets = np.arange(i_idx.size, dtype=np.int64) - np.repeat(np.cumsum(k[sel]) - k[sel], k[sel])
    j_idx = np.repeat(k_start[sel], k[sel]) + offsets
    pair = (point[i_idx] != point[j_idx]) & (flow[i_idx] != flow[j_idx])
    i_idx, j_idx = i_idx[pair], j_idx[pair]
    if not i_idx.size:
        return none, again
    # Per (flow, other point, partner tuple): the span of the partner flows there (their own
    # first to last packet, in that point's clock) and the flow's first packet linked to them.
    first_ts, last_ts, syn_start = _flow_spans(flow_id, ts_all, packets["tcp_flags"].to_numpy())
    f, q, partner, t, r = flow[i_idx], point[j_idx], tkey[j_idx], ts[i_idx], row[i_idx]
    pf = flow[j_idx]
    lo_p, hi_p = first_ts[pf], last_ts[pf]
    o = np.lexsort((t, partner, q, f))
    f, q, partner, r, lo_p, hi_p, pf = f[o], q[o], partner[o], r[o], lo_p[o], hi_p[o], pf[o]
    head = np.flatnonzero(np.r_[True, (f[1:] != f[:-1]) | (q[1:] != q[:-1]) | (partner[1:] != partner[:-1])])
    tmin = np.minimum.reduceat(lo_p, head)
    tmax = np.maximum.reduceat(hi_p, head)
    # Whether the partner's earliest flow there began with a SYN (a new binding was made).
    earliest = head + _argmin_by_segment(lo_p, head)
    opens = syn_start[pf[earliest]]
    f, q, rmin = f[head], q[head], r[head]
    # Per (flow, other point) with two partners or more, in the order of their first link.
    o = np.lexsort((tmin, q, f))
    f, q, tmin, tmax, rmin, opens = f[o], q[o], tmin[o], tmax[o], rmin[o], opens[o]
    same = (f[1:] == f[:-1]) & (q[1:] == q[:-1])
    if not same.any():
        return none, again
    # A later partner starts a segment when the earlier ones are done with: its first
    # link comes after the last link to every partner before it.
    key_start = np.r_[True, ~same]
    seg = np.cumsum(key_start) - 1
    run_max = _running_max_by_segment(tmax, key_start)
    before = np.r_[np.iinfo(np.int64).min, run_max[:-1]]
    follows = np.r_[False, same] & (tmin > before)
    overlaps = np.r_[False, same] & ~follows
    # Only (flow, point) pairs whose partners all follow one another are cut.
    clean = np.ones(int(seg.max()) + 1, dtype=bool)
    clean[seg[overlaps]] = False
    cut = follows & clean[seg] & opens
    return np.unique(rmin[cut]).astype(np.int64), again


def _suspects(s: Sightings, flow_id: np.ndarray, from_orig: np.ndarray, flow: np.ndarray,
              tuple_key: np.ndarray) -> np.ndarray:
    """Mask of the sightings worth a closer look: those of connections (components of the
    uncut link graph) in which one observation point shows packets of one side under two
    tuples or more. Every bridge merges such a connection; in most, each point sees each
    side under one tuple (a node's eth0 sees the request before NAT and the reply after it:
    two tuples, one per side)."""
    n_flows = int(flow_id.max()) + 1 if flow_id.size else 0
    a, b, _, _ = flow_edges(s, flow_id, from_orig)
    root = components(n_flows, a, b)
    comp = np.where(flow >= 0, root[np.maximum(flow, 0)], -1)
    valid = flow >= 0
    cv = comp[valid].astype(np.int64)
    # Distinct (component, point, side) keys and tuples, then distinct pairs of them.
    points = np.int64(int(s.point.max()) + 1 if s.point.size else 1)
    k, _ = pd.factorize((cv * points + s.point[valid]) * 2 + from_orig[s.row[valid]])
    t, distinct = pd.factorize(tuple_key[valid])
    nt = np.int64(max(len(distinct), 1))
    pairs = pd.unique(k.astype(np.int64) * nt + t)
    several = np.bincount(pairs // nt, minlength=int(k.max()) + 1 if k.size else 0) > 1
    return np.isin(comp, np.unique(cv[several[k]]))


def _flow_spans(flow_id: np.ndarray, ts: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First and last timestamp of every flow id, and whether its first packet is a SYN
    without ACK (rows with flow -1 ignored)."""
    n = int(flow_id.max()) + 1 if flow_id.size else 0
    rows = np.flatnonzero(flow_id >= 0)
    o = np.lexsort((ts[rows], flow_id[rows]))
    rows = rows[o]
    f = flow_id[rows]
    head = np.r_[True, f[1:] != f[:-1]] if f.size else np.zeros(0, dtype=bool)
    tail = np.r_[f[1:] != f[:-1], True] if f.size else np.zeros(0, dtype=bool)
    first = np.zeros(n, dtype=np.int64)
    last = np.zeros(n, dtype=np.int64)
    syn = np.zeros(n, dtype=bool)
    first[f[head]] = ts[rows[head]]
    last[f[tail]] = ts[rows[tail]]
    syn[f[head]] = (flags[rows[head]] & 0x12) == 0x02
    return first, last, syn


def _argmin_by_segment(values: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Offset, within each segment starting at ``head``, of the segment's smallest value."""
    seg = np.repeat(np.arange(head.size), np.diff(np.r_[head, values.size]))
    o = np.lexsort((values, seg))
    return o[head] - head


def _tuple_keys(packets: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """A uint64 key of each row's connection tuple, the same for both directions."""
    src = packets["src"].cat.codes.to_numpy()[rows].astype(np.uint64)
    dst = packets["dst"].cat.codes.to_numpy()[rows].astype(np.uint64)
    sport = packets["sport"].to_numpy()[rows].astype(np.uint64)
    dport = packets["dport"].to_numpy()[rows].astype(np.uint64)
    a = (src << np.uint64(17)) | sport
    b = (dst << np.uint64(17)) | dport
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return (lo * GOLDEN) ^ hi


def _running_max_by_segment(values: np.ndarray, seg_start: np.ndarray) -> np.ndarray:
    """Running maximum of ``values`` restarting wherever ``seg_start`` is True."""
    if not values.size:
        return values.copy()
    seg = np.cumsum(seg_start) - 1
    # Ranks instead of values, each segment lifted above the previous one: one global
    # accumulate then computes every segment's running maximum.
    uniq, rank = np.unique(values, return_inverse=True)
    n = np.int64(uniq.size)
    lifted = seg.astype(np.int64) * n + rank.reshape(-1)
    return uniq[np.maximum.accumulate(lifted) - seg.astype(np.int64) * n]
