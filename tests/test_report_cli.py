"""The report options of analyze, the trace command, colour and width rules, the progress callback."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowtrace.cli import app
from flowtrace.context.k8s import read_snapshot
from flowtrace.pipeline import analyze
from flowtrace.report.analysis import render_analysis, report_console
from flowtrace.report.json_doc import analysis_document
from flowtrace.report.progress import ProgressBar, progress_bar
from flowtrace.report.select import ConnectionFilter, nat_binding, split_endpoint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_analyze_summary_and_connections_that_matter():
    r = run("analyze", str(FIXTURES / "asymmetric-return"))
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert not ANSI.search(out)  # not a terminal: no colour
    assert "Connections: 2 (2 no_reply); 9 link housekeeping not shown" in out
    assert "Connections that matter" in out and "#2 tcp  no_reply (S0)" in out
    assert "fe80::" not in out and "ff02::" not in out  # neighbour discovery does not crowd the report
    assert "+0 ns ± 19 µs" in out  # clock offset with its uncertainty


def test_analyze_healthy_connections_are_summarised_unless_all():
    r = run("analyze", str(FIXTURES / "many-connections"))
    assert r.exit_code == 0
    assert "Healthy connections by path (500 in 2 groups)" in r.stdout
    assert "╭─ #" not in r.stdout  # no panel per healthy connection
    r = run("analyze", str(FIXTURES / "cross-node"), "--all")
    assert r.stdout.count("╭─ #") == 3 and "Link housekeeping" in r.stdout


def test_analyze_limit_lists_the_rest():
    r = run("analyze", str(FIXTURES / "asymmetric-return"), "--limit", "1")
    assert r.stdout.count("╭─ #") == 1
    assert "1 more connection that matters" in r.stdout and "#4" in r.stdout


def test_analyze_html_and_json_with_names(tmp_path):
    html = tmp_path / "r.html"
    doc = tmp_path / "r.json"
    r = run("analyze", str(FIXTURES / "cross-node"), "--k8s", str(FIXTURES / "cross-node" / "k8s.json"),
            "--html", str(html), "-o", str(doc))
    assert r.exit_code == 0, r.output
    words = " ".join(r.stdout.split())  # the terminal may wrap a long line at a space
    assert "203.0.113.10:80 (svc default/web:http) -> 10.244.2.7:8080 (pod" in words
    assert "default/web-1)" in words
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and 'id="conn-2"' in page and "pod default/web-1" in page
    data = json.loads(doc.read_text())
    conn = next(c for c in data["connections"] if c["dnat"])
    assert conn["client_dst_name"] == "svc default/web:http"
    assert conn["server_dst_name"] == "pod default/web-1"
    assert conn["request"][2]["src_name"] == "node node1"


def test_json_document_is_the_python_api_document():
    r = run("analyze", str(FIXTURES / "cross-node"), "--json")
    cli = json.loads(r.stdout)
    api = analysis_document(analyze([str(FIXTURES / "cross-node")]), version=cli["flowtrace_version"])
    assert cli == api
    assert list(cli) == ["schema_version", "flowtrace_version", "reference", "captures", "conntrack",
                         "comparisons", "findings", "notes", "connections"]


def test_colour_follows_no_color_and_the_terminal(monkeypatch):
    a = analyze([str(FIXTURES / "same-node")])

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "90")
    tty = Tty()
    render_analysis(a, report_console(file=tty))
    assert ANSI.search(tty.getvalue())
    assert max(len(ANSI.sub("", line)) for line in tty.getvalue().splitlines()) <= 90  # width adapts
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Tty()
    render_analysis(a, report_console(file=plain))
    assert not re.search(r"\x1b\[[0-9;]*3[0-9]m", plain.getvalue())  # no foreground colours
    monkeypatch.delenv("COLUMNS")
    pipe = io.StringIO()
    render_analysis(a, report_console(file=pipe))
    assert not ANSI.search(pipe.getvalue())
    assert max(len(line) for line in pipe.getvalue().splitlines()) <= 100


def test_trace_by_number_tuple_host_and_port(tmp_path):
    svg = tmp_path / "l.svg"
    r = run("trace", str(FIXTURES / "cross-node"), "--conn", "3", "--svg", str(svg))
    assert r.exit_code == 0, r.output
    assert "#3 tcp 198.51.100.10:45314 -> 203.0.113.10:80" in r.stdout and "SYN seq 0" in r.stdout
    assert svg.read_text().startswith("<?xml") and "<svg" in svg.read_text()
    r = run("trace", str(FIXTURES / "cross-node"), "--client", "198.51.100.10:45320")
    assert "#4 tcp" in r.stdout
    r = run("trace", str(FIXTURES / "cross-node"), "--host", "10.244.2.7", "--port", "8080")
    assert r.exit_code == 0 and "2 more matching connections" in r.stdout
    r = run("trace", str(FIXTURES / "asymmetric-return"))
    assert "no --conn given: drawing the first connection that matters" in r.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--conn", "999"], "no connection matches"),
    (["--client", "bogus"], "not an IP address"),
    (["--client", "10.0.0.1:99999"], "port"),
])
def test_trace_bad_selection_is_one_line_exit_2(args, message):
    r = run("trace", str(FIXTURES / "cross-node"), *args)
    assert r.exit_code == 2 and message in r.output and r.output.count("\n") == 1


def test_connection_filter_and_endpoints():
    a = analyze([str(FIXTURES / "cross-node")])
    assert ConnectionFilter.parse(client="198.51.100.10").apply(a) == [2, 3, 4]
    assert ConnectionFilter.parse(hosts=["10.0.1.11"], ports=[29597]).apply(a) == [2]
    assert ConnectionFilter().empty and not ConnectionFilter(ports=(1,)).empty
    assert split_endpoint("[fd00::1]:80") == ("fd00::1", 80)
    assert split_endpoint("fd00::1") == ("fd00::1", None)
    assert nat_binding("DNAT 203.0.113.10:80 -> 10.244.2.7:8080 at node1; SNAT 198.51.100.10:45300 -> "
                       "10.0.1.11:29597 at node1") == \
        "DNAT 203.0.113.10:80 -> 10.244.2.7:8080 at node1; SNAT -> 10.0.1.11 at node1"
    assert nat_binding("SNAT [fd00::1]:1 -> [fd00::2]:2 at n") == "SNAT -> fd00::2 at n"


def test_progress_callback_reports_stages_in_order():
    calls: list[tuple[str, int, int]] = []
    analyze([str(FIXTURES / "cross-node")], progress=lambda s, d, t: calls.append((s, d, t)))
    stages = list(dict.fromkeys(s for s, _, _ in calls))
    assert stages == ["read", "flows", "correlate", "conntrack"] or stages[:4] == ["read", "flows", "correlate",
                                                                                    "conntrack"]
    reads = [(d, t) for s, d, t in calls if s == "read"]
    assert reads[-1][0] == reads[-1][1] > 0
    assert [d for d, _ in reads] == sorted(d for d, _ in reads)


def test_progress_bar_only_on_a_terminal():
    with progress_bar(total_bytes=1 << 40, stream=io.StringIO()) as bar:
        assert bar is None  # not a terminal
    out = io.StringIO()
    with progress_bar(total_bytes=10, stream=out, force=True) as bar:
        assert isinstance(bar, ProgressBar)
        bar("read", 5, 10)
        bar("read", 10, 10)
        bar("flows", 0, 0)
    assert "reading captures" in out.getvalue() or "building flows" in out.getvalue()


def test_names_in_analyze_report():
    a = analyze([str(FIXTURES / "dns")])
    out = io.StringIO()
    render_analysis(a, report_console(file=out), names=read_snapshot(FIXTURES / "dns" / "k8s.json"))
    assert "10.96.0.10:53 (svc kube-system/kube-dns:dns)" in out.getvalue()


def test_problems_are_grouped_and_each_kind_is_drawn_first():
    from test_report_golden import fresh

    from flowtrace.detect.finding import Finding
    from flowtrace.report.analysis import AnalysisReport, diverse
    from flowtrace.report.select import finding_groups, select

    c = fresh("many-connections").connections.sort_values("start_ts_ns")
    ids = [int(x) for x in c.loc[c["server_dst"] == "10.244.2.7", "connection"]][:6]  # one path
    findings = [Finding(code="connection_reset", severity="low", connection=c, message="reset") for c in ids[:4]]
    findings += [Finding(code="drop_between_hops", severity="high", connection=ids[4], message="drop"),
                 Finding(code="source_ip_masqueraded", severity="info", connection=ids[5], message="masq")]
    a = fresh("many-connections", findings)
    sel = select(a)
    assert sel.matter[:5] == [ids[4], *ids[:4]] and ids[5] not in sel.matter  # info does not matter
    groups = finding_groups(a, sel.matter)
    assert list(groups["code"]) == ["drop_between_hops", "connection_reset"]
    assert list(groups["count"]) == [1, 4] and groups["examples"][1] == ids[:4]
    assert diverse(a, sel.matter)[:2] == [ids[4], ids[0]]
    report = AnalysisReport.build(a, limit=2)
    assert [v.connection for v in report.shown] == [ids[4], ids[0]]
    assert list(report.rest["count"]) == [3] and report.rest["examples"][0] == ids[1:4]
