"""Run one scenario end to end: build, program kube-proxy, capture, drive traffic, tear down.

In: a :class:`~flowtrace.lab.scenarios.Scenario` and an output directory. Out: the
directory ``OUT/SCENARIO/`` with one capture per vantage point, the pcapng variants
(``pcapng/``), the nodes' conntrack events and table, iptables-save dumps, raw program
logs (``logs/``), ``truth.json`` and ``k8s.json``. Raises LabError when a step fails;
the sandbox is torn down in every case.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowtrace.errors import LabError
from flowtrace.lab import capture as cap
from flowtrace.lab import kubeproxy, skew, truth
from flowtrace.lab import topology as topo
from flowtrace.lab.netns import Sandbox
from flowtrace.lab.scenarios import BY_NAME, ClientStep, Scenario
from flowtrace.lab.topology import Network

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(slots=True)
class RunRecord:
    """What happened during a run, handed to the truth builder."""

    scenario: Scenario
    dest: Path
    network: Network
    captures: list[cap.CaptureProc] = field(default_factory=list)
    conntrack: dict[str, cap.ConntrackEvents] = field(default_factory=dict)
    conntrack_list_commands: list[str] = field(default_factory=list)
    client_records: list[dict[str, Any]] = field(default_factory=list)
    client_commands: list[list[str]] = field(default_factory=list)
    server_logs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    extra_rules: list[dict[str, Any]] = field(default_factory=list)
    started_ns: int = 0
    finished_ns: int = 0
    connections_override: int | None = None


def _python(module_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "flowtrace.lab.traffic", *module_args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _install_rules(sb: Sandbox, scn: Scenario, rec: RunRecord) -> None:
    for node in topo.NODES:
        for family, tool in ((4, "iptables-restore"), (6, "ip6tables-restore")):
            opts = kubeproxy.ProxyOptions(
                cluster_cidr=topo.CLUSTER_CIDR_V4 if family == 4 else topo.CLUSTER_CIDR_V6,
                masquerade_external=scn.masquerade_external, node_name=node)
            text = kubeproxy.render(list(scn.services), family=family, options=opts)
            (rec.dest / "logs" / f"{node}.kube-proxy.ipv{family}.restore").write_text(text)
            sb.run([tool, "-w"], host=node, input=text)
    for host, argv, why in scn.extra_rules:
        sb.run(list(argv), host=host)
        rec.extra_rules.append({"host": host, "command": " ".join(argv), "why": why})


def _servers(sb: Sandbox, scn: Scenario, dest: Path, env: dict[str, str]) -> list[tuple[str, Any, Path]]:
    started: list[tuple[str, Any, Path]] = []
    for svc in scn.services:
        for ep in svc.endpoints:
            for port in svc.ports:
                if port.protocol == "UDP":
                    args = ["dns-server", "--port", str(port.target_port), "--pod", ep.pod]
                elif svc.name == "kube-dns":
                    continue
                else:
                    args = ["tcp-server", "--port", str(port.target_port), "--pod", ep.pod]
                key = f"{ep.pod}.{args[0]}"
                if any(k == key for k, _, _ in started):
                    continue
                out = dest / "logs" / f"{key}.jsonl"
                proc = sb.spawn(f"server:{key}", _python(args), host=ep.pod, stdout=out,
                                stderr=dest / "logs" / f"{key}.stderr", env=env)
                started.append((key, proc, out))
    for key, proc, out in started:
        def ready(proc: Any = proc, out: Path = out, key: str = key) -> bool:
            if proc.poll() is not None:
                raise LabError(f"traffic server {key} exited early (see logs/{key}.stderr)")
            return '"ready"' in out.read_text() if out.exists() else False
        sb.wait_for(ready, timeout=15.0, what=f"server {key}")
    return started


def _client_argv(step: ClientStep, n: int, start_id: int) -> list[str]:
    if step.kind == "dns":
        return _python(["dns-client", "--dst", step.dst, "--port", str(step.port), "--lookups", str(n),
                        "--interval", str(step.interval), "--start-id", str(start_id)])
    return _python(["tcp-client", "--dst", step.dst, "--port", str(step.port), "--connections", str(n),
                    "--concurrency", str(step.concurrency), "--request-bytes", str(step.request_bytes),
                    "--response-bytes", str(step.response_bytes), "--connect-timeout",
                    str(step.connect_timeout), "--timeout", str(step.timeout), "--interval",
                    str(step.interval), "--close", step.close, "--start-id", str(start_id)])


def _run_clients(sb: Sandbox, scn: Scenario, rec: RunRecord, env: dict[str, str]) -> None:
    start_id = 0
    for step in scn.clients:
        n = rec.connections_override if (step.scalable and rec.connections_override) else step.connections
        argv = _client_argv(step, n, start_id)
        rec.client_commands.append(["ip", "netns", "exec", sb.ns(step.host), *argv])
        out = rec.dest / "logs" / f"{step.host}.client.jsonl"
        budget = n * (step.timeout + step.interval) / max(1, step.concurrency) + 60
        proc = sb.spawn(f"client:{step.host}", argv, host=step.host, stdout=out,
                        stderr=rec.dest / "logs" / f"{step.host}.client.stderr", env=env)
        try:
            proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            sb.stop(proc, signal.SIGTERM)
            raise LabError(f"client in {step.host} did not finish within {budget:.0f} s") from None
        for r in _jsonl(out):
            r["host"] = step.host
            if r.get("src") in (None, "0.0.0.0", "::"):
                r["src"] = _host_ip(rec.network, step.host, step.dst)
            rec.client_records.append(r)
        start_id += n


def _host_ip(net: Network, host: str, dst: str) -> str:
    v6 = ":" in dst
    for iface in net.hosts[host].interfaces:
        if iface["name"] == "eth0":
            for a in iface["addresses"]:
                ip = a.split("/")[0]
                if (":" in ip) == v6 and not ip.startswith("fe80"):
                    return ip
    return ""


def _warm_up(sb: Sandbox, net: Network, env: dict[str, str]) -> None:
    """Resolve every neighbour once (UDP to port 9), then flush the nodes' conntrack."""
    targets: dict[str, list[str]] = {
        "client": [topo.ROUTER_CLIENT_V4, topo.ROUTER_CLIENT_V6],
        "router": [*topo.NODE_V4.values(), *topo.NODE_V6.values()],
    }
    for node in topo.NODES:
        other = next(n for n in topo.NODES if n != node)
        targets[node] = [topo.ROUTER_NODE_V4, topo.ROUTER_NODE_V6, topo.NODE_V4[other], topo.NODE_V6[other]]
        targets[node] += [p.ipv4 for p in net.spec.pods if p.node == node]
        targets[node] += [p.ipv6 for p in net.spec.pods if p.node == node]
    for pod in net.spec.pods:
        targets[pod.name] = [topo.gateway_v4(pod.node), topo.gateway_v6(pod.node)]
    for host, dsts in targets.items():
        args = ["probe", "--wait", "0.05"]
        for d in dsts:
            args += ["--dst", d]
        sb.run(_python(args), host=host, timeout=30)
    for node in topo.NODES:
        for fam in ("ipv4", "ipv6"):
            sb.run(["conntrack", "-F", "-f", fam], host=node, check=False)


