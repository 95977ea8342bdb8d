"""The result of ``flowtrace.analyze``: every table plus clocks, roles and conntrack tables."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from flowtrace.context.conntrack import Comparison, ConntrackEntry
from flowtrace.correlate.clock import ClockOffset
from flowtrace.correlate.conntrack import RebuiltEntry
from flowtrace.decode.summary import CaptureSummary
from flowtrace.schema import SCHEMA_VERSION


@dataclass(slots=True, kw_only=True)
class Analysis:
    """Everything flowtrace found in a set of captures.

    The tables are pandas DataFrames with the columns of ``flowtrace.schema``; JSON,
    terminal and HTML reports are views of this object.
    """

    packets: pd.DataFrame
    """One row per frame (schema PACKETS)."""
    flows: pd.DataFrame
    """One row per connection per observation point (schema FLOWS)."""
    connections: pd.DataFrame
    """One row per connection across captures (schema CONNECTIONS)."""
    hops: pd.DataFrame
    """One row per connection, direction and observation point, in path order (schema HOPS)."""
    offsets: dict[str, ClockOffset]
    """Clock offset of each capture relative to the reference capture."""
    conntrack: list[RebuiltEntry]
    """Reconstructed conntrack entries of every forwarding host, including ended ones."""
    roles: dict[str, str]
    """Role of each capture: client, node, pod, router, other (manifest first, then inferred)."""
    captures: list[CaptureSummary]
    """What each capture holds (format, span, counts)."""
    dumps: dict[str, list[ConntrackEntry]] = field(default_factory=dict)
    """conntrack dumps given or found beside the captures, by node."""
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    """Reconstruction against each node's dump."""
    packet_flow: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Per packet row: its flow (flows.flow_id), -1 for none."""
    packet_hop: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Per packet row: its hop (hops.hop_id), -1 for none."""
    packet_path_direction: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    """Per packet row: 0 request, 1 response, -1 outside any connection."""
    corrected_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Per packet row: ts_ns in the reference capture's clock."""
    packet_group: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Per packet row: its sighting group (the same packet elsewhere has the same group), -1 for none."""
    notes: list[str] = field(default_factory=list)
    """What could not be done, once each (unaligned clocks, detectors needing more captures)."""
    findings: list = field(default_factory=list)
    """Anomalies found (flowtrace.detect)."""
    schema_version: int = SCHEMA_VERSION
    """Version of the tables and of the JSON document."""

    @property
    def anomalies(self) -> pd.DataFrame:
        """The findings as a table (schema ANOMALIES), in the order of ``findings``."""
        from flowtrace.detect.table import findings_table

        return findings_table(self.findings)

    @property
    def reference(self) -> str | None:
        """The capture whose clock the others were aligned to."""
        for o in self.offsets.values():
            return o.reference
        return None

    def conntrack_nodes(self) -> list[str]:
        """Captures with reconstructed conntrack entries, in capture order."""
        seen = dict.fromkeys(e.node for e in self.conntrack)
        order = [c.capture for c in self.captures]
        return sorted(seen, key=lambda n: order.index(n) if n in order else len(order))

    def conntrack_table(self, node: str | None = None, *, ended: bool = False) -> list[RebuiltEntry]:
        """Entries of ``node`` (all nodes when None) still in the table at the end of its capture
        (what ``conntrack -L`` lists), or every entry ever created with ``ended``."""
        return [e for e in self.conntrack
                if (node is None or e.node == node) and (ended or e.ended is None)]

    def connection_packets(self, connection: int, direction: str | None = None) -> pd.DataFrame:
        """Packets rows of one connection (one direction, or both), in corrected time order,
        with ``hop_id``, ``path_direction`` and ``corrected_ts`` columns added."""
        hop_ids = self.hops.loc[self.hops["connection"] == connection, "hop_id"].to_numpy()
        rows = np.flatnonzero(np.isin(self.packet_hop, hop_ids))
        if direction is not None:
            want = 0 if direction == "request" else 1
            rows = rows[self.packet_path_direction[rows] == want]
        out = self.packets.iloc[rows].copy()
        out["hop_id"] = self.packet_hop[rows]
        out["path_direction"] = self.packet_path_direction[rows]
        out["corrected_ts"] = self.corrected_ts[rows]
        return out.sort_values(["corrected_ts", "capture", "frame"], kind="stable")

    def connection_hops(self, connection: int, direction: str | None = None) -> pd.DataFrame:
        """The hops of one connection (one direction, or both), in path order."""
        h = self.hops[self.hops["connection"] == connection]
        if direction is not None:
            h = h[h["direction"] == direction]
        return h.sort_values(["direction", "hop"])
