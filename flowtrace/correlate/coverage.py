"""Packets one hop saw that the next hop did not, in TCP by sequence space.

A packet of hop k-1 is missing at hop k when no sighting of it exists there. TCP data
is judged by bytes, not packets: GSO on a sender and GRO on a receiver cut the same
bytes into different segments at different vantage points, so a segment is missing at
a hop only when its byte range is not covered by the segments seen there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SEQ_SPACE = 1 << 32


@dataclass(frozen=True, slots=True)
class PathSightings:
    """The earliest sighting of each packet (sighting group) at each on-path rank of its
    direction, sorted by (group, rank)."""

    group: np.ndarray
    """int64 sighting group."""
    rank: np.ndarray
    """int64 position of the hop among the on-path hops of its direction (0: upstream)."""
    at: np.ndarray
    """int64 row of the sighting in the sighting table."""
    rank_of: np.ndarray
    """int64 on-path rank per hop id, -1 off the path."""


def path_sightings(hops: pd.DataFrame, st: pd.DataFrame) -> PathSightings:
    """PathSightings of ``st`` (the sighting table, sorted by (group, time), with
    ``hop_id``) along ``hops`` (in path order, with ``on_path`` and ``hop_id``)."""
    from flowtrace.correlate.hops import path_ranks

    hop_ids = hops["hop_id"].to_numpy()
    rank_of = np.full(int(hop_ids.max(initial=-1)) + 1, -1, dtype=np.int64)
    rank_of[hop_ids] = path_ranks(hops)
    rank = rank_of[st["hop_id"].to_numpy()] if len(st) else np.zeros(0, dtype=np.int64)
    keep = np.flatnonzero(rank >= 0)
    g, r = st["group"].to_numpy()[keep], rank[keep]
    # Stable sorts keep each (group, rank)'s earliest sighting first; with ranks below
    # 4096 both fit one key, nearly sorted already (st is sorted by group).
    if not r.size or r.max() < 4096:
        order = np.argsort(g * 4096 + r, kind="stable")
    else:  # pragma: no cover - a path of 4,096 hops
        order = np.lexsort((r, g))
    g, r = g[order], r[order]
    first = np.r_[True, (g[1:] != g[:-1]) | (r[1:] != r[:-1])] if g.size else np.zeros(0, dtype=bool)
    return PathSightings(group=g[first], rank=r[first], at=keep[order[first]], rank_of=rank_of)


def _merged_intervals(flow: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union of [start, end) intervals per flow: (flow, start, end) sorted by (flow, start)."""
    order = np.lexsort((start, flow))
    f, s, e = flow[order], start[order], end[order]
    if not f.size:
        return f, s, e
    # Running maximum of ends within each flow; a new interval starts where the previous
    # running end does not reach this start (or the flow changes).
    new_flow = np.r_[True, f[1:] != f[:-1]]
    block = np.cumsum(new_flow)
    run_end = pd.Series(e).groupby(block).cummax().to_numpy()
    breaks = new_flow | np.r_[True, s[1:] > run_end[:-1]]
    ids = np.cumsum(breaks) - 1
    starts = s[breaks]
    ends = pd.Series(run_end).groupby(ids).max().to_numpy()
    return f[breaks], starts, ends


