"""The ladder diagram (flowtrace.report.ladder.Ladder) as lines of terminal text.

One line per arrow: the time, the vantage points' lifelines with the arrow drawn across
them (``●`` seen, ``◆`` rewritten, ``○`` off path, ``✕`` missing, ``▶``/``◀`` the
direction), then what the packet is; rewrites shown for the first time go on the lines
under it, pauses longer than GAP_NS on a line of their own. Column widths follow the
console's width.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from flowtrace.report.format import fmt_duration, fmt_relative
from flowtrace.report.ladder import DIRECTION_STYLES, GAP_NS, GLYPHS, Arrow, Ladder


def render_terminal(ladder: Ladder, width: int) -> list[Text]:
    """The ladder as lines of text for a console ``width`` columns wide."""
    n = max(len(ladder.columns), 1)
    time_w = 11
    label_min = 26
    col_w = max(5, min(12, (width - time_w - label_min - 1) // n))
    diagram_w = col_w * n
    label_w = max(10, width - time_w - diagram_w - 1)
    lines: list[Text] = [Text(ladder.title, style="bold")]
    head = Text(" " * time_w)
    roles = Text(f"{ladder.unit:>{time_w - 1}} ", style="dim")
    for c in ladder.columns:
        head.append(_center(c.title, col_w), style="bold")
        roles.append(_center(c.role, col_w), style="dim")
    lines += [head, roles]
    centers = [i * col_w + col_w // 2 for i in range(n)]
    for arrow in ladder.arrows:
        if arrow.gap_ns > GAP_NS:
            gap = Text(" " * time_w)
            gap.append_text(_lifelines(centers, diagram_w, "┆"))
            gap.append(f" {fmt_duration(arrow.gap_ns)} later", style="dim italic")
            lines.append(gap)
        t = Text(f"{fmt_relative(arrow.t_ns, unit=ladder.unit):>{time_w - 1}} ", style="dim")
        t.append_text(_arrow_text(arrow, centers, diagram_w))
        t.append(" ")
        main, extra = _arrow_label(arrow)
        t.append_text(_fit(main, label_w))
        lines.append(t)
        for piece in extra:
            more = Text(" " * time_w)
            if len(piece.plain) + 2 <= label_w:
                more.append_text(_lifelines(centers, diagram_w))
                more.append("   " + piece.plain, style=piece.style)
                lines.append(more)
                continue
            for chunk in _chunks(piece.plain, width - time_w - 2):
                lines.append(Text(" " * time_w + "◆ " + chunk, style=piece.style))
    if ladder.omitted:
        lines.append(Text(f"… {ladder.omitted:,} more packets not drawn (--limit 0 draws all)", style="dim"))
    if not ladder.arrows:
        lines.append(Text("no packets", style="dim"))
    lines.append(Text(f"● seen  ◆ rewritten  ○ off path  ✕ missing; {ladder.unit} since the first packet, "
                      "corrected clocks", style="dim"))
    return lines


def _center(text: str, w: int) -> str:
    text = text if len(text) < w else text[: max(w - 2, 1)] + "…"
    return text.center(w)


def _lifelines(centers: Sequence[int], w: int, ch: str = "│") -> Text:
    chars = [" "] * w
    for c in centers:
        chars[c] = ch
    return Text("".join(chars), style="dim")


def _arrow_text(arrow: Arrow, centers: Sequence[int], w: int) -> Text:
    chars = [" "] * w
    styles = ["dim"] * w
    for c in centers:
        chars[c] = "│"
    line_style = DIRECTION_STYLES[arrow.direction]
    seen = [m for m in arrow.marks if m.kind != "missing"]
    missing = [m for m in arrow.marks if m.kind == "missing"]
    a, b = centers[seen[0].column], centers[seen[-1].column]
    lo, hi = min(a, b), max(a, b)
    for x in range(lo + 1, hi):
        chars[x], styles[x] = "─", line_style
    if a != b:
        head = b - 1 if b > a else b + 1
        chars[head], styles[head] = ("▶" if b > a else "◀"), line_style
    for m in seen:
        x = centers[m.column]
        chars[x] = GLYPHS[m.kind]
        styles[x] = "bold yellow" if m.kind == "rewrite" else (line_style if m.kind == "seen" else "dim")
    for m in missing:
        x = centers[m.column]
        if x == b:
            going_right = b >= a if arrow.direction == "request" else b > a
            x = min(w - 1, b + 1) if going_right else max(0, b - 1)
        else:
            for y in range(min(x, b) + 1, max(x, b)):
                chars[y], styles[y] = "┄", "red"
        chars[x], styles[x] = GLYPHS["missing"], "bold red"
    text = Text()
    for ch, st in zip(chars, styles, strict=True):
        text.append(ch, style=st)
    return text


def _arrow_label(arrow: Arrow) -> tuple[Text, list[Text]]:
    """The label's first line and the lines under it (rewrites shown for the first time)."""
    t = Text(arrow.label)
    if arrow.span_ns and len(arrow.marks) > 1:
        t.append(f" ({fmt_duration(arrow.span_ns)})", style="dim")
    if arrow.missing_at:
        t.append(f" not seen at {arrow.missing_at}", style="bold red")
    return t, [Text(r, style="yellow") for r in arrow.new_rewrites]


def _fit(t: Text, w: int) -> Text:
    if len(t.plain) <= w:
        return t
    t = t.copy()
    t.truncate(w, overflow="ellipsis")
    return t


def _chunks(text: str, w: int) -> list[str]:
    """``text`` cut into pieces of at most ``w`` characters, at spaces where possible."""
    w = max(w, 8)
    out: list[str] = []
    while len(text) > w:
        cut = text.rfind(" ", 0, w + 1)
        cut = cut if cut > w // 2 else w
        out.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    out.append(text)
    return out
