"""`flowtrace flows` on every lab fixture: it runs, and its flows carry exactly the packets the
lab's ground truth (truth.json) says crossed each observation point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import flowtrace
from flowtrace.cli import app
from flowtrace.flows import build

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"
SCENARIOS = sorted(p for p in FIXTURES.iterdir() if (p / "truth.json").exists()) if FIXTURES.exists() else []

pytestmark = pytest.mark.skipif(not SCENARIOS, reason="no lab fixtures under fixtures/pcaps")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_cli_runs_on_fixture(scenario):
    result = CliRunner().invoke(app, ["flows", "--json", str(scenario)])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == flowtrace.SCHEMA_VERSION
    assert doc["count"] == len(doc["flows"]) > 0
    with_ip = {p.stem for p in scenario.glob("*.pcap") if (flowtrace.read_packets(str(p)).ip_version > 0).any()}
    assert with_ip <= {f["capture"] for f in doc["flows"]}


def _hop_packets(packets, fs, hop: dict, window: tuple[int, int]) -> tuple[int, int]:
    """Packets of the hop's tuple and direction at its observation point: all, and within ``window``.

    The direction is each packet's own: on a bridge or loopback device a request and its
    reply both cross "in", in one flow.
    """
    fl = fs.flows
    cap = Path(hop["capture"]).stem
    m = fl[fl.capture == cap]
    fwd = m[(m.orig_h == hop["src"]) & (m.orig_p == hop["sport"]) & (m.resp_h == hop["dst"]) & (m.resp_p == hop["dport"])]
    rev = m[(m.resp_h == hop["src"]) & (m.resp_p == hop["sport"]) & (m.orig_h == hop["dst"]) & (m.orig_p == hop["dport"])]
    with_ifindex = (m.ifindex >= 0).any()
    if with_ifindex:
        fwd, rev = fwd[fwd.ifindex == hop["ifindex"]], rev[rev.ifindex == hop["ifindex"]]
    tunnel = "vxlan" if hop.get("vxlan") else "none"
    fwd, rev = fwd[fwd.encap == tunnel], rev[rev.encap == tunnel]
    sel = (np.isin(fs.flow_id, fwd.flow_id.to_numpy()) & fs.from_orig) | \
        (np.isin(fs.flow_id, rev.flow_id.to_numpy()) & ~fs.from_orig)
    sel &= ~fs.related
    if with_ifindex:
        sel &= (packets["direction"] == hop["direction"]).to_numpy()
    ts = packets["ts_ns"].to_numpy()
    return int(sel.sum()), int((sel & (ts >= window[0]) & (ts <= window[1])).sum())


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_flows_carry_the_packets_truth_saw_at_each_hop(scenario):
    truth = json.loads((scenario / "truth.json").read_text())
    packets = flowtrace.read_packets(str(scenario))
    fs = build(packets)
    checked = 0
    for conn in truth["connections"]:
        for side in ("request", "response"):
            for hop in (conn.get("path") or {}).get(side) or []:
                if "capture" not in hop:
                    continue
                if hop.get("icmp_error"):
                    _check_icmp_error_hop(fs.flows, hop)
                    checked += 1
                    continue
                offset = truth.get("clock_offsets_ns", {}).get(Path(hop["capture"]).stem, 0)
                window = (conn["start_ns"] + offset, conn["end_ns"] + offset)
                everything, in_window = _hop_packets(packets, fs, hop, window)
                assert hop["packets"] in (everything, in_window), (conn["id"], side, hop)
                checked += 1
    if scenario.name != "many-connections":
        assert checked > 0


def _check_icmp_error_hop(fl, hop: dict) -> None:
    """The errors answering the hop's packets are attached to the flow of the quoted tuple there."""
    cap = Path(hop["capture"]).stem
    m = fl[(fl.capture == cap) & (fl.orig_h == hop["src"]) & (fl.orig_p == hop["sport"])
           & (fl.resp_h == hop["dst"]) & (fl.resp_p == hop["dport"])]
    if (m.ifindex >= 0).any():
        m = m[m.ifindex == hop["ifindex"]]
    assert int(m.icmp_error_count.sum()) == hop["packets"], hop


def test_many_connections_every_client_connection_is_one_finished_flow():
    scenario = FIXTURES / "many-connections"
    if not scenario.exists():
        pytest.skip("many-connections fixture missing")
    truth = json.loads((scenario / "truth.json").read_text())
    fl = flowtrace.flows(str(scenario / "client.pcap"))
    tcp = fl[fl.proto == 6]
    assert len(tcp) == len(truth["connections"])
    assert (tcp.conn_state == "SF").all()
    ports = sorted(c["client"]["sport"] for c in truth["connections"])
    assert sorted(tcp.orig_p) == ports
