"""The correlation stage end to end: packets + flows in, connections, hops and offsets out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from flowtrace.correlate.bridges import bridge_splits
from flowtrace.correlate.clock import ClockOffset, corrected, estimate_offsets
from flowtrace.correlate.hops import build_hops
from flowtrace.correlate.link import Links, link_flows
from flowtrace.correlate.nat import DNAT, DNAT_PORT, SNAT, SNAT_PORT
from flowtrace.correlate.path import REQUEST, RESPONSE, sighting_table
from flowtrace.correlate.sightings import Sightings, build_sightings, split_groups
from flowtrace.fork import Forked, worth_forking
from flowtrace.schema import CONN_STATES, CONNECTIONS, HOPS

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
    packet_hop: np.ndarray
    """int64 per packet: its hop (hops.hop_id), -1 outside any flow."""
    packet_group: np.ndarray
    """int64 per packet: its sighting group, -1 for unmatchable packets."""
    notes: list[str] = field(default_factory=list)
    """What the correlation could not do (unaligned captures, conflicting links)."""


Resplit = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, pd.DataFrame]]
"""``resplit(rows)``: the flows built again, cut before each of ``rows`` too; returns the new
(flow_id, from_orig, flows)."""

BRIDGE_ROUNDS = 3
"""Rounds of bridge cutting at most (a cut can reveal another bridge behind it)."""


def correlate(packets: pd.DataFrame, flow_id: np.ndarray, from_orig: np.ndarray, *,
              flows: pd.DataFrame | None = None, reference: str | None = None,
              same_clock: list[set[str]] | None = None, window_ns: int = DEFAULT_WINDOW_NS,
              resplit: Resplit | None = None) -> Correlation:
    """Link the flows of every observation point into connections and order their hops.

    ``flow_id`` and ``from_orig`` give each packet's flow (-1: none) and whether its
    flow's originator sent it, aligned with ``packets`` rows; ``flows`` (the flows table)
    adds each connection's Zeek state at the client. ``reference`` names the capture whose
    clock the others are aligned to (default: one named "client", else the best linked);
    ``same_clock`` lists sets of captures taken on one host. With ``resplit``, flows that
    carry two connections seen apart at other points (flowtrace.correlate.bridges) are cut
    by building the flows again (the caller keeps the flows ``resplit`` returned last).
    """
    names = [str(c) for c in packets["capture"].cat.categories]
    s = build_sightings(packets)
    if reference is None and "client" in names:
        reference = "client"
    # Clock offsets come from the sightings alone: a second process estimates them while
    # this one cuts bridge flows.
    estimating = Forked(partial(estimate_offsets, s, reference=reference, same_clock=same_clock),
                        fork=resplit is not None and worth_forking(len(packets)))
    try:
        cut_total = 0
        if resplit is not None:
            cuts = np.zeros(0, dtype=np.int64)
            # The flows keep every start they had: a cut must only add one (a forced start
            # changes how the rules judge the packets after it, and could undo a later split).
            keep_starts = None
            look = s
            for _ in range(BRIDGE_ROUNDS):
                found, look = bridge_splits(look, flow_id, from_orig, packets)
                more = np.setdiff1d(found, cuts)
                if not more.size:
                    break
                if keep_starts is None:
                    keep_starts = flow_starts(flow_id, packets["ts_ns"].to_numpy())
                cuts = np.union1d(cuts, more)
                flow_id, from_orig, flows = resplit(np.union1d(cuts, keep_starts))
            cut_total = int(cuts.size)
        offsets = estimating.result()
    finally:
        estimating.cancel()
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
    hops, hop_of = build_hops(packets, flow_id, pdir, cts, links, st)
    hops = HOPS.conform(hops)
    connections = build_connections(hops, flows)
    notes = []
    if cut_total:
        notes.append(f"{cut_total} flows were cut where other captures show two connections in them "
                     "(a point that saw only part of the packets, e.g. a pod's reply to a reused port)")
    if links.conflicts:
        notes.append(f"{links.conflicts} links between flows disagree on the connection's direction")
    for o in offsets.values():
        if o.samples == 0 and len(names) > 1:
            notes.append(f"capture {o.capture} shares no packet with the others: its clock is not aligned")
    group_of = np.full(len(packets), -1, dtype=np.int64)
    group_of[s.row] = s.group
    return Correlation(offsets=offsets, links=links, hops=hops, connections=connections, sightings=st,
                       packet_direction=pdir, corrected_ts=cts, packet_hop=hop_of, packet_group=group_of,
                       notes=notes)


def flow_starts(flow_id: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The row that starts each flow: its earliest packet (the earlier row on a tie)."""
    rows = np.flatnonzero(flow_id >= 0)
    o = rows[np.lexsort((rows, ts[rows], flow_id[rows]))]
    f = flow_id[o]
    return o[np.r_[True, f[1:] != f[:-1]]] if o.size else o


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
    """One row per connection: client and server tuples, NAT summary, span, status.

    ``hops`` is in path order (connection, direction, hop).
    """
    if hops.empty:
        return CONNECTIONS.empty()
    conn = hops["connection"].to_numpy()
    ids, first_row_of = np.unique(conn, return_index=True)
    n = ids.size
    pos = np.searchsorted(ids, conn)
    on = hops["on_path"].to_numpy()
    req = on & (np.asarray(hops["direction"].to_numpy(), dtype=np.int64) == 0) if not isinstance(
        hops["direction"].dtype, pd.CategoricalDtype) else on & (hops["direction"].cat.codes.to_numpy() == 0)
    # First and last on-path request hop of each connection (rows are in path order);
    # a connection without any falls back to its first hop.
    req_i = np.flatnonzero(req)
    first = first_row_of.copy()
    last = first_row_of.copy()
    if req_i.size:
        p = pos[req_i]
        starts = np.r_[True, p[1:] != p[:-1]]
        ends = np.r_[p[1:] != p[:-1], True]
        first[p[starts]] = req_i[starts]
        last[p[ends]] = req_i[ends]
    data: dict[str, Any] = {"connection": ids}
    for side, rows in (("client", first), ("server", last)):
        for col in ("src", "sport", "dst", "dport", "capture"):
            s = hops[col]
            data[f"{side}_{col}"] = s.array.take(rows) if isinstance(s.dtype, pd.CategoricalDtype) else s.to_numpy()[rows]
    data["proto"] = hops["proto"].to_numpy()[first_row_of]
    data["ip_version"] = hops["ip_version"].to_numpy()[first_row_of]
    start = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(start, pos, hops["first_ts_ns"].to_numpy())
    end = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(end, pos, hops["last_ts_ns"].to_numpy())
    data["start_ts_ns"], data["end_ts_ns"], data["duration_ns"] = start, end, end - start
    data["request_hops"] = np.bincount(pos[req], minlength=n).astype(np.int32)
    data["response_hops"] = np.bincount(pos[on & ~req], minlength=n).astype(np.int32)
    flow_pairs = np.unique(pos.astype(np.int64) * (1 << 32) + hops["flow"].to_numpy())
    data["flows"] = np.bincount((flow_pairs >> 32).astype(np.int64), minlength=n).astype(np.int32)
    changes = np.zeros(n, dtype=np.int64)
    np.bitwise_or.at(changes, pos, hops["changes"].to_numpy().astype(np.int64))
    data["changes"] = changes.astype(np.int16)
    req_changes = np.zeros(n, dtype=np.int64)
    np.bitwise_or.at(req_changes, pos[req], hops["changes"].to_numpy()[req].astype(np.int64))
    data["dnat"] = (req_changes & (DNAT | DNAT_PORT)) != 0
    data["snat"] = (req_changes & (SNAT | SNAT_PORT)) != 0
    data["captures"] = _capture_lists(hops, pos, on, n)
    data["nat"] = _nat_text(hops, req, pos, n)
    state = np.full(n, None, dtype=object)
    icmp_errors = np.zeros(n, dtype=np.int64)
    if flows is not None and len(flows):
        fl = flows["conn_state"].astype(object).to_numpy()
        fid = hops["flow"].to_numpy()[first]
        ok = (fid >= 0) & (fid < fl.size)
        has_req = np.zeros(n, dtype=bool)
        if req_i.size:
            has_req[pos[req_i]] = True
        state[ok & has_req] = fl[fid[ok & has_req]]
        if "icmp_error_count" in flows:
            errs = flows["icmp_error_count"].to_numpy()
            icmp_errors[ok & has_req] = errs[fid[ok & has_req]]
    data["client_state"] = pd.Categorical(state, categories=list(CONN_STATES))
    status = np.array([_STATUS.get(st, "partial") if st is not None else "partial" for st in state], dtype=object)
    proto = np.asarray(data["proto"])
    non_tcp = proto != 6
    status[non_tcp & (data["response_hops"] > 0)] = "replied"
    status[non_tcp & (data["response_hops"] == 0)] = "no_reply"
    # An ICMP error (port or host unreachable, say) answering a request nobody replied to
    # is a rejection, as kube-proxy's REJECT for a Service without endpoints sends.
    status[(status == "no_reply") & (icmp_errors > 0)] = "rejected"
    data["status"] = status
    data["findings"] = np.zeros(n, dtype=np.int32)
    return CONNECTIONS.conform(pd.DataFrame(data))


