"""Rendering ``flowtrace info``: a terminal summary per capture, or a JSON array."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from flowtrace.decode.summary import CaptureSummary


def _fmt_count(counts: dict[str, int], limit: int = 12) -> str:
    items = [(k, v) for k, v in counts.items() if v]
    shown = ", ".join(f"{k} {v:,}" for k, v in items[:limit])
    if len(items) > limit:
        shown += f", … ({len(items) - limit} more)"
    return shown or "-"


def info_renderable(s: CaptureSummary) -> RenderableType:
    """A rich renderable describing one capture."""
    d = s.to_dict()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    fmt = f"{s.format} ({s.byte_order}-endian"
    fmt += f", {s.compression}-compressed)" if s.compression else ")"
    if s.format == "pcapng":
        fmt += f", {s.sections} section{'s' if s.sections != 1 else ''}"
    grid.add_row("format", fmt)
    grid.add_row("time resolution", s.time_resolution)
    grid.add_row("link types", ", ".join(f"{lt['name']} ({lt['link_type']})" for lt in s.link_types) or "-")
    grid.add_row("packets", f"{s.packets:,} ({s.bytes:,} bytes captured, {s.wire_bytes:,} on the wire)")
    if s.packets:
        grid.add_row("first", str(d["first_time"]))
        grid.add_row("last", str(d["last_time"]))
        grid.add_row("duration", f"{s.duration_s:.6f} s")
    if s.time_order_violations:
        grid.add_row("out of order", f"{s.time_order_violations:,} frames earlier than the frame before")
    grid.add_row("decode status", _fmt_count(s.decode_status))
    grid.add_row("protocols", _fmt_count(s.protocols))
    grid.add_row("encapsulation", _fmt_count(s.encapsulations))
    grid.add_row("directions", _fmt_count(s.directions))
    if s.vlan_tagged:
        grid.add_row("VLAN tagged", f"{s.vlan_tagged:,}")
    grid.add_row("snaplen truncated", f"{s.snaplen_truncated:,}")
    if s.checksum_errors:
        grid.add_row("bad checksums", f"{s.checksum_errors:,} (offload on the capturing host, or real errors)")
    grid.add_row("capture drops", "unknown" if s.capture_drops is None else f"{s.capture_drops:,}")
    parts: list[RenderableType] = [grid]
    if len(s.interfaces) > 1 or s.format == "pcapng":
        t = Table(title="interfaces", title_justify="left", box=None, pad_edge=False)
        for col in ("id", "name", "link type", "snaplen", "resolution", "packets", "drops"):
            t.add_column(col, justify="right" if col in ("id", "snaplen", "packets", "drops") else "left")
        for i in s.interfaces:
            stats = i["stats"]
            drops = "-" if not stats else str((stats.get("ifdrop") or 0) + (stats.get("osdrop") or 0))
            t.add_row(str(i["id"]), i["name"] or "-", i["link_type_name"], str(i["snaplen"]),
                      i["time_resolution"], f"{i['packets']:,}", drops)
        parts.append(t)
    if s.sll2_ifindexes:
        t = Table(title="SLL2 interface indexes", title_justify="left", box=None, pad_edge=False)
        for col in ("ifindex", "packets", "in", "out"):
            t.add_column(col, justify="right")
        for row in s.sll2_ifindexes:
            t.add_row(str(row["ifindex"]), f"{row['packets']:,}", f"{row['in']:,}", f"{row['out']:,}")
        parts.append(t)
        parts.append("[dim]index-to-name mappings hold only on the capturing host (ip -o link there)[/dim]")
    for w in s.warnings:
        parts.append(f"[yellow]warning:[/yellow] {w}")
    return Panel(Group(*parts), title=f"[bold]{s.capture}[/bold]  {s.path}", title_align="left")


def render_info(summaries: Sequence[CaptureSummary], console: Console | None = None) -> None:
    """Print each capture's summary to ``console`` (stdout by default)."""
    console = console or Console()
    for s in summaries:
        console.print(info_renderable(s))


def render_info_json(summaries: Sequence[CaptureSummary]) -> str:
    """The JSON array printed by ``flowtrace info --json``."""
    return json.dumps([s.to_dict() for s in summaries], indent=2)
