"""The tunnels' own UDP flows: what a node's conntrack tracks of VXLAN and Geneve.

A packet between pods on two nodes crosses the underlay inside a UDP datagram (VXLAN to
8472 or 4789, Geneve to 6081) whose source port the sending kernel derives from a hash of
the inner flow. The node's conntrack tracks that datagram like any other UDP packet: one
entry per outer (address, port) pair, made by the first datagram, [UNREPLIED] as long as
no datagram came back on the reverse tuple (the other node picks its own source port, so
usually for ever), refreshed by every datagram and gone 30 s after the last. ``conntrack -L``
on a node lists them among the Service's entries.

The packets table keeps the inner packet of a tunnelled frame; its outer ports are read
again from the capture (flowtrace.decode.outer). This module gathers them
(``tunnel_packets``) and groups them into each capture's outer flows with the
``host_events`` layout that the conntrack walk reads (``underlay_events``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from flowtrace.capture.files import CaptureSource
from flowtrace.correlate.path import REQUEST, RESPONSE
from flowtrace.decode.outer import tunnel_ports
from flowtrace.errors import CaptureError

UDP_TUNNELS = ("vxlan", "geneve")
"""``packets.encap`` values of tunnels carried in UDP, whose outer flows conntrack tracks."""


@dataclass(frozen=True, slots=True)
class TunnelPackets:
    """Packets inside a UDP tunnel with their outer ports, each array aligned with ``rows``."""

    rows: np.ndarray
    """Rows of the packets table (the inner packet; its ``outer_src``/``outer_dst`` are the datagram's)."""
    sport: np.ndarray
    """The outer UDP source port."""
    dport: np.ndarray
    """The outer UDP destination port."""
    ts: np.ndarray
    """Corrected time (ns) of the row, as the conntrack walk reads it."""


def tunnel_packets(packets: pd.DataFrame, sources: Sequence[CaptureSource],
                   corrected_ts: np.ndarray) -> tuple[TunnelPackets | None, list[str]]:
    """The rows of ``packets`` inside a VXLAN or Geneve tunnel, their outer UDP ports read
    again from ``sources`` (the captures in table order), and ``corrected_ts`` of them.

    Returns (None, []) when no capture has such rows; a capture that cannot be read again
    (a pipe, a file gone or changed) is left out, with a note in the list returned.
    """
    encap = packets["encap"].cat
    wanted = [i for i, kind in enumerate(encap.categories) if kind in UDP_TUNNELS]
    tunnelled = np.isin(encap.codes.to_numpy(), wanted)
    if not tunnelled.any():
        return None, []
    rows = np.flatnonzero(tunnelled)
    capture = packets["capture"].cat.codes.to_numpy()[rows]
    frames = packets["frame"].to_numpy()[rows]
    sport = np.full(rows.size, -1, dtype=np.int32)
    dport = np.full(rows.size, -1, dtype=np.int32)
    notes = []
    for code in np.unique(capture).tolist():
        mine = np.flatnonzero(capture == code)
        source = sources[code]
        try:
            sport[mine], dport[mine] = tunnel_ports(source, frames[mine])
        except (CaptureError, OSError) as e:
            notes.append(f"{source.name}: the outer UDP ports of its tunnelled packets could not be read again "
                         f"({e}); the conntrack entries of its tunnels' own flows are not rebuilt")
    found = sport >= 0
    if not found.any():
        return None, notes
    rows = rows[found]
    return TunnelPackets(rows=rows, sport=sport[found], dport=dport[found], ts=corrected_ts[rows]), notes


def underlay_events(packets: pd.DataFrame, tunnels: TunnelPackets) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The outer flows of ``tunnels`` at each capture, as the conntrack walk reads them.

    A flow is one capture's datagrams between one pair of (address, port) endpoints,
    either way; its original direction is its first datagram's. Returns (events, flows):
    ``events`` has ``host_events``' columns before ``_relevant`` (key: the flow's index in
    ``flows``; ts; row; direction, REQUEST or RESPONSE against the first datagram; group),
    one per datagram in time order within each flow; ``flows`` has, per flow, ``capture``
    (its name), ``src``, ``dst``, ``sport``, ``dport`` of the first datagram and ``family``
    (``ipv4`` or ``ipv6``).
    """
    rows = tunnels.rows
    capture = packets["capture"].cat.codes.to_numpy()[rows].astype(np.int64)
    src_cat, dst_cat = packets["outer_src"].cat, packets["outer_dst"].cat
    # One address numbering for both columns (each categorical has categories of its own).
    texts = [str(t) for t in src_cat.categories] + [str(t) for t in dst_cat.categories]
    ids, names = pd.factorize(pd.Index(texts, dtype=object))
    n_src = len(src_cat.categories)
    src_id = ids[src_cat.codes.to_numpy()[rows].astype(np.int64)]
    dst_id = ids[n_src + dst_cat.codes.to_numpy()[rows].astype(np.int64)]
    src_end = src_id.astype(np.int64) * 65536 + tunnels.sport
    dst_end = dst_id.astype(np.int64) * 65536 + tunnels.dport
    lo, hi = np.minimum(src_end, dst_end), np.maximum(src_end, dst_end)
    order = np.lexsort((np.arange(rows.size), tunnels.ts, hi, lo, capture))
    capture, lo, hi, src_end = capture[order], lo[order], hi[order], src_end[order]
    start = np.r_[True, (capture[1:] != capture[:-1]) | (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])]
    key = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    direction = np.where(src_end == src_end[first][key], REQUEST, RESPONSE).astype(np.int8)
    events = pd.DataFrame({"key": key, "ts": tunnels.ts[order], "row": rows[order], "direction": direction,
                           "group": np.arange(rows.size)})
    first_rows = order[first]
    capture_names = np.asarray([str(c) for c in packets["capture"].cat.categories], dtype=object)
    flow_src = names.to_numpy()[src_id[first_rows]]
    flows = pd.DataFrame({
        "capture": capture_names[capture[first]],
        "src": flow_src,
        "dst": names.to_numpy()[dst_id[first_rows]],
        "sport": tunnels.sport[first_rows].astype(np.int64),
        "dport": tunnels.dport[first_rows].astype(np.int64),
        "family": np.where([":" in a for a in flow_src], "ipv6", "ipv4"),
    })
    return events, flows