def _capture_lists(hops: pd.DataFrame, pos: np.ndarray, on: np.ndarray, n: int) -> np.ndarray:
    """Per connection the captures its on-path hops passed, comma-separated, in path order."""
    cap = hops["capture"].cat.codes.to_numpy().astype(np.int64) if isinstance(
        hops["capture"].dtype, pd.CategoricalDtype) else pd.factorize(hops["capture"])[0]
    names = np.asarray([str(c) for c in hops["capture"].cat.categories], dtype=object) if isinstance(
        hops["capture"].dtype, pd.CategoricalDtype) else pd.factorize(hops["capture"])[1].astype(object)
    i = np.flatnonzero(on)
    key = pos[i].astype(np.int64) * 4096 + cap[i]
    _, first = np.unique(key, return_index=True)
    keep = np.sort(i[first])
    # Connections share few distinct capture sequences: join each distinct one once.
    seqs: dict[int, list[int]] = {}
    for p, c in zip(pos[keep].tolist(), cap[keep].tolist(), strict=True):
        seqs.setdefault(p, []).append(c)
    out = np.full(n, "", dtype=object)
    cache: dict[tuple[int, ...], str] = {}
    for p, codes in seqs.items():
        t = tuple(codes)
        text = cache.get(t)
        if text is None:
            text = cache[t] = ",".join(names[c] for c in t)
        out[p] = text
    return out


