"""The output of ``flowtrace trace``: one connection's path panel, then its ladder diagram.

``TraceReport.build`` picks the connection (by number or a ConnectionFilter; with several
matches the one that matters most, the others listed) and renders itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from flowtrace.analysis import Analysis
from flowtrace.context.k8s import KubeNames
from flowtrace.report.analysis import connection_list
from flowtrace.report.ladder import DEFAULT_ARROWS, Ladder
from flowtrace.report.path import ConnectionView, HopIndex
from flowtrace.report.select import ConnectionFilter, findings_by_connection, select

OTHERS_LIMIT = 50
"""Other matching connections listed under the drawn one."""


class NoConnection(LookupError):
    """No connection matches the filter (the message says what exists)."""


@dataclass(slots=True, kw_only=True)
class TraceReport:
    """One connection drawn in full, and the other connections the filter matched."""

    view: ConnectionView
    """The connection's path panel."""
    ladder: Ladder
    """Its ladder diagram."""
    others: list[ConnectionView] = field(default_factory=list)
    """Other matching connections (at most OTHERS_LIMIT)."""
    more: int = 0
    """Matches beyond those."""
    note: str = ""
    """Why this connection was chosen, when nothing was asked for."""

    @staticmethod
    def build(a: Analysis, selection: ConnectionFilter, *, names: KubeNames | None = None,
              limit: int | None = DEFAULT_ARROWS) -> TraceReport:
        """The report for the connections of ``a`` that ``selection`` matches.

        Several matches: the one that matters most (findings, then a bad ending), else the
        earliest. No filter: the first connection that matters, else the first healthy
        one. ``limit`` caps the arrows (None: all). Raises NoConnection when none matches.
        """
        sel = select(a)
        rank = {c: i for i, c in enumerate(sel.matter + sel.healthy + sel.noise)}
        if selection.empty:
            matches = sel.matter + sel.healthy
            note = "no --conn given: drawing the first connection that matters" if sel.matter else \
                "no --conn given: drawing the first connection"
        else:
            matches = sorted(selection.apply(a), key=lambda c: rank.get(c, len(rank)))
            note = ""
        if not matches:
            total = len(a.connections)
            counted = f"{total} connection{'s' if total != 1 else ''} in these captures"
            if selection.empty:
                raise NoConnection(f"no connection to draw but link housekeeping ({counted}; --conn N draws "
                                   "one, flowtrace analyze --all lists them)" if total else
                                   "no connection in these captures")
            raise NoConnection(f"no connection matches ({counted}; flowtrace analyze --all lists them)")
        conns = a.connections.set_index("connection", drop=False)
        index = HopIndex(a.hops)
        by_conn = findings_by_connection(a.findings)

        def view(cid: int) -> ConnectionView:
            return ConnectionView.build(a, conns.loc[cid], index.of(cid), by_conn.get(cid, ()), names)

        chosen = matches[0]
        ladder = Ladder.build(a, chosen, names=names, limit=limit, hops=index.of(chosen))
        others = [view(c) for c in matches[1:1 + OTHERS_LIMIT]] if not selection.empty else []
        more = max(0, len(matches) - 1 - OTHERS_LIMIT) if not selection.empty else 0
        return TraceReport(view=view(chosen), ladder=ladder, others=others, more=more, note=note)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.note:
            yield Text(self.note, style="dim")
        yield self.view
        yield self.ladder
        if self.others:
            yield Text("")
            yield connection_list(self.others, title=f"{len(self.others) + self.more:,} more matching connections "
                                  "(--conn N draws one)")
        if self.more:
            yield Text(f"… and {self.more:,} more", style="dim")


def render_trace(report: TraceReport, console: Console | None = None) -> None:
    """Print ``report`` on ``console`` (the CLI's report console by default)."""
    from flowtrace.report.analysis import report_console

    (console or report_console()).print(report)
