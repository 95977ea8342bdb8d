"""The detector interface: one registry, one detector per catalog code, supersession and
vantage-point notes."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from flowtrace.detect.base import Needs
from flowtrace.detect.finding import SEVERITIES, Finding
from flowtrace.detect.registry import DETECTORS, run_detectors, supersede
from flowtrace.pipeline import analyze
from flowtrace.schema import SEVERITIES as TABLE_SEVERITIES

DOCS = Path(__file__).resolve().parents[1] / "docs" / "anomalies.md"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"


def catalog_codes() -> list[str]:
    """Codes of docs/anomalies.md's catalog table, in order."""
    return re.findall(r"^\| `([a-z_]+)` \|", DOCS.read_text(), flags=re.M)


def test_one_detector_per_catalog_code_in_catalog_order():
    codes = [d.code for d in DETECTORS]
    assert len(codes) == len(set(codes)) == 25
    assert codes == catalog_codes()


def test_every_code_has_a_section_in_the_docs():
    text = DOCS.read_text()
    for d in DETECTORS:
        assert re.search(rf"^### `{d.code}`", text, flags=re.M), d.code


@pytest.mark.parametrize("detector", DETECTORS, ids=lambda d: d.code)
def test_detectors_declare_the_interface(detector):
    assert detector.severity in SEVERITIES
    assert isinstance(detector.needs, Needs) and detector.needs.vantage_points >= 1 and detector.needs.where
    assert set(detector.supersedes) <= {d.code for d in DETECTORS} - {detector.code}
    assert inspect.getdoc(type(detector)) and inspect.getdoc(detector.detect)
    assert inspect.getmodule(type(detector)).__doc__


def test_schema_and_findings_share_the_severity_order():
    assert TABLE_SEVERITIES == SEVERITIES


def _f(code: str, connection: int | None, **kw) -> Finding:
    return Finding(code=code, severity="medium", message="m.", connection=connection, **kw)


def test_supersede_drops_explained_findings_on_the_same_connection_only():
    found = [_f("mtu_blackhole", 1), _f("drop_between_hops", 1), _f("drop_between_hops", 2), _f("no_reply", None,
                                                                                                capture="x")]
    kept = supersede(found, {"mtu_blackhole": ("drop_between_hops",)})
    assert [(f.code, f.connection) for f in kept] == [("mtu_blackhole", 1), ("drop_between_hops", 2),
                                                     ("no_reply", None)]


def test_a_capture_wide_finding_supersedes_on_its_listed_connections():
    full = Finding(code="conntrack_table_full", severity="critical", message="m.", capture="node1",
                   details={"connections": [3, 4]})
    found = [full, _f("no_reply", 3), _f("no_reply", 5)]
    kept = supersede(found, {"conntrack_table_full": ("no_reply",)})
    assert [f.connection for f in kept] == [None, 5]


class _NeedsThree:
    """A detector that needs three vantage points."""

    code = "test_three"
    severity = "info"
    needs = Needs(vantage_points=3, where="three places")
    supersedes: tuple[str, ...] = ()

    def detect(self, ctx):
        """Never called with fewer captures."""
        raise AssertionError("must not run")


def test_detectors_needing_more_captures_are_skipped_with_one_note():
    a = analyze(FIXTURES / "no-endpoints" / "client.pcap")
    findings, notes = run_detectors(a, detectors=[_NeedsThree(), _NeedsThree()])
    assert findings == []
    assert notes.count("test_three needs captures from at least 3 vantage points (three places): not checked") == 1