def _nat_text(hops: pd.DataFrame, req: np.ndarray, pos: np.ndarray, n: int) -> np.ndarray:
    """'DNAT a:p -> b:q at host; SNAT …' per connection, from its request hops' changes."""
    out = np.full(n, "", dtype=object)
    changes = hops["changes"].to_numpy()
    nat = np.flatnonzero(req & ((changes & (DNAT | DNAT_PORT | SNAT | SNAT_PORT)) != 0))
    if not nat.size:
        return out
    req_i = np.flatnonzero(req)
    prev = req_i[np.searchsorted(req_i, nat) - 1]
    def col(name: str, rows: np.ndarray) -> list:
        return hops[name].to_numpy()[rows].tolist() if not isinstance(hops[name].dtype, pd.CategoricalDtype) \
            else hops[name].astype(object).to_numpy()[rows].tolist()
    src_p, sport_p, dst_p, dport_p = (col(c, prev) for c in ("src", "sport", "dst", "dport"))
    src_c, sport_c, dst_c, dport_c = (col(c, nat) for c in ("src", "sport", "dst", "dport"))
    where = hops["changed_at"].to_numpy()[nat].tolist()
    parts: dict[int, list[str]] = {}
    for k, i in enumerate(nat.tolist()):
        w = where[k]
        at = f" at {w}" if " -> " not in w else f" between {w.replace(' -> ', ' and ')}"
        c = int(changes[i])
        p = int(pos[i])
        if c & (DNAT | DNAT_PORT):
            parts.setdefault(p, []).append(f"DNAT {_ep(dst_p[k], dport_p[k])} -> {_ep(dst_c[k], dport_c[k])}{at}")
        if c & (SNAT | SNAT_PORT):
            parts.setdefault(p, []).append(f"SNAT {_ep(src_p[k], sport_p[k])} -> {_ep(src_c[k], sport_c[k])}{at}")
    for p, texts in parts.items():
        out[p] = "; ".join(texts)
    return out


def _ep(addr: object, port: Any) -> str:
    a = str(addr)
    try:
        p = int(port)
    except (TypeError, ValueError):  # None, NaN, pd.NA: no port
        p = -1
    if p < 0:
        return a
    return f"[{a}]:{p}" if ":" in a else f"{a}:{p}"


def sightings_of(s: Sightings) -> int:
    """Number of sightings (helper for reports)."""
    return len(s)
