"""The packets table's columns as numpy arrays for flow building, and which rows belong to a flow."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from flowtrace.decode.table import PacketArrays
from flowtrace.flows import icmp
from flowtrace.schema import DECODE_STATUSES

if TYPE_CHECKING:
    import pandas as pd

_OK_STATUS = (DECODE_STATUSES.index("ok"), DECODE_STATUSES.index("truncated"))
_IP_FRAGMENT = 0x04


def i64(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``values[idx]`` widened to int64."""
    return values[idx].astype(np.int64)


class PacketColumns:
    """The packet columns flow building reads, as plain numpy arrays (views, not copies).

    Address columns share one code space (``addresses``); codes keep the categoricals'
    narrow integer types. Non-first IP fragments get the ports of their first fragment
    (``frag_tail`` marks them).
    """

    addresses: list[str]
    outer_addresses: list[str]
    captures: list[str]
    interfaces: list[str]
    src: np.ndarray
    dst: np.ndarray
    quoted_src: np.ndarray
    quoted_dst: np.ndarray
    outer_src: np.ndarray
    outer_dst: np.ndarray
    capture: np.ndarray
    interface: np.ndarray
    direction: np.ndarray
    encap: np.ndarray
    status: np.ndarray
    frame: np.ndarray
    ifindex: np.ndarray
    vni: np.ndarray
    ip_version: np.ndarray
    proto: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    ip_id: np.ndarray
    ttl: np.ndarray
    ip_len: np.ndarray
    ip_flags: np.ndarray
    frag_offset: np.ndarray
    seq: np.ndarray
    ack: np.ndarray
    window: np.ndarray
    tcp_opts: np.ndarray
    tsval: np.ndarray
    icmp_type: np.ndarray
    icmp_code: np.ndarray
    icmp_id: np.ndarray
    quoted_proto: np.ndarray
    quoted_sport: np.ndarray
    quoted_dport: np.ndarray
    ts: np.ndarray
    flags: np.ndarray
    payload: np.ndarray
    checksum: np.ndarray
    frag_tail: np.ndarray

    def __init__(self, packets: pd.DataFrame | PacketArrays) -> None:
        """The columns of ``packets``, a packets table as a DataFrame or as PacketArrays."""
        table = _Table(packets)
        codes = table.codes
        self.addresses: list[str] = table.categories("src")
        self.src = codes("src")
        self.dst = self._recode(table, "dst", self.addresses)
        self.quoted_src = self._recode(table, "quoted_src", self.addresses)
        self.quoted_dst = self._recode(table, "quoted_dst", self.addresses)
        self.outer_addresses: list[str] = table.categories("outer_src")
        self.outer_src = codes("outer_src")
        self.outer_dst = self._recode(table, "outer_dst", self.outer_addresses)
        self.captures: list[str] = table.categories("capture")
        self.interfaces: list[str] = table.categories("interface")
        self.capture = codes("capture")
        self.interface = codes("interface")
        self.direction = codes("direction")
        self.encap = codes("encap")
        self.status = codes("decode_status")
        # Plain views of the numeric columns (no copies); callers widen what they gather.
        for name in ("frame", "ifindex", "vni", "ip_version", "proto", "sport", "dport", "ip_id", "ttl",
                     "ip_len", "ip_flags", "frag_offset", "seq", "ack", "window", "tcp_opts", "tsval",
                     "icmp_type", "icmp_code", "icmp_id", "quoted_proto", "quoted_sport", "quoted_dport"):
            setattr(self, name, table.values(name))
        self.ts = table.values("ts_ns")
        self.flags = table.values("tcp_flags")
        self.payload = table.values("payload_len")
        self.checksum = table.values("l4_checksum")
        self.frag_tail = np.zeros(len(packets), dtype=bool)
        self._resolve_fragments()

    @staticmethod
    def _recode(table: _Table, name: str, categories: list[str]) -> np.ndarray:
        """Codes of column ``name`` in ``categories`` (the decoder shares one address list; be safe)."""
        own = table.categories(name)
        codes = table.codes(name)
        if own == categories:
            return codes
        lookup = {a: i for i, a in enumerate(categories)}
        extra = [a for a in own if a not in lookup]
        for a in extra:
            lookup[a] = len(categories)
            categories.append(a)
        translate = np.array([lookup[a] for a in own] + [-1], dtype=np.int64)
        return translate[codes]

    def _resolve_fragments(self) -> None:
        """Give non-first fragments the ports of their first fragment (same capture, addresses,
        protocol and IP ID); they then count in their flow's packets and bytes."""
        tail = (self.frag_offset > 0) & (self.sport < 0)
        if not tail.any():
            return
        import pandas as pd  # only for captures with fragments

        head = (self.frag_offset == 0) & ((self.ip_flags & _IP_FRAGMENT) != 0) & (self.sport >= 0)
        cols = ("capture", "src", "dst", "proto", "ip_id")
        h = pd.DataFrame({c: getattr(self, c)[head] for c in cols} | {"row": np.flatnonzero(head)})
        t = pd.DataFrame({c: getattr(self, c)[tail] for c in cols} | {"tail": np.flatnonzero(tail)})
        m = t.merge(h.drop_duplicates(list(cols), keep="last"), on=list(cols), how="inner")
        if not len(m):
            return
        tr, hr = m["tail"].to_numpy(), m["row"].to_numpy()
        self.sport = self.sport.copy()
        self.dport = self.dport.copy()
        self.sport[tr] = self.sport[hr]
        self.dport[tr] = self.dport[hr]
        self.frag_tail[tr] = True

    def eligible(self) -> np.ndarray:
        """Rows that belong to a flow: IP, decoded (ok or truncated), with a transport tuple."""
        ip = ((self.ip_version == 4) | (self.ip_version == 6)) & (self.src >= 0) & (self.dst >= 0) & (self.proto >= 0)
        ok = (self.status == _OK_STATUS[0]) | (self.status == _OK_STATUS[1]) | self.frag_tail
        ports = (self.proto == 6) | (self.proto == 17) | (self.proto == 132)
        icmpish = icmp.is_icmp(self.proto, self.ip_version)
        tuple_ok = np.where(ports, (self.sport >= 0) & (self.dport >= 0),
                            np.where(icmpish, self.icmp_type >= 0, True))
        return ip & ok & tuple_ok

    def error_frame(self, rows: np.ndarray) -> pd.DataFrame:
        """The ICMP error rows as ``icmp.attach`` wants them."""
        import pandas as pd  # only for captures with ICMP errors

        return pd.DataFrame({
            "ts": self.ts[rows], "capture": self.capture[rows], "interface": self.interface[rows],
            "ifindex": self.ifindex[rows], "direction": self.direction[rows], "encap": self.encap[rows],
            "vni": self.vni[rows], "quoted_src": self.quoted_src[rows], "quoted_dst": self.quoted_dst[rows],
            "quoted_proto": self.quoted_proto[rows], "quoted_sport": self.quoted_sport[rows],
            "quoted_dport": self.quoted_dport[rows],
        })


class _Table:
    """Column access common to a packets DataFrame and PacketArrays: the numpy arrays
    themselves (views, not copies)."""

    __slots__ = ("_packets",)

    def __init__(self, packets: pd.DataFrame | PacketArrays) -> None:
        self._packets = packets

    def codes(self, name: str) -> np.ndarray:
        """Code column ``name``'s codes, in the categorical's own narrow integer type (-1
        missing); callers widen what they compute with."""
        p = self._packets
        return p.columns[name] if isinstance(p, PacketArrays) else p[name].cat.codes.to_numpy()

    def categories(self, name: str) -> list[str]:
        """Code column ``name``'s categories as texts."""
        p = self._packets
        return p.categories(name) if isinstance(p, PacketArrays) else [str(a) for a in p[name].cat.categories]

    def values(self, name: str) -> np.ndarray:
        """Value column ``name``."""
        p = self._packets
        return p.columns[name] if isinstance(p, PacketArrays) else p[name].to_numpy()
