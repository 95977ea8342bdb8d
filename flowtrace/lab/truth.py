"""The truth file of a lab run: what really happened, from the kernel and the captures.

In: a finished :class:`~flowtrace.lab.runner.RunRecord` (files on disk, topology as the
kernel reported it, the client programs' logs). Out: ``truth.json`` (documented in
docs/lab.md, ``schema_version`` 1) and ``k8s.json``. NAT bindings are read from the
nodes' ``conntrack -E`` NEW events and chained hop by hop (the reply tuple of one node
gives the original tuple at the next); expected paths come from the scenario's hop
templates with each hop's packet count measured in the captures, so a hop that should
have seen the connection and did not is visible (and listed under ``warnings``).
"""

from __future__ import annotations

import bisect
import json
import platform
import subprocess
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flowtrace
from flowtrace.lab import conntrack as ct
from flowtrace.lab import k8s, kubeproxy, pcapread
from flowtrace.lab import topology as topo
from flowtrace.lab.capture import events_command
from flowtrace.lab.scenarios import Hop, Scenario

if TYPE_CHECKING:
    from flowtrace.lab.runner import RunRecord

SCHEMA_VERSION = 1
PATH_DETAIL_LIMIT = 50
"""Above this many connections, hops carry packet counts only (the tuples follow from the NAT chain)."""
GRACE_NS = 1_500_000_000
Tuple5 = tuple[str, str, int, str, int]
PROTO_NUM = {"tcp": 6, "udp": 17}


def _tdict(t: Tuple5) -> dict[str, Any]:
    return {"proto": t[0], "src": t[1], "sport": t[2], "dst": t[3], "dport": t[4]}


def _rev(t: Tuple5) -> Tuple5:
    return (t[0], t[3], t[4], t[1], t[2])


def dumps(doc: dict[str, Any]) -> str:
    """Serialise a truth document (indented when small, compact when large)."""
    if len(doc.get("connections", [])) > PATH_DETAIL_LIMIT:
        return json.dumps(doc, separators=(",", ":"), sort_keys=False) + "\n"
    return json.dumps(doc, indent=1) + "\n"


def retitle(doc: dict[str, Any], scn: Scenario) -> None:
    """Turn a copied base truth into a derived scenario's truth (name, story, anomalies)."""
    doc["scenario"] = scn.name
    doc["summary"] = scn.summary
    doc["story"] = scn.story
    doc["derived_from"] = scn.derived_from
    doc["clock_offsets_ns"] = dict(scn.clock_offsets_ns)
    doc["anomalies"] = {"expected": list(scn.expected_anomalies), "acceptable": list(scn.acceptable_anomalies)}
    doc["generated_by"]["command"] = f"flowtrace lab run {scn.name} -o fixtures/pcaps"


