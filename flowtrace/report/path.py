"""One connection's path as a report object: hops in order, rewrites, latencies, findings.

``ConnectionView.build`` turns the rows of one connection (connections, hops, findings)
into plain data; the view renders itself in a terminal (``__rich_console__``) and the
HTML report reads the same fields.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from flowtrace.analysis import Analysis
from flowtrace.context.k8s import KubeNames
from flowtrace.detect.finding import Finding
from flowtrace.report.format import (
    SEVERITY_STYLES,
    endpoint,
    fmt_duration,
    frame_ranges,
    observation_point,
    proto_name,
)

REWRITE_STYLE = "bold yellow"
"""How a rewritten address or port is highlighted."""


def label(names: KubeNames | None, addr: object, port: object, proto: object = None) -> str:
    """``addr:port``, with ``(name)`` when a snapshot names it."""
    return names.label(addr, port, proto) if names is not None else endpoint(addr, port)


@dataclass(frozen=True, slots=True, kw_only=True)
class HopView:
    """One hop of one direction, ready to print."""

    hop: int
    """Position along the path (hops.hop)."""
    on_path: bool
    """False for hops only other packets passed (a RST that went another way)."""
    point: str
    """Observation point: ``node1 if2 in``."""
    capture: str
    """Capture of the observation point."""
    src: str
    """Source as seen here, with its name when known."""
    dst: str
    """Destination as seen here."""
    src_changed: bool
    """Source differs from the previous on-path hop's."""
    dst_changed: bool
    """Destination differs from the previous on-path hop's."""
    same: bool
    """Addresses and ports equal to the previous on-path hop's."""
    tunnel: str
    """``vxlan 10.0.1.11 -> 10.0.1.12 vni 1`` or ''."""
    changes: str
    """Rewrites against the previous on-path hop (DNAT, SNAT, encapsulation …; 'routed' left out)."""
    changed_at: str
    """Where they happened: a capture, or ``a -> b``."""
    latency_ns: int | None
    """Time from the previous on-path hop (None for the first)."""
    packets: int
    """Packets of this direction seen here."""
    missing: int
    """Packets the previous on-path hop saw that never showed here."""
    first_frame: int
    """Frame number of the first packet here."""
    findings: tuple[str, ...] = ()
    """Codes of findings placed at this hop."""
    finding_severity: str | None = None
    """Highest severity among them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionView:
    """A connection with its request and response paths and its findings."""

    connection: int
    """connections.connection."""
    proto: str
    """tcp, udp, icmp6 …"""
    client: str
    """The client's address and port as it sent the request."""
    service: str
    """The address and port the client contacted."""
    server: str
    """The endpoint that received the request (after DNAT)."""
    status: str
    """connections.status."""
    client_state: str
    """Zeek conn_state at the client's hop, or ''."""
    start_ns: int
    """First packet, reference clock."""
    duration_ns: int
    """Last minus first packet."""
    nat: str
    """The NAT operations with where they happened."""
    captures: str
    """Captures that saw it, in path order."""
    request: tuple[HopView, ...]
    """Request hops in path order."""
    response: tuple[HopView, ...]
    """Response hops in path order."""
    findings: tuple[Finding, ...] = ()
    """Findings about it, most severe first."""
    names: KubeNames | None = field(default=None, repr=False, compare=False)
    """Snapshot used to name addresses in evidence and titles."""

    @property
    def title(self) -> str:
        """``#2 tcp 198.51.100.10:45300 -> 203.0.113.10:80 closed (SF)``."""
        state = f" ({self.client_state})" if self.client_state else ""
        return f"#{self.connection} {self.proto} {self.client} -> {self.service}  {self.status}{state}"

    @property
    def severity(self) -> str | None:
        """Highest finding severity, None without findings."""
        return self.findings[0].severity if self.findings else None

    @staticmethod
    def build(a: Analysis, row: pd.Series, hops: pd.DataFrame, findings: Sequence[Finding] = (),
              names: KubeNames | None = None) -> ConnectionView:
        """The view of connection ``row`` (a connections row) from its ``hops`` rows (both
        directions, any order) and its findings (most severe first)."""
        proto = int(row["proto"])
        at_hop: dict[tuple[str, int], list[Finding]] = {}
        for f in findings:
            if f.direction is not None and f.hop is not None:
                at_hop.setdefault((f.direction, int(f.hop)), []).append(f)
        directions = {}
        for d in ("request", "response"):
            h = hops[hops["direction"] == d].sort_values("hop", kind="stable")
            directions[d] = tuple(_hop_views(h, proto, names, at_hop, d))
        state = row.get("client_state")
        return ConnectionView(
            connection=int(row["connection"]), proto=proto_name(proto),
            client=label(names, row["client_src"], row["client_sport"], proto),
            service=label(names, row["client_dst"], row["client_dport"], proto),
            server=label(names, row["server_dst"], row["server_dport"], proto),
            status=str(row["status"]), client_state="" if pd.isna(state) else str(state),
            start_ns=int(row["start_ts_ns"]), duration_ns=int(row["duration_ns"]), nat=str(row["nat"] or ""),
            captures=str(row["captures"]), request=directions["request"], response=directions["response"],
            findings=tuple(findings), names=names)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        parts: list[RenderableType] = []
        head = Text()
        head.append(f"{self.client} -> {self.service}", style="bold")
        if self.server and self.server != self.service:
            head.append(f"  endpoint {self.server}")
        head.append(f"\n{fmt_duration(self.duration_ns)}, seen at {self.captures.replace(',', ', ')}", style="dim")
        parts.append(head)
        if self.nat:
            parts.append(Text(self.nat.replace("; ", "\n"), style=REWRITE_STYLE))
        parts.append(hop_table(self.request, self.response))
        for f in self.findings:
            parts.append(FindingView(f))
        sev = self.severity
        border = SEVERITY_STYLES.get(sev, "") if sev else ("yellow" if self.status in ("no_reply", "reset",
                                                                                     "rejected") else "")
        status = Text(f"#{self.connection} {self.proto}  ", style="bold")
        status.append(self.status + (f" ({self.client_state})" if self.client_state else ""),
                      style="bold" if self.status in ("closed", "established", "replied") else "bold yellow")
        if sev:
            status.append(f"  {len(self.findings)} finding{'s' if len(self.findings) != 1 else ''}, {sev}",
                          style=SEVERITY_STYLES[sev])
        yield Panel(Group(*parts), title=status, title_align="left", border_style=border or "none",
                    expand=True)


