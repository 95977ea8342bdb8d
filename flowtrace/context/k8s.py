"""Names for addresses from a Kubernetes API snapshot (``kubectl get … -o json``).

In: the output of ``kubectl get pods,services,endpointslices,nodes -o json`` (a ``List``
of items; a single object, ``-o yaml`` output, or a bare array of items are read too).
Out: a :class:`KubeNames` that names an address and port:

- a Service address (clusterIP(s), load-balancer ingress IPs, externalIPs) on one of its
  ports: ``svc default/web:http`` (the port's name, else its number); on another port
  just ``svc default/web``;
- a pod IP: ``pod default/web-1`` (pods with hostNetwork share their node's address and
  are left to the node); an EndpointSlice endpoint whose pod is not in the snapshot is
  named by its targetRef;
- a node address (status.addresses InternalIP/ExternalIP): ``node node1``; on a
  Service's nodePort: ``node node1, svc default/web:http``;
- any other address inside a node's podCIDR (its cni0 bridge or flannel.1 address,
  which masquerading and overlays use as source): ``node node1``.

A file that cannot be read or is not such a snapshot raises InputError (one line).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flowtrace.errors import InputError

PROTO_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}
"""Kubernetes port protocols as IP protocol numbers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Owner:
    """What an address belongs to."""

    kind: str
    """pod, svc or node."""
    name: str
    """``namespace/name`` for pods and Services, the node name for nodes."""

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(slots=True, kw_only=True)
class KubeNames:
    """Address -> name lookups built from one snapshot (see the module docstring)."""

    owners: dict[str, Owner] = field(default_factory=dict)
    """Exact addresses (text form, as in the tables) and what they belong to."""
    service_ports: dict[tuple[str, int, int], str] = field(default_factory=dict)
    """(address, port, protocol number) -> ``svc namespace/name:portname`` for Service ports
    and nodePorts."""
    pod_cidrs: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = field(default_factory=list)
    """Node pod CIDRs with the node name, for node-owned addresses inside them."""
    source: str = ""
    """The snapshot file."""

    def __len__(self) -> int:
        return len(self.owners)

    def name(self, address: object, port: object = None, proto: object = None) -> str | None:
        """The name of ``address`` (and ``port``/``proto`` when given), or None.

        ``port`` is an int (``-1``/None: unknown); ``proto`` an IP protocol number (None:
        any). Examples: ``svc default/web:http``, ``pod default/web-1``, ``node node1``.
        """
        addr = _text(address)
        if addr is None:
            return None
        p = _int(port)
        if p is not None and p >= 0:
            pr = _int(proto)
            for candidate in ((pr,) if pr is not None and pr >= 0 else (6, 17, 132)):
                hit = self.service_ports.get((addr, p, candidate))
                if hit is not None:
                    owner = self.owners.get(addr)
                    if owner is not None and owner.kind == "node":
                        return f"{owner}, {hit}"
                    return hit
        owner = self.owners.get(addr)
        if owner is not None:
            return str(owner)
        return self._in_pod_cidr(addr)

    def label(self, address: object, port: object = None, proto: object = None) -> str:
        """``address:port (name)``, or ``address:port`` when nothing names it."""
        addr = _text(address) or "-"
        p = _int(port)
        text = addr if p is None or p < 0 else (f"[{addr}]:{p}" if ":" in addr else f"{addr}:{p}")
        n = self.name(address, port, proto)
        return f"{text} ({n})" if n else text

    def _in_pod_cidr(self, addr: str) -> str | None:
        if not self.pod_cidrs:
            return None
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return None
        for net, node in self.pod_cidrs:
            if ip.version == net.version and ip in net:
                return f"node {node}"
        return None

    def names_column(self, addresses: pd.Series, ports: pd.Series | None = None,
                     protos: pd.Series | None = None) -> pd.Series:
        """A categorical Series naming each row's address (and port), NaN where unnamed.

        Vectorised for tables of millions of rows: names are looked up once per distinct
        address, and once per distinct (address, port, protocol) only for rows whose
        address is a Service or node address.
        """
        cat = addresses.astype("category") if not isinstance(addresses.dtype, pd.CategoricalDtype) else addresses
        cats = [str(c) for c in cat.cat.categories]
        base = [self.name(c) for c in cats]
        labels = sorted({b for b in base if b})
        codes_of_label = {b: i for i, b in enumerate(labels)}
        addr_codes = cat.cat.codes.to_numpy()
        table = np.array([codes_of_label[b] if b else -1 for b in base] + [-1], dtype=np.int64)
        out = table[addr_codes]  # code -1 (NaN address) picks the trailing -1
        if ports is not None and self.service_ports:
            ported = {a for a, _, _ in self.service_ports}
            ported_codes = np.array([i for i, c in enumerate(cats) if c in ported], dtype=addr_codes.dtype)
            rows = np.flatnonzero(np.isin(addr_codes, ported_codes))
            if len(rows):
                port_v = ports.to_numpy()[rows].astype(np.int64)
                proto_v = (protos.to_numpy()[rows].astype(np.int64) if protos is not None
                           else np.full(len(rows), -1, dtype=np.int64))
                keys = np.stack([addr_codes[rows].astype(np.int64), port_v, proto_v], axis=1)
                uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
                new = []
                for c, p, pr in uniq:
                    n = self.name(cats[int(c)], int(p), None if pr < 0 else int(pr))
                    if n and n not in codes_of_label:
                        codes_of_label[n] = len(labels)
                        labels.append(n)
                    new.append(codes_of_label[n] if n else -1)
                out = out.copy()
                out[rows] = np.asarray(new, dtype=np.int64)[inverse.reshape(-1)]
        return pd.Series(pd.Categorical.from_codes(out, categories=labels), index=addresses.index)


