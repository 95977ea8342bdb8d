"""``conntrack_table_full``: a node drops the first packet of new connections, any destination."""

from __future__ import annotations

import numpy as np

from flowtrace.detect.base import Needs
from flowtrace.detect.context import DIR_OUT, Context
from flowtrace.detect.evidence import plural, seconds
from flowtrace.detect.finding import Finding

WINDOW_NS = 10_000_000_000
"""New connections dropped within this window count together."""
MIN_CONNECTIONS = 5
"""At least this many unrelated new connections must be dropped."""
MIN_DESTINATIONS = 2
"""…to at least this many destinations (a single one is a policy, not a full table)."""


class ConntrackTableFull:
    """``conntrack_table_full``: first packets of many unrelated new connections enter a node
    and do not leave it, while established connections keep flowing through it."""

    code = "conntrack_table_full"
    severity = "critical"
    needs = Needs(vantage_points=1, where="the node (-i any)")
    supersedes: tuple[str, ...] = ("drop_between_hops", "no_reply", "no_local_endpoint_blackhole",
                                   "snat_port_collision")

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per node (its ``details['connections']`` lists the connections hit)."""
        v = ctx.vanished
        if v.empty:
            return []
        v = v[v["covered"].to_numpy() & v["handshake"].to_numpy() & v["inside"].to_numpy()
              & (v["direction"].to_numpy() == 0)]
        out = []
        a = ctx.analysis
        dst, dport = ctx.col("dst"), ctx.col("dport")
        for cap, g in v.groupby("capture", sort=True):
            g = g.sort_values("ts")
            ts = g["ts"].to_numpy()
            conns = g["connection"].to_numpy()
            best = None
            for i in range(len(g)):
                w = (ts >= ts[i]) & (ts <= ts[i] + WINDOW_NS)
                n_conn = np.unique(conns[w]).size
                n_dst = np.unique(dst[g["row"].to_numpy()[w]].astype(np.int64) * 65536 + dport[g["row"].to_numpy()[w]]).size
                if n_conn >= MIN_CONNECTIONS and n_dst >= MIN_DESTINATIONS and (best is None or n_conn > best[1]):
                    best = (i, n_conn, w)
            if best is None:
                continue
            i, n_conn, w = best
            t0, t1 = ts[i], ts[i] + WINDOW_NS
            hit = np.unique(conns[w])
            # Established traffic still passing the node in that window.
            rows = np.flatnonzero((ctx.col("capture") == cap) & (ctx.pdir == DIR_OUT) & (a.packet_hop >= 0)
                                  & (a.corrected_ts >= t0) & (a.corrected_ts <= t1)
                                  & (ctx.col("proto") == 6) & ((ctx.tcp_flags & 0x02) == 0))
            rows = rows[~np.isin(ctx.packet_conn(rows), hit)]
            if not rows.size:
                continue
            node = ctx.capture_names[int(cap)]
            dropped = g["row"].to_numpy()[w]
            out.append(Finding(
                code=self.code, severity=self.severity, capture=node,
                connection=int(hit[0]),
                message=(f"{node} dropped the first packets of {plural(n_conn, 'new connection')} to "
                         f"{plural(int(np.unique(dst[dropped]).size), 'destination')} within "
                         f"{seconds(int(ts[w].max() - t0))} while established connections kept flowing through it: "
                         "its conntrack table is full."),
                evidence=ctx.evidence(np.r_[dropped[:12], rows[:2]],
                                      "new connections' SYNs that never left, and established traffic that did"),
                causes=("nf_conntrack_max too small for the node's connections (kernel log: 'nf_conntrack: table "
                        "full, dropping packet'); raise it (kube-proxy --conntrack-max-per-core)",
                        "a flood of short connections or long timeouts filling the table"),
                details={"connections": [int(c) for c in hit], "dropped_syns": int(dropped.size)}))
        return out