def _capture_all(sb: Sandbox, scn: Scenario, net: Network, rec: RunRecord) -> None:
    dest, logs = rec.dest, rec.dest / "logs"
    if scn.dumpcap:
        (dest / "pcapng").mkdir(exist_ok=True)
    for node in topo.NODES:
        rec.conntrack[node] = cap.start_conntrack_events(sb, node, dest / f"{node}.conntrack-events.txt", logs,
                                                         event_mask=scn.conntrack_events)
    rec.captures.append(cap.start_tcpdump(sb, "client", "eth0", dest / "client.pcap", logs))
    for node in topo.NODES:
        rec.captures.append(cap.start_tcpdump(sb, node, "any", dest / f"{node}.pcap", logs,
                                              snaplen=scn.node_snaplen))
        if scn.dumpcap:
            ifaces = [i["name"] for i in net.hosts[node].interfaces if i["name"] != "lo"]
            rec.captures.append(cap.start_dumpcap(sb, node, ifaces, dest / "pcapng" / f"{node}.pcapng", logs,
                                                  snaplen=scn.node_snaplen))
    for pod in scn.capture_pods:
        rec.captures.append(cap.start_tcpdump(sb, pod, "eth0", dest / f"{pod}.pcap", logs))


def _finish_captures(sb: Sandbox, rec: RunRecord) -> None:
    time.sleep(cap.FLUSH_WAIT_S)
    for c in rec.captures:
        cap.stop_capture(sb, c)
    for node in topo.NODES:
        rec.conntrack_list_commands = cap.dump_conntrack(sb, node, rec.dest / f"{node}.conntrack.txt")
    for node, ev in rec.conntrack.items():
        cap.stop_conntrack_events(sb, ev)
        del node
    for host in ("router", *topo.NODES):
        for tool, suffix in (("iptables-save", "iptables-save.txt"), ("ip6tables-save", "ip6tables-save.txt")):
            res = sb.run([tool], host=host, check=False)
            if host != "router" or "-A " in res.stdout:
                (rec.dest / f"{host}.{suffix}").write_text(_strip_dates(res.stdout))