_HopRow = namedtuple("_HopRow", ("src", "sport", "dst", "dport", "encap", "outer_src", "outer_dst", "vni",
                                  "change_labels", "hop", "on_path", "capture", "interface", "ifindex",
                                  "packet_direction", "changed_at", "latency_ns", "packets", "missing", "first_frame"))
"""The hops columns a HopView is made of."""


def _hop_views(h: pd.DataFrame, proto: int, names: KubeNames | None,
               at_hop: dict[tuple[str, int], list[Finding]], direction: str) -> Iterator[HopView]:
    prev: tuple[object, ...] | None = None
    # Only the columns shown, as lists: itertuples would convert every column of the table.
    for r in map(_HopRow._make, zip(*(h[c].tolist() for c in _HopRow._fields), strict=True)):
        cur = (str(r.src), int(r.sport), str(r.dst), int(r.dport))
        same = prev is not None and cur == prev  # the tunnel, if any, is shown beside the tuple
        src_changed = prev is not None and cur[:2] != prev[:2]
        dst_changed = prev is not None and cur[2:4] != prev[2:4]
        tunnel = ""
        if str(r.encap) != "none":
            tunnel = f"{r.encap} {r.outer_src} -> {r.outer_dst}" + (f" vni {r.vni}" if int(r.vni) >= 0 else "")
        changes = ", ".join(x for x in str(r.change_labels).split(", ") if x and x != "routed")
        fs = at_hop.get((direction, int(r.hop)), [])
        yield HopView(
            hop=int(r.hop), on_path=bool(r.on_path), capture=str(r.capture),
            point=observation_point(r.capture, r.interface, r.ifindex, r.packet_direction),
            src=label(names, r.src, r.sport, proto), dst=label(names, r.dst, r.dport, proto),
            src_changed=src_changed, dst_changed=dst_changed, same=same, tunnel=tunnel,
            changes=changes, changed_at=str(r.changed_at or "") if changes else "",
            latency_ns=int(r.latency_ns) if prev is not None and r.on_path else None,
            packets=int(r.packets), missing=int(r.missing), first_frame=int(r.first_frame),
            findings=tuple(f.code for f in fs), finding_severity=fs[0].severity if fs else None)
        if r.on_path:
            prev = cur


