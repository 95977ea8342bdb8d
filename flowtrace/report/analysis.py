"""The report of ``flowtrace analyze``: a summary, the connections that matter, the rest summarised.

``AnalysisReport.build`` chooses and prepares everything (flowtrace.report.select decides
which connections matter); the report renders itself in a terminal and the HTML report
(flowtrace.report.html) reads the same object. Only connections that matter are drawn as
path panels (at most ``limit``); healthy ones become a table of common paths and NAT
bindings, link housekeeping one line — unless ``show_all``.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from flowtrace.analysis import Analysis
from flowtrace.context.k8s import KubeNames
from flowtrace.detect.finding import SEVERITIES, Finding, severity_rank
from flowtrace.report.format import SEVERITY_STYLES, fmt_duration, fmt_offset, fmt_utc, proto_name
from flowtrace.report.path import ConnectionView, FindingView, HopIndex, label
from flowtrace.report.select import (
    Selection,
    finding_groups,
    findings_by_connection,
    path_groups,
    select,
)

DEFAULT_LIMIT = 20
"""Connections drawn in full in the terminal report unless ``limit`` says otherwise."""

GROUP_EXAMPLES = 5
"""Example connection numbers per group of connections that matter beyond the ones drawn."""

GROUP_LIMIT = 25
"""Rows of the healthy-paths table."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureRow:
    """One capture in the summary."""

    capture: str
    role: str
    packets: int
    first_ns: int | None
    last_ns: int | None
    offset: str
    """Clock offset to the reference with its uncertainty, ``reference`` or ``not aligned``."""
    warnings: int