def covered(query_flow: np.ndarray, q_start: np.ndarray, q_end: np.ndarray,
            flow: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Mask: is [q_start, q_end) inside the union of intervals of ``query_flow``?"""
    mf, ms, me = _merged_intervals(flow, start, end)
    if not mf.size or not query_flow.size:
        return np.zeros(query_flow.size, dtype=bool)
    key = mf.astype(np.int64) * (SEQ_SPACE * 4) + ms
    qkey = query_flow.astype(np.int64) * (SEQ_SPACE * 4) + q_start
    pos = np.searchsorted(key, qkey, side="right") - 1
    ok = pos >= 0
    pos = np.maximum(pos, 0)
    return ok & (mf[pos] == query_flow) & (ms[pos] <= q_start) & (me[pos] >= q_end)


def missing_between_hops(packets: pd.DataFrame, hops: pd.DataFrame, st: pd.DataFrame,
                         ps: PathSightings | None = None) -> np.ndarray:
    """int32 per hop row: packets the previous on-path hop (same connection and direction)
    saw that this hop did not see (TCP data: bytes not covered); 0 off the path.

    ``hops`` must be in path order with ``on_path`` and ``hop_id``; ``st`` is the sighting
    table with ``hop_id``; ``ps`` their PathSightings, when already made.
    """
    out = np.zeros(len(hops), dtype=np.int32)
    if st.empty or hops.empty:
        return out
    ps = ps if ps is not None else path_sightings(hops, st)
    hop_ids = hops["hop_id"].to_numpy()
    ranks = ps.rank_of[hop_ids]
    # The hop id at each (connection, direction, rank), and the last rank of each path.
    conn_dir = hops["connection"].to_numpy() * 2 + np.asarray(hops["direction"].to_numpy(), dtype=np.int64)
    on = ranks >= 0
    path_key = conn_dir[on] * (1 << 20) + ranks[on]
    path_hop = hop_ids[on]
    sort = np.argsort(path_key)
    path_key, path_hop = path_key[sort], path_hop[sort]
    sid = st["hop_id"].to_numpy()
    g, r = ps.group, ps.rank
    rows = st["row"].to_numpy()[ps.at]
    cd = st["connection"].to_numpy()[ps.at] * 2 + st["direction"].to_numpy()[ps.at].astype(np.int64)
    # (g, r) present and (g, r + 1) absent, with rank r + 1 existing on that path.
    followed = np.r_[(g[1:] == g[:-1]) & (r[1:] == r[:-1] + 1), False]
    want = cd * (1 << 20) + r + 1
    pos = np.searchsorted(path_key, want)
    exists = (pos < path_key.size) & (path_key[np.minimum(pos, path_key.size - 1)] == want)
    cand = ~followed & exists
    if not cand.any():
        return out
    next_hop = path_hop[pos[cand]]
    rows_c = rows[cand]
    # TCP data: missing only when the next hop's segments do not cover the bytes.
    proto = packets["proto"].to_numpy()
    plen = packets["payload_len"].to_numpy().astype(np.int64)
    data = (proto[rows_c] == 6) & (plen[rows_c] > 0)
    if data.any():
        seq = packets["seq"].to_numpy().astype(np.int64)
        on_path = ps.rank_of[sid] >= 0
        ref_hop = sid[on_path]
        ref_rows = st["row"].to_numpy()[on_path]
        use = np.isin(ref_hop, np.unique(next_hop[data])) & (proto[ref_rows] == 6) & (plen[ref_rows] > 0)
        ref_hop, ref_rows = ref_hop[use], ref_rows[use]
        # Sequence numbers relative to half the space below one of the hop's own (NAT
        # does not rewrite sequence space): every segment within 2 GiB of it, wrapped or
        # not, lands in order in [0, 2**32).
        base_of = pd.Series(seq[rows_c[data]]).groupby(next_hop[data]).first() - SEQ_SPACE // 2
        qs = (seq[rows_c[data]] - base_of.reindex(next_hop[data]).to_numpy()) % SEQ_SPACE
        rs = (seq[ref_rows] - base_of.reindex(ref_hop).to_numpy()) % SEQ_SPACE
        cov = covered(next_hop[data], qs, qs + plen[rows_c[data]], ref_hop, rs, rs + plen[ref_rows])
        drop = np.zeros(next_hop.size, dtype=bool)
        drop[np.flatnonzero(data)[cov]] = True
        next_hop = next_hop[~drop]
    counts = pd.Series(np.ones(next_hop.size, dtype=np.int32)).groupby(next_hop).sum()
    out[:] = counts.reindex(hop_ids).fillna(0).to_numpy().astype(np.int32)
    return out
