"""Packets one hop saw that the next hop did not, in TCP by sequence space.

A packet of hop k-1 is missing at hop k when no sighting of it exists there. TCP data
is judged by bytes, not packets: GSO on a sender and GRO on a receiver cut the same
bytes into different segments at different vantage points, so a segment is missing at
a hop only when its byte range is not covered by the segments seen there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SEQ_SPACE = 1 << 32


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


def missing_between_hops(packets: pd.DataFrame, hops: pd.DataFrame, st: pd.DataFrame) -> np.ndarray:
    """int32 per hop row: packets the previous on-path hop (same connection and direction)
    saw that this hop did not see (TCP data: bytes not covered); 0 off the path."""
    out = np.zeros(len(hops), dtype=np.int32)
    if st.empty or hops.empty:
        return out
    on = hops[hops["on_path"]] if "on_path" in hops.columns else hops
    on = on.assign(hop=on.groupby(["connection", "direction"], sort=False).cumcount())
    keys = ["connection", "direction", "hop_id"]
    at = st.merge(on[[*keys, "hop"]], on=keys, how="inner")
    present = at[["connection", "direction", "group", "hop", "row"]].drop_duplicates(
        ["connection", "direction", "group", "hop"])
    nxt = present.assign(hop=present["hop"] + 1)
    last_hop = on.groupby(["connection", "direction"])["hop"].max().rename("last")
    nxt = nxt.join(last_hop, on=["connection", "direction"])
    nxt = nxt[nxt["hop"] <= nxt["last"]]
    seen = present.set_index(["connection", "direction", "group", "hop"]).index
    absent = nxt[~nxt.set_index(["connection", "direction", "group", "hop"]).index.isin(seen)]
    if absent.empty:
        return out
    # TCP data: missing only when the next hop's flow does not cover the bytes.
    hop_at = on.set_index(["connection", "direction", "hop"])["hop_id"]
    absent = absent.join(hop_at.rename("next_hop"), on=["connection", "direction", "hop"])
    rows = absent["row"].to_numpy()
    proto = packets["proto"].to_numpy()
    plen = packets["payload_len"].to_numpy().astype(np.int64)
    seq = packets["seq"].to_numpy().astype(np.int64)
    data = (proto[rows] == 6) & (plen[rows] > 0)
    if data.any():
        ref = at[["connection", "direction", "hop_id", "row"]]
        ref = ref[(proto[ref["row"].to_numpy()] == 6) & (plen[ref["row"].to_numpy()] > 0)]
        base = pd.Series(seq[ref["row"].to_numpy()]).groupby(
            [ref["connection"].to_numpy(), ref["direction"].to_numpy()]).min()
        def rel(conn: np.ndarray, direction: np.ndarray, r: np.ndarray) -> np.ndarray:
            b = base.reindex(pd.MultiIndex.from_arrays([conn, direction])).to_numpy()
            return (seq[r] - b) % SEQ_SPACE
        rs = rel(ref["connection"].to_numpy(), ref["direction"].to_numpy(), ref["row"].to_numpy())
        re = rs + plen[ref["row"].to_numpy()]
        qa = absent[data]
        qs = rel(qa["connection"].to_numpy(), qa["direction"].to_numpy(), qa["row"].to_numpy())
        qe = qs + plen[qa["row"].to_numpy()]
        cov = covered(qa["next_hop"].to_numpy(), qs, qe, ref["hop_id"].to_numpy(), rs, re)
        keep = np.ones(len(absent), dtype=bool)
        keep[np.flatnonzero(data)[cov]] = False
        absent = absent[keep]
    counts = absent.groupby("next_hop").size()
    out[:] = counts.reindex(hops["hop_id"].to_numpy()).fillna(0).to_numpy().astype(np.int32)
    return out
