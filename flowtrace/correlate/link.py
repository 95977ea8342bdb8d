"""Linking flows seen at different observation points into one connection.

Two flows belong to one connection when they carried the same packet (a sighting group
spans both). Components of that graph are connections. Each flow's orientation (which
of its endpoints is the originator) was decided at its own observation point; a flow
that started mid-connection may have it reversed, so orientations are reconciled along
the links: the same packet must travel in the same direction of the connection at
every point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowtrace.correlate.sightings import Sightings


@dataclass(slots=True, kw_only=True)
class Links:
    """The connection of every flow and the orientation that makes flows agree."""

    connection: np.ndarray
    """int64 connection id per flow id (dense from 0); -1 for flow ids never seen."""
    flipped: np.ndarray
    """bool per flow id: its originator is the connection's responder."""
    conflicts: int
    """Links whose orientations could not be reconciled (a sign of a wrong link)."""
    ambiguous_groups: int
    """Sighting groups not used for linking: two flows at one observation point."""


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of the graph with ``n`` nodes and edges (a[i], b[i]).

    Returns the smallest node id of each node's component (hooking plus pointer jumping).
    """
    label = np.arange(n, dtype=np.int64)
    if not a.size:
        return label
    while True:
        la, lb = label[a], label[b]
        low = np.minimum(la, lb)
        before = label.copy()
        np.minimum.at(label, la, low)
        np.minimum.at(label, lb, low)
        while True:
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
        if np.array_equal(label, before):
            return label


def flow_edges(s: Sightings, flow_id: np.ndarray, from_orig: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Edges between flows that share a packet: (flow a, flow b, parity), and the number of
    ambiguous groups left out. ``parity`` is True when the packet is the originator's at one
    flow and the responder's at the other."""
    flow = flow_id[s.row]
    fo = from_orig[s.row]
    valid = flow >= 0
    group, flow, fo, point = s.group[valid], flow[valid], fo[valid], s.point[valid]
    if not group.size:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0, dtype=bool), 0
    # Ambiguous: one observation point sees two different flows carry "the same" packet.
    order = np.lexsort((flow, point, group))
    g, p, f = group[order], point[order], flow[order]
    same_gp = (g[1:] == g[:-1]) & (p[1:] == p[:-1]) & (f[1:] != f[:-1])
    bad = np.zeros(int(group.max()) + 1, dtype=bool)
    bad[g[1:][same_gp]] = True
    keep = ~bad[group]
    group, flow, fo = group[keep], flow[keep], fo[keep]
    # split_groups leaves sightings unsorted by group: sort (stably, so each group's
    # first sighting stays first) before finding where groups start.
    by_group = np.argsort(group, kind="stable")
    group, flow, fo = group[by_group], flow[by_group], fo[by_group]
    # Hub of each group: its first sighting's flow.
    start = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    hub = np.repeat(start, np.diff(np.r_[start, group.size]))
    a, b = flow[hub], flow
    parity = fo[hub] != fo
    differ = a != b
    if not differ.any():
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0, dtype=bool), int(bad.sum())
    n = int(flow.max()) + 1
    code = np.unique((a[differ].astype(np.int64) * n + b[differ]) * 2 + parity[differ])
    return (code // 2) // n, (code // 2) % n, (code % 2).astype(bool), int(bad.sum())


def link_flows(s: Sightings, flow_id: np.ndarray, from_orig: np.ndarray, n_flows: int) -> Links:
    """Connections (components) and reconciled orientations for ``n_flows`` flows."""
    a, b, parity, ambiguous = flow_edges(s, flow_id, from_orig)
    root = components(n_flows, a, b)
    _, connection = np.unique(root, return_inverse=True)
    flipped = np.zeros(n_flows, dtype=bool)
    known = root == np.arange(n_flows)
    for _ in range(64):
        if not a.size:
            break
        ka, kb = known[a], known[b]
        fwd = ka & ~kb
        back = kb & ~ka
        if not (fwd.any() or back.any()):
            break
        flipped[b[fwd]] = flipped[a[fwd]] ^ parity[fwd]
        known[b[fwd]] = True
        flipped[a[back]] = flipped[b[back]] ^ parity[back]
        known[a[back]] = True
    conflicts = int(((flipped[a] ^ flipped[b]) != parity).sum()) if a.size else 0
    return Links(connection=connection.astype(np.int64), flipped=flipped, conflicts=conflicts,
                 ambiguous_groups=ambiguous)
