"""The terminal report of ``flowtrace analyze``: captures and clocks, then each connection's path."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from flowtrace.analysis import Analysis
from flowtrace.report.format import endpoint, fmt_duration, fmt_offset


def captures_table(a: Analysis) -> Table:
    """Captures with their role, packets, time span and clock offset."""
    t = Table(title="Captures", title_justify="left", show_edge=False, pad_edge=False)
    for col in ("capture", "role", "packets", "first packet (UTC)", "duration", "clock offset"):
        t.add_column(col, justify="right" if col in ("packets", "duration") else "left")
    for s in a.captures:
        o = a.offsets.get(s.capture)
        first = s.to_dict()["first_time"] or "-"
        t.add_row(s.capture, a.roles.get(s.capture, "?"), f"{s.packets:,}", first.replace("T", " ")[:26],
                  fmt_duration(int(s.duration_s * 1e9)), fmt_offset(o))
    return t


def status_line(a: Analysis) -> Text:
    """Connections by status, one line."""
    if a.connections.empty:
        return Text("No connections.")
    counts = a.connections["status"].value_counts()
    parts = [f"{int(n)} {k}" for k, n in counts.items() if n]
    return Text(f"{len(a.connections)} connections: " + ", ".join(parts))


def path_table(hops: pd.DataFrame, title: str) -> Table:
    """One direction of a connection, hop by hop."""
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for col in ("#", "capture", "interface", "dir", "source", "destination", "ttl", "changed", "latency", "pkts",
                "missing"):
        t.add_column(col, justify="right" if col in ("#", "ttl", "latency", "pkts", "missing") else "left")
    for h in hops.itertuples(index=False):
        iface = str(h.interface) if str(h.interface) else (f"if{h.ifindex}" if h.ifindex >= 0 else "-")
        if h.ifindex >= 0 and str(h.interface):
            iface = f"{h.interface}:{h.ifindex}"
        changed = str(h.change_labels).replace("routed", "").strip(", ").replace(", ,", ",")
        style = "bold yellow" if changed else ""
        src = endpoint(h.src, h.sport)
        dst = endpoint(h.dst, h.dport)
        if str(h.encap) != "none":
            dst += f" [{h.encap}]"
        t.add_row(str(h.hop) + ("" if h.on_path else "*"), str(h.capture), iface, str(h.packet_direction),
                  src, dst, str(h.ttl), Text(changed, style=style), fmt_duration(h.latency_ns) if h.hop and h.on_path else "",
                  str(h.packets), str(h.missing) if h.missing else "")
    return t


def connection_panel(a: Analysis, row: pd.Series) -> Panel:
    """A connection: its client and server tuples, NAT, then both paths."""
    cid = int(row["connection"])
    hops = a.connection_hops(cid)
    title = (f"connection {cid}  {endpoint(row['client_src'], row['client_sport'])} -> "
             f"{endpoint(row['client_dst'], row['client_dport'])}  [{row['status']}]")
    parts: list[RenderableType] = []
    if row["nat"]:
        parts.append(Text(str(row["nat"]), style="yellow"))
    for direction in ("request", "response"):
        h = hops[hops["direction"] == direction]
        if len(h):
            parts.append(path_table(h, direction))
    return Panel(Group(*parts), title=title, title_align="left")


def interesting(a: Analysis) -> Iterable[pd.Series]:
    """Connections seen at more than one capture, or translated, in time order."""
    c = a.connections.sort_values("start_ts_ns")
    ported = c["proto"].isin([6, 17, 132]).to_numpy()
    keep = (c["captures"].str.contains(",") & ported) | c["dnat"] | c["snat"]
    for _, row in c[keep].iterrows():
        yield row


def render_analysis(a: Analysis, console: Console | None = None, *, show_all: bool = False) -> None:
    """Print the report."""
    console = console or Console()
    console.print(captures_table(a))
    console.print(status_line(a))
    for note in a.notes:
        console.print(Text(f"note: {note}", style="dim"))
    rows = a.connections.sort_values("start_ts_ns").iterrows() if show_all else ((None, r) for r in interesting(a))
    for _, row in rows:
        console.print(connection_panel(a, row))
