"""The correlation stage end to end: packets + flows in, connections, hops and offsets out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from flowtrace.correlate.clock import ClockOffset, corrected, estimate_offsets
from flowtrace.correlate.hops import build_hops
from flowtrace.correlate.link import Links, link_flows
from flowtrace.correlate.path import REQUEST, RESPONSE, sighting_table
from flowtrace.correlate.sightings import Sightings, build_sightings, split_groups

DEFAULT_WINDOW_NS = 200_000_000
"""Sightings of one weak signature further apart than this (aligned clocks) are different packets."""


@dataclass(slots=True, kw_only=True)
class Correlation:
    """Everything the correlation stage found."""

    offsets: dict[str, ClockOffset]
    """Clock offset of every capture relative to the reference capture."""
    links: Links
    """Connection of every flow and the orientation reconciling the flows."""
    hops: pd.DataFrame
    """One row per (connection, direction, flow) in path order (see schema HOPS)."""
    connections: pd.DataFrame
    """One row per connection (see schema CONNECTIONS)."""
    sightings: pd.DataFrame
    """One row per sighting of a shared packet: row, group, flow, connection, direction, ts, delay."""
    packet_direction: np.ndarray
    """int8 per packet: REQUEST, RESPONSE, or -1 for packets outside any flow."""
    corrected_ts: np.ndarray
    """int64 per packet: ts_ns in the reference capture's clock."""
    notes: list[str] = field(default_factory=list)
    """What the correlation could not do (unaligned captures, conflicting links)."""


def correlate(packets: pd.DataFrame, flow_id: np.ndarray, from_orig: np.ndarray, *,
              reference: str | None = None, same_clock: list[set[str]] | None = None,
              window_ns: int = DEFAULT_WINDOW_NS) -> Correlation:
    """Link the flows of every observation point into connections and order their hops.

    ``flow_id`` and ``from_orig`` give each packet's flow (-1: none) and whether its
    flow's originator sent it, aligned with ``packets`` rows.
    """
    names = [str(c) for c in packets["capture"].cat.categories]
    s = build_sightings(packets)
    if reference is None and "client" in names:
        reference = "client"
    offsets = estimate_offsets(s, reference=reference, same_clock=same_clock)
    for name in names:
        offsets.setdefault(name, ClockOffset(capture=name, offset_ns=0, uncertainty_ns=None, lower_ns=None,
                                             upper_ns=None, reference=reference or name, samples=0))
    capture_code = packets["capture"].cat.codes.to_numpy()
    ts = packets["ts_ns"].to_numpy()
    cts = corrected(ts, capture_code, offsets, names)
    s = split_groups(s, cts[s.row], window_ns)
    n_flows = int(flow_id.max()) + 1 if flow_id.size and flow_id.max() >= 0 else 0
    links = link_flows(s, flow_id, from_orig, n_flows)
    st = sighting_table(s, cts[s.row], flow_id, from_orig, links.connection, links.flipped)
    has_flow = flow_id >= 0
    pdir = np.full(len(packets), -1, dtype=np.int8)
    pdir[has_flow] = np.where(from_orig[has_flow] ^ links.flipped[flow_id[has_flow]], REQUEST, RESPONSE)
    _orient_connections(packets, flow_id, pdir, links, cts)
    st["direction"] = pdir[st["row"].to_numpy()]
    hops, _ = build_hops(packets, flow_id, pdir, cts, links, st)
    connections = build_connections(packets, hops, links)
    notes = []
    if links.conflicts:
        notes.append(f"{links.conflicts} links between flows disagree on the connection's direction")
    for o in offsets.values():
        if o.samples == 0 and len(names) > 1:
            notes.append(f"capture {o.capture} shares no packet with the others: its clock is not aligned")
    return Correlation(offsets=offsets, links=links, hops=hops, connections=connections, sightings=st,
                       packet_direction=pdir, corrected_ts=cts, notes=notes)


def _orient_connections(packets: pd.DataFrame, flow_id: np.ndarray, pdir: np.ndarray, links: Links,
                        cts: np.ndarray) -> None:
    """Make REQUEST the direction of whoever opened the connection (sent the first SYN, else
    the first packet); flips ``pdir`` and ``links.flipped`` in place where needed."""
    rows = np.flatnonzero(flow_id >= 0)
    if not rows.size:
        return
    conn = links.connection[flow_id[rows]]
    flags = packets["tcp_flags"].to_numpy()[rows]
    syn = (flags & 0x12) == 0x02
    frame = pd.DataFrame({"conn": conn, "syn": ~syn, "ts": cts[rows], "dir": pdir[rows]})
    first = frame.sort_values(["conn", "syn", "ts"], kind="stable").groupby("conn", sort=False)["dir"].first()
    wrong = first.index.to_numpy()[first.to_numpy() == RESPONSE]
    if not wrong.size:
        return
    flip_conn = np.zeros(int(links.connection.max()) + 1, dtype=bool)
    flip_conn[wrong] = True
    links.flipped ^= flip_conn[links.connection]
    sel = flip_conn[conn]
    pdir[rows[sel]] = np.where(pdir[rows[sel]] == REQUEST, RESPONSE, REQUEST)


def build_connections(packets: pd.DataFrame, hops: pd.DataFrame, links: Links) -> pd.DataFrame:
    """One row per connection: client and server tuples, NAT summary, span, hop counts."""
    if hops.empty:
        return pd.DataFrame(columns=["connection"])
    req = hops[(hops["direction"] == "request") & hops["on_path"]]
    first = req.loc[req.groupby("connection")["hop"].idxmin()].set_index("connection")
    last = req.loc[req.groupby("connection")["hop"].idxmax()].set_index("connection")
    conns = pd.DataFrame(index=pd.Index(np.unique(hops["connection"].to_numpy()), name="connection"))
    for side, frame in (("client", first), ("server", last)):
        for col in ("src", "sport", "dst", "dport"):
            conns[f"{side}_{col}"] = frame[col]
        conns[f"{side}_capture"] = frame["capture"]
    conns["proto"] = hops.groupby("connection")["proto"].first()
    conns["ip_version"] = hops.groupby("connection")["ip_version"].first()
    conns["start_ts_ns"] = hops.groupby("connection")["first_ts_ns"].min()
    conns["end_ts_ns"] = hops.groupby("connection")["last_ts_ns"].max()
    conns["request_hops"] = req.groupby("connection").size()
    conns["response_hops"] = hops[(hops["direction"] == "response") & hops["on_path"]].groupby("connection").size()
    conns["captures"] = hops.groupby("connection")["capture"].agg(lambda x: ",".join(dict.fromkeys(x)))
    changes = hops.groupby("connection")["changes"].agg(lambda x: int(np.bitwise_or.reduce(x.to_numpy())))
    conns["changes"] = changes
    conns["flows"] = hops.groupby("connection")["flow"].nunique()
    conns["request_hops"] = conns["request_hops"].fillna(0).astype(np.int32)
    conns["response_hops"] = conns["response_hops"].fillna(0).astype(np.int32)
    return conns.reset_index()


def sightings_of(s: Sightings) -> int:
    """Number of sightings (helper for reports)."""
    return len(s)
