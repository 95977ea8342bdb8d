"""The lab end to end: build scenarios in namespaces, capture, tear down (root only).

Skipped unless running as root with ip, tcpdump, dumpcap, iptables and conntrack. Runs a
few scenarios into a temporary directory and checks the truth file against the kernel's
own conntrack events, the captures against the connections, and that nothing (namespace,
device, process) is left behind, also when a run fails half-way.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.lab

TOOLS = ("ip", "bridge", "tcpdump", "dumpcap", "iptables", "ip6tables", "conntrack")
SCENARIOS = ("same-node", "cross-node", "no-endpoints", "asymmetric-return")
NEW_RE = re.compile(r"\[NEW\] ipv[46]\s+\d+ (tcp|udp)\s+\d+ \d+ (?:\w+ )?src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)"
                    r".*?src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)")


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"the lab needs {', '.join(missing)}"
    return None


if _why_skip():
    pytestmark = [pytest.mark.lab, pytest.mark.skip(reason=_why_skip() or "")]


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(cmd)
    return found


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from flowtrace.lab import run_scenarios

    out = tmp_path_factory.mktemp("lab")
    before_ns, before_links = _netns(), _root_links()
    dirs = run_scenarios(list(SCENARIOS), out)
    return {"out": out, "dirs": {d.name: d for d in dirs}, "before_ns": before_ns, "before_links": before_links}


def _truth(lab: dict[str, Any], name: str) -> dict[str, Any]:
    import json

    return json.loads((lab["dirs"][name] / "truth.json").read_text())


@pytest.mark.parametrize("name", SCENARIOS)
def test_truth_nat_bindings_are_the_kernels_new_events(lab: dict[str, Any], name: str) -> None:
    doc = _truth(lab, name)
    kernel = set()
    for node, files in doc["conntrack"]["files"].items():
        for line in (lab["dirs"][name] / files["events"]).read_text().splitlines():
            m = NEW_RE.search(line)
            if m:
                p, *f = m.groups()
                kernel.add((node, p, f[0], int(f[2]), f[1], int(f[3]), f[4], int(f[6]), f[5], int(f[7])))
    truth = set()
    for conn in doc["connections"]:
        for nat in conn["nat"]:
            o, r = nat["orig"], nat["reply"]
            truth.add((nat["node"], o["proto"], o["src"], o["sport"], o["dst"], o["dport"],
                       r["src"], r["sport"], r["dst"], r["dport"]))
    assert truth == kernel
    assert (len(truth) > 0) == (name != "no-endpoints")


@pytest.mark.parametrize("name", SCENARIOS)
def test_captures_exist_and_contain_the_connections(lab: dict[str, Any], name: str) -> None:
    from flowtrace.lab.validate import validate_truth

    doc = _truth(lab, name)
    assert validate_truth(doc) == []
    assert doc["warnings"] == []
    for cap in doc["captures"]:
        assert (lab["dirs"][name] / cap["file"]).stat().st_size >= 24
    for conn in doc["connections"]:
        for direction in ("request", "response"):
            assert all(h["packets"] > 0 for h in conn["path"][direction]), (conn["id"], direction)
    summary = doc["client_summary"]
    if name in ("same-node", "cross-node"):
        assert summary["ok"] == summary["connections"] > 0
    elif name == "no-endpoints":
        assert summary["errors"] == {"ECONNREFUSED": summary["connections"]}
    else:
        received = {r["src"] for c in doc["connections"] for r in c["client_saw"]["received"]}
        assert received == {"10.244.2.7"}
        assert any(s["kind"] == "rst" and s["dst"] == "10.244.2.7"
                   for c in doc["connections"] for s in c["client_saw"]["sent"])


def test_nothing_is_left_behind(lab: dict[str, Any]) -> None:
    prefix = f"ft{os.getpid()}-"
    assert not [n for n in _netns() if n.startswith(prefix)]
    assert _netns() <= lab["before_ns"] | {n for n in _netns() if not n.startswith(prefix)}
    assert _root_links() == lab["before_links"]
    assert _processes_mentioning(str(lab["out"])) == []


def test_teardown_after_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flowtrace.errors import LabError
    from flowtrace.lab import run_scenarios, runner

    def boom(*args: object, **kwargs: object) -> None:
        raise LabError("injected failure while the captures run")

    monkeypatch.setattr(runner, "_run_clients", boom)
    links = _root_links()
    with pytest.raises(LabError, match="injected failure"):
        run_scenarios(["cross-node"], tmp_path)
    assert not [n for n in _netns() if n.startswith(f"ft{os.getpid()}-")]
    assert _root_links() == links
    assert _processes_mentioning(str(tmp_path)) == []
