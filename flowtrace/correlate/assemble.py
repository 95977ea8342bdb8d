"""The correlation stage end to end: packets + flows in, connections, hops and offsets out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from flowtrace.correlate.clock import ClockOffset, corrected, estimate_offsets
from flowtrace.correlate.hops import build_hops
from flowtrace.correlate.link import Links, link_flows
from flowtrace.correlate.nat import DNAT, DNAT_PORT, SNAT, SNAT_PORT
from flowtrace.correlate.path import REQUEST, RESPONSE, sighting_table
from flowtrace.correlate.sightings import Sightings, build_sightings, split_groups
from flowtrace.schema import CONNECTIONS, HOPS

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
              flows: pd.DataFrame | None = None, reference: str | None = None,
              same_clock: list[set[str]] | None = None, window_ns: int = DEFAULT_WINDOW_NS) -> Correlation:
    """Link the flows of every observation point into connections and order their hops.

    ``flow_id`` and ``from_orig`` give each packet's flow (-1: none) and whether its
    flow's originator sent it, aligned with ``packets`` rows; ``flows`` (the flows table)
    adds each connection's Zeek state at the client. ``reference`` names the capture whose
    clock the others are aligned to (default: one named "client", else the best linked);
    ``same_clock`` lists sets of captures taken on one host.
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
    hops = HOPS.conform(hops)
    connections = build_connections(hops, flows)
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


_STATUS = {"SF": "closed", "S1": "established", "S2": "established", "S3": "established",
           "RSTO": "reset", "RSTR": "reset", "RSTOS0": "reset", "RSTRH": "reset", "REJ": "rejected",
           "S0": "no_reply", "SH": "no_reply", "SHR": "partial", "OTH": "partial"}


def build_connections(hops: pd.DataFrame, flows: pd.DataFrame | None) -> pd.DataFrame:
    """One row per connection: client and server tuples, NAT summary, span, status."""
    if hops.empty:
        return CONNECTIONS.empty()
    on = hops[hops["on_path"]]
    req = on[on["direction"] == "request"]
    any_first = hops.sort_values(["connection", "direction", "hop"]).drop_duplicates("connection")
    first = req.loc[req.groupby("connection")["hop"].idxmin()].set_index("connection")
    last = req.loc[req.groupby("connection")["hop"].idxmax()].set_index("connection")
    by = hops.groupby("connection")
    conns = pd.DataFrame(index=pd.Index(np.unique(hops["connection"].to_numpy()), name="connection"))
    fallback = any_first.set_index("connection")
    for side, frame in (("client", first), ("server", last)):
        for col in ("src", "sport", "dst", "dport", "capture"):
            conns[f"{side}_{col}"] = frame[col].reindex(conns.index).fillna(fallback[col].reindex(conns.index))
    conns["proto"] = by["proto"].first()
    conns["ip_version"] = by["ip_version"].first()
    conns["start_ts_ns"] = by["first_ts_ns"].min()
    conns["end_ts_ns"] = by["last_ts_ns"].max()
    conns["duration_ns"] = conns["end_ts_ns"] - conns["start_ts_ns"]
    conns["request_hops"] = req.groupby("connection").size().reindex(conns.index).fillna(0).astype(np.int32)
    conns["response_hops"] = on[on["direction"] == "response"].groupby("connection").size() \
        .reindex(conns.index).fillna(0).astype(np.int32)
    conns["flows"] = by["flow"].nunique().astype(np.int32)
    ordered = on.sort_values(["connection", "direction", "hop"])
    conns["captures"] = ordered.groupby("connection")["capture"].agg(lambda x: ",".join(dict.fromkeys(map(str, x))))
    conns["captures"] = conns["captures"].fillna("")
    changes = by["changes"].agg(lambda x: int(np.bitwise_or.reduce(x.to_numpy()))).astype(np.int16)
    conns["changes"] = changes
    req_changes = req.groupby("connection")["changes"].agg(lambda x: int(np.bitwise_or.reduce(x.to_numpy()))) \
        .reindex(conns.index).fillna(0).astype(np.int64)
    conns["dnat"] = (req_changes & (DNAT | DNAT_PORT)) != 0
    conns["snat"] = (req_changes & (SNAT | SNAT_PORT)) != 0
    conns["nat"] = _nat_text(req).reindex(conns.index).fillna("")
    state = pd.Series(np.nan, index=conns.index, dtype=object)
    if flows is not None and len(flows) and len(first):
        fl = flows.set_index("flow_id")["conn_state"].astype(object)
        state = first["flow"].map(fl).reindex(conns.index)
    conns["client_state"] = state
    proto = conns["proto"].to_numpy()
    status = np.array([_STATUS.get(st, "partial") if isinstance(st, str) else "partial" for st in state], dtype=object)
    non_tcp = proto != 6
    status[non_tcp & (conns["response_hops"].to_numpy() > 0)] = "replied"
    status[non_tcp & (conns["response_hops"].to_numpy() == 0)] = "no_reply"
    conns["status"] = status
    conns["findings"] = np.zeros(len(conns), dtype=np.int32)
    return CONNECTIONS.conform(conns.reset_index())


def _nat_text(req: pd.DataFrame) -> pd.Series:
    """'DNAT a:p -> b:q at host; SNAT …' per connection from its request hops' changes."""
    parts: dict[int, list[str]] = {}
    req = req.sort_values(["connection", "hop"])
    prev = req.groupby("connection").shift(1)
    nat = (req["changes"].to_numpy() & (DNAT | DNAT_PORT | SNAT | SNAT_PORT)) != 0
    for (idx, cur), (_, p) in zip(req[nat].iterrows(), prev[nat].iterrows(), strict=True):
        where = cur["changed_at"]
        at = f" at {where}" if " -> " not in where else f" between {where.replace(' -> ', ' and ')}"
        if cur["changes"] & (DNAT | DNAT_PORT):
            parts.setdefault(cur["connection"], []).append(
                f"DNAT {_ep(p['dst'], p['dport'])} -> {_ep(cur['dst'], cur['dport'])}{at}")
        if cur["changes"] & (SNAT | SNAT_PORT):
            parts.setdefault(cur["connection"], []).append(
                f"SNAT {_ep(p['src'], p['sport'])} -> {_ep(cur['src'], cur['sport'])}{at}")
        del idx
    return pd.Series({k: "; ".join(v) for k, v in parts.items()}, dtype=object)


def _ep(addr: object, port: object) -> str:
    a = str(addr)
    p = int(port) if port is not None and not pd.isna(port) else -1
    if p < 0:
        return a
    return f"[{a}]:{p}" if ":" in a else f"{a}:{p}"


def sightings_of(s: Sightings) -> int:
    """Number of sightings (helper for reports)."""
    return len(s)
