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
    flow and the responder's at the other.

    Edges are sorted by (a, b, parity), each once; ``a`` is the flow of the group's first
    sighting (in ``s`` order), ``b`` the flow of another sighting of the group.
    """
    flow = flow_id[s.row]
    valid = flow >= 0
    if not valid.any():
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0, dtype=bool), 0
    # Sightings come sorted by group or nearly so (split_groups only renumbers inside a
    # group): a stable sort of the group ids is a merge of short runs, and it keeps each
    # group's first sighting first.
    o = np.flatnonzero(valid)
    o = o[np.argsort(s.group[o], kind="stable")]
    group, flow, fo, point = s.group[o], flow[o], from_orig[s.row[o]], s.point[o].astype(np.int64)
    n = int(flow.max()) + 1
    # Ambiguous: one observation point sees two different flows carry "the same" packet:
    # two distinct (group, point, flow) keys with one (group, point).
    points = int(point.max()) + 1
    if (int(group[-1]) + 1) * points * n < 1 << 62:
        key = np.sort((group * np.int64(points) + point) * np.int64(n) + flow, kind="stable")
        kgp = key // n
        bad_groups = kgp[1:][(kgp[1:] == kgp[:-1]) & (key[1:] != key[:-1])] // points
    else:  # pragma: no cover - needs 10^13 sightings and flows
        g, p, f = (x[np.lexsort((flow, point, group))] for x in (group, point, flow))
        bad_groups = g[1:][(g[1:] == g[:-1]) & (p[1:] == p[:-1]) & (f[1:] != f[:-1])]
    bad = np.zeros(int(group[-1]) + 1, dtype=bool)
    bad[bad_groups] = True
    keep = ~bad[group]
    group, flow, fo = group[keep], flow[keep], fo[keep]
    # Hub of each group: the flow of its first sighting.
    starts = np.r_[True, group[1:] != group[:-1]] if group.size else np.zeros(0, dtype=bool)
    hub = np.flatnonzero(starts)[np.cumsum(starts) - 1]
    a, b = flow[hub], flow
    differ = a != b
    if not differ.any():
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0, dtype=bool), int(bad.sum())
    code = np.unique((a[differ].astype(np.int64) * n + b[differ]) * 2 + (fo[hub] != fo)[differ])
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
