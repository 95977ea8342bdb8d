"""The self-contained HTML report of ``flowtrace analyze --html``.

One file, no network: styles, a few lines of script and SVG ladders are inline, and a
Content-Security-Policy forbids every fetch. It is a thin adapter over the terminal
report's objects (AnalysisReport, ConnectionView, Ladder): summary, findings, then one
section per connection drawn — the ones that matter first, then one example of each
healthy path, then other healthy ones — each with its path table and SVG ladder, at most
``limit`` of them (the report says how many were left out). Every string that comes from
captures, snapshots or findings goes through ``html.escape``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

from flowtrace.analysis import Analysis
from flowtrace.context.k8s import KubeNames
from flowtrace.detect.finding import Finding, severity_rank
from flowtrace.report.analysis import AnalysisReport, CaptureRow, diverse
from flowtrace.report.format import fmt_duration, fmt_utc, proto_name
from flowtrace.report.ladder import Ladder, PacketIndex
from flowtrace.report.path import ConnectionView, HopIndex, HopView, evidence_text, finding_place
from flowtrace.report.select import path_groups, select
from flowtrace.report.svg import SVG_CSS, ladder_svg

DEFAULT_LIMIT = 100
"""Connections drawn (with ladders) in the HTML report unless told otherwise."""

ARROW_LIMIT = 300
"""Packets drawn per ladder in the HTML report."""

FINDING_ROWS = 2000
"""Rows of the findings table before the report says how many more."""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def html_report(a: Analysis, *, names: KubeNames | None = None, limit: int | None = DEFAULT_LIMIT,
                version: str = "", title: str = "flowtrace report") -> str:
    """The whole HTML document for ``a``.

    ``names`` puts Kubernetes names on addresses; ``limit`` caps the connections drawn
    with ladders (None: all); ``version`` is printed in the footer. Returns the text.
    """
    sel = select(a)
    groups = path_groups(a, sel.healthy)
    examples = [int(x) for x in groups["example"]] if len(groups) else []
    healthy = list(dict.fromkeys(examples + sel.healthy))
    order = diverse(a, sel.matter) + healthy
    drawn = order if limit is None else order[:limit]
    report = AnalysisReport.build(a, names=names, selection=sel, draw=drawn)
    index = PacketIndex(a)
    hops = HopIndex(a.hops)
    opened = set(sel.matter[:20]) | set(examples[:5])
    sections = []
    for view in report.shown:
        ladder = Ladder.build(a, view.connection, names=names, limit=ARROW_LIMIT, packet_index=index,
                              hops=hops.of(view.connection))
        sections.append(connection_section(view, ladder, opened=view.connection in opened))
    left = len(order) - len(drawn)
    parts = [
        _head(title),
        '<body><header><h1>' + _e(title) + '</h1>',
        f'<p class="meta">{_e(", ".join(c.capture for c in report.captures))} · generated '
        f'{_e(dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))}'
        + (f" · snapshot {_e(names.source)}" if names is not None and names.source else "") + "</p></header>",
        '<nav><a href="#summary">Summary</a><a href="#findings">Findings</a>'
        '<a href="#connections">Connections</a><a href="#paths">Healthy paths</a>'
        '<input id="filter" type="search" placeholder="filter connections (address, capture, code)…" '
        'aria-label="filter connections"><button type="button" id="expand">expand all</button>'
        '<button type="button" id="collapse">collapse all</button></nav><main>',
        summary_section(report),
        findings_section(a.findings),
        '<section id="connections"><h2>Connections</h2>',
        f'<p class="dim">{len(drawn):,} drawn of {len(order):,} (connections that matter first, then one '
        "example of each healthy path).</p>" if drawn else "<p>No connections.</p>",
        *sections,
    ]
    if left:
        parts.append(f'<p class="cap">{left:,} more connections are not drawn (limit {limit:,}; '
                     "<code>--limit</code> raises it, <code>flowtrace trace --conn N</code> draws one).</p>")
    if len(report.rest):
        parts.append(rest_table(report.rest))
    parts.append("</section>")
    parts.append(paths_section(report))
    parts.append(f'</main><footer>flowtrace {_e(version)} · schema_version {a.schema_version}'
                 f"{' · ' + str(report.noise) + ' link housekeeping connections not shown' if report.noise else ''}"
                 f"</footer><script>{SCRIPT}</script></body></html>\n")
    return "".join(parts)


def _head(title: str) -> str:
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}{SVG_CSS}</style></head>")


def summary_section(r: AnalysisReport) -> str:
    """Captures (roles, spans, clock offsets), connections by status, findings by severity."""
    rows = "".join(_capture_row(c, c.capture == r.reference) for c in r.captures)
    statuses = ", ".join(f"{n:,} {_e(s)}" for s, n in r.statuses.items())
    sev = ", ".join(f'<span class="sev {s}">{n:,} {s}</span>' for s, n in r.severities.items()) or "none"
    out = ['<section id="summary"><h2>Summary</h2><table class="grid"><thead><tr><th>capture</th><th>role</th>'
           '<th class="num">packets</th><th>first packet (UTC)</th><th class="num">span</th><th>clock offset</th>'
           f"</tr></thead><tbody>{rows}</tbody></table>",
           f'<p><b>Connections:</b> {r.total - r.noise:,}{" (" + statuses + ")" if statuses else ""}'
           + (f'<span class="dim">; {r.noise:,} link housekeeping not shown</span>' if r.noise else "") + "</p>",
           f"<p><b>Findings:</b> {sev}</p>",
           f"<p>{r.matter:,} connections to look at, {r.healthy:,} healthy.</p>"]
    out += [f'<p class="dim">{_e(c)}</p>' for c in r.comparisons]
    out += [f'<p class="note">note: {_e(n)}</p>' for n in r.notes]
    out.append("</section>")
    return "".join(out)


def _capture_row(c: CaptureRow, reference: bool) -> str:
    span = fmt_duration(c.last_ns - c.first_ns) if c.first_ns is not None and c.last_ns is not None else "-"
    warn = f' <span class="warn" title="{c.warnings} warnings">!</span>' if c.warnings else ""
    ref = ' class="ref"' if reference else ""
    return (f'<tr><td>{_e(c.capture)}{warn}</td><td>{_e(c.role)}</td><td class="num">{c.packets:,}</td>'
            f'<td>{_e(fmt_utc(c.first_ns))}</td><td class="num">{_e(span)}</td>'
            f"<td{ref}>{_e(c.offset)}</td></tr>")


def findings_section(findings: Sequence[Finding]) -> str:
    """Every finding, most severe first, with place, message, evidence and causes."""
    if not findings:
        return '<section id="findings"><h2>Findings</h2><p>No findings.</p></section>'
    ordered = sorted(findings, key=lambda f: (-severity_rank(f.severity), f.connection if f.connection is not None
                                              else -1))
    rows = []
    for f in ordered[:FINDING_ROWS]:
        conn = (f'<a href="#conn-{int(f.connection)}">#{int(f.connection)}</a>' if f.connection is not None
                else _e(f.capture or ""))
        rows.append(f'<tr class="f-{_e(f.severity)}"><td><span class="sev {_e(f.severity)}">{_e(f.severity)}</span>'
                    f"</td><td><code>{_e(f.code)}</code></td><td>{conn}</td><td>{_e(finding_place(f))}</td>"
                    f"<td>{_finding_body(f)}</td></tr>")
    more = (f'<p class="cap">{len(ordered) - FINDING_ROWS:,} more findings in --json.</p>'
            if len(ordered) > FINDING_ROWS else "")
    return ('<section id="findings"><h2>Findings</h2><table class="grid"><thead><tr><th>severity</th><th>code</th>'
            "<th>connection</th><th>where</th><th>what</th></tr></thead><tbody>" + "".join(rows)
            + f"</tbody></table>{more}</section>")


def _finding_body(f: Finding) -> str:
    out = [_e(f.message)]
    if f.evidence:
        out.append('<div class="ev">evidence: ' + "; ".join(_e(evidence_text(e)) for e in f.evidence) + "</div>")
    if f.causes:
        out.append('<div class="ev">likely: ' + "; ".join(_e(c) for c in f.causes) + "</div>")
    return "".join(out)


def connection_section(view: ConnectionView, ladder: Ladder, *, opened: bool) -> str:
    """One connection: summary line, NAT, hop table, findings, SVG ladder (a ``<details>``,
    ``opened`` or closed)."""
    sev = view.severity
    badge = f'<span class="sev {_e(sev)}">{_e(sev)}</span> ' if sev else ""
    status_cls = "ok" if view.status in ("closed", "established", "replied") else "bad"
    search = " ".join([view.client, view.service, view.server, view.captures, view.status,
                       *(f.code for f in view.findings)])
    out = [f'<details class="conn" id="conn-{view.connection}" data-search="{_e(search.lower())}"'
           f'{" open" if opened else ""}><summary>{badge}<b>#{view.connection}</b> {_e(view.proto)} '
           f"{_e(view.client)} → {_e(view.service)} <span class=\"st {status_cls}\">{_e(view.status)}"
           f"{' (' + _e(view.client_state) + ')' if view.client_state else ''}</span>"
           f'<span class="dim"> {_e(fmt_duration(view.duration_ns))}</span></summary>']
    if view.server and view.server != view.service:
        out.append(f"<p>endpoint {_e(view.server)} · seen at {_e(view.captures.replace(',', ', '))}</p>")
    if view.nat:
        out.append('<p class="nat">' + "<br>".join(_e(x) for x in view.nat.split("; ")) + "</p>")
    out.append(hop_table(view))
    for f in view.findings:
        out.append(f'<div class="finding {_e(f.severity)}"><span class="sev {_e(f.severity)}">{_e(f.severity)}</span> '
                   f"<code>{_e(f.code)}</code> <span class=\"dim\">{_e(finding_place(f))}</span>"
                   f"<div>{_finding_body(f)}</div></div>")
    out.append('<div class="ladder-wrap">' + ladder_svg(ladder) + "</div>")
    if ladder.omitted:
        out.append(f'<p class="cap">{ladder.omitted:,} more packets not drawn '
                   f"(<code>flowtrace trace --conn {view.connection} --limit 0</code>).</p>")
    out.append("</details>")
    return "".join(out)


def hop_table(view: ConnectionView) -> str:
    """Both directions' hops: point, tuple with rewritten parts marked, change, latency, packets."""
    rows = []
    for name, hops in (("request", view.request), ("response", view.response)):
        rows.append(f'<tr class="dir"><th colspan="7">{name}{"" if hops else " — not seen"}</th></tr>')
        rows += [_hop_row(h) for h in hops]
    return ('<table class="grid hops"><thead><tr><th>#</th><th>seen at</th><th>source → destination</th>'
            '<th>change</th><th class="num">+time</th><th class="num">pkts</th><th class="num">missing</th>'
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _hop_row(h: HopView) -> str:
    if h.same:
        tup = '<span class="dim">″</span>'
    else:
        src = f'<mark>{_e(h.src)}</mark>' if h.src_changed else _e(h.src)
        dst = f'<mark>{_e(h.dst)}</mark>' if h.dst_changed else _e(h.dst)
        tup = f"{src} → {dst}"
    if h.tunnel:
        tup += f' <span class="tun">[{_e(h.tunnel)}]</span>'
    change = _e(h.changes)
    if h.changes and " -> " in h.changed_at:
        change += f' <span class="dim">({_e(h.changed_at)})</span>'
    if not h.on_path:
        change += ' <span class="dim">off path</span>'
    if h.findings:
        change += f' <span class="sev {_e(h.finding_severity or "")}">{_e(", ".join(h.findings))}</span>'
    lat = _e(fmt_duration(h.latency_ns)) if h.latency_ns is not None else ""
    miss = f'<span class="missn">{h.missing}</span>' if h.missing else ""
    off = "" if h.on_path else ' class="off"'
    return (f'<tr{off}><td class="num">{h.hop}</td><td>{_e(h.point)}</td>'
            f'<td>{tup}</td><td>{change}</td><td class="num">{lat}</td><td class="num">{h.packets}</td>'
            f'<td class="num">{miss}</td></tr>')


def rest_table(groups: object) -> str:
    """Connections that matter beyond the drawn ones, grouped (AnalysisReport.rest)."""
    rows = "".join(
        f'<tr><td class="num">{g.count:,}</td><td>'
        + (f'<span class="sev {_e(g.severity)}">{_e(g.severity)}</span> <code>{_e(g.code)}</code>' if g.code
           else '<span class="dim">no finding</span>')
        + f"</td><td>{_e(proto_name(g.proto))} {_e(g.service)} → {_e(g.endpoint)}</td><td>{_e(g.status)}</td>"
        f"<td>{', '.join('#' + str(int(x)) for x in g.examples)}{' …' if g.count > len(g.examples) else ''}</td></tr>"
        for g in groups.itertuples(index=False))  # type: ignore[attr-defined]
    return ('<h3>More connections that matter</h3><table class="grid"><thead><tr><th class="num">count</th>'
            "<th>finding</th><th>service → endpoint</th><th>status</th><th>e.g.</th></tr></thead><tbody>"
            + rows + "</tbody></table>")


def paths_section(r: AnalysisReport) -> str:
    """Healthy connections grouped by service, endpoint, NAT binding, captures and status."""
    if not len(r.groups):
        return '<section id="paths"><h2>Healthy paths</h2><p>No healthy connections.</p></section>'
    rows = "".join(
        f'<tr><td class="num">{g.count:,}</td><td>{_e(proto_name(g.proto))}</td><td>{_e(g.service)}</td>'
        f"<td>{_e(g.endpoint)}</td><td>{'<br>'.join(_e(x) for x in str(g.binding).split('; ')) or 'none'}</td>"
        f"<td>{_e(str(g.captures).replace(',', ' → '))}</td><td>{_e(g.status)}{_info(g)}</td>"
        f'<td><a href="#conn-{int(g.example)}">#{int(g.example)}</a></td></tr>'
        for g in r.groups.head(500).itertuples(index=False))
    return (f'<section id="paths"><h2>Healthy paths</h2><p>{r.healthy:,} healthy connections in '
            f"{len(r.groups):,} groups.</p><table class=\"grid\"><thead><tr><th class=\"num\">count</th>"
            "<th>proto</th><th>service</th><th>endpoint</th><th>NAT</th><th>seen at</th><th>status</th>"
            f"<th>e.g.</th></tr></thead><tbody>{rows}</tbody></table></section>")


def _info(group: object) -> str:
    info = getattr(group, "info", "")
    return f'<div class="dim">info: {_e(info)}</div>' if info else ""


CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #0f172a;
       background: #f8fafc; }
header { padding: 16px 24px 4px; } header h1 { margin: 0; font-size: 22px; }
nav { position: sticky; top: 0; background: #0f172a; padding: 8px 24px; display: flex; gap: 16px;
      align-items: center; z-index: 2; }
nav a { color: #e2e8f0; text-decoration: none; } nav a:hover { text-decoration: underline; }
nav input { margin-left: auto; width: 300px; padding: 3px 6px; }
nav button { padding: 3px 8px; }
main { padding: 0 24px 24px; }
section { background: #fff; border: 1px solid #e2e8f0; border-radius: 6px; padding: 8px 16px 12px;
          margin-top: 16px; }
h2 { font-size: 18px; margin: 6px 0 10px; }
table.grid { border-collapse: collapse; margin: 6px 0; }
table.grid th, table.grid td { border-bottom: 1px solid #e2e8f0; padding: 3px 10px 3px 0; text-align: left;
                                vertical-align: top; }
table.grid th { color: #475569; font-weight: 600; }
table.hops td { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
tr.dir th { color: #0f172a; padding-top: 8px; }
tr.off td { color: #94a3b8; }
.num { text-align: right !important; }
.dim, .meta { color: #64748b; } .note { color: #64748b; font-style: italic; }
.ref { font-weight: 600; } .warn { color: #d97706; font-weight: 700; }
mark { background: #fde68a; color: #78350f; padding: 0 2px; border-radius: 2px; }
.tun { color: #0e7490; } .nat { color: #92400e; font-family: ui-monospace, monospace; font-size: 12.5px; }
.missn { color: #dc2626; font-weight: 700; }
.sev { display: inline-block; border-radius: 3px; padding: 0 6px; font-size: 12px; font-weight: 600; }
.sev.critical { background: #7f1d1d; color: #fff; } .sev.high { background: #dc2626; color: #fff; }
.sev.medium { background: #f59e0b; color: #111; } .sev.low { background: #0ea5e9; color: #fff; }
.sev.info { background: #e2e8f0; color: #334155; }
.st.ok { color: #15803d; } .st.bad { color: #b91c1c; font-weight: 600; }
details.conn { border-top: 1px solid #e2e8f0; padding: 6px 0; }
details.conn > summary { cursor: pointer; font-family: ui-monospace, monospace; font-size: 13px; }
.finding { margin: 6px 0; padding: 6px 8px; background: #fef2f2; border-left: 3px solid #dc2626; }
.finding.medium { background: #fffbeb; border-left-color: #f59e0b; }
.finding.low { background: #f0f9ff; border-left-color: #0ea5e9; }
.finding.info { background: #f8fafc; border-left-color: #94a3b8; }
.ev { color: #475569; font-size: 13px; }
.ladder-wrap { overflow-x: auto; margin-top: 8px; border: 1px solid #e2e8f0; }
.cap { color: #92400e; }
footer { color: #64748b; padding: 12px 24px 24px; }
"""

SCRIPT = """
(function () {
  var conns = Array.prototype.slice.call(document.querySelectorAll('details.conn'));
  var box = document.getElementById('filter');
  if (box) {
    box.addEventListener('input', function () {
      var q = box.value.trim().toLowerCase();
      conns.forEach(function (d) {
        d.style.display = !q || d.getAttribute('data-search').indexOf(q) >= 0 ? '' : 'none';
      });
    });
  }
  function setAll(open) { conns.forEach(function (d) { d.open = open; }); }
  var e = document.getElementById('expand'), c = document.getElementById('collapse');
  if (e) { e.addEventListener('click', function () { setAll(true); }); }
  if (c) { c.addEventListener('click', function () { setAll(false); }); }
  document.documentElement.setAttribute('data-ready', 'yes');
})();
"""