ADDRESS_COLUMNS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "packets": (("src", "sport"), ("dst", "dport")),
    "flows": (("orig_h", "orig_p"), ("resp_h", "resp_p")),
    "connections": (("client_src", "client_sport"), ("client_dst", "client_dport"),
                    ("server_src", "server_sport"), ("server_dst", "server_dport")),
    "hops": (("src", "sport"), ("dst", "dport")),
}
"""Per table, the (address, port) column pairs that get a ``<address>_name`` column."""


def add_name_columns(table: str, frame: pd.DataFrame, names: KubeNames) -> pd.DataFrame:
    """A copy of ``frame`` (a table named ``table``) with a ``<column>_name`` categorical
    after each address column of ADDRESS_COLUMNS; other tables are returned unchanged."""
    pairs = ADDRESS_COLUMNS.get(table)
    if not pairs:
        return frame
    out = frame.copy()
    proto = out["proto"] if "proto" in out.columns else None
    for addr, port in pairs:
        if addr not in out.columns:
            continue
        ports = out[port] if port and port in out.columns else None
        col = names.names_column(out[addr], ports, proto)
        out.insert(out.columns.get_loc(addr) + 1, f"{addr}_name", col)
    return out


def read_snapshot(path: str | Path) -> KubeNames:
    """Read a ``kubectl get pods,services,endpointslices,nodes -o json`` snapshot.

    Returns KubeNames. Raises InputError when the file is missing, is neither JSON nor
    YAML, or holds no Pod, Service, EndpointSlice or Node.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(p, f"cannot read Kubernetes snapshot: {getattr(e, 'strerror', None) or e}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith(("{", "[")):
            raise InputError(p, f"not a JSON Kubernetes snapshot: {e.msg}", line=e.lineno) from None
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            raise InputError(p, f"not a JSON Kubernetes snapshot: {e.msg}", line=e.lineno) from None
    items = _items(doc)
    if items is None:
        raise InputError(p, "not a Kubernetes snapshot: expected the JSON of "
                            "'kubectl get pods,services,endpointslices,nodes -o json'")
    try:
        names = build_names(items)
    except (TypeError, AttributeError, ValueError) as e:
        raise InputError(p, f"malformed Kubernetes snapshot: {e}") from None
    if not names.owners and not names.pod_cidrs:
        raise InputError(p, "no pods, services, endpointslices or nodes with addresses in the snapshot")
    names.source = str(p)
    return names


def _items(doc: Any) -> list[dict[str, Any]] | None:
    if isinstance(doc, list):
        return [i for i in doc if isinstance(i, dict)]
    if isinstance(doc, dict):
        if isinstance(doc.get("items"), list):
            return [i for i in doc["items"] if isinstance(i, dict)]
        if "kind" in doc:
            return [doc]
    return None


def build_names(items: Iterable[Mapping[str, Any]]) -> KubeNames:
    """KubeNames from API objects (dicts as kubectl prints them); unknown kinds are skipped."""
    names = KubeNames()
    pods: list[Mapping[str, Any]] = []
    for item in items:
        kind = item.get("kind")
        if kind == "Node":
            _add_node(names, item)
        elif kind == "Pod":
            pods.append(item)
    for item in items:
        if item.get("kind") == "EndpointSlice":
            _add_endpoint_slice(names, item)
    for item in pods:  # a Pod object's own name wins over an EndpointSlice's targetRef
        _add_pod(names, item)
    for item in items:
        if item.get("kind") == "Service":
            _add_service(names, item)
    return names


def _meta(item: Mapping[str, Any]) -> tuple[str, str]:
    m = item.get("metadata") or {}
    return str(m.get("namespace") or "default"), str(m.get("name") or "?")


def _add_node(names: KubeNames, item: Mapping[str, Any]) -> None:
    _, node = _meta(item)
    for a in (item.get("status") or {}).get("addresses") or []:
        if a.get("type") in ("InternalIP", "ExternalIP") and _ip(a.get("address")):
            names.owners[_ip(a["address"])] = Owner(kind="node", name=node)  # type: ignore[index]
    spec = item.get("spec") or {}
    for cidr in spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []):
        try:
            names.pod_cidrs.append((ipaddress.ip_network(str(cidr), strict=False), node))
        except ValueError:
            continue


def _add_pod(names: KubeNames, item: Mapping[str, Any]) -> None:
    ns, name = _meta(item)
    if (item.get("spec") or {}).get("hostNetwork"):
        return
    status = item.get("status") or {}
    ips = [x.get("ip") for x in status.get("podIPs") or []] or [status.get("podIP")]
    for ip in ips:
        if _ip(ip):
            names.owners[_ip(ip)] = Owner(kind="pod", name=f"{ns}/{name}")  # type: ignore[index]


def _add_endpoint_slice(names: KubeNames, item: Mapping[str, Any]) -> None:
    for ep in item.get("endpoints") or []:
        ref = ep.get("targetRef") or {}
        if ref.get("kind") != "Pod" or not ref.get("name"):
            continue
        for ip in ep.get("addresses") or []:
            if _ip(ip) and _ip(ip) not in names.owners:
                names.owners[_ip(ip)] = Owner(kind="pod", name=f"{ref.get('namespace') or 'default'}/{ref['name']}")  # type: ignore[index]


def _add_service(names: KubeNames, item: Mapping[str, Any]) -> None:
    ns, name = _meta(item)
    spec = item.get("spec") or {}
    addrs = [*(spec.get("clusterIPs") or [spec.get("clusterIP")]), *(spec.get("externalIPs") or [])]
    addrs += [i.get("ip") for i in ((item.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
    addrs = [_ip(a) for a in addrs if _ip(a)]
    svc = Owner(kind="svc", name=f"{ns}/{name}")
    nodes = [a for a, o in names.owners.items() if o.kind == "node"]
    for a in addrs:
        names.owners[a] = svc  # type: ignore[index]
    for port in spec.get("ports") or []:
        proto = PROTO_NUMBERS.get(str(port.get("protocol") or "TCP").upper(), 6)
        label = f"{svc}:{port.get('name') or port.get('port')}"
        if port.get("port") is not None:
            for a in addrs:
                names.service_ports[(a, int(port["port"]), proto)] = label  # type: ignore[index]
        if port.get("nodePort"):
            for a in nodes:
                names.service_ports[(a, int(port["nodePort"]), proto)] = label


def _ip(value: object) -> str | None:
    """The address in the tables' text form (RFC 5952 for IPv6), None if not an address."""
    if not value or value == "None":
        return None
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        return None


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    s = str(value)
    return s if s and s != "nan" else None


def _int(value: object) -> int | None:
    try:
        return None if value is None else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
