"""Which connections a report shows: noise, the ones that matter (most severe first), filters.

Every report (terminal, HTML, trace) uses the same choices so that they agree:

- **noise** is link housekeeping that never crowds a report: IPv6 neighbour and router
  discovery and MLD (ICMPv6 types 130-137, 143), IGMP, and anything sent to a multicast
  or broadcast address; a noise connection with a finding (above info) is not noise;
- a connection **matters** when it has a finding of severity low or above, or (whatever
  the detectors say) when it ended badly: no_reply, reset or rejected. Findings of
  severity info (masquerading, offload) describe normal operation and do not make a
  connection matter;
- the rest is **healthy** and is summarised as groups of equal paths and NAT bindings.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from flowtrace.analysis import Analysis
from flowtrace.detect.finding import SEVERITIES, Finding, severity_rank

NOISE_ICMP6_TYPES = (130, 131, 132, 133, 134, 135, 136, 137, 143)
"""MLD query/report/done, router solicitation/advertisement, neighbour solicitation/
advertisement, redirect, MLDv2 report."""

BAD_STATUSES = ("no_reply", "reset", "rejected")
"""Statuses that make a connection worth showing even without a finding."""

MATTER_SEVERITY = "low"
"""The lowest finding severity that makes a connection matter."""


_MATTERING = frozenset(SEVERITIES[severity_rank(MATTER_SEVERITY):])
"""MATTER_SEVERITY and the severities above it (a report asks for every finding, many times)."""


def matters(f: Finding) -> bool:
    """True for findings at or above MATTER_SEVERITY."""
    return f.severity in _MATTERING


def findings_by_connection(findings: Sequence[Finding]) -> dict[int, list[Finding]]:
    """Findings grouped by connection (capture-wide ones left out), most severe first."""
    out: dict[int, list[Finding]] = {}
    for f in findings:
        if f.connection is not None:
            out.setdefault(int(f.connection), []).append(f)
    for fs in out.values():
        fs.sort(key=lambda f: -severity_rank(f.severity))
    return out


def _multicast(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return ip.is_multicast or addr == "255.255.255.255"


def noise_mask(a: Analysis) -> np.ndarray:
    """Per row of ``a.connections``: True for link housekeeping (see the module docstring)."""
    c = a.connections
    if c.empty:
        return np.zeros(0, dtype=bool)
    proto = c["proto"].to_numpy()
    dst = c["client_dst"].astype("category")
    multicast = np.array([_multicast(str(x)) for x in dst.cat.categories] + [False], dtype=bool)
    noise = multicast[dst.cat.codes.to_numpy()] | (proto == 2)
    icmp6 = np.flatnonzero(proto == 58)
    if len(icmp6) and not a.hops.empty:
        first = a.hops.drop_duplicates("connection")[["connection", "flow"]]
        flow_type = a.flows.set_index("flow_id")["orig_p"]
        types = first.set_index("connection")["flow"].map(flow_type)
        t = c["connection"].iloc[icmp6].map(types).fillna(-1).to_numpy()
        noise[icmp6] |= np.isin(t, NOISE_ICMP6_TYPES)
    with_findings = c["connection"].isin({f.connection for f in a.findings
                                          if f.connection is not None and matters(f)})
    return noise & ~with_findings.to_numpy()


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """The connections of an analysis sorted for a report."""

    matter: list[int]
    """Connections with findings above info (most severe first, then by count and time), then
    connections that ended badly without one (by time)."""
    healthy: list[int]
    """The others that are not noise, in time order."""
    noise: list[int]
    """Link housekeeping, in time order."""


def select(a: Analysis) -> Selection:
    """Sort every connection of ``a`` into matter / healthy / noise (see the module docstring)."""
    c = a.connections.sort_values("start_ts_ns", kind="stable")
    if c.empty:
        return Selection(matter=[], healthy=[], noise=[])
    noise = pd.Series(noise_mask(a), index=a.connections.index).loc[c.index].to_numpy()
    by_conn = findings_by_connection([f for f in a.findings if matters(f)])
    ids = c["connection"].to_numpy()
    has_f = np.isin(ids, list(by_conn)) if by_conn else np.zeros(len(ids), dtype=bool)
    bad = c["status"].isin(BAD_STATUSES).to_numpy() & ~noise
    ranked = sorted((int(i) for i in ids[has_f]),
                    key=lambda i: (-severity_rank(by_conn[i][0].severity), -len(by_conn[i])))
    ranked += [int(i) for i in ids[bad & ~has_f]]
    healthy = [int(i) for i in ids[~has_f & ~bad & ~noise]]
    return Selection(matter=ranked, healthy=healthy, noise=[int(i) for i in ids[noise & ~has_f]])


_NAT_ITEM = re.compile(r"(?P<kind>[DS]NAT) (?P<old>\S+) -> (?P<new>\S+) at (?P<at>.+)")


def nat_binding(nat: str) -> str:
    """The NAT text of a connection without its per-connection parts (client and SNAT ports):
    ``DNAT 203.0.113.10:80 -> 10.244.2.7:8080 at node1; SNAT -> 10.0.1.11 at node1``."""
    out = []
    for item in str(nat).split("; "):
        m = _NAT_ITEM.fullmatch(item.strip())
        if not m:
            if item.strip():
                out.append(item.strip())
            continue
        if m["kind"] == "SNAT":
            new = m["new"]
            if new.startswith("["):
                new = new[1:new.index("]")] if "]" in new else new
            elif new.count(":") == 1:
                new = new.split(":")[0]
            out.append(f"SNAT -> {new} at {m['at']}")
        else:
            out.append(item.strip())
    return "; ".join(out)


PATH_GROUP_KEYS = ("proto", "client_dst", "client_dport", "server_dst", "server_dport", "binding", "captures",
                   "status")
"""What makes two connections take 'the same path' in the healthy summary."""


def path_groups(a: Analysis, connections: Sequence[int]) -> pd.DataFrame:
    """Connections grouped by service, endpoint, NAT binding, captures and status.

    Returns one row per group, most common first, with the PATH_GROUP_KEYS columns plus
    ``count`` (connections), ``clients`` (distinct client addresses), ``example`` (a
    connection number), ``median_duration_ns`` and ``info`` (codes of info findings about
    its connections, comma-separated).
    """
    cols = [*PATH_GROUP_KEYS, "count", "clients", "example", "median_duration_ns", "info"]
    if not len(connections):
        return pd.DataFrame({k: [] for k in cols})
    c = a.connections.set_index("connection", drop=False).loc[list(connections)]
    nat = c["nat"].astype(str)
    uniq = {s: nat_binding(s) for s in nat.unique()}
    c = c.assign(binding=nat.map(uniq))
    keys = list(PATH_GROUP_KEYS)
    frame = c[[*keys, "client_src", "connection", "duration_ns"]].copy()
    for k in keys:
        frame[k] = frame[k].astype(str)
    g = frame.groupby(keys, sort=False, observed=True)
    out = g.agg(count=("connection", "size"), clients=("client_src", "nunique"),
                example=("connection", "min"), median_duration_ns=("duration_ns", "median")).reset_index()
    info: dict[int, set[str]] = {}
    for f in a.findings:
        if f.connection is not None and not matters(f):
            info.setdefault(int(f.connection), set()).add(f.code)
    codes = [", ".join(sorted(set().union(*(info.get(int(i), set()) for i in ids))))
             for ids in g["connection"].agg(list)] if info else [""] * len(out)
    out["info"] = codes
    for k in ("proto", "client_dport", "server_dport"):
        out[k] = out[k].astype(np.int64)
    return out.sort_values(["count", "example"], ascending=[False, True], kind="stable").reset_index(drop=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionFilter:
    """Which connections ``flowtrace trace`` draws: by number or by a tuple seen at any hop."""

    connection: int | None = None
    """connections.connection."""
    client: tuple[str, int | None] | None = None
    """The client's address and port as the client sent them."""
    hosts: tuple[str, ...] = ()
    """Addresses that must appear (as source or destination) at some hop."""
    ports: tuple[int, ...] = ()
    """Ports that must appear at some hop."""

    @staticmethod
    def parse(*, connection: int | None = None, client: str | None = None, hosts: Sequence[str] = (),
              ports: Sequence[int] = ()) -> ConnectionFilter:
        """Validate command-line values; raises ValueError with a one-line message."""
        cl = None
        if client:
            addr, port = split_endpoint(client)
            cl = (addr, port)
        for h in hosts:
            _check_address(h)
        return ConnectionFilter(connection=connection, client=cl, hosts=tuple(str(ipaddress.ip_address(h))
                                                                             for h in hosts),
                                ports=tuple(int(p) for p in ports))

    @property
    def empty(self) -> bool:
        """True when nothing was asked for."""
        return self.connection is None and self.client is None and not self.hosts and not self.ports

    def apply(self, a: Analysis) -> list[int]:
        """Matching connection numbers, in time order."""
        c = a.connections.sort_values("start_ts_ns", kind="stable")
        keep = np.ones(len(c), dtype=bool)
        if self.connection is not None:
            keep &= (c["connection"] == self.connection).to_numpy()
        if self.client is not None:
            keep &= (c["client_src"].astype(str) == self.client[0]).to_numpy()
            if self.client[1] is not None:
                keep &= (c["client_sport"] == self.client[1]).to_numpy()
        if self.hosts or self.ports:
            h = a.hops
            for host in self.hosts:
                at = h.loc[(h["src"].astype(str) == host) | (h["dst"].astype(str) == host), "connection"]
                keep &= c["connection"].isin(set(at)).to_numpy()
            for port in self.ports:
                at = h.loc[(h["sport"] == port) | (h["dport"] == port), "connection"]
                keep &= c["connection"].isin(set(at)).to_numpy()
        return [int(i) for i in c.loc[keep, "connection"]]


