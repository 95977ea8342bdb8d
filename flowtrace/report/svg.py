"""A ladder diagram (flowtrace.report.ladder.Ladder) as one inline SVG element.

Columns are vertical lifelines headed by the capture name and role; each packet is a
horizontal arrow at its row (rows in corrected time order, longer pauses drawn as a
break), with the same marks as the terminal ladder: filled circle seen, diamond
rewritten, hollow circle off path, red cross missing. Every mark and arrow has a
``<title>`` (shown on hover) with the observation points and frame numbers. All text
from captures is escaped; the SVG needs no external resource.
"""

from __future__ import annotations

from html import escape

from flowtrace.report.format import fmt_duration, fmt_relative
from flowtrace.report.ladder import GAP_NS, Arrow, Ladder

COL_W = 120
TIME_W = 80
ROW_H = 22
NOTE_H = 15
GAP_H = 20
HEAD_H = 44
LABEL_W = 380
"""Least room for the labels right of the columns; more when the labels need it."""
CHAR_W = 7.3
"""Width of one character of the 12 px monospace labels, for sizing the drawing."""
COLORS = {"request": "#2563eb", "response": "#9333ea", "rewrite": "#d97706", "missing": "#dc2626",
          "lifeline": "#cbd5e1", "text": "#0f172a", "dim": "#64748b"}


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def ladder_svg(ladder: Ladder) -> str:
    """The ladder as an ``<svg>`` element (text), sized to its content."""
    n = max(len(ladder.columns), 1)
    longest = max((len(_label_text(a)) for a in ladder.arrows), default=0)
    longest = max([longest, *(len(r) + 2 for a in ladder.arrows for r in a.new_rewrites)])
    width = TIME_W + n * COL_W + max(LABEL_W, int(longest * CHAR_W) + 24)
    y = HEAD_H + 10
    body: list[str] = []
    centers = [TIME_W + i * COL_W + COL_W // 2 for i in range(n)]
    breaks: list[int] = []
    for arrow in ladder.arrows:
        if arrow.gap_ns > GAP_NS:
            breaks.append(y)
            body.append(f'<text x="{centers[-1] + COL_W // 2 + 8}" y="{y + 13}" class="dim">'
                        f'{_e(fmt_duration(arrow.gap_ns))} later</text>')
            y += GAP_H
        y += ROW_H // 2
        body.append(_arrow(arrow, centers, y, ladder.unit))
        y += ROW_H // 2
        for r in arrow.new_rewrites:
            body.append(f'<text x="{centers[-1] + COL_W // 2 + 16}" y="{y + 10}" class="rw">{_e(r)}</text>')
            y += NOTE_H
    if ladder.omitted:
        body.append(f'<text x="{TIME_W}" y="{y + 16}" class="dim">… {ladder.omitted:,} more packets not drawn'
                    "</text>")
        y += ROW_H
    height = y + 12
    head = []
    for c, x in zip(ladder.columns, centers, strict=True):
        head.append(f'<text x="{x}" y="16" text-anchor="middle" class="col">{_e(c.title)}</text>'
                    f'<text x="{x}" y="32" text-anchor="middle" class="dim">{_e(c.role)}</text>')
        segments = [HEAD_H, *[v for b in breaks for v in (b, b + GAP_H)], height - 6]
        for y0, y1 in zip(segments[::2], segments[1::2], strict=False):
            head.append(f'<line x1="{x}" y1="{y0}" x2="{x}" y2="{y1}" class="life"/>')
        for b in breaks:
            head.append(f'<path d="M{x - 6} {b + 7} l4 -4 l4 8 l4 -4" class="brk"/>')
    head.append(f'<text x="{TIME_W - 10}" y="32" text-anchor="end" class="dim">{_e(ladder.unit)}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e("ladder diagram " + ladder.title)}">'
            f"<title>{_e(ladder.title)}</title>"
            "<defs>"
            + "".join(f'<marker id="ah-{d}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
                      f'orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10 z" fill="{COLORS[d]}"/></marker>'
                      for d in ("request", "response"))
            + "</defs>" + "".join(head) + "".join(body) + "</svg>")


def _arrow(arrow: Arrow, centers: list[int], y: int, unit: str) -> str:
    color = COLORS[arrow.direction]
    seen = [m for m in arrow.marks if m.kind != "missing"]
    missing = [m for m in arrow.marks if m.kind == "missing"]
    a, b = centers[seen[0].column], centers[seen[-1].column]
    tip = f"{arrow.label} ({arrow.direction})"
    if arrow.rewrites:
        tip += "\n" + "\n".join(arrow.rewrites)
    if arrow.missing_at:
        tip += f"\nnot seen at {arrow.missing_at}"
    out = [f'<g class="pkt {arrow.direction}"><title>{_e(tip)}</title>',
           f'<text x="{TIME_W - 10}" y="{y + 4}" text-anchor="end" class="t">{_e(fmt_relative(arrow.t_ns, unit=unit))}'
           "</text>"]
    if a != b:
        end = b - 7 if b > a else b + 7
        out.append(f'<line x1="{a}" y1="{y}" x2="{end}" y2="{y}" stroke="{color}" stroke-width="1.6" '
                   f'marker-end="url(#ah-{arrow.direction})"/>')
    for m in missing:
        x = centers[m.column]
        if x == b:
            x = b + (14 if (b >= a) else -14)
        out.append(f'<line x1="{b}" y1="{y}" x2="{x}" y2="{y}" stroke="{COLORS["missing"]}" stroke-width="1.4" '
                   'stroke-dasharray="3 3"/>')
        out.append(f'<g class="miss"><title>{_e("not seen at " + m.frames)}</title>'
                   f'<path d="M{x - 5} {y - 5} L{x + 5} {y + 5} M{x - 5} {y + 5} L{x + 5} {y - 5}" '
                   f'stroke="{COLORS["missing"]}" stroke-width="2.2"/></g>')
    for m in seen:
        x = centers[m.column]
        tip_m = f"{m.frames}\n{m.tuple}"
        if m.kind == "rewrite":
            shape = (f'<path d="M{x} {y - 6} L{x + 6} {y} L{x} {y + 6} L{x - 6} {y} z" '
                     f'fill="{COLORS["rewrite"]}" stroke="#92400e"/>')
        elif m.kind == "offpath":
            shape = f'<circle cx="{x}" cy="{y}" r="4.5" fill="#fff" stroke="{color}" stroke-width="1.6"/>'
        else:
            shape = f'<circle cx="{x}" cy="{y}" r="4.5" fill="{color}"/>'
        out.append(f"<g><title>{_e(tip_m)}</title>{shape}</g>")
    text = _label_text(arrow, missing=False)
    x_label = centers[-1] + COL_W // 2 + 8
    out.append(f'<text x="{x_label}" y="{y + 4}" class="lbl">{_e(text)}')
    if arrow.missing_at:
        out.append(f'<tspan class="misst"> not seen at {_e(arrow.missing_at)}</tspan>')
    out.append("</text></g>")
    return "".join(out)


def _label_text(arrow: Arrow, *, missing: bool = True) -> str:
    text = arrow.label
    if arrow.span_ns and len(arrow.marks) > 1:
        text += f" ({fmt_duration(arrow.span_ns)})"
    if missing and arrow.missing_at:
        text += f" not seen at {arrow.missing_at}"
    return text


SVG_CSS = """
svg.ladder { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #fff; }
svg.ladder .col { font-weight: 600; fill: #0f172a; }
svg.ladder .dim { fill: #64748b; }
svg.ladder .t { fill: #475569; }
svg.ladder .lbl { fill: #0f172a; }
svg.ladder .rw { fill: #b45309; font-size: 11px; }
svg.ladder .misst { fill: #dc2626; font-weight: 600; }
svg.ladder .life { stroke: #cbd5e1; stroke-width: 1.5; }
svg.ladder .brk { stroke: #94a3b8; fill: none; }
svg.ladder g.pkt:hover .lbl { font-weight: 700; }
"""
"""Styles the SVG relies on (the HTML report inlines them; a standalone file embeds them)."""


def standalone_svg(ladder: Ladder) -> str:
    """A complete SVG document (with its styles) for ``flowtrace trace --svg``."""
    svg = ladder_svg(ladder)
    head, rest = svg.split(">", 1)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{head}><style>{SVG_CSS}</style>{rest}\n'
