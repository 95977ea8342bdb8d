"""``duplicate_packet``: the same packet twice at one observation point."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import plural
from flowtrace.detect.finding import Finding

WITHIN_NS = 1_000_000_000
"""Copies further apart than this are not counted as duplicates."""


class DuplicatePacket:
    """``duplicate_packet``: one packet captured twice on one interface in one direction,
    with the same TTL, IP ID and tunnel (a retransmission has a new IP ID or TCP timestamp;
    a packet and its encapsulated copy are two hops)."""

    code = "duplicate_packet"
    severity = "low"
    needs = Needs(vantage_points=1, where="one observation point")
    supersedes: tuple[str, ...] = ()

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per observation point with duplicates."""
        rows = ctx.repeated_at_point
        if not rows.size:
            return []
        ver, ip_id = ctx.col("ip_version")[rows], ctx.col("ip_id")[rows]
        proto, opts = ctx.col("proto")[rows], ctx.col("tcp_opts")[rows]
        # Only copies that a retransmission could not produce: an IPv4 id, or a TCP timestamp.
        strong = ((ver == 4) & (ip_id != 0)) | ((proto == 6) & ((opts & 0x10) != 0))
        rows = rows[strong]
        if not rows.size:
            return []
        df = pd.DataFrame({
            "row": rows, "group": ctx.analysis.packet_group[rows], "capture": ctx.col("capture")[rows],
            "iface": ctx.col("interface")[rows], "ifindex": ctx.col("ifindex")[rows], "pdir": ctx.pdir[rows],
            "ttl": ctx.col("ttl")[rows], "encap": ctx.col("encap")[rows], "outer_src": ctx.col("outer_src")[rows],
            "outer_dst": ctx.col("outer_dst")[rows],
            "ip_id": ctx.col("ip_id")[rows], "tsval": ctx.col("tsval")[rows],
            "ts": ctx.analysis.corrected_ts[rows]})
        same = ["group", "capture", "iface", "ifindex", "pdir", "ttl", "ip_id", "tsval", "encap", "outer_src",
                "outer_dst"]
        df = df.sort_values([*same, "ts"], kind="stable")
        prev_same = (df[same].shift() == df[same]).all(axis=1).to_numpy()
        close = np.r_[False, np.diff(df["ts"].to_numpy()) <= WITHIN_NS]
        dup_i = np.flatnonzero(prev_same & close)
        if not dup_i.size:
            return []
        first_rows = df["row"].to_numpy()[dup_i - 1]
        dup_rows = df["row"].to_numpy()[dup_i]
        out = []
        point = pd.DataFrame({"capture": df["capture"].to_numpy()[dup_i], "iface": df["iface"].to_numpy()[dup_i],
                              "ifindex": df["ifindex"].to_numpy()[dup_i],
                              "pdir": df["pdir"].to_numpy()[dup_i], "a": first_rows, "b": dup_rows})
        packets = ctx.analysis.packets
        for (cap, _, ifindex, _), g in point.groupby(["capture", "iface", "ifindex", "pdir"], sort=True):
            name = ctx.capture_names[int(cap)]
            a, b = g["a"].to_numpy(), g["b"].to_numpy()
            conns = {int(c) for c in ctx.packet_conn(b) if c >= 0}
            iface = str(packets["interface"].iloc[int(b[0])]) or (f"if{int(ifindex)}" if ifindex >= 0 else "")
            where = f"{name} {iface}".strip()
            direction = str(packets["direction"].iloc[int(b[0])])
            fa, fb = int(ctx.col("frame")[a[0]]), int(ctx.col("frame")[b[0]])
            out.append(Finding(
                code=self.code, severity=self.severity, capture=name,
                connection=next(iter(conns)) if len(conns) == 1 else None,
                message=(f"{where}{f' ({direction})' if direction != 'unknown' else ''} captured "
                         f"{plural(int(b.size), 'packet')} twice with the same TTL and "
                         f"IP ID (e.g. frames {fa} and {fb}): duplicates on the wire or in the capture, not "
                         "retransmissions."),
                evidence=ctx.evidence(np.r_[a[:8], b[:8]], "the same packet twice"),
                causes=("the capture sees one interface twice (a bridge and its port, a VLAN and its parent, "
                        "or a mirror of both directions)",
                        "a duplicating link: a layer-2 loop, a misconfigured bond or team"),
                details={"packets": int(b.size), "connections": sorted(conns)[:50]}))
        return out
