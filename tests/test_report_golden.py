"""Snapshot tests of the renderers: fixed-width, colourless output compared with tests/golden/.

The findings are set by each test (constructed Findings or none), so that the snapshots
show the renderers, not whatever the detectors say today. To accept new output after a
deliberate change, run ``FLOWTRACE_UPDATE_GOLDEN=1 pytest tests/test_report_golden.py`` and
review the diff of tests/golden/ before committing it.
"""

from __future__ import annotations

import io
import os
from functools import cache
from pathlib import Path

import pytest
from rich.console import Console

from flowtrace.analysis import Analysis
from flowtrace.context.k8s import read_snapshot
from flowtrace.detect.finding import Evidence, Finding
from flowtrace.pipeline import analyze
from flowtrace.report.analysis import AnalysisReport
from flowtrace.report.ladder import Ladder
from flowtrace.report.select import ConnectionFilter
from flowtrace.report.svg import standalone_svg
from flowtrace.report.trace import TraceReport

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("FLOWTRACE_UPDATE_GOLDEN") == "1"


@cache
def _analysis(scenario: str) -> Analysis:
    return analyze([str(FIXTURES / scenario)])


def fresh(scenario: str, findings: list[Finding] | None = None) -> Analysis:
    """The scenario's analysis with exactly ``findings`` (a shallow copy: tables shared)."""
    a = _analysis(scenario)
    b = Analysis(**{f: getattr(a, f) for f in Analysis.__slots__ if f != "findings"})  # type: ignore[attr-defined]
    b.findings = list(findings or [])
    b.notes = list(a.notes)
    return b


def render(renderable: object, width: int = 100) -> str:
    """Plain text as a fixed-width, colourless, non-terminal console prints it."""
    console = Console(width=width, no_color=True, force_terminal=False, record=True, file=io.StringIO(),
                      legacy_windows=False)
    console.print(renderable)
    return console.export_text()


def assert_golden(name: str, text: str) -> None:
    """Compare ``text`` with tests/golden/NAME (written instead when FLOWTRACE_UPDATE_GOLDEN=1)."""
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"{path} is missing: run FLOWTRACE_UPDATE_GOLDEN=1 pytest {__file__} and review it")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} differs from the golden file (FLOWTRACE_UPDATE_GOLDEN=1 to accept)"


def asymmetric_findings() -> list[Finding]:
    return [
        Finding(code="asymmetric_return", severity="high", connection=2, direction="response", hop=4,
                segment="node2 -> client",
                message="The SYN-ACK reached the client from the pod address without passing node1, "
                        "which did the DNAT; the client reset it.",
                evidence=(Evidence(capture="client", frames=(5, 6, 7), note="SYN, SYN-ACK from 10.244.2.7, RST"),
                          Evidence(capture="node1", frames=(5, 6))),
                causes=("no SNAT for traffic from outside the cluster", "a route back to the client that "
                        "bypasses the DNAT node")),
        Finding(code="syn_retransmission", severity="medium", connection=2, direction="request", hop=0,
                message="The client sent its SYN 4 times (1 s, 2 s, 3 s).",
                evidence=(Evidence(capture="client", frames=(5, 8, 11, 14)),)),
        Finding(code="clock_skew", severity="info", capture="web-1",
                message="web-1's clock is within 33 µs of the client's."),
    ]


@pytest.mark.parametrize(("scenario", "k8s", "findings"), [
    ("cross-node", True, None),
    ("asymmetric-return", False, "asymmetric"),
    ("many-connections", True, None),
    ("cross-node-vxlan", False, None),
])
def test_analyze_report(scenario: str, k8s: bool, findings: str | None) -> None:
    a = fresh(scenario, asymmetric_findings() if findings == "asymmetric" else None)
    names = read_snapshot(FIXTURES / scenario / "k8s.json") if k8s else None
    text = render(AnalysisReport.build(a, names=names))
    assert_golden(f"analyze-{scenario}{'-k8s' if k8s else ''}.txt", text)


def test_analyze_report_all_draws_healthy_and_lists_housekeeping() -> None:
    text = render(AnalysisReport.build(fresh("same-node"), show_all=True), width=120)
    assert_golden("analyze-same-node-all.txt", text)


def test_analyze_report_narrow_terminal() -> None:
    text = render(AnalysisReport.build(fresh("asymmetric-return", asymmetric_findings())), width=72)
    assert max(len(line) for line in text.splitlines()) <= 72
    assert_golden("analyze-asymmetric-return-72.txt", text)


@pytest.mark.parametrize(("scenario", "connection"), [
    ("cross-node", 2),
    ("asymmetric-return", 2),
    ("mtu-blackhole", 1),
    ("hairpin", 1),
    ("cross-node-vxlan", 2),
    ("dns", 1),
])
def test_trace(scenario: str, connection: int) -> None:
    a = fresh(scenario)
    report = TraceReport.build(a, ConnectionFilter(connection=connection))
    assert_golden(f"trace-{scenario}-{connection}.txt", render(report))


def test_trace_with_names_at_80_columns() -> None:
    a = fresh("cross-node")
    report = TraceReport.build(a, ConnectionFilter(client=("198.51.100.10", 45300)),
                               names=read_snapshot(FIXTURES / "cross-node" / "k8s.json"))
    text = render(report, width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert_golden("trace-cross-node-k8s-80.txt", text)


def test_svg_ladder() -> None:
    a = fresh("asymmetric-return")
    assert_golden("ladder-asymmetric-return-2.svg", standalone_svg(Ladder.build(a, 2)))
