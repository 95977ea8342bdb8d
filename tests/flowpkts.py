"""Packets tables for flow tests, built directly (no capture file, no decoder).

``Tcp`` scripts a TCP conversation between endpoints A and B, keeping each side's
sequence number and acknowledging the other side's; ``packet`` makes one row of any
protocol; ``table`` turns rows into a packets table with the declared dtypes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from flowtrace.schema import PACKETS

T0 = 1_700_000_000_000_000_000
"""Default time of the first packet (ns)."""

_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20}

_DEFAULTS: dict[str, Any] = {
    "capture": "cap", "frame": 0, "ts_ns": T0, "interface": "", "ifindex": -1, "direction": "unknown",
    "caplen": 100, "wirelen": 100, "vlan": -1, "ethertype": 0x0800, "encap": "none", "outer_src": None,
    "outer_dst": None, "vni": -1, "ip_version": 4, "src": None, "dst": None, "proto": 6, "sport": -1,
    "dport": -1, "ip_id": 0, "ttl": 64, "tos": 0, "ip_len": 0, "ip_flags": 0, "frag_offset": 0,
    "tcp_flags": 0, "seq": 0, "ack": 0, "window": 65535, "tcp_opts": 0, "mss": 0, "wscale": 0, "tsval": 0,
    "tsecr": 0, "payload_len": 0, "payload_hash": 0, "l4_checksum": 1, "icmp_type": -1, "icmp_code": -1,
    "icmp_id": 0, "icmp_seq": 0, "icmp_mtu": 0, "quoted_src": None, "quoted_dst": None, "quoted_proto": -1,
    "quoted_sport": 0, "quoted_dport": 0, "quoted_ip_id": 0, "quoted_seq": 0, "dns_id": -1,
    "decode_status": "ok",
}


def flags(text: str | int) -> int:
    """TCP flag bits from letters (``"SA"``, ``"FA"``, ``"R"``) or an int."""
    if isinstance(text, int):
        return text
    return sum(_FLAG_BITS[c] for c in text)


def packet(**fields: Any) -> dict[str, Any]:
    """One packet row; unspecified fields take neutral defaults (IPv4 TCP, checksum good)."""
    row = dict(_DEFAULTS)
    row.update(fields)
    if "flags" in row:
        row["tcp_flags"] = flags(row.pop("flags"))
    if ":" in str(row["src"]):
        row["ip_version"] = 6
    if not fields.get("ip_len"):
        header = 20 if row["ip_version"] == 4 else 40
        l4 = {6: 20, 17: 8, 1: 8, 58: 8}.get(int(row["proto"]), 0)
        row["ip_len"] = header + l4 + int(row["payload_len"])
    return row


def table(rows: list[dict[str, Any]], *, number: bool = True) -> pd.DataFrame:
    """A packets table of ``rows`` in the given order (frames numbered per capture if unset)."""
    df = pd.DataFrame(rows, columns=PACKETS.names)
    if number:
        counter: dict[str, int] = {}
        frames = []
        for cap, fr in zip(df["capture"], df["frame"], strict=True):
            counter[cap] = counter.get(cap, 0) + 1
            frames.append(fr or counter[cap])
        df["frame"] = frames
    addresses = sorted({a for c in ("src", "dst", "quoted_src", "quoted_dst") for a in df[c] if isinstance(a, str)})
    for c in ("src", "dst", "quoted_src", "quoted_dst"):
        df[c] = pd.Categorical(df[c], categories=addresses)
    outer = sorted({a for c in ("outer_src", "outer_dst") for a in df[c] if isinstance(a, str)})
    for c in ("outer_src", "outer_dst"):
        df[c] = pd.Categorical(df[c], categories=outer)
    return PACKETS.conform(df)


class Tcp:
    """A scripted TCP conversation: ``a(...)``/``b(...)`` append a packet from that side.

    Each call takes the flag letters and the payload length; sequence numbers advance by
    payload + SYN + FIN, and packets with ACK acknowledge everything the other side sent.
    Keyword arguments override any packet field (``seq=``, ``ack=``, ``ts_ns=``…).
    """

    def __init__(self, a: tuple[str, int] = ("10.0.0.1", 40000), b: tuple[str, int] = ("10.0.0.2", 80), *,
                 isn_a: int = 1000, isn_b: int = 5000, t0: int = T0, step_ns: int = 1_000_000,
                 **common: Any) -> None:
        self.ends = {"a": a, "b": b}
        self.next_seq = {"a": isn_a, "b": isn_b}
        self.ts = t0
        self.step = step_ns
        self.common = common
        self.rows: list[dict[str, Any]] = []

    def _send(self, side: str, text: str | int, n: int = 0, **kw: Any) -> dict[str, Any]:
        other = "b" if side == "a" else "a"
        f = flags(text)
        (src, sport), (dst, dport) = self.ends[side], self.ends[other]
        seq = kw.pop("seq", self.next_seq[side])
        ack = kw.pop("ack", self.next_seq[other] if f & 0x10 else 0)
        ts = kw.pop("ts_ns", self.ts)
        row = packet(**{**self.common, "src": src, "dst": dst, "sport": sport, "dport": dport, "flags": f,
                        "seq": seq & 0xFFFFFFFF, "ack": ack & 0xFFFFFFFF, "payload_len": n, "ts_ns": ts, **kw})
        if not f & 0x04:
            self.next_seq[side] = max(self.next_seq[side], seq + n + bool(f & 0x02) + bool(f & 0x01))
        self.ts = ts + self.step
        self.rows.append(row)
        return row

    def a(self, text: str | int, n: int = 0, **kw: Any) -> Tcp:
        """A packet from A (the client)."""
        self._send("a", text, n, **kw)
        return self

    def b(self, text: str | int, n: int = 0, **kw: Any) -> Tcp:
        """A packet from B (the server)."""
        self._send("b", text, n, **kw)
        return self

    def wait(self, seconds: float) -> Tcp:
        """Let time pass before the next packet."""
        self.ts += round(seconds * 1e9)
        return self

    def handshake(self) -> Tcp:
        """SYN, SYN-ACK, ACK."""
        return self.a("S").b("SA").a("A")

    def table(self) -> pd.DataFrame:
        """The packets table of the conversation so far."""
        return table(self.rows)


def udp(src: str, sport: int, dst: str, dport: int, n: int = 10, **kw: Any) -> dict[str, Any]:
    """One UDP packet row."""
    return packet(src=src, dst=dst, sport=sport, dport=dport, proto=17, payload_len=n, **kw)


def icmp(src: str, dst: str, itype: int, code: int = 0, n: int = 56, **kw: Any) -> dict[str, Any]:
    """One ICMP (IPv4) or ICMPv6 packet row."""
    proto = 58 if ":" in src else 1
    return packet(src=src, dst=dst, proto=proto, icmp_type=itype, icmp_code=code, payload_len=n, **kw)


def as_arrays(df: pd.DataFrame, column: str) -> np.ndarray:
    """A column as a numpy array (categoricals as objects)."""
    return df[column].astype(object).to_numpy() if isinstance(df[column].dtype, pd.CategoricalDtype) \
        else df[column].to_numpy()