def _strip_dates(text: str) -> str:
    """iptables-save's '# Generated ... on <date>' lines make every run differ; drop the date."""
    return "\n".join(line.split(" on ")[0] if line.startswith("# ") else line for line in text.splitlines()) + "\n"


def _prepare_dest(dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "logs").mkdir(parents=True)


def run_scenario(scn: Scenario, out_dir: Path, *, connections: int | None = None) -> Path:
    """Run ``scn`` into ``out_dir/<name>/`` and return that directory."""
    if scn.derived_from:
        return _derive(scn, out_dir, connections=connections)
    dest = out_dir / scn.name
    _prepare_dest(dest)
    env = _env()
    with Sandbox() as sb:
        net = Network(sb, scn.network)
        rec = RunRecord(scenario=scn, dest=dest, network=net, connections_override=connections)
        rec.started_ns = time.time_ns()
        net.build()
        for step in scn.clients:
            if step.port_range:
                sb.sysctl(step.host, "net.ipv4.ip_local_port_range", f"{step.port_range[0]} {step.port_range[1]}")
        _install_rules(sb, scn, rec)
        net.inspect()
        _warm_up(sb, net, env)
        servers = _servers(sb, scn, dest, env)
        _capture_all(sb, scn, net, rec)
        time.sleep(0.2)
        _run_clients(sb, scn, rec, env)
        _finish_captures(sb, rec)
        for _key, proc, _out in servers:
            sb.stop(proc, signal.SIGTERM)
        rec.server_logs = {key: _jsonl(out) for key, _p, out in servers}
        rec.finished_ns = time.time_ns()
    truth.write_outputs(rec)
    for path in dest.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def _derive(scn: Scenario, out_dir: Path, *, connections: int | None) -> Path:
    """Build a clock-skew scenario from a fresh run of its base scenario."""
    base = BY_NAME[scn.derived_from or ""]
    with tempfile.TemporaryDirectory(prefix="flowtrace-lab-") as tmp:
        base_dir = run_scenario(base, Path(tmp), connections=connections)
        dest = out_dir / scn.name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(base_dir, dest)
    doc = json.loads((dest / "truth.json").read_text())
    for entry in doc["captures"]:
        offset = scn.clock_offsets_ns.get(entry["host"], 0)
        if offset:
            path = dest / entry["file"]
            skew.shift_capture(path, path, offset)
        entry["clock_shift_ns"] = offset
    for node, files in doc["conntrack"]["files"].items():
        offset = scn.clock_offsets_ns.get(node, 0)
        if offset:
            path = dest / files["events"]
            skew.shift_conntrack_events(path, path, offset)
        files["clock_shift_ns"] = offset
    truth.retitle(doc, scn)
    (dest / "truth.json").write_text(truth.dumps(doc))
    return dest