class CaptureIndex:
    """Packets of the tcpdump captures keyed for hop lookups: (iface, dir, kind, tuple, vxlan)."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[tuple[Any, ...], list[int]]] = {}
        self.by_dst: dict[str, dict[tuple[str, int], list[pcapread.Pkt]]] = {}
        self.by_src: dict[str, dict[tuple[str, int], list[pcapread.Pkt]]] = {}

    def add(self, name: str, path: Path, own_mac: str | None) -> None:
        """Index capture ``name`` at ``path``; ``own_mac`` decides direction on Ethernet."""
        _info, pkts = pcapread.read_packets(path)
        keys: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        by_dst: dict[tuple[str, int], list[pcapread.Pkt]] = defaultdict(list)
        by_src: dict[tuple[str, int], list[pcapread.Pkt]] = defaultdict(list)
        for p in pkts:
            if not p.src:
                continue
            d = p.direction or ("out" if own_mac and p.src_mac == own_mac else "in")
            if p.quoted:
                q = p.quoted
                t: Tuple5 = (_pname(q[0]), q[1], q[2], q[3], q[4])
                keys[(p.iface, d, "icmp", t, bool(p.vxlan))].append(p.ts_ns)
                by_dst[(q[1], q[2])].append(p)
            else:
                t = (_pname(p.proto), p.src, p.sport, p.dst, p.dport)
                keys[(p.iface, d, "pkt", t, bool(p.vxlan))].append(p.ts_ns)
                by_dst[(p.dst, p.dport)].append(p)
                by_src[(p.src, p.sport)].append(p)
        for v in keys.values():
            v.sort()
        self.keys[name], self.by_dst[name], self.by_src[name] = dict(keys), dict(by_dst), dict(by_src)

    def count(self, name: str, key: tuple[Any, ...], lo: int, hi: int) -> int:
        """Packets of ``key`` in capture ``name`` with lo <= ts < hi."""
        ts = self.keys.get(name, {}).get(key, [])
        return bisect.bisect_left(ts, hi) - bisect.bisect_left(ts, lo)


def _pname(num: int) -> str:
    return {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}.get(num, str(num))


def _chain(client: Tuple5, news: dict[Tuple5, list[tuple[str, ct.CtEntry]]], start: int, hi: int,
           used: frozenset[str] = frozenset()) -> list[tuple[str, ct.CtEntry]]:
    """The NEW events of one client connection (started at ``start``, over by ``hi``), node
    by node from the client's tuple: on each node the first event created after the start,
    then the node's re-creations of it (e.g. a SYN retransmitted after an RST killed the
    entry, with another SNAT port), then, for each of them in turn, the events its
    translated packets created further on.

    An event is stamped when ``conntrack -E`` reads it, at or after the packet that made it,
    and the client noted ``start`` before making its socket: an event stamped before the
    start belongs to the connection that used the tuple before (a client port reused within
    milliseconds), and counts only when none was stamped after it (up to 11 ms before).
    """
    cands = [(n, e) for n, e in news.get(client, []) if n not in used and e.ts_ns is not None
             and start - 11_000_000 <= e.ts_ns <= hi]
    if not cands:
        return []
    after = [c for c in cands if (c[1].ts_ns or 0) >= start]
    node, entry = min(after or cands, key=lambda c: abs((c[1].ts_ns or 0) - start))
    here = [entry] + [e for n, e in cands if n == node and e is not entry and (e.ts_ns or 0) >= (entry.ts_ns or 0)]
    chain = [(node, e) for e in here]
    # Each entry's translated packets leave its node with its reply tuple reversed.
    for t in dict.fromkeys(_rev(e.reply_tuple()) for e in here):
        chain += [c for c in _chain(t, news, start, hi, used | {node}) if all(c[1] is not e for _, e in chain)]
    return chain


def _stages(client: Tuple5, chain: list[tuple[str, ct.CtEntry]]) -> list[Tuple5]:
    stages, seen = [client], set()
    for node, e in chain:
        if node in seen:
            continue
        seen.add(node)
        stages.append(_rev(e.reply_tuple()))
    return stages


def _hop_iface(hop: Hop, pods: dict[str, Any]) -> str:
    return pods[hop.iface[5:]].host_veth if hop.iface.startswith("veth:") else hop.iface


def _path(rec: RunRecord, idx: CaptureIndex, hops: tuple[Hop, ...], stages: list[Tuple5], response: bool,
          lo: int, hi: int, detail: bool) -> list[dict[str, Any]]:
    pods = {p.name: p for p in rec.scenario.network.pods}
    out = []
    for hop in hops:
        t = stages[min(hop.stage, len(stages) - 1)]
        if response and not hop.icmp:
            t = _rev(t)
        if hop.dst is not None:
            t = (t[0], t[1], t[2], hop.dst[0], hop.dst[1])
        elif hop.dst_stage is not None:
            d = stages[min(hop.dst_stage, len(stages) - 1)]
            d = _rev(d) if response else d
            t = (t[0], t[1], t[2], d[3], d[4])
        host = rec.network.hosts[hop.host]
        ifname = _hop_iface(hop, pods)
        iface_id = host.ifindex(ifname) if host.role == "node" else 0
        key = (iface_id, hop.direction, "icmp" if hop.icmp else "pkt", t, hop.vxlan)
        n = idx.count(hop.host, key, lo, hi)
        entry: dict[str, Any] = {"packets": n}
        if detail:
            entry = {"host": hop.host, "capture": f"{hop.host}.pcap", "interface": ifname,
                     "ifindex": host.ifindex(ifname), "direction": hop.direction, **_tdict(t),
                     "icmp_error": hop.icmp, "vxlan": hop.vxlan, "packets": n}
        out.append(entry)
    return out


def _hop_template(rec: RunRecord, hop: Hop) -> dict[str, Any]:
    pods = {p.name: p for p in rec.scenario.network.pods}
    ifname = _hop_iface(hop, pods)
    return {"host": hop.host, "capture": f"{hop.host}.pcap", "interface": ifname,
            "ifindex": rec.network.hosts[hop.host].ifindex(ifname), "direction": hop.direction,
            "stage": hop.stage, "dst_stage": hop.dst_stage,
            "dst": list(hop.dst) if hop.dst else None, "icmp_error": hop.icmp, "vxlan": hop.vxlan}


def _client_saw(idx: CaptureIndex, host: str, t: Tuple5, lo: int, hi: int) -> dict[str, Any]:
    """What reached the client's socket address, and what the client sent, per the capture."""
    replies: Counter[tuple[str, int, str]] = Counter()
    for p in idx.by_dst.get(host, {}).get((t[1], t[2]), []):
        if not lo <= p.ts_ns < hi:
            continue
        if p.quoted:
            if p.quoted[3] == t[3] and p.quoted[4] == t[4]:
                replies[(p.src, 0, f"icmp {p.icmp[0]}/{p.icmp[1]}" if p.icmp else "icmp")] += 1
            continue
        if _pname(p.proto) != t[0]:
            continue
        replies[(p.src, p.sport, _kind(p))] += 1
    sent: Counter[tuple[str, int, str]] = Counter()
    for p in idx.by_src.get(host, {}).get((t[1], t[2]), []):
        if lo <= p.ts_ns < hi and _pname(p.proto) == t[0]:
            sent[(p.dst, p.dport, _kind(p))] += 1
    return {"received": [{"src": s, "sport": sp, "kind": k, "packets": n} for (s, sp, k), n in sorted(replies.items())],
            "sent": [{"dst": d, "dport": dp, "kind": k, "packets": n} for (d, dp, k), n in sorted(sent.items())]}