def hop_table(request: Sequence[HopView], response: Sequence[HopView]) -> Table:
    """Both directions' hops in one table (aligned columns): point, tuple with rewrites
    highlighted, change, latency from the previous hop, packets, packets missing."""
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="dim", expand=False, padding=(0, 1))
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("seen at", overflow="fold", min_width=6)
    t.add_column("source -> destination", overflow="fold", ratio=1, min_width=21)
    t.add_column("change", overflow="fold", max_width=16)
    t.add_column("+time", justify="right", no_wrap=True)
    t.add_column("pkts", justify="right", no_wrap=True)
    t.add_column("miss", justify="right", no_wrap=True)
    for name, hops in (("request", request), ("response", response)):
        t.add_row("", Text(name, style="bold"), "" if hops else Text("not seen", style="dim"))
        for h in hops:
            style = "" if h.on_path else "dim"
            t.add_row(hop_number(h), h.point, tuple_text(h), change_text(h),
                      fmt_duration(h.latency_ns) if h.latency_ns is not None else "",
                      str(h.packets), Text(str(h.missing), style="bold red") if h.missing else "", style=style)
    notes = []
    if any(not h.on_path for h in (*request, *response)):
        notes.append("* off path: only other packets of this direction passed here")
    if any(h.findings for h in (*request, *response)):
        notes.append("! a finding below is about this hop")
    if notes:
        t.caption = "\n".join(notes)
        t.caption_justify = "left"
        t.caption_style = "dim"
    return t


def hop_number(h: HopView) -> Text:
    """The hop's position, ``*`` when off path, a coloured ``!`` when a finding is about it."""
    t = Text(str(h.hop) + ("" if h.on_path else "*"))
    if h.findings:
        t.append("!", style=SEVERITY_STYLES.get(h.finding_severity or "", "bold"))
    return t


def tuple_text(h: HopView) -> Text:
    """``src -> dst`` with the rewritten side highlighted, or ″ when equal to the previous hop."""
    if h.same:
        t = Text("″", style="dim")
    else:
        t = Text()
        t.append(h.src, style=REWRITE_STYLE if h.src_changed else "")
        t.append(" -> ")
        t.append(h.dst, style=REWRITE_STYLE if h.dst_changed else "")
    if h.tunnel:
        t.append(f" [{h.tunnel}]", style="cyan")
    return t


def change_text(h: HopView) -> Text:
    """The hop's rewrites and where they happened; ``off path`` for off-path hops."""
    t = Text()
    if h.changes:
        t.append(h.changes, style=REWRITE_STYLE if any(k in h.changes for k in ("NAT", "port")) else "cyan")
        if h.changed_at and " -> " in h.changed_at:
            t.append(f" ({h.changed_at})", style="dim")
    if not h.on_path:
        t.append(("; " if t else "") + "off path", style="dim")
    return t


@dataclass(frozen=True, slots=True)
class FindingView:
    """A finding with its severity, place, message, evidence and likely causes."""

    finding: Finding

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        f = self.finding
        t = Text()
        t.append(f" {f.severity.upper()} ", style=SEVERITY_STYLES.get(f.severity, "") + " reverse")
        t.append(f" {f.code}", style="bold")
        where = finding_place(f)
        if where:
            t.append(f"  {where}", style="dim")
        t.append(f"\n{f.message}")
        if f.evidence:
            t.append("\nevidence: ", style="dim")
            t.append("; ".join(evidence_text(e) for e in f.evidence))
        if f.causes:
            t.append("\nlikely: ", style="dim")
            t.append("; ".join(f.causes))
        yield t


def finding_place(f: Finding) -> str:
    """``request hop 3, inside node1`` / ``capture node2`` / ''."""
    parts = []
    if f.direction and f.hop is not None:
        parts.append(f"{f.direction} hop {f.hop}")
    elif f.direction:
        parts.append(f.direction)
    if f.segment:
        parts.append(f.segment)
    if f.capture and f.connection is None:
        parts.append(f"capture {f.capture}")
    return ", ".join(parts)


def evidence_text(e: object) -> str:
    """``client:5-7,9 (SYN-ACK from the pod)``: capture, frame numbers, what they show."""
    cap = getattr(e, "capture", "?")
    frames = getattr(e, "frames", ())
    note = getattr(e, "note", "")
    text = f"{cap}:{frame_ranges(frames).replace(', ', ',')}" if len(frames) else str(cap)
    return f"{text} ({note})" if note else text


class HopIndex:
    """The hops table sorted by connection once, so that one connection's rows are a slice."""

    def __init__(self, hops: pd.DataFrame) -> None:
        self.hops = hops.sort_values(["connection", "direction", "hop"], kind="stable")
        self._keys = self.hops["connection"].to_numpy()

    def of(self, connection: int) -> pd.DataFrame:
        """The hops rows of ``connection`` (both directions, in path order)."""
        lo, hi = np.searchsorted(self._keys, [connection, connection + 1])
        return self.hops.iloc[lo:hi]
