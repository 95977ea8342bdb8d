"""Path directions and the sighting table: every sighting of a linked packet with its
flow, connection, direction along the path (request or response) and delay behind the
packet's first sighting, the input hop ordering and latencies read
(``flowtrace.correlate.hops``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.correlate.sightings import Sightings

REQUEST, RESPONSE = 0, 1
DIRECTIONS = ("request", "response")


def sighting_table(s: Sightings, corrected_ts: np.ndarray, flow_id: np.ndarray, from_orig: np.ndarray,
                   connection: np.ndarray, flipped: np.ndarray) -> pd.DataFrame:
    """One row per sighting with its flow, connection, path direction and delay since the
    packet was first seen anywhere (corrected time), sorted by (group, corrected time).

    ``corrected_ts`` is per sighting; when ``s`` comes from ``split_groups``, it must be the
    times that split the groups (their order is reused)."""
    flow = flow_id[s.row]
    valid = flow >= 0
    group = s.group[valid]
    ct = corrected_ts[valid]
    flow = flow[valid]
    req = from_orig[s.row][valid] ^ flipped[flow]
    if s.time_order is not None:  # split_groups sorted them already: the valid ones, in that order
        order = (np.cumsum(valid) - 1)[s.time_order[valid[s.time_order]]]
    else:
        order = np.lexsort((ct, group))
    group, ct, flow, req = group[order], ct[order], flow[order], req[order]
    rows = s.row[valid][order]
    start = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if group.size else np.zeros(0, np.int64)
    first = np.repeat(ct[start], np.diff(np.r_[start, group.size])) if group.size else ct
    return pd.DataFrame({
        "row": rows,
        "group": group,
        "flow": flow,
        "connection": connection[flow],
        "direction": np.where(req, REQUEST, RESPONSE).astype(np.int8),
        "ts": ct,
        "delay": ct - first,
        "ttl": s.ttl[valid][order],
    })