@dataclass(slots=True, kw_only=True)
class AnalysisReport:
    """Everything the analyze report shows, chosen from an Analysis."""

    captures: list[CaptureRow]
    """The captures, with roles, spans and clock offsets."""
    reference: str | None
    """Capture whose clock is the reference."""
    statuses: dict[str, int]
    """Connections (noise left out) per status."""
    total: int
    """Connections, noise included."""
    severities: dict[str, int]
    """Findings per severity, most severe first."""
    general_findings: list[Finding]
    """Findings about no one connection (clocks, drops, truncation), most severe first."""
    notes: list[str]
    """What flowtrace could not do."""
    comparisons: list[str]
    """One line per conntrack dump comparison."""
    shown: list[ConnectionView]
    """Connections drawn in full (those that matter first)."""
    rest: pd.DataFrame
    """Connections that matter beyond ``shown``, grouped by finding, service, endpoint and
    status (flowtrace.report.select.finding_groups), with names."""
    groups: pd.DataFrame
    """Healthy connections grouped by path (flowtrace.report.select.path_groups), with names."""
    healthy: int
    """Healthy connections."""
    noise: int
    """Link housekeeping connections left out."""
    noise_views: list[ConnectionView] = field(default_factory=list)
    """With show_all: the housekeeping connections, one line each."""
    show_all: bool = False
    """Every connection drawn."""
    matter: int = 0
    """Connections that matter."""

    @staticmethod
    def build(a: Analysis, *, names: KubeNames | None = None, show_all: bool = False,
              limit: int | None = DEFAULT_LIMIT, selection: Selection | None = None,
              draw: Sequence[int] | None = None) -> AnalysisReport:
        """Choose and prepare the report of ``a``.

        ``names`` puts Kubernetes names on addresses; ``show_all`` draws every connection
        that is not link housekeeping; ``limit`` caps the connections drawn in full (None:
        no cap); ``draw`` gives the connections to draw, in order, instead (the HTML report
        adds healthy examples). Costs grow with the connections drawn, not with the analysis.
        """
        sel = selection or select(a)
        by_conn = findings_by_connection(a.findings)
        conns = a.connections.set_index("connection", drop=False)
        index = HopIndex(a.hops)

        def view(cid: int) -> ConnectionView:
            return ConnectionView.build(a, conns.loc[cid], index.of(cid), by_conn.get(cid, ()), names)

        if draw is not None:
            drawn, rest = list(draw), [c for c in sel.matter if c not in set(draw)]
        else:
            order = diverse(a, sel.matter) + (sel.healthy if show_all else [])
            cap = len(order) if limit is None or show_all else limit
            drawn, rest = order[:cap], order[cap:]
        shown = [view(c) for c in drawn]
        rest_groups = _named_groups(finding_groups(a, rest, examples=GROUP_EXAMPLES), names)
        noise = set(sel.noise)
        statuses = Counter(str(s) for cid, s in zip(a.connections["connection"], a.connections["status"],
                                                    strict=True) if int(cid) not in noise)
        sev = Counter(f.severity for f in a.findings)
        groups = path_groups(a, [] if show_all else sel.healthy)
        return AnalysisReport(
            captures=_capture_rows(a), reference=a.reference,
            statuses=dict(statuses.most_common()), total=len(a.connections),
            severities={s: sev[s] for s in reversed(SEVERITIES) if sev[s]},
            general_findings=sorted((f for f in a.findings if f.connection is None),
                                    key=lambda f: -severity_rank(f.severity)),
            notes=list(a.notes), comparisons=_comparisons(a), shown=shown, rest=rest_groups,
            groups=_named_groups(groups, names),
            healthy=len(sel.healthy), noise=len(sel.noise),
            noise_views=[view(c) for c in sel.noise] if show_all else [], show_all=show_all,
            matter=len(sel.matter))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.summary()
        if self.shown:
            what = "Connections" if self.show_all else "Connections that matter"
            yield Text(f"\n{what}", style="bold")
        yield from self.shown
        if len(self.rest):
            yield rest_table(self.rest)
        if len(self.groups):
            yield paths_table(self.groups, self.healthy)
        if self.noise_views:
            yield connection_list(self.noise_views, title="Link housekeeping (IPv6 neighbour discovery, MLD, "
                                  "multicast)")

    def summary(self) -> list[RenderableType]:
        """The summary: captures and clocks, connections by status, findings by severity."""
        out: list[RenderableType] = [captures_table(self.captures, self.reference)]
        t = Text()
        t.append("Connections: ", style="bold")
        shown = self.total - self.noise
        t.append(f"{shown:,}")
        if self.statuses:
            t.append(" (" + ", ".join(f"{n:,} {s}" for s, n in self.statuses.items()) + ")")
        if self.noise:
            t.append(f"; {self.noise:,} link housekeeping not shown", style="dim")
        t.append("\nFindings: ", style="bold")
        if self.severities:
            for i, (s, n) in enumerate(self.severities.items()):
                t.append(", " if i else "")
                t.append(f"{n:,} {s}", style=SEVERITY_STYLES[s])
        else:
            t.append("none")
        if self.matter or self.healthy:
            t.append(f"\n{self.matter:,} connection{'s' if self.matter != 1 else ''} to look at, "
                     f"{self.healthy:,} healthy")
        out.append(t)
        for line in self.comparisons:
            out.append(Text(line, style="dim"))
        out.extend(general_findings(self.general_findings))
        for note in self.notes:
            out.append(Text(f"note: {note}", style="dim"))
        return out


def general_findings(findings: Sequence[Finding]) -> list[RenderableType]:
    """Capture-wide findings: each one in full, except info findings of a code that several
    captures share, which take one line (``info offload_artifact: client, node1, …``)."""
    by_code: dict[str, list[Finding]] = {}
    for f in findings:
        by_code.setdefault(f.code, []).append(f)
    out: list[RenderableType] = []
    for f in findings:
        same = by_code[f.code]
        if f.severity != "info" or len(same) == 1:
            out.append(FindingView(f))
        elif f is same[0]:
            t = Text()
            t.append(" INFO ", style=SEVERITY_STYLES["info"] + " reverse")
            t.append(f" {f.code}", style="bold")
            t.append(f"  {len(same)} captures: {', '.join(x.capture or '?' for x in same)}", style="dim")
            t.append(f"\n{f.message}", style="dim")
            out.append(t)
    return out


