"""`flowtrace flows`: output formats, filters, options, bad input, help and docs."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from scapy.all import ICMP, IP, TCP, UDP, Ether, wrpcap
from typer.testing import CliRunner

import flowtrace
from flowtrace.cli import app
from flowtrace.flows.zeek import FIELDS, parse_conn_log
from flowtrace.report.flows import render_flows

REPO = Path(__file__).resolve().parents[1]
T = 1_700_000_000.0


def _frames():
    c, s = "10.0.0.1", "10.0.0.80"
    frames = []

    def add(pkt, t):
        p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt
        p.time = T + t
        frames.append(p)

    add(IP(src=c, dst=s) / TCP(sport=40000, dport=80, flags="S", seq=100), 0.000)
    add(IP(src=s, dst=c) / TCP(sport=80, dport=40000, flags="SA", seq=900, ack=101), 0.001)
    add(IP(src=c, dst=s) / TCP(sport=40000, dport=80, flags="A", seq=101, ack=901), 0.002)
    add(IP(src=c, dst=s) / TCP(sport=40000, dport=80, flags="PA", seq=101, ack=901) / (b"x" * 50), 0.003)
    add(IP(src=s, dst=c) / TCP(sport=80, dport=40000, flags="PA", seq=901, ack=151) / (b"y" * 70), 0.004)
    add(IP(src=c, dst=s) / TCP(sport=40000, dport=80, flags="FA", seq=151, ack=971), 0.005)
    add(IP(src=s, dst=c) / TCP(sport=80, dport=40000, flags="FA", seq=971, ack=152), 0.006)
    add(IP(src=c, dst=s) / TCP(sport=40000, dport=80, flags="A", seq=152, ack=972), 0.007)
    add(IP(src=c, dst="10.0.0.53") / UDP(sport=5353, dport=53) / (b"q" * 20), 0.010)
    add(IP(src="10.0.0.53", dst=c) / UDP(sport=53, dport=5353) / (b"r" * 40), 0.011)
    add(IP(src=c, dst="192.0.2.9") / ICMP(type=8, id=7, seq=1) / (b"p" * 56), 0.020)
    add(IP(src=c, dst="10.0.0.53") / UDP(sport=5353, dport=53) / (b"q" * 20), 100.0)  # after the UDP timeout
    return frames


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("flows") / "demo.pcap"
    wrpcap(str(path), _frames())
    return path


def run(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["flows", *map(str, args)], env={"NO_COLOR": "1", "COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_json_document(capture):
    code, out, _ = run("--json", capture)
    assert code == 0
    doc = json.loads(out)
    assert doc["schema_version"] == flowtrace.SCHEMA_VERSION and doc["table"] == "flows"
    assert doc["count"] == 4
    assert list(doc["flows"][0]) == flowtrace.FLOWS.names
    tcp = next(f for f in doc["flows"] if f["proto"] == 6)
    assert (tcp["orig_h"], tcp["orig_p"], tcp["conn_state"], tcp["history"]) == ("10.0.0.1", 40000, "SF", "ShADdFf")
    assert (tcp["orig_bytes"], tcp["resp_bytes"], tcp["orig_isn"], tcp["resp_isn"]) == (50, 70, 100, 900)
    assert tcp["outer_orig_h"] is None


def test_csv(capture):
    code, out, _ = run("--csv", capture)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split(",") == flowtrace.FLOWS.names
    assert len(lines) == 1 + 4


def test_zeek(capture):
    code, out, _ = run("--zeek", capture)
    assert code == 0
    _meta, log = parse_conn_log(out)
    assert list(log.columns) == [n for n, _ in FIELDS]
    assert sorted(log.proto) == ["icmp", "tcp", "udp", "udp"]
    icmp = log[log.proto == "icmp"].iloc[0]
    assert (icmp["id.orig_p"], icmp["id.resp_p"], icmp.conn_state) == ("8", "0", "OTH")


def test_table_default_output(capture):
    code, out, _ = run(capture)
    assert code == 0
    assert "4 flows" in out
    assert "10.0.0.1:40000" in out and "ShADdFf" in out and "SF" in out
    assert "\x1b[" not in out  # NO_COLOR


def test_table_limit(capture):
    code, out, _ = run("--limit", "1", capture)
    assert code == 0 and "first 1 shown" in out
    assert out.count("10.0.0.1") == 1


def test_renderer_snapshot(capture):
    flows = flowtrace.flows(str(capture))
    buf = io.StringIO()
    render_flows(flows.head(2), Console(file=buf, width=180, color_system=None, force_terminal=False))
    text = "\n".join(line.rstrip() for line in buf.getvalue().splitlines())
    assert text == SNAPSHOT


SNAPSHOT = """\
2 flows
capture  point  proto      originator  responder     start (UTC)                 duration s  pkts >/<  bytes >/<  state  history  notes
demo     -      tcp    10.0.0.1:40000  10.0.0.80:80  2023-11-14 22:13:20.000000    0.006000       5/3      50/70  SF     ShADdFf  rtt 1.000 ms
demo     -      udp     10.0.0.1:5353  10.0.0.53:53  2023-11-14 22:13:20.010000    0.001000       1/1      20/40  SF     Dd"""


@pytest.mark.parametrize(("options", "expected"), [
    (["--host", "10.0.0.53"], {17}),
    (["--host", "10.0.0.0/24"], {1, 6, 17}),
    (["--host", "192.0.2.9"], {1}),
    (["--port", "80"], {6}),
    (["--proto", "udp"], {17}),
    (["--proto", "icmp", "--proto", "tcp"], {1, 6}),
    (["--proto", "6"], {6}),
    (["--capture", "demo", "--port", "53"], {17}),
    (["--capture", "other"], set()),
])
def test_filters(capture, options, expected):
    code, out, _ = run("--json", *options, capture)
    assert code == 0
    assert {f["proto"] for f in json.loads(out)["flows"]} == expected


def test_timeout_option_changes_splitting(capture):
    _, out, _ = run("--json", "--proto", "udp", capture)
    assert json.loads(out)["count"] == 2
    _, out, _ = run("--json", "--proto", "udp", "--timeout", "udp=200", capture)
    assert json.loads(out)["count"] == 1


def test_ignore_checksums_option(tmp_path):
    frames = _frames()[:3]
    frames[0][TCP].chksum = 0x1234
    path = tmp_path / "bad.pcap"
    wrpcap(str(path), frames)
    assert json.loads(run("--json", path)[1])["flows"][0]["history"] == "CShA"
    assert json.loads(run("--json", "-C", path)[1])["flows"][0]["history"] == "ShA"


@pytest.mark.parametrize("args", [
    ["/nonexistent/capture.pcap"],
    ["--proto", "bogus", "CAP"],
    ["--port", "70000", "CAP"],
    ["--port", "http", "CAP"],
    ["--host", "not-an-address", "CAP"],
    ["--timeout", "udp", "CAP"],
    ["--timeout", "udp=-3", "CAP"],
    ["--timeout", "forever=3", "CAP"],
    ["--json", "--csv", "CAP"],
])
def test_bad_input_one_line_exit_2(capture, tmp_path, args):
    args = [capture if a == "CAP" else a for a in args]
    code, out, err = run(*args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("flowtrace: ")
    assert "Traceback" not in err


def test_not_a_capture(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    code, _, err = run(bad)
    assert code == 2 and err.startswith("flowtrace: ") and str(bad) in err


def test_help_lists_every_option_and_docs_mention_them():
    result = CliRunner().invoke(app, ["flows", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    options = ["--json", "--csv", "--zeek", "--host", "--port", "--proto", "--capture", "--timeout",
               "--kube-proxy-timeouts", "--ignore-checksums", "--limit"]
    docs = (REPO / "docs" / "cli" / "flows.md").read_text()
    for opt in options:
        assert opt in result.stdout, opt
        assert opt in docs, opt
    assert re.search(r"Zeek", result.stdout)
