"""Sightings: every matchable packet with where and when it was seen, grouped by signature.

A *sighting group* is one packet seen at several observation points (or several times
at one): the rows of the packets table that share a signature. Strong (TCP) groups are
taken as they are; weak groups (UDP, ICMP) are split where sightings are further apart
than a time window once clocks are aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from flowtrace.correlate.signature import NONE, packet_signatures

DIR_UNKNOWN, DIR_IN, DIR_OUT = 0, 1, 2


@dataclass(slots=True, kw_only=True)
class Sightings:
    """Matchable packets as parallel arrays, sorted by (group, capture, ts, frame).

    Packets seen once form groups of one: they link nothing, but a hop that saw a packet
    the next hop did not is exactly what drop detection looks for.
    """

    row: np.ndarray
    """int64 row of the packet in the packets table."""
    group: np.ndarray
    """int64 sighting group, dense from 0."""
    capture: np.ndarray
    """int32 capture code (packets.capture categorical code)."""
    ts: np.ndarray
    """int64 raw capture timestamp (ns)."""
    ttl: np.ndarray
    """int16 IP TTL / hop limit."""
    direction: np.ndarray
    """int8 DIR_* as the capture recorded it."""
    strength: np.ndarray
    """int8 signature strength of the group."""
    point: np.ndarray
    """int32 observation point (capture, interface, ifindex, direction) of the sighting; where
    the capture recorded no direction, the TTL too (see ``observation_points``)."""
    capture_names: list[str]
    """Capture names by code."""
    time_order: np.ndarray | None = None
    """Indices of the sightings sorted by (group, corrected time), where ``split_groups``
    made the groups (it sorts them so); None otherwise."""

    def __len__(self) -> int:
        return int(self.row.shape[0])

    def subset(self, keep: np.ndarray) -> Sightings:
        """The sightings where the bool mask ``keep`` is True, in the same order."""
        return Sightings(row=self.row[keep], group=self.group[keep], capture=self.capture[keep], ts=self.ts[keep],
                         ttl=self.ttl[keep], direction=self.direction[keep], strength=self.strength[keep],
                         point=self.point[keep], capture_names=self.capture_names)


def observed_directions(packets: pd.DataFrame) -> np.ndarray:
    """int8 DIR_* of every packet as its capture recorded it (SLL packet type, epb_flags)."""
    codes = {"in": DIR_IN, "out": DIR_OUT, "unknown": DIR_UNKNOWN}
    cat = packets["direction"]
    lut = np.array([codes[str(c)] for c in cat.cat.categories], dtype=np.int8)
    return lut[cat.cat.codes.to_numpy()]


def build_sightings(packets: pd.DataFrame) -> Sightings:
    """Group the matchable packets of ``packets`` by signature."""
    sig, strength = packet_signatures(packets)
    keep = np.flatnonzero(strength != NONE)
    names = [str(c) for c in packets["capture"].cat.categories]
    if not keep.size:
        e64 = np.zeros(0, dtype=np.int64)
        return Sightings(row=e64, group=e64, capture=np.zeros(0, np.int32), ts=e64,
                         ttl=np.zeros(0, np.int16), direction=np.zeros(0, np.int8),
                         strength=np.zeros(0, np.int8), point=np.zeros(0, np.int32),
                         capture_names=names)
    # Groups numbered in signature order (as np.unique numbers them); inside a group the
    # stable sort leaves rows in table order, which is (capture, frame).
    by_sig = np.argsort(sig[keep], kind="stable")
    rows = keep[by_sig]
    sorted_sig = sig[rows]
    starts = np.r_[True, sorted_sig[1:] != sorted_sig[:-1]]
    group = np.cumsum(starts) - 1
    codes = packets["capture"].cat.codes.to_numpy().astype(np.int32)
    ts_all = packets["ts_ns"].to_numpy()
    capture, ts = codes[rows], ts_all[rows]
    # (capture, ts, frame) is that order except where a capture's clock steps back (a kernel
    # stamps ``-i any`` packets per CPU): those groups are sorted again.
    back = ~starts[1:] & (capture[1:] == capture[:-1]) & (ts[1:] < ts[:-1])
    if back.any():
        at = np.flatnonzero(np.isin(group, group[1:][back]))
        frame = packets["frame"].to_numpy()[rows[at]]
        rows[at] = rows[at[np.lexsort((frame, ts[at], capture[at], group[at]))]]
        capture, ts = codes[rows], ts_all[rows]
    direction = observed_directions(packets)
    return Sightings(
        row=rows,
        group=group.astype(np.int64),
        capture=capture,
        ts=ts,
        ttl=packets["ttl"].to_numpy()[rows].astype(np.int16),
        direction=direction[rows],
        strength=strength[rows],
        point=observation_points(packets)[rows],
        capture_names=names,
    )


def observation_points(packets: pd.DataFrame) -> np.ndarray:
    """int32 code of each packet's observation point: (capture, interface, ifindex, direction).

    Where the capture recorded no direction (pcapng without epb_flags, Ethernet pcap), the
    TTL joins the key: a host that forwards and NATs a packet on one interface (in on eth0,
    DNAT/SNAT, out on eth0) shows it twice there, with the TTL one lower the second time;
    the two copies are two points, not one point seeing one packet in two flows.
    """
    if not len(packets):
        return np.zeros(0, dtype=np.int32)
    direction = packets["direction"].cat.codes.to_numpy().astype(np.int64)
    unknown = packets["direction"].cat.categories.get_loc("unknown")
    ttl = np.where(direction == unknown, packets["ttl"].to_numpy().astype(np.int64) + 1, 0)
    parts = [packets["capture"].cat.codes.to_numpy().astype(np.int64),
             packets["interface"].cat.codes.to_numpy().astype(np.int64),
             pd.factorize(packets["ifindex"].to_numpy(), sort=True)[0].astype(np.int64), ttl, direction]
    # Numbered in the sorted order of the (capture, interface, ifindex, ttl, direction)
    # tuples: packed into one integer in that order (each part is a non-negative rank).
    key = np.zeros(len(packets), dtype=np.int64)
    bits = 0
    for part in parts:
        width = max(int(part.max()), 1).bit_length()
        key = (key << np.int64(width)) | part
        bits += width
    if bits > 62:  # pragma: no cover - needs billions of interfaces
        frame = pd.DataFrame({str(i): part for i, part in enumerate(parts)})
        return frame.groupby(list(frame.columns), sort=True).ngroup().to_numpy().astype(np.int32)
    return pd.factorize(key, sort=True)[0].astype(np.int32)


def split_groups(s: Sightings, corrected_ts: np.ndarray, window_ns: int) -> Sightings:
    """Split groups wherever consecutive sightings (in corrected time) are more than
    ``window_ns`` apart: a packet sent again later with identical invariants (a UDP
    datagram, a RST or a segment without timestamps) is a new occurrence.

    Returns a new Sightings with the same rows in the same order and new group ids (no
    longer sorted by group: consumers that need an order sort for themselves).
    """
    if not len(s):
        return s
    group = np.empty_like(s.group)
    order = np.lexsort((corrected_ts, s.group))
    g = s.group[order]
    t = corrected_ts[order]
    new = np.r_[True, (g[1:] != g[:-1]) | (np.diff(t) > window_ns)]
    group[order] = np.cumsum(new)
    _, dense = np.unique(group, return_inverse=True)
    return Sightings(group=dense.reshape(-1).astype(np.int64), row=s.row, capture=s.capture, ts=s.ts, ttl=s.ttl,
                     direction=s.direction, strength=s.strength, point=s.point, capture_names=s.capture_names,
                     time_order=order)


def clean_groups(s: Sightings, max_span_ns: int = 100_000_000) -> np.ndarray:
    """Mask of sightings in groups fit for clock estimation: no observation point sees the
    packet twice, and no capture sees it over more than ``max_span_ns``."""
    if not len(s):
        return np.zeros(0, dtype=bool)
    ng = int(s.group.max()) + 1
    key = s.group * (int(s.point.max()) + 1) + s.point
    _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    dup_group = np.zeros(ng, dtype=bool)
    dup_group[s.group[counts[inv.reshape(-1)] > 1]] = True
    gc = s.group * (len(s.capture_names) + 1) + s.capture
    start = np.flatnonzero(np.r_[True, gc[1:] != gc[:-1]])
    end = np.r_[start[1:], gc.size] - 1
    span = s.ts[end] - s.ts[start]
    wide_group = np.zeros(ng, dtype=bool)
    wide_group[s.group[start][span > max_span_ns]] = True
    return ~(dup_group | wide_group)[s.group]