def split_endpoint(text: str) -> tuple[str, int | None]:
    """``10.0.0.1:80``, ``[fd00::1]:80``, ``fd00::1`` or ``10.0.0.1`` -> (address, port or None);
    raises ValueError for anything else."""
    t = text.strip()
    port: int | None = None
    if t.startswith("["):
        addr, _, rest = t[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r} is not ADDRESS[:PORT]")
            port = _port(rest[1:], text)
    elif t.count(":") == 1:
        addr, p = t.split(":")
        port = _port(p, text)
    else:
        addr = t
    _check_address(addr)
    return str(ipaddress.ip_address(addr)), port


def _port(p: str, text: str) -> int:
    if not p.isdigit() or not 0 <= int(p) <= 65535:
        raise ValueError(f"{text!r}: port {p!r} is not 0-65535")
    return int(p)


def _check_address(addr: str) -> None:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise ValueError(f"{addr!r} is not an IP address") from None


FINDING_GROUP_KEYS = ("severity", "code", "proto", "client_dst", "client_dport", "server_dst", "server_dport",
                      "status")
"""What makes connections that matter 'the same problem' when there are too many to draw."""


def finding_groups(a: Analysis, connections: Sequence[int], *, examples: int = 5) -> pd.DataFrame:
    """Connections that matter grouped by their most severe finding (or none), service,
    endpoint and status; most severe, then most common first.

    Returns the FINDING_GROUP_KEYS columns (``code`` '' and ``severity`` '' for
    connections without a finding above info) plus ``count`` and ``examples`` (up to
    ``examples`` connection numbers, in the order given).
    """
    cols = [*FINDING_GROUP_KEYS, "count", "examples"]
    if not len(connections):
        return pd.DataFrame({k: [] for k in cols})
    by_conn = findings_by_connection([f for f in a.findings if matters(f)])
    ids = list(connections)
    c = a.connections.set_index("connection", drop=False).loc[ids]
    top = [by_conn.get(i, [None])[0] for i in ids]
    frame = pd.DataFrame({
        "severity": [f.severity if f else "" for f in top], "code": [f.code if f else "" for f in top],
        "proto": c["proto"].to_numpy(), "client_dst": c["client_dst"].astype(str).to_numpy(),
        "client_dport": c["client_dport"].to_numpy(), "server_dst": c["server_dst"].astype(str).to_numpy(),
        "server_dport": c["server_dport"].to_numpy(), "status": c["status"].astype(str).to_numpy(),
        "connection": ids, "order": np.arange(len(ids))})
    g = frame.groupby(list(FINDING_GROUP_KEYS), sort=False)
    out = g.agg(count=("connection", "size"), first=("order", "min"),
                examples=("connection", lambda s: list(s)[:examples])).reset_index()
    out["rank"] = [-severity_rank(s) if s else 1 for s in out["severity"]]
    out = out.sort_values(["rank", "count", "first"], ascending=[True, False, True], kind="stable")
    return out[cols].reset_index(drop=True)