def _kind(p: pcapread.Pkt) -> str:
    if p.proto != 6:
        return _pname(p.proto)
    f = p.flags
    if f & 0x04:
        return "rst"
    if f & 0x02:
        return "syn-ack" if f & 0x10 else "syn"
    if f & 0x01:
        return "fin"
    return "data" if p.payload_len else "ack"


def _connections(rec: RunRecord, idx: CaptureIndex, events: dict[str, list[ct.CtEntry]]) -> tuple[list[dict[str, Any]], list[str]]:
    scn = rec.scenario
    news: dict[Tuple5, list[tuple[str, ct.CtEntry]]] = defaultdict(list)
    for node, entries in events.items():
        for e in entries:
            if e.event == "NEW":
                news[e.orig_tuple()].append((node, e))
    records = sorted(rec.client_records, key=lambda r: r.get("start_ns", 0))
    next_start: dict[Tuple5, int] = {}
    bounds: list[int] = [0] * len(records)
    for i in range(len(records) - 1, -1, -1):
        r = records[i]
        key: Tuple5 = (r["proto"], r["src"], int(r["sport"]), r["dst"], int(r["dport"]))
        bounds[i] = next_start.get(key, 1 << 62)
        next_start[key] = r["start_ns"]
    detail = len(records) <= PATH_DETAIL_LIMIT
    endpoints = {ep.ip: ep.pod for s in scn.services for ep in s.endpoints}
    out, warnings = [], []
    for i, r in enumerate(records):
        t: Tuple5 = (r["proto"], r["src"], int(r["sport"]), r["dst"], int(r["dport"]))
        lo, hi = r["start_ns"] - 1_000_000, min(r["end_ns"] + GRACE_NS, bounds[i])
        chain = _chain(t, news, r["start_ns"], hi)
        stages = _stages(t, chain)
        endpoint = next((endpoints[e.reply["src"]] for _n, e in chain if e.reply.get("src") in endpoints), None)
        tmpl = scn.paths.get(endpoint or "*") or scn.paths.get("*")
        if tmpl is None and scn.paths:
            tmpl = next(iter(scn.paths.values()))
        conn: dict[str, Any] = {
            "id": r["id"], "client_host": r["host"], "client": _tdict(t),
            "start_ns": r["start_ns"], "end_ns": r["end_ns"], "endpoint": endpoint,
            "nat": [{"node": n, "event_line": e.line_no, "ts_ns": e.ts_ns, "state": e.state,
                     "orig": _tdict(e.orig_tuple()), "reply": _tdict(e.reply_tuple()),
                     "dnat": e.dnat, "snat": e.snat, "flags": e.flags,
                     "recreated": any(m == n for m, _ in chain[:k])} for k, (n, e) in enumerate(chain)],
            "outcome": {"ok": r["ok"], "error": r.get("error"), "peer": r.get("peer"),
                        "bytes_sent": r.get("bytes_sent"), "bytes_received": r.get("bytes_received")},
        }
        if r["proto"] == "udp":
            conn["queries"] = r.get("queries", [])
            conn["outcome"]["reply_from"] = sorted({q["reply_from"] for q in r.get("queries", []) if q["reply_from"]})
        conn["client_saw"] = _client_saw(idx, r["host"], t, lo, hi)
        if tmpl is not None:
            req = _path(rec, idx, tmpl[0], stages, False, lo, hi, detail)
            resp = _path(rec, idx, tmpl[1], stages, True, lo, hi, detail)
            conn["path"] = {"template": endpoint or "*", "request": req, "response": resp}
            for direction, hops in (("request", req), ("response", resp)):
                for j, h in enumerate(hops):
                    if h["packets"] == 0:
                        warnings.append(f"connection {r['id']}: {direction} hop {j} saw no packet")
        out.append(conn)
    return out, warnings


