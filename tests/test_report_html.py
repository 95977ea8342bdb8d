"""The HTML report: self-contained, everything from captures escaped, renders in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from craft import LINKTYPE_ETHERNET, Pcapng, ether
from scapy.layers.inet import IP, TCP
from test_report_golden import asymmetric_findings, fresh

from flowtrace.context.k8s import build_names, read_snapshot
from flowtrace.detect.finding import Evidence, Finding
from flowtrace.pipeline import analyze
from flowtrace.report.html import html_report

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"
EVIL = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_sections_and_ladders():
    a = fresh("asymmetric-return", asymmetric_findings())
    page = html_report(a, names=read_snapshot(FIXTURES / "asymmetric-return" / "k8s.json"), version="9.9")
    for anchor in ('id="summary"', 'id="findings"', 'id="connections"', 'id="paths"', 'id="conn-2"',
                   'id="conn-4"', "<svg", "asymmetric_return", "svc default/web:http", "schema_version 1",
                   "flowtrace 9.9"):
        assert anchor in page
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="ladder"') == 2
    assert page.count('<details class="conn"') == 2
    assert "client:5-7 (SYN, SYN-ACK from 10.244.2.7, RST)" in page  # evidence


def test_self_contained():
    page = html_report(fresh("cross-node-vxlan"))
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"@import|url\((?!#)", page)  # only references inside the document
    assert page.count("<script>") == 1  # ours, inline


def test_cap_on_connections_drawn():
    a = fresh("many-connections")
    page = html_report(a, limit=5)
    assert page.count('<details class="conn"') == 5
    assert "495 more connections are not drawn (limit 5" in page
    assert "500 healthy connections in 2 groups" in page
    # One example of each healthy path is drawn first.
    examples = re.findall(r'href="#conn-(\d+)"', page.split('id="paths"')[1])
    for e in examples:
        assert f'id="conn-{e}"' in page


def _evil_capture(tmp_path: Path) -> Path:
    """A pcapng whose interface name is markup, with one TCP handshake on it."""
    w = Pcapng()
    iface = w.interface(LINKTYPE_ETHERNET, name=EVIL, tsresol=9)
    base = 1_700_000_000 * 10**9
    pkts = [IP(src="10.0.0.1", dst="10.0.0.2", id=1) / TCP(sport=40000, dport=80, flags="S", seq=100),
            IP(src="10.0.0.2", dst="10.0.0.1", id=2) / TCP(sport=80, dport=40000, flags="SA", seq=500, ack=101),
            IP(src="10.0.0.1", dst="10.0.0.2", id=3) / TCP(sport=40000, dport=80, flags="R", seq=101)]
    for i, p in enumerate(pkts):
        w.packet(iface, ether(bytes(p)), ts=base + i * 1000)
    path = tmp_path / "evil.pcapng"
    path.write_bytes(w.to_bytes())
    return path


def test_everything_from_captures_is_escaped(tmp_path):
    capture = _evil_capture(tmp_path)
    a = analyze([f"{EVIL}={capture}"])
    a.notes.append(f"note {EVIL}")
    cid = int(a.connections["connection"].iloc[0])
    a.findings = [Finding(code="connection_reset", severity="low", connection=cid, message=f"reset {EVIL}",
                          evidence=(Evidence(capture=EVIL, frames=(3,), note=EVIL),), causes=(EVIL,))]
    names = build_names([{"kind": "Pod", "metadata": {"name": EVIL, "namespace": "x"},
                          "status": {"podIP": "10.0.0.2"}}])
    page = html_report(a, names=names, title=f"report {EVIL}")
    assert page.count("<script>") == 1 and "alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'id="conn-' in page and "<svg" in page


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
            f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package chromium)")
def test_renders_in_headless_chromium(tmp_path):
    a = fresh("asymmetric-return", asymmetric_findings())
    page = tmp_path / "report.html"
    page.write_text(html_report(a, names=read_snapshot(FIXTURES / "asymmetric-return" / "k8s.json")))
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # The inline script ran to its end, the sections and ladders are in the document.
    assert 'data-ready="yes"' in dom.stdout
    for anchor in ('id="summary"', 'id="findings"', 'id="conn-2"', 'class="ladder"', "asymmetric_return"):
        assert anchor in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert "Content Security Policy" not in dom.stderr
    shot = tmp_path / "report.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri()], tmp_path)
    assert r.returncode == 0 and shot.stat().st_size > 10_000
