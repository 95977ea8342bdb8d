"""What the captures themselves lack: cut payloads, lost packets, time they did not cover."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import plural
from flowtrace.detect.finding import Finding


class CaptureTruncated:
    """``capture_truncated``: frames cut short by the snap length (caplen < wire length)."""

    code = "capture_truncated"
    severity = "info"
    needs = Needs(vantage_points=1, where="any capture")
    supersedes: tuple[str, ...] = ()

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per capture with truncated frames."""
        caplen, wirelen = ctx.col("caplen"), ctx.col("wirelen")
        cap = ctx.col("capture")
        cut = caplen < wirelen
        out = []
        for s in ctx.analysis.captures:
            if not s.snaplen_truncated:
                continue
            i = ctx.capture_index(s.capture)
            rows = np.flatnonzero(cut & (cap == i))
            snaplens = sorted({int(x["snaplen"]) for x in s.interfaces if x.get("snaplen")})
            keep = f"the first {snaplens[0]} bytes of each frame" if snaplens else "only part of each frame"
            out.append(Finding(
                code=self.code, severity=self.severity, capture=s.capture,
                message=(f"Capture {s.capture} keeps {keep} ({plural(int(s.snaplen_truncated), 'frame')} cut): "
                         "payload fingerprints are unavailable there, so its packets were matched by their headers."),
                evidence=ctx.evidence(rows[:8], "frames cut by the snap length"),
                causes=("tcpdump -s / dumpcap -s snap length set below the frame size (use -s 0)",),
                details={"frames": int(s.snaplen_truncated), "snaplen": snaplens[0] if snaplens else None}))
        return out


class CaptureDrops:
    """``capture_drops``: the capture reports drops, or saw bytes acknowledged it never captured."""

    code = "capture_drops"
    severity = "low"
    needs = Needs(vantage_points=1, where="any capture")
    supersedes: tuple[str, ...] = ()

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per capture with reported drops, one per capture with unseen acked bytes."""
        out = []
        for s in ctx.analysis.captures:
            if s.capture_drops:
                out.append(Finding(
                    code=self.code, severity=self.severity, capture=s.capture,
                    message=(f"Capture {s.capture} reports {plural(int(s.capture_drops), 'packet')} dropped by the "
                             "capture itself (pcapng interface statistics): packets missing there prove nothing."),
                    causes=_CAUSES, details={"dropped": int(s.capture_drops)}))
        by_capture: dict[str, list] = defaultdict(list)
        for u in ctx.unseen_acks:
            by_capture[u.capture].append(u)
        for capture, events in by_capture.items():
            rows = [r for u in events for r in (u.before_row, u.ack_row) if r >= 0]
            conns = {int(c) for c in ctx.packet_conn(np.array([u.ack_row for u in events])) if c >= 0}
            lost = sum(u.missing_bytes for u in events)
            first = events[0]
            out.append(Finding(
                code=self.code, severity=self.severity, capture=capture,
                connection=next(iter(conns)) if len(conns) == 1 else None,
                message=(f"Capture {capture} missed {plural(lost, 'byte')} that the receiver acknowledged "
                         f"({plural(len(events), 'flow')}, first at frame {int(ctx.col('frame')[first.ack_row])}): "
                         "the capture lost packets there, so absences around then are unknown."),
                evidence=ctx.evidence(rows, "segment before the gap, and the acknowledgement beyond it"),
                causes=_CAUSES, details={"bytes": int(lost), "flows": [u.flow for u in events][:50],
                                         "connections": sorted(conns)[:50]}))
        return out


_CAUSES = ("capture buffer too small for the packet rate (tcpdump -B, dumpcap -B)",
           "slow disk or a busy CPU on the capturing host",
           "the capture was filtered or sliced (-s, BPF) or taken on a mirror port that drops")


class CaptureGap:
    """``capture_gap``: a capture that should have seen a connection's packets was not
    running then (or reports loss): whether they got there is unknown."""

    code = "capture_gap"
    severity = "info"
    needs = Needs(vantage_points=2, where="two captures along the path")
    supersedes: tuple[str, ...] = ()

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per connection, direction and capture that could not vouch for an absence."""
        v = ctx.vanished
        out = []
        if len(v):
            unk = v[~v["covered"].to_numpy()]
            for (conn, direction, cap), g in unk.groupby(["connection", "direction", "capture"], sort=True):
                name = ctx.capture_names[int(cap)]
                why = ctx.coverage.why_not(name, int(g["ts"].iloc[0]))
                d = "request" if direction == 0 else "response"
                last = int(g["last_hop"].iloc[0])
                out.append(Finding(
                    code=self.code, severity=self.severity, connection=int(conn), direction=d,
                    hop=int(ctx.hop.pos[last]), capture=name,
                    message=(f"Whether {plural(len(g), 'packet')} of connection {int(conn)} ({d}) reached {name} "
                             f"after {ctx.hop_label(last)} is unknown: {why}."),
                    evidence=ctx.evidence(g["row"].to_numpy(), f"last seen here; {name} could not vouch for it"),
                    causes=("the captures were not started and stopped together",
                            "the capture reports or shows loss"),
                    details={"packets": len(g), "reason": why}))
        out.extend(self._unreached(ctx))
        return out

    def _unreached(self, ctx: Context) -> list[Finding]:
        """Unanswered connections seen by one capture only, while node captures were not running."""
        c = ctx.analysis.connections
        if c.empty:
            return []
        sel = c[(c["status"].astype(object) == "no_reply") & c["proto"].isin([6, 17, 132]).to_numpy()
                & (c["captures"].astype(object).str.count(",") == 0)]
        nodes = [n for n in ctx.active_captures if ctx.analysis.roles.get(n) == "node" or n in ctx.multi_interface]
        out = []
        for row in sel.itertuples(index=False):
            if str(row.client_dst) and ctx.multicast_address[max(ctx.addr_code(row.client_dst), 0)]:
                continue
            missing = [n for n in nodes if n != str(row.client_capture)
                       and not ctx.coverage.covers(n, int(row.start_ts_ns))[0]]
            if not missing:
                continue
            reasons = "; ".join(ctx.coverage.why_not(n, int(row.start_ts_ns)) for n in missing)
            out.append(Finding(
                code=self.code, severity=self.severity, connection=int(row.connection), direction="request",
                hop=0, capture=missing[0],
                message=(f"Connection {int(row.connection)} was seen only by {row.client_capture}; whether it reached "
                         f"{', '.join(missing)} is unknown: {reasons}."),
                causes=("the captures were not started and stopped together",),
                details={"captures": missing}))
        return out