def _other_events(events: dict[str, list[ct.CtEntry]], connections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NEW events that belong to no client connection (e.g. the VXLAN underlay's own flow)."""
    claimed = {(n["node"], n["event_line"]) for c in connections for n in c["nat"]}
    out = []
    for node, entries in events.items():
        for e in entries:
            if e.event != "NEW" or (node, e.line_no) in claimed:
                continue
            o = e.orig_tuple()
            if e.proto == "udp" and o[4] == topo.VXLAN_PORT:
                note = "VXLAN underlay flow between the nodes (outer UDP 8472)"
            elif e.proto in ("icmp", "icmpv6"):
                note = "ICMP not attached to a client connection"
            else:
                note = "not matched to a client connection"
            out.append({"node": node, "event_line": e.line_no, "ts_ns": e.ts_ns, "orig": _tdict(o),
                        "reply": _tdict(e.reply_tuple()), "note": note})
    return out


def _captures_json(rec: RunRecord) -> list[dict[str, Any]]:
    out = []
    for c in rec.captures:
        info = pcapread.sniff_format(c.path)
        host = rec.network.hosts[c.host]
        entry = {
            "file": str(c.path.relative_to(rec.dest)), "host": c.host, "role": host.role,
            "variant": "dumpcap" if c.tool == "dumpcap" else "tcpdump",
            "tool": c.tool, "command": " ".join(c.command).replace(str(rec.dest) + "/", ""),
            "interfaces": c.interfaces, "format": info["format"], "link_types": info["link_types"],
            "clock_shift_ns": 0, "stats": c.stats,
        }
        if info["format"] == "pcapng":
            entry["pcapng_interfaces"] = [{"id": i["id"], "name": i["name"], "link_type": i["link_type"],
                                           "tsresol": i["tsresol"]} for i in info["interfaces"]]
        else:
            entry["snaplen"] = info["snaplen"]
            entry["ts_resolution"] = info["ts_resolution"]
        if host.role == "node" and c.tool == "tcpdump":
            entry["ifindex_names"] = {str(i["ifindex"]): i["name"] for i in host.interfaces}
        out.append(entry)
    return out


def _services_json(scn: Scenario) -> list[dict[str, Any]]:
    out = []
    for s in scn.services:
        d = asdict(s)
        d["chains"] = {}
        for p in s.ports:
            name, proto = s.port_name(p), p.protocol.lower()
            h = kubeproxy.port_proto_hash(name, proto)
            d["chains"][p.name] = {
                "svc": f"KUBE-SVC-{h}", "ext": f"KUBE-EXT-{h}" if (s.load_balancer_ips or p.node_port) else None,
                "sep": {ep.pod: kubeproxy.endpoint_chain(name, proto, kubeproxy.endpoint_string(ep.ip, p.target_port))
                        for ep in s.endpoints}}
        out.append(d)
    return out


def tool_versions() -> dict[str, str]:
    """Kernel release and the versions of the tools that made the files."""
    out = {"kernel": platform.release()}
    for tool, args in (("tcpdump", ["--version"]), ("dumpcap", ["--version"]), ("iptables", ["-V"]),
                       ("conntrack", ["-V"]), ("iproute2", ["-V"])):
        exe = "ip" if tool == "iproute2" else tool
        try:
            res = subprocess.run([exe, *args], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        text = (res.stdout or res.stderr).strip().splitlines()
        out[tool] = text[0] if text else ""
    return out


def write_outputs(rec: RunRecord) -> None:
    """Write truth.json and k8s.json into the run's directory."""
    scn, dest = rec.scenario, rec.dest
    idx = CaptureIndex()
    for c in rec.captures:
        if c.tool == "tcpdump":
            host = rec.network.hosts[c.host]
            idx.add(c.host, c.path, None if host.role == "node" else host.mac("eth0"))
    events = {n: ct.parse_file(dest / f"{n}.conntrack-events.txt") for n in topo.NODES}
    connections, warnings = _connections(rec, idx, events)
    for c in rec.captures:
        drops = c.stats.get("dropped", 0) + sum(i["dropped"] for i in c.stats.get("interfaces", {}).values())
        if drops:
            warnings.append(f"{c.path.name}: {drops} packets dropped by the capture")
    ok = sum(1 for c in connections if c["outcome"]["ok"])
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "scenario": scn.name,
        "summary": scn.summary,
        "story": scn.story,
        "derived_from": None,
        "clock_offsets_ns": {},
        "generated_by": {"command": f"flowtrace lab run {scn.name} -o fixtures/pcaps",
                         "flowtrace_version": flowtrace.__version__,
                         "connections_override": rec.connections_override,
                         "environment": tool_versions(),
                         "started_ns": rec.started_ns, "finished_ns": rec.finished_ns},
        "topology": {
            "hosts": [h.to_json() for h in rec.network.hosts.values()],
            "overlay": scn.network.overlay,
            "br_netfilter": rec.network.br_netfilter,
            "addresses": {"client": [topo.CLIENT_V4, topo.CLIENT_V6], "load_balancer": [topo.LB_V4, topo.LB_V6],
                          "nodes": {n: [topo.NODE_V4[n], topo.NODE_V6[n]] for n in topo.NODES},
                          "pod_cidrs": {n: [topo.POD_CIDR_V4[n], topo.POD_CIDR_V6[n]] for n in topo.NODES},
                          "cluster_cidrs": [topo.CLUSTER_CIDR_V4, topo.CLUSTER_CIDR_V6],
                          "service_cidrs": [topo.SERVICE_CIDR_V4, topo.SERVICE_CIDR_V6]},
            "network_spec": {"hairpin": scn.network.hairpin, "router_mtu_to": scn.network.router_mtu_to,
                             "vxlan_df": scn.network.vxlan_df if scn.network.overlay == "vxlan" else None},
        },
        "services": _services_json(scn),
        "kube_proxy": {"mode": "iptables", "masquerade_external": scn.masquerade_external,
                       "rules_files": {n: {"ipv4": f"{n}.iptables-save.txt", "ipv6": f"{n}.ip6tables-save.txt"}
                                       for n in topo.NODES},
                       "extra_rules": rec.extra_rules},
        "captures": _captures_json(rec),
        "conntrack": {"events_command": " ".join(events_command(scn.conntrack_events)),
                      "list_commands": rec.conntrack_list_commands,
                      "files": {n: {"events": f"{n}.conntrack-events.txt", "table": f"{n}.conntrack.txt",
                                    "clock_shift_ns": 0} for n in topo.NODES},
                      "summaries": {n: ev.summary for n, ev in rec.conntrack.items()}},
        "traffic": {"clients": [asdict(s) for s in scn.clients], "commands": [" ".join(c) for c in rec.client_commands],
                    "servers": {k: sum(1 for x in v if x.get("event") in ("conn", "query")) for k, v in rec.server_logs.items()}},
        "paths": {ep: {"request": [_hop_template(rec, h) for h in req], "response": [_hop_template(rec, h) for h in resp]}
                  for ep, (req, resp) in scn.paths.items()},
        "anomalies": {"expected": list(scn.expected_anomalies), "acceptable": list(scn.acceptable_anomalies)},
        "client_summary": {"connections": len(connections), "ok": ok, "failed": len(connections) - ok,
                           "errors": dict(Counter(c["outcome"]["error"] for c in connections if c["outcome"]["error"]))},
        "warnings": warnings[:200],
        "other_conntrack_events": _other_events(events, connections),
        "connections": connections,
    }
    (dest / "truth.json").write_text(dumps(doc))
    snap = k8s.snapshot(scn.network.pods, scn.services)
    (dest / "k8s.json").write_text(json.dumps(snap, indent=1) + "\n")


def expected_hops(truth: dict[str, Any], conn: dict[str, Any], direction: str) -> list[dict[str, Any]]:
    """The hops a truth file says one of its connections passed in ``direction`` (request or
    response): its path template's hops overlaid with the connection's own, those with a
    capture that saw at least one packet, in path order."""
    template = conn["path"].get("template")
    base = truth["paths"].get(template, {}).get(direction, []) if template else []
    hops = [dict(base[i], **h) if i < len(base) else h for i, h in enumerate(conn["path"][direction])]
    return [h for h in hops if h.get("capture") and h.get("packets", 1) > 0]


def matching_connection(connections: Any, conn: dict[str, Any]) -> int | None:
    """The connection id in a connections table (flowtrace.schema.CONNECTIONS) of a truth
    connection: same client tuple, nearest start when the tuple was reused; None when there
    is none."""
    c = connections
    cl = conn["client"]
    cand = c[(c["client_src"] == cl["src"]) & (c["client_dst"] == cl["dst"])
             & (c["client_sport"] == cl.get("sport", -1)) & (c["client_dport"] == cl.get("dport", -1))]
    if len(cand) > 1 and conn.get("start_ns"):
        cand = cand.iloc[[int((cand["start_ts_ns"] - conn["start_ns"]).abs().to_numpy().argmin())]]
    return int(cand["connection"].iloc[0]) if len(cand) == 1 else None
