"""The hops table: every place a connection's packets were seen, with the tuple they carried
there, in path order, for the request and the response.

A hop is an observation point (capture, interface, interface index, packet direction)
together with the tuple seen there: several flows at one point (a connection reset and
retried, the same tuple reused) are one hop. The *path* of a direction is the set of
hops its best-seen packet passed (usually the SYN or the SYN-ACK); other hops of the
direction (a client's RST sent straight to a pod address, say) are kept but flagged as
off the path.

Ordering trusts the packets over the clocks: a higher TTL is upstream; among the
captures at one TTL, a capture where the packet leaves a host precedes one where it
arrives, and only then the clock-corrected delay decides (pods and their node share a
kernel, whose timestamps can lag or lead the packet's real arrival by microseconds).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.correlate.coverage import PathSightings, missing_between_hops, path_sightings
from flowtrace.correlate.link import Links
from flowtrace.correlate.nat import change_labels, change_mask
from flowtrace.correlate.path import DIRECTIONS
from flowtrace.correlate.sightings import DIR_IN, DIR_OUT, observed_directions

_TUPLE = ("capture", "interface", "ifindex", "direction", "src", "dst", "sport", "dport")
_DESCRIBE = ("capture", "interface", "ifindex", "direction", "src", "dst", "sport", "dport", "encap",
             "outer_src", "outer_dst", "vni", "proto", "ip_version")


def hop_keys(packets: pd.DataFrame, flow_id: np.ndarray, pdir: np.ndarray,
             connection: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 hop id of every packet row (-1 outside any flow): equal for packets of one
    connection and direction seen at one observation point with one tuple; and the number
    of flows of each hop id.

    A flow is already one observation point and one tuple per direction, so the key is
    computed per (flow, direction) from its first packet and spread back to the packets.
    """
    out = np.full(len(packets), -1, dtype=np.int64)
    rows = np.flatnonzero(flow_id >= 0)
    if not rows.size:
        return out, np.zeros(0, dtype=np.int64)
    fd = flow_id[rows] * 2 + (pdir[rows] == 1)
    uniq, first, inverse = np.unique(fd, return_index=True, return_inverse=True)
    rep = rows[first]
    cols = {"c": connection[uniq // 2], "d": uniq % 2}
    for name in _TUPLE:
        s = packets[name]
        cols[name] = (s.cat.codes.to_numpy() if isinstance(s.dtype, pd.CategoricalDtype) else s.to_numpy())[rep]
    frame = pd.DataFrame(cols)
    ids = frame.groupby(list(frame.columns), sort=False, observed=True, dropna=False).ngroup().to_numpy()
    out[rows] = ids[inverse.reshape(-1)]
    # The direction is part of the key: each (flow, direction) is one flow of its hop.
    return out, np.bincount(ids)


def build_hops(packets: pd.DataFrame, flow_id: np.ndarray, pdir: np.ndarray, cts: np.ndarray,
               links: Links, st: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The hops table and every packet's hop id (see module doc and schema HOPS)."""
    hop_of, flows_of_hop = hop_keys(packets, flow_id, pdir, links.connection)
    rows = np.flatnonzero(hop_of >= 0)
    hid = hop_of[rows]
    order = np.lexsort((cts[rows], hid))
    rows, hid = rows[order], hid[order]
    starts = np.flatnonzero(np.r_[True, hid[1:] != hid[:-1]]) if hid.size else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], hid.size] - 1 if hid.size else starts
    flow = flow_id[rows]
    ts = cts[rows]
    n_flows = flows_of_hop[hid[starts]]
    hops = pd.DataFrame({
        "hop_id": hid[starts],
        "connection": links.connection[flow[starts]] if flow.size else flow,
        "direction": pdir[rows[starts]],
        "first_row": rows[starts],
        "first_ts_ns": ts[starts],
        "last_ts_ns": ts[ends],
        "ttl": np.maximum.reduceat(packets["ttl"].to_numpy()[rows], starts) if starts.size else starts,
        "packets": np.diff(np.r_[starts, hid.size]).astype(np.int64),
        "ip_bytes": np.add.reduceat(packets["ip_len"].to_numpy()[rows].astype(np.int64), starts)
        if starts.size else starts,
        "flow": flow[starts],
        "flows": n_flows.astype(np.int32),
    })
    st = st.assign(hop_id=hop_of[st["row"].to_numpy()])
    st = st[st["hop_id"] >= 0]
    if not st.empty:
        hops = hops.join(st.groupby("hop_id")["delay"].median().rename("delay_ns"), on="hop_id")
    else:
        hops["delay_ns"] = np.nan
    start = hops.groupby(["connection", "direction"])["first_ts_ns"].transform("min")
    hops["delay_ns"] = hops["delay_ns"].fillna(hops["first_ts_ns"] - start).round().astype(np.int64)
    hops["on_path"], anchor_ttl = _on_path(hops, st)
    # Order by the TTL the path's packet had there: other packets of the same hop (a RST
    # that took a shorter route, say) may carry other TTLs.
    hops["ttl"] = np.where(anchor_ttl >= 0, anchor_ttl, hops["ttl"].to_numpy())
    first = hops["first_row"].to_numpy()
    tuples = np.stack([packets["src"].cat.codes.to_numpy()[first].astype(np.int64), packets["sport"].to_numpy()[first],
                       packets["dst"].cat.codes.to_numpy()[first].astype(np.int64), packets["dport"].to_numpy()[first]],
                      axis=1)
    hops = order_hops(hops, packets["capture"].cat.codes.to_numpy()[first], observed_directions(packets)[first], tuples)
    r = hops["first_row"].to_numpy()
    for col in _DESCRIBE:
        s = packets[col]
        # Categoricals stay categoricals (a take of their codes), never Python strings.
        values = s.array.take(r) if isinstance(s.dtype, pd.CategoricalDtype) else s.to_numpy()[r]
        hops["packet_direction" if col == "direction" else col] = values
    hops["first_frame"] = packets["frame"].to_numpy()[r]
    _changes(hops)
    ps = path_sightings(hops, st) if not st.empty else None
    _latencies(hops, st, ps)
    hops["missing"] = missing_between_hops(packets, hops, st, ps)
    direction = hops["direction"].to_numpy()
    # Few distinct (changes, direction) pairs: label each once.
    key = hops["changes"].to_numpy().astype(np.int64) * 2 + direction
    uniq, inv = np.unique(key, return_inverse=True)
    names = np.array([", ".join(change_labels(int(k // 2), int(k % 2))) for k in uniq] or [""], dtype=object)
    hops["change_labels"] = names[inv.reshape(-1)] if len(hops) else []
    hops["direction"] = pd.Categorical.from_codes(direction.astype(np.int8), categories=list(DIRECTIONS))
    return hops, hop_of


def _on_path(hops: pd.DataFrame, st: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Hops the best-seen packet of their connection and direction passed, and that
    packet's TTL at each hop (-1 where it was not seen).

    The best-seen packet of a (connection, direction) is the sighting group with the most
    sightings (the earliest among equals). ``st`` is sorted by (group, time), as
    ``sighting_table`` makes it, with a ``hop_id`` column."""
    n = len(hops)
    on = np.ones(n, dtype=bool)
    ttl = np.full(n, -1, dtype=np.int64)
    if st.empty:
        return on, ttl
    g = st["group"].to_numpy()
    cd = st["connection"].to_numpy() * 2 + st["direction"].to_numpy().astype(np.int64)
    # One run of rows per group, its earliest sighting first.
    start = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    size = np.diff(np.r_[start, g.size])
    gcd = cd[start]
    # Rank groups within their connection direction: most sightings, then earliest.
    order = np.lexsort((st["ts"].to_numpy()[start], -size, gcd))
    best = order[np.r_[True, gcd[order][1:] != gcd[order][:-1]]]
    anchor = np.zeros(start.size, dtype=bool)
    anchor[best] = True
    in_anchor = np.repeat(anchor, size)
    hop_ids = st["hop_id"].to_numpy()[in_anchor]
    ids = hops["hop_id"].to_numpy()
    width = int(max(ids.max(), hop_ids.max(initial=-1))) + 1
    passed = np.zeros(width, dtype=bool)
    passed[hop_ids] = True
    hops_cd = hops["connection"].to_numpy() * 2 + hops["direction"].to_numpy().astype(np.int64)
    on = ~np.isin(hops_cd, gcd[best]) | passed[ids]
    at = np.full(width, -1, dtype=np.int64)
    np.maximum.at(at, hop_ids, st["ttl"].to_numpy()[in_anchor].astype(np.int64))
    return on, at[ids]


def order_hops(hops: pd.DataFrame, capture_code: np.ndarray, guessed_dir: np.ndarray,
               tuples: np.ndarray) -> pd.DataFrame:
    """Sort hops by (-TTL, capture role within the TTL tier, delay) and number them.

    Within one TTL tier, the hops of one capture form a unit; a unit whose first hop has
    the packet leaving its host comes first (a sender), one whose last hop has it arriving
    comes last (a receiver), anything else in between; units of equal rank by delay.
    ``tuples`` (one row of (src, sport, dst, dport) codes per hop) breaks ties of time.
    Returns ``hops`` in that order with a new index and ``hop``, the position of each
    within its connection and direction.
    """
    if hops.empty:
        return hops.assign(hop=np.zeros(0, dtype=np.int32))
    conn = hops["connection"].to_numpy()
    dirn = np.asarray(hops["direction"].to_numpy(), dtype=np.int64)
    ttl = hops["ttl"].to_numpy().astype(np.int64)
    cap = np.asarray(capture_code, dtype=np.int64)
    delay = hops["delay_ns"].to_numpy()
    first_ts = hops["first_ts_ns"].to_numpy()
    first_row = hops["first_row"].to_numpy()
    # Units (connection, direction, TTL, capture), each in order of delay, time and frame.
    o = np.lexsort((first_row, first_ts, delay, cap, ttl, dirn, conn))
    unit_start = _starts(conn[o], dirn[o], ttl[o], cap[o])
    unit = np.cumsum(unit_start) - 1
    heads = np.flatnonzero(unit_start)
    tails = np.r_[heads[1:], o.size] - 1
    g = np.asarray(guessed_dir)[o]
    rank = np.where(g[heads] == DIR_OUT, 0, np.where(g[tails] == DIR_IN, 2, 1))[unit]
    unit_delay = delay[o][heads][unit]
    # Ties of TTL and time fall back to the order above, as in the sort below.
    changed = _differs_from_origin(conn[o], dirn[o], ttl[o], first_ts[o], np.asarray(tuples)[o])
    # Equal timestamps inside one capture: a hop still carrying the tuple the packet started
    # with comes before one carrying a translated tuple (a translation happens once), then
    # frame order, the order the kernel handed the packet to the capture.
    o = o[np.lexsort((first_row[o], changed, first_ts[o], delay[o], cap[o], unit_delay, rank, -ttl[o], dirn[o],
                      conn[o]))]
    out = hops.iloc[o].reset_index(drop=True)
    pair_start = np.flatnonzero(_starts(conn[o], dirn[o]))
    out["hop"] = (np.arange(o.size) - np.repeat(pair_start, np.diff(np.r_[pair_start, o.size]))).astype(np.int32)
    return out


def _starts(*keys: np.ndarray) -> np.ndarray:
    """Where a run of equal key tuples starts in sorted ``keys``."""
    start = np.zeros(keys[0].size, dtype=bool)
    if start.size:
        start[0] = True
        for k in keys:
            start[1:] |= k[1:] != k[:-1]
    return start


def _differs_from_origin(conn: np.ndarray, dirn: np.ndarray, ttl: np.ndarray, first_ts: np.ndarray,
                         tuples: np.ndarray) -> np.ndarray:
    """Per hop: whether its tuple (a row of ``tuples``) differs from the one of its
    direction's origin (the hop of highest TTL, earliest first)."""
    o = np.lexsort((first_ts, -ttl, dirn, conn))
    start = _starts(conn[o], dirn[o])
    origin = np.empty(o.size, dtype=np.int64)
    origin[o] = o[np.flatnonzero(start)[np.cumsum(start) - 1]]
    return (tuples != tuples[origin]).any(axis=1)


def path_ranks(hops: pd.DataFrame) -> np.ndarray:
    """int64 per hop row: its position among the on-path hops of its connection and
    direction (0 = most upstream), -1 off the path. Rows must be in path order."""
    rank = np.full(len(hops), -1, dtype=np.int64)
    on = np.flatnonzero(hops["on_path"].to_numpy())
    if on.size:
        key = hops["connection"].to_numpy()[on] * 2 + np.asarray(hops["direction"].to_numpy()[on], dtype=np.int64)
        start = np.r_[True, key[1:] != key[:-1]]
        block = np.cumsum(start) - 1
        first = np.flatnonzero(start)
        rank[on] = np.arange(on.size) - first[block]
    return rank


def _codes(values: object) -> np.ndarray:
    """Comparable integers for a column: categorical codes, else the values themselves."""
    if isinstance(values, pd.Categorical):
        return values.codes.astype(np.int64)
    return np.asarray(values)


def _changes(hops: pd.DataFrame) -> None:
    """Changes and where they happened, against the previous on-path hop."""
    n = len(hops)
    hops["changes"] = np.zeros(n, dtype=np.int16)
    hops["latency_ns"] = np.zeros(n, dtype=np.int64)
    hops["changed_at"] = np.full(n, "", dtype=object)
    rank = path_ranks(hops)
    cur_i = np.flatnonzero(rank > 0)
    if not cur_i.size:
        return
    on = np.flatnonzero(rank >= 0)
    pos = np.searchsorted(on, cur_i)
    prev_i = on[pos - 1]
    cols = ("src", "dst", "sport", "dport", "encap", "ttl")
    arrays = {c: _codes(hops[c].array if isinstance(hops[c].dtype, pd.CategoricalDtype) else hops[c].to_numpy())
              for c in cols}
    none = list(hops["encap"].cat.categories).index("none") if isinstance(hops["encap"].dtype, pd.CategoricalDtype) \
        else "none"
    p = pd.DataFrame({c: arrays[c][prev_i] for c in cols})
    c = pd.DataFrame({c: arrays[c][cur_i] for c in cols})
    mask = change_mask(p, c, np.asarray(hops["direction"].to_numpy()[cur_i], dtype=np.int64), none=none)
    changes = np.zeros(n, dtype=np.int16)
    changes[cur_i] = mask
    hops["changes"] = changes
    delay = hops["delay_ns"].to_numpy()
    latency = np.zeros(n, dtype=np.int64)
    latency[cur_i] = delay[cur_i] - delay[prev_i]
    hops["latency_ns"] = latency
    changed = np.flatnonzero(mask != 0)
    if changed.size:
        cap = np.asarray(hops["capture"].astype(object).to_numpy()[np.r_[prev_i[changed], cur_i[changed]]])
        a, b = cap[: changed.size], cap[changed.size:]
        at = hops["changed_at"].to_numpy().copy()
        at[cur_i[changed]] = np.where(a == b, b, a + " -> " + b)
        hops["changed_at"] = at


def _latencies(hops: pd.DataFrame, st: pd.DataFrame, ps: PathSightings | None) -> None:
    """latency_ns of each on-path hop: the median, over packets seen at both, of the time
    from the previous on-path hop to this one (corrected clocks). Hops sharing no packet
    with the previous one keep the difference of their median delays. ``ps`` are the
    PathSightings of ``st`` (None when it is empty)."""
    if st.empty or ps is None:
        return
    g, r = ps.group, ps.rank
    t, h = st["ts"].to_numpy()[ps.at], st["hop_id"].to_numpy()[ps.at]
    nxt = np.flatnonzero((g[1:] == g[:-1]) & (r[1:] == r[:-1] + 1)) + 1
    if not nxt.size:
        return
    lat = pd.Series(t[nxt] - t[nxt - 1]).groupby(h[nxt]).median().round().astype(np.int64)
    ids = hops["hop_id"].to_numpy()
    pos = np.searchsorted(lat.index.to_numpy(), ids)
    pos = np.minimum(pos, lat.size - 1)
    hit = lat.index.to_numpy()[pos] == ids
    latency = hops["latency_ns"].to_numpy().copy()
    latency[hit] = lat.to_numpy()[pos[hit]]
    hops["latency_ns"] = latency
