"""``ttl_expired``: packets that ran out of hops: ICMP time exceeded, or a routing loop."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import plural
from flowtrace.detect.finding import Finding

LOOP_TTLS = 3
"""A packet seen at one observation point with this many different TTLs went round a loop."""

_CAUSES = ("a routing loop: two routers (or a node and the VPC router) each pointing at the other for this "
           "destination, e.g. a pod CIDR route to the wrong node",
           "a TTL / hop limit set too low by the sender",
           "a Service or LB address routed back into the network it came from")


class TtlExpired:
    """``ttl_expired``: ICMP time exceeded quoting a connection's packet, or one packet seen
    again and again at one point with a falling TTL."""

    code = "ttl_expired"
    severity = "high"
    needs = Needs(vantage_points=1, where="any capture")
    supersedes: tuple[str, ...] = ("no_reply", "drop_between_hops")

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per connection with time-exceeded errors, one per looping packet's connection."""
        return self._icmp(ctx) + self._loops(ctx)

    def _icmp(self, ctx: Context) -> list[Finding]:
        proto, ver, t = ctx.col("proto"), ctx.col("ip_version"), ctx.col("icmp_type")
        rows = np.flatnonzero((((proto == 1) & (ver == 4) & (t == 11)) | ((proto == 58) & (ver == 6) & (t == 3)))
                              & (ctx.analysis.packet_hop >= 0) & (ctx.analysis.packet_path_direction == 1))
        if not rows.size:
            return []
        conn = ctx.packet_conn(rows)
        out = []
        src = ctx.col("src")
        for c in np.unique(conn):
            r = rows[conn == c]
            routers = sorted({ctx.addr(int(x)) for x in src[r]})
            out.append(Finding(
                code=self.code, severity=self.severity, connection=int(c), direction="request",
                hop=int(ctx.hop.pos[ctx.analysis.packet_hop[r[0]]]),
                message=(f"{', '.join(routers)} answered {ctx.connection_label(int(c))} with ICMP time exceeded "
                         f"({plural(r.size, 'time')}): its packets ran out of hops before reaching the server."),
                evidence=ctx.evidence(r, "ICMP time exceeded quoting the connection's packet"),
                causes=_CAUSES, details={"routers": routers, "errors": int(r.size)}))
        return out

    def _loops(self, ctx: Context) -> list[Finding]:
        rows = ctx.repeated_at_point
        if not rows.size:
            return []
        df = pd.DataFrame({"row": rows, "group": ctx.analysis.packet_group[rows], "cap": ctx.col("capture")[rows],
                           "iface": ctx.col("interface")[rows], "ifindex": ctx.col("ifindex")[rows],
                           "pdir": ctx.pdir[rows], "ttl": ctx.col("ttl")[rows]})
        n = df.groupby(["group", "cap", "iface", "ifindex", "pdir"])["ttl"].transform("nunique")
        loop = df[n.to_numpy() >= LOOP_TTLS]
        if loop.empty:
            return []
        loop = loop.assign(conn=ctx.packet_conn(loop["row"].to_numpy()))
        out = []
        for c, g in loop.groupby("conn", sort=True):
            first = g[g["group"] == g["group"].iloc[0]].sort_values("ttl", ascending=False)
            ttls = first["ttl"].tolist()
            name = ctx.capture_names[int(first["cap"].iloc[0])]
            out.append(Finding(
                code=self.code, severity=self.severity, connection=int(c) if c >= 0 else None,
                capture=name,
                message=(f"One packet{' of ' + ctx.connection_label(int(c)) if c >= 0 else ''} passed {name} "
                         f"{plural(len(ttls), 'time')} with TTL {', '.join(str(x) for x in ttls[:6])}: it is "
                         "going round a routing loop until its TTL runs out."),
                evidence=ctx.evidence(first["row"].to_numpy(), "the same packet with a falling TTL"),
                causes=_CAUSES, details={"ttls": [int(x) for x in ttls]}))
        return out
