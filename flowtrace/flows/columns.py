"""The packets table's columns as numpy arrays for flow building, and which rows belong to a flow."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.flows import icmp
from flowtrace.schema import DECODE_STATUSES

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

    def __init__(self, df: pd.DataFrame) -> None:
        def codes(name: str) -> np.ndarray:
            # The categorical codes themselves (int8 to int32, -1 missing), not a widened
            # copy: callers widen what they compute with.
            return df[name].cat.codes.to_numpy()

        self.addresses: list[str] = [str(a) for a in df["src"].cat.categories]
        self.src = codes("src")
        self.dst = self._recode(df["dst"], self.addresses)
        self.quoted_src = self._recode(df["quoted_src"], self.addresses)
        self.quoted_dst = self._recode(df["quoted_dst"], self.addresses)
        self.outer_addresses: list[str] = [str(a) for a in df["outer_src"].cat.categories]
        self.outer_src = codes("outer_src")
        self.outer_dst = self._recode(df["outer_dst"], self.outer_addresses)
        self.capture = codes("capture")
        self.interface = codes("interface")
        self.direction = codes("direction")
        self.encap = codes("encap")
        self.status = codes("decode_status")
        # Plain views of the numeric columns (no copies); callers widen what they gather.
        for name in ("frame", "ifindex", "vni", "ip_version", "proto", "sport", "dport", "ip_id", "ttl",
                     "ip_len", "ip_flags", "frag_offset", "seq", "ack", "window", "tcp_opts", "tsval",
                     "icmp_type", "icmp_code", "icmp_id", "quoted_proto", "quoted_sport", "quoted_dport"):
            setattr(self, name, df[name].to_numpy())
        self.ts = df["ts_ns"].to_numpy()
        self.flags = df["tcp_flags"].to_numpy()
        self.payload = df["payload_len"].to_numpy()
        self.checksum = df["l4_checksum"].to_numpy()
        self.frag_tail = np.zeros(len(df), dtype=bool)
        self._resolve_fragments()

    @staticmethod
    def _recode(col: pd.Series, categories: list[str]) -> np.ndarray:
        """Codes of ``col`` in ``categories`` (the decoder shares one address list; be safe)."""
        own = [str(a) for a in col.cat.categories]
        codes = col.cat.codes.to_numpy()
        if own == categories:
            return codes
        lookup = {a: i for i, a in enumerate(categories)}
        extra = [a for a in own if a not in lookup]
        for a in extra:
            lookup[a] = len(categories)
            categories.append(a)
        table = np.array([lookup[a] for a in own] + [-1], dtype=np.int64)
        return table[codes]

    def _resolve_fragments(self) -> None:
        """Give non-first fragments the ports of their first fragment (same capture, addresses,
        protocol and IP ID); they then count in their flow's packets and bytes."""
        tail = (self.frag_offset > 0) & (self.sport < 0)
        if not tail.any():
            return
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
        return pd.DataFrame({
            "ts": self.ts[rows], "capture": self.capture[rows], "interface": self.interface[rows],
            "ifindex": self.ifindex[rows], "direction": self.direction[rows], "encap": self.encap[rows],
            "vni": self.vni[rows], "quoted_src": self.quoted_src[rows], "quoted_dst": self.quoted_dst[rows],
            "quoted_proto": self.quoted_proto[rows], "quoted_sport": self.quoted_sport[rows],
            "quoted_dport": self.quoted_dport[rows],
        })
