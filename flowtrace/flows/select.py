"""Filtering the flows table by address, port, protocol and capture (``flowtrace flows`` options)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from flowtrace.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

PROTOCOLS = {"tcp": (6,), "udp": (17,), "icmp": (1, 58), "icmp6": (58,), "icmpv6": (58,), "sctp": (132,)}
"""Protocol names ``--proto`` accepts (besides numbers)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowFilter:
    """What to keep: a flow passes when it matches every given criterion (any value of each)."""

    hosts: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """Networks (a single address is a /32 or /128) either endpoint must be in."""
    ports: tuple[int, ...] = ()
    """Ports either endpoint must use (ICMP: the type fields, as in orig_p/resp_p)."""
    protos: tuple[int, ...] = ()
    """IP protocol numbers."""
    captures: tuple[str, ...] = ()
    """Capture names."""

    @classmethod
    def parse(cls, *, hosts: Sequence[str] = (), ports: Sequence[int | str] = (), protos: Sequence[str] = (),
              captures: Sequence[str] = ()) -> FlowFilter:
        """Validate command-line values; raises InputError naming the bad one."""
        nets = []
        for h in hosts:
            try:
                nets.append(ipaddress.ip_network(h.strip(), strict=False))
            except ValueError:
                raise InputError("", f"--host {h!r} is not an IP address or network") from None
        port_list = []
        for p in ports:
            try:
                v = int(p)
            except (TypeError, ValueError):
                raise InputError("", f"--port {p!r} is not a number") from None
            if not 0 <= v <= 65535:
                raise InputError("", f"--port {p} is outside 0-65535")
            port_list.append(v)
        proto_list: list[int] = []
        for name in protos:
            key = name.strip().lower()
            if key in PROTOCOLS:
                proto_list.extend(PROTOCOLS[key])
            elif key.isdigit() and int(key) <= 255:
                proto_list.append(int(key))
            else:
                known = ", ".join(PROTOCOLS)
                raise InputError("", f"--proto {name!r} is not a protocol number or one of {known}")
        return cls(hosts=tuple(nets), ports=tuple(port_list), protos=tuple(proto_list), captures=tuple(captures))

    @property
    def keeps_all(self) -> bool:
        """Whether every flow passes (no criterion given)."""
        return not (self.hosts or self.ports or self.protos or self.captures)

    def apply(self, flows: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``flows`` that pass (``flow_id`` kept as it was)."""
        if self.keeps_all:
            return flows
        keep = np.ones(len(flows), dtype=bool)
        if self.hosts:
            keep &= self._in_nets(flows["orig_h"]) | self._in_nets(flows["resp_h"])
        if self.ports:
            keep &= flows["orig_p"].isin(self.ports).to_numpy() | flows["resp_p"].isin(self.ports).to_numpy()
        if self.protos:
            keep &= flows["proto"].isin(self.protos).to_numpy()
        if self.captures:
            keep &= flows["capture"].isin(self.captures).to_numpy()
        return flows[keep]

    def _in_nets(self, col: pd.Series) -> np.ndarray:
        cats = col.cat.categories
        member = np.zeros(len(cats) + 1, dtype=bool)
        for i, text in enumerate(cats):
            try:
                addr = ipaddress.ip_address(str(text))
            except ValueError:
                continue
            member[i] = any(addr.version == n.version and addr in n for n in self.hosts)
        return member[col.cat.codes.to_numpy().astype(np.int64)]