def diverse(a: Analysis, matter: Sequence[int]) -> list[int]:
    """``matter`` reordered so that the first connection of every problem (finding,
    service, endpoint, status; flowtrace.report.select.finding_groups) comes first, most
    severe first, then the others in their order: a capped report shows every kind of
    problem before it shows a second example of one."""
    if len(matter) < 2:
        return list(matter)
    firsts = [int(g[0]) for g in finding_groups(a, matter, examples=1)["examples"]]
    chosen = set(firsts)
    return firsts + [c for c in matter if c not in chosen]


def _capture_rows(a: Analysis) -> list[CaptureRow]:
    return [CaptureRow(capture=s.capture, role=a.roles.get(s.capture, "?"), packets=s.packets,
                       first_ns=s.first_ts_ns, last_ns=s.last_ts_ns, offset=fmt_offset(a.offsets.get(s.capture)),
                       warnings=len(s.warnings))
            for s in a.captures]


def _comparisons(a: Analysis) -> list[str]:
    agree, differ = [], []
    for name, c in a.comparisons.items():
        dump = name.split(" (", 1)[-1].rstrip(")")
        for what, x in (("", c), (" UPDATE/DESTROY events", c.events)):
            if x is not None and (x.differing or x.missing_in_dump or x.missing_in_reconstruction):
                differ.append(f"conntrack {dump}{what}: {len(x.matched):,} matched, {len(x.differing):,} differing, "
                              f"{len(x.missing_in_dump):,} only rebuilt, {len(x.missing_in_reconstruction):,} only "
                              "in the dump (flowtrace conntrack --compare)")
        if c.agrees:
            events = f" + {len(c.events.matched):,} UPDATE/DESTROY" if c.events is not None else ""
            agree.append(f"{dump} ({len(c.matched):,}{events})")
    return differ + ([f"conntrack dumps agree with the rebuilt tables: {', '.join(agree)}"] if agree else [])


def _named_groups(groups: pd.DataFrame, names: KubeNames | None) -> pd.DataFrame:
    if groups.empty:
        return groups
    g = groups.copy()
    g["service"] = [label(names, a, p, pr) for a, p, pr in zip(g["client_dst"], g["client_dport"], g["proto"],
                                                              strict=True)]
    g["endpoint"] = [label(names, a, p, pr) for a, p, pr in zip(g["server_dst"], g["server_dport"], g["proto"],
                                                               strict=True)]
    return g


def captures_table(rows: Sequence[CaptureRow], reference: str | None) -> Table:
    """Captures with role, packets, first packet, span and clock offset (± uncertainty)."""
    days = {fmt_utc(r.first_ns)[:10] for r in rows if r.first_ns is not None}
    one_day = len(days) == 1
    title = "Captures" + (f" ({days.pop()}, UTC)" if one_day else " (UTC)")
    t = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False,
              header_style="dim", padding=(0, 1))
    for col in ("capture", "role", "packets", "first packet", "span", "clock offset"):
        t.add_column(col, justify="right" if col in ("packets", "span") else "left", no_wrap=col != "clock offset")
    for r in rows:
        span = fmt_duration(r.last_ns - r.first_ns) if r.first_ns is not None and r.last_ns is not None else "-"
        offset = Text(r.offset, style="bold" if r.offset == "reference" else
                      ("yellow" if r.offset == "not aligned" else ""))
        name = Text(r.capture)
        if r.warnings:
            name.append(" !", style="yellow")
        t.add_row(name, r.role, f"{r.packets:,}", fmt_utc(r.first_ns, date=not one_day), span, offset)
    return t


