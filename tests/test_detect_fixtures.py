"""The anomaly catalog on the lab's captures: every scenario's expected codes are found,
nothing unrelated above info, and findings carry what a person on call needs."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from flowtrace.analysis import Analysis
from flowtrace.detect.context import Context
from flowtrace.detect.finding import SEVERITIES, Finding
from flowtrace.detect.registry import DETECTORS
from flowtrace.pipeline import analyze
from flowtrace.schema import ANOMALIES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"
SCENARIOS = sorted(p.name for p in FIXTURES.iterdir() if (p / "truth.json").exists())
CLEAN = ("same-node", "cross-node", "cross-node-vxlan", "many-connections", "dns", "ipv6", "nodeport",
         "cross-node-skewed")
CODES = {d.code for d in DETECTORS}


@cache
def analysis(scenario: str) -> Analysis:
    return analyze(FIXTURES / scenario)


def truth(scenario: str) -> dict[str, list[str]]:
    return json.loads((FIXTURES / scenario / "truth.json").read_text())["anomalies"]


def above_info(a: Analysis) -> list[Finding]:
    return [f for f in a.findings if f.severity != "info"]


def test_every_scenario_is_covered():
    assert set(CLEAN) <= set(SCENARIOS) and len(SCENARIOS) == 15


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_expected_codes_are_found(scenario):
    found = {f.code for f in analysis(scenario).findings}
    missing = set(truth(scenario)["expected"]) - found
    assert not missing, f"{scenario}: expected {sorted(missing)} not found (found {sorted(found)})"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_nothing_unrelated_above_info(scenario):
    t = truth(scenario)
    allowed = set(t["expected"]) | set(t["acceptable"])
    odd = [f"{f.severity} {f.code}: {f.message}" for f in above_info(analysis(scenario)) if f.code not in allowed]
    assert not odd, f"{scenario}: " + "; ".join(odd)


@pytest.mark.parametrize("scenario", CLEAN)
def test_clean_scenarios_have_nothing_above_info(scenario):
    t = truth(scenario)
    odd = [f for f in above_info(analysis(scenario)) if f.code not in t["expected"]]
    assert not odd, [f.message for f in odd]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_findings_carry_code_place_evidence_message_and_causes(scenario):
    a = analysis(scenario)
    frames = {name: set(g.tolist()) for name, g in a.packets.groupby("capture", observed=True)["frame"]}
    for f in a.findings:
        assert f.code in CODES and f.severity in SEVERITIES
        assert f.message.endswith(".") and "\n" not in f.message and len(f.message) < 600
        assert f.causes and all(c for c in f.causes)
        assert f.connection is not None or f.capture is not None, f
        if f.connection is not None:
            assert f.connection in set(a.connections["connection"].tolist())
            assert f.direction in ("request", "response")
        for e in f.evidence:
            assert e.frames and set(e.frames) <= frames[e.capture], (f.code, e)
        json.dumps(f.to_dict())  # plain JSON types only
    # Every finding about a connection names its hop, except capture-wide ones.
    assert all(f.hop is not None for f in a.findings if f.connection is not None and f.code != "snat_port_collision")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_findings_are_ordered_most_severe_first(scenario):
    ranks = [SEVERITIES.index(f.severity) for f in analysis(scenario).findings]
    assert ranks == sorted(ranks, reverse=True)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_anomalies_table_and_connection_counts(scenario):
    a = analysis(scenario)
    t = a.anomalies
    assert list(t.columns) == ANOMALIES.names and len(t) == len(a.findings)
    assert t["code"].astype(str).tolist() == [f.code for f in a.findings]
    for text in t["evidence"]:
        assert text == "" or re.fullmatch(r"[\w.-]+:\d+(,\d+)*(;[\w.-]+:\d+(,\d+)*)*", text), text
    counts = t[t["connection"] >= 0].groupby("connection").size()
    got = a.connections.set_index("connection")["findings"]
    assert (got.reindex(counts.index).to_numpy() == counts.to_numpy()).all()
    assert int(got.sum()) == int(counts.sum())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_vanished_packets_agree_with_the_hops_missing_count(scenario):
    """Where the correlation counts packets missing at a hop, the detectors' own account
    of vanished packets finds the same number expected there (and none it does not)."""
    a = analysis(scenario)
    v = Context(a).vanished
    per_hop = v[v["next_hop"] >= 0].groupby("next_hop").size()
    h = a.hops.set_index("hop_id")["missing"]
    assert dict(per_hop) == {int(k): int(n) for k, n in h[h > 0].items()}


def test_policy_drop_names_the_segment_between_node_and_pod():
    drops = [f for f in analysis("policy-drop").findings if f.code == "drop_between_hops"]
    assert len(drops) == 2
    for f in drops:
        assert f.severity == "high"  # the handshake
        assert f.segment == "node2 -> 10.244.2.7" and f.hop == 3 and f.direction == "request"
        assert [e.capture for e in f.evidence] == ["node2"] and len(f.evidence[0].frames) == 4


def test_asymmetric_return_evidence_holds_syn_synack_and_rst():
    (f, _) = [f for f in analysis("asymmetric-return").findings if f.code == "asymmetric_return"]
    client = next(e for e in f.evidence if e.capture == "client")
    a = analysis("asymmetric-return")
    p = a.packets[(a.packets["capture"] == "client") & a.packets["frame"].isin(client.frames)]
    flags = set(p["tcp_flags"].tolist())
    assert {0x02, 0x12} <= flags and any(x & 0x04 for x in flags)
    assert {e.capture for e in f.evidence} >= {"client", "node1"}
    assert "missing_nat_reversal" not in {x.code for x in a.findings}  # explained by it


def test_mtu_blackhole_names_sizes_and_the_overlay():
    for f in (x for x in analysis("mtu-blackhole").findings if x.code == "mtu_blackhole"):
        assert f.segment == "node2 -> node1" and f.direction == "response"
        assert f.details["encap"] == "vxlan" and f.details["lost_bytes"] == 1450
        assert f.details["passed_max_bytes"] < 100
        assert "1500 with the VXLAN header" in f.message


def test_clock_skew_reports_the_shift_and_its_uncertainty():
    skew = {f.capture: f for f in analysis("cross-node-skewed").findings if f.code == "clock_skew"}
    assert skew["node2"].severity == "low" and abs(skew["node2"].details["offset_ns"] - 2_500_000_000) < 100_000
    assert skew["web-1"].severity == "info" and abs(skew["web-1"].details["offset_ns"] + 750_000_000) < 100_000
    assert skew["node2"].details["uncertainty_ns"] < 100_000
    assert not [f for f in analysis("cross-node").findings if f.code == "clock_skew"]


def test_capture_truncated_names_the_cut_captures():
    cut = {f.capture: f for f in analysis("cross-node-snaplen").findings if f.code == "capture_truncated"}
    assert set(cut) == {"node1", "node2"} and cut["node1"].details["snaplen"] == 96


def test_no_endpoints_and_blackhole_explain_the_silence():
    a = analysis("no-endpoints")
    assert {f.code for f in above_info(a)} == {"service_no_endpoints"}
    b = analysis("local-policy-blackhole")
    assert {f.code for f in above_info(b)} == {"no_local_endpoint_blackhole", "syn_retransmission"}
    assert all(f.segment == "inside node1" for f in b.findings if f.code == "no_local_endpoint_blackhole")


def test_masquerade_findings_say_where_and_to_what():
    a = analysis("cross-node")
    masq = [f for f in a.findings if f.code == "source_ip_masqueraded"]
    assert len(masq) == 3 and all(f.segment == "node1" and f.details["after"].startswith("10.0.1.11:")
                                  for f in masq)


def test_a_single_capture_still_gets_one_vantage_point_detectors():
    a = analyze(FIXTURES / "policy-drop" / "client.pcap")
    codes = {f.code for f in a.findings}
    assert {"syn_retransmission", "no_reply"} <= codes
    notes = [n for n in a.notes if "needs captures from at least" in n]
    assert any(n.startswith("asymmetric_return") for n in notes) and len(notes) == len(set(notes))


def test_hairpin_failure_is_about_the_pod_and_its_node():
    (f,) = [f for f in analysis("hairpin").findings if f.code == "hairpin_failure"]
    assert f.segment == "inside node1" and {e.capture for e in f.evidence} == {"web-0", "node1"}
    rows = np.flatnonzero(analysis("hairpin").packets["capture"].to_numpy() == "web-0")
    assert rows.size
