"""``flowtrace analyze --fail-on`` and the findings in its JSON document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowtrace.cli import app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"
runner = CliRunner()


@pytest.mark.parametrize(("scenario", "level", "status"), [
    ("policy-drop", "high", 1),      # drop_between_hops of the handshake is high
    ("policy-drop", "critical", 0),
    ("no-endpoints", "medium", 1),   # service_no_endpoints
    ("no-endpoints", "high", 0),
    ("cross-node", "low", 0),        # a clean scenario: information only
    ("cross-node", "info", 1),       # source_ip_masqueraded
])
def test_fail_on_sets_the_exit_status(scenario, level, status):
    r = runner.invoke(app, ["analyze", str(FIXTURES / scenario), "--fail-on", level, "--json"])
    assert r.exit_code == status, r.output
    json.loads(r.stdout)  # the document is still printed in full


def test_without_fail_on_findings_do_not_change_the_status():
    assert runner.invoke(app, ["analyze", str(FIXTURES / "policy-drop")]).exit_code == 0


def test_a_bad_severity_is_one_line_and_status_2():
    r = runner.invoke(app, ["analyze", str(FIXTURES / "cross-node"), "--fail-on", "severe"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "flowtrace: --fail-on 'severe' is not a severity (info, low, medium, high, critical)"]


def test_json_findings_have_the_documented_keys():
    r = runner.invoke(app, ["analyze", str(FIXTURES / "asymmetric-return"), "--json"])
    doc = json.loads(r.stdout)
    (f, *_) = [x for x in doc["findings"] if x["code"] == "asymmetric_return"]
    assert {"code", "severity", "connection", "hop", "evidence", "message"} <= set(f)
    assert f["severity"] == "high" and isinstance(f["connection"], int) and isinstance(f["hop"], int)
    assert {e["capture"] for e in f["evidence"]} >= {"client", "node1"}
    assert all(isinstance(n, int) for e in f["evidence"] for n in e["frames"])


def test_help_mentions_fail_on():
    r = runner.invoke(app, ["analyze", "--help"])
    assert "--fail-on" in r.output