def connection_list(views: Sequence[ConnectionView], *, title: str) -> Table:
    """Connections one line each: number, tuple, status, first finding."""
    t = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False,
              header_style="dim", padding=(0, 1))
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("proto", no_wrap=True)
    t.add_column("client -> service", overflow="fold", ratio=2)
    t.add_column("endpoint", overflow="fold", ratio=1)
    t.add_column("status", no_wrap=True)
    t.add_column("finding", overflow="fold", ratio=1)
    for v in views:
        f = v.findings[0] if v.findings else None
        ft = Text(f"{f.severity} {f.code}" + (f" +{len(v.findings) - 1}" if len(v.findings) > 1 else ""),
                  style=SEVERITY_STYLES.get(f.severity, "")) if f else Text("")
        t.add_row(str(v.connection), v.proto, f"{v.client} -> {v.service}", v.server, v.status, ft)
    return t


def rest_table(groups: pd.DataFrame) -> Table:
    """Connections that matter beyond the ones drawn: one row per finding, service,
    endpoint and status, with a count and example connection numbers."""
    total = int(groups["count"].sum())
    noun = "connections that matter" if total != 1 else "connection that matters"
    t = Table(title=f"{total:,} more {noun} (flowtrace trace --conn N draws one)", title_justify="left", title_style="bold", box=None,
              pad_edge=False, header_style="dim", padding=(0, 1))
    t.add_column("count", justify="right", no_wrap=True)
    t.add_column("finding", overflow="fold")
    t.add_column("service -> endpoint", overflow="fold", ratio=1)
    t.add_column("status", no_wrap=True)
    t.add_column("e.g.", overflow="fold")
    for r in groups.itertuples(index=False):
        finding = Text(f"{r.severity} {r.code}", style=SEVERITY_STYLES.get(r.severity, "")) if r.code else \
            Text("no finding", style="dim")
        more = "" if r.count <= len(r.examples) else " …"
        t.add_row(f"{r.count:,}", finding, f"{proto_name(r.proto)} {r.service} -> {r.endpoint}", str(r.status),
                  ", ".join(f"#{x}" for x in r.examples) + more)
    return t


def paths_table(groups: pd.DataFrame, healthy: int) -> Table:
    """Healthy connections by path: count, service -> endpoint, NAT binding, captures, status."""
    shown = groups.head(GROUP_LIMIT)
    title = f"Healthy connections by path ({healthy:,} in {len(groups):,} group{'s' if len(groups) != 1 else ''}"
    title += f", {len(shown)} most common shown)" if len(shown) < len(groups) else ")"
    t = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False,
              header_style="dim", padding=(0, 1))
    t.add_column("count", justify="right", no_wrap=True)
    t.add_column("path", overflow="fold", ratio=1)
    t.add_column("status", no_wrap=True)
    t.add_column("e.g.", justify="right", no_wrap=True)
    for r in shown.itertuples(index=False):
        text = Text(f"{proto_name(r.proto)} {r.service} -> {r.endpoint}")
        text.append("\n" + (str(r.binding).replace("; ", "\n") or "no NAT"), style="yellow" if r.binding else "dim")
        text.append("\nseen at " + str(r.captures).replace(",", ", "), style="dim")
        if getattr(r, "info", ""):
            text.append(f"\ninfo: {r.info}", style="dim")
        t.add_row(f"{r.count:,}", text, str(r.status), f"#{r.example}")
    return t


def report_console(*, file: object = None) -> Console:
    """The console the CLI prints reports on: colour per NO_COLOR and the terminal, the
    terminal's width, 100 columns when writing to a file or pipe without COLUMNS."""
    out = file or sys.stdout
    wide = not getattr(out, "isatty", lambda: False)() and "COLUMNS" not in os.environ
    return Console(file=out, width=100 if wide else None)  # type: ignore[arg-type]


def render_analysis(a: Analysis, console: Console | None = None, *, show_all: bool = False,
                    names: KubeNames | None = None, limit: int | None = DEFAULT_LIMIT) -> AnalysisReport:
    """Print the report of ``a`` on ``console`` (see ``report_console``); returns the report."""
    report = AnalysisReport.build(a, names=names, show_all=show_all, limit=limit)
    (console or report_console()).print(report)
    return report


def renderable_group(*parts: RenderableType) -> Group:
    """Several renderables as one (for callers that print once)."""
    return Group(*parts)
