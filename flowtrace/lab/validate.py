"""Check a truth document against the structure docs/lab.md documents (schema_version 1).

In: a parsed ``truth.json``. Out: a list of problems, each naming the JSON path (empty
when the document conforms). Structural only: types, required keys, allowed values;
whether the content matches the captures is for the tests to check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ROLES = ("client", "router", "node", "pod")
ANOMALY_CODES = (
    "asymmetric_return", "missing_nat_reversal", "invalid_conntrack_rst", "hairpin_failure",
    "source_ip_masqueraded", "no_local_endpoint_blackhole", "service_no_endpoints", "dns_conntrack_race",
    "snat_port_collision", "conntrack_table_full", "stale_conntrack_endpoint", "drop_between_hops",
    "syn_retransmission", "no_reply", "connection_reset", "mtu_blackhole", "ttl_expired",
    "bad_checksum_received", "capture_truncated", "capture_drops", "capture_gap", "clock_skew",
    "offload_artifact", "duplicate_packet", "opaque_encapsulation",
)
"""The stable anomaly codes of ANOMALIES.md."""

_TOP = {
    "schema_version": int, "scenario": str, "summary": str, "story": str, "clock_offsets_ns": dict,
    "generated_by": dict, "topology": dict, "services": list, "kube_proxy": dict, "captures": list,
    "conntrack": dict, "traffic": dict, "paths": dict, "anomalies": dict, "client_summary": dict,
    "warnings": list, "other_conntrack_events": list, "connections": list,
}
_TUPLE = {"proto": str, "src": str, "sport": int, "dst": str, "dport": int}


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def keys(self, obj: Any, spec: Mapping[str, type | tuple[type, ...]], where: str) -> bool:
        if not isinstance(obj, dict):
            self.problems.append(f"{where}: expected an object")
            return False
        for key, typ in spec.items():
            if key not in obj:
                self.problems.append(f"{where}.{key}: missing")
            elif not isinstance(obj[key], typ) or (typ is int and isinstance(obj[key], bool)):
                self.problems.append(f"{where}.{key}: expected {typ}, got {type(obj[key]).__name__}")
        return True

    def tuple5(self, obj: Any, where: str) -> None:
        self.keys(obj, _TUPLE, where)


def validate_truth(doc: Any) -> list[str]:
    """Return the problems of ``doc`` as a truth document; [] when it conforms."""
    c = _Checker()
    if not c.keys(doc, _TOP, "$"):
        return c.problems
    if doc["schema_version"] != 1:
        c.problems.append(f"$.schema_version: unsupported {doc['schema_version']}")
    if not isinstance(doc.get("derived_from"), str | type(None)):
        c.problems.append("$.derived_from: expected a string or null")
    c.keys(doc["generated_by"], {"command": str}, "$.generated_by")
    hosts = doc["topology"].get("hosts")
    if not isinstance(hosts, list) or not hosts:
        c.problems.append("$.topology.hosts: expected a non-empty list")
        hosts = []
    names = set()
    for i, h in enumerate(hosts):
        w = f"$.topology.hosts[{i}]"
        if not c.keys(h, {"name": str, "role": str, "namespace": str, "interfaces": list}, w):
            continue
        names.add(h["name"])
        if h["role"] not in ROLES:
            c.problems.append(f"{w}.role: {h['role']!r} not one of {ROLES}")
        for j, iface in enumerate(h["interfaces"]):
            c.keys(iface, {"name": str, "ifindex": int, "addresses": list}, f"{w}.interfaces[{j}]")
        if h["role"] == "node":
            c.keys(h, {"ifindex_names": dict}, w)
    for i, cap in enumerate(doc["captures"]):
        w = f"$.captures[{i}]"
        if not c.keys(cap, {"file": str, "host": str, "role": str, "variant": str, "tool": str, "command": str,
                            "interfaces": list, "format": str, "link_types": list, "clock_shift_ns": int}, w):
            continue
        if cap["format"] not in ("pcap", "pcapng"):
            c.problems.append(f"{w}.format: {cap['format']!r}")
        if cap["host"] not in names:
            c.problems.append(f"{w}.host: {cap['host']!r} is not a topology host")
    for i, svc in enumerate(doc["services"]):
        c.keys(svc, {"name": str, "namespace": str, "type": str, "cluster_ip": str, "ports": list,
                     "endpoints": list}, f"$.services[{i}]")
    c.keys(doc["conntrack"], {"events_command": str, "files": dict}, "$.conntrack")
    anomalies = doc["anomalies"]
    if c.keys(anomalies, {"expected": list, "acceptable": list}, "$.anomalies"):
        for code in anomalies["expected"] + anomalies["acceptable"]:
            if code not in ANOMALY_CODES:
                c.problems.append(f"$.anomalies: unknown code {code!r}")
    for i, conn in enumerate(doc["connections"]):
        w = f"$.connections[{i}]"
        if not c.keys(conn, {"id": int, "client_host": str, "client": dict, "start_ns": int, "end_ns": int,
                             "nat": list, "outcome": dict, "client_saw": dict}, w):
            continue
        c.tuple5(conn["client"], f"{w}.client")
        c.keys(conn["outcome"], {"ok": bool}, f"{w}.outcome")
        for j, nat in enumerate(conn["nat"]):
            wn = f"{w}.nat[{j}]"
            if c.keys(nat, {"node": str, "event_line": int, "orig": dict, "reply": dict, "dnat": bool,
                            "snat": bool}, wn):
                c.tuple5(nat["orig"], f"{wn}.orig")
                c.tuple5(nat["reply"], f"{wn}.reply")
        path = conn.get("path")
        if path is not None and c.keys(path, {"template": str, "request": list, "response": list}, f"{w}.path"):
            for direction in ("request", "response"):
                for j, hop in enumerate(path[direction]):
                    c.keys(hop, {"packets": int}, f"{w}.path.{direction}[{j}]")
    return c.problems
