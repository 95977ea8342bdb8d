"""``snat_port_collision``: two connections squeezed into one post-NAT tuple."""

from __future__ import annotations

import numpy as np

from flowtrace.correlate.nat import SNAT, SNAT_PORT
from flowtrace.detect.base import Needs
from flowtrace.detect.context import DIR_OUT, Context
from flowtrace.detect.evidence import endpoint, seconds
from flowtrace.detect.finding import Finding

RACE_NS = 10_000_000
"""SYNs to one destination this close race for SNAT ports."""

_CAUSES = ("MASQUERADE/SNAT port allocation race between parallel connections (kernels before 5.0, or SNAT "
           "without --random-fully)",
           "SNAT port exhaustion: many connections from one node to one destination address and port",
           "conntrack entry insertion race for simultaneous connections")


class SnatPortCollision:
    """``snat_port_collision``: two pre-NAT tuples mapped to one post-NAT tuple with
    overlapping lifetimes, or a SYN dropped inside the node while another SYN to the same
    destination left it, its retransmission passing a second later."""

    code = "snat_port_collision"
    severity = "high"
    needs = Needs(vantage_points=1, where="the node doing the SNAT, before and after NAT (-i any)")
    supersedes: tuple[str, ...] = ("drop_between_hops",)

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per colliding connection."""
        return self._shared_tuple(ctx) + self._dropped_syn(ctx)

    def _shared_tuple(self, ctx: Context) -> list[Finding]:
        h = ctx.analysis.hops
        if h.empty:
            return []
        req = h["on_path"].to_numpy() & (ctx.hop.dirc[h["hop_id"].to_numpy()] == 0)
        s = h[req & ((h["changes"].to_numpy() & (SNAT | SNAT_PORT)) != 0)]
        if len(s) < 2:
            return []
        key = ["capture", "proto", "src", "sport", "dst", "dport"]
        s = s.sort_values([*key, "first_ts_ns"], kind="stable")
        same = (s[key].shift() == s[key]).all(axis=1).to_numpy()
        overlap = s["first_ts_ns"].to_numpy()[1:] <= s["last_ts_ns"].to_numpy()[:-1]
        other = s["connection"].to_numpy()[1:] != s["connection"].to_numpy()[:-1]
        hit = np.flatnonzero(same[1:] & overlap & other) + 1
        out = []
        for i in hit.tolist():
            a, b = s.iloc[i - 1], s.iloc[i]
            post = f"{endpoint(b['src'], b['sport'])} -> {endpoint(b['dst'], b['dport'])}"
            out.append(Finding(
                code=self.code, severity=self.severity, connection=int(b["connection"]), direction="request",
                hop=int(b["hop"]), segment=str(b["changed_at"]) or f"inside {b['capture']}",
                message=(f"{b['capture']} translated connections {int(a['connection'])} and {int(b['connection'])} to "
                         f"the same tuple {post} while both were open: a SNAT port collision, one of them fails."),
                evidence=ctx.evidence([int(a["first_row"]), int(b["first_row"])], "two connections, one post-NAT tuple"),
                causes=_CAUSES, details={"other_connection": int(a["connection"]), "tuple": post}))
        return out

    def _dropped_syn(self, ctx: Context) -> list[Finding]:
        v = ctx.vanished
        if v.empty:
            return []
        v = v[v["covered"].to_numpy() & v["handshake"].to_numpy() & v["inside"].to_numpy()
              & (v["next_hop"].to_numpy() >= 0) & (v["direction"].to_numpy() == 0)]
        if v.empty:
            return []
        a = ctx.analysis
        ts, seq = a.corrected_ts, ctx.col("seq")
        flags = ctx.tcp_flags
        cap, dst, dport = ctx.col("capture"), ctx.col("dst"), ctx.col("dport")
        syn_out = np.flatnonzero(((flags & 0x12) == 0x02) & (ctx.pdir == DIR_OUT) & (a.packet_hop >= 0))
        out = []
        for conn, g in v.groupby("connection", sort=True):
            r = int(g["row"].iloc[0])
            nxt = int(g["next_hop"].iloc[0])
            through = np.flatnonzero(a.packet_hop == nxt)
            again = through[((flags[through] & 0x12) == 0x02) & (seq[through] == seq[r]) & (ts[through] > ts[r])]
            if not again.size:
                continue
            d, p = dst[through[0]], dport[through[0]]
            rivals = syn_out[(cap[syn_out] == cap[r]) & (dst[syn_out] == d) & (dport[syn_out] == p)
                             & (np.abs(ts[syn_out] - ts[r]) <= RACE_NS)]
            rivals = rivals[ctx.packet_conn(rivals) != conn]
            if not rivals.size:
                continue
            node = ctx.capture_names[int(cap[r])]
            target = endpoint(ctx.addr(int(d)), p)
            out.append(Finding(
                code=self.code, severity=self.severity, connection=int(conn), direction="request",
                hop=int(ctx.hop.pos[int(g["last_hop"].iloc[0])]), segment=f"inside {node}",
                message=(f"{node} dropped the first SYN of {ctx.connection_label(int(conn))} while another connection "
                         f"to {target} left it {seconds(abs(int(ts[rivals[0]] - ts[r])))} apart; its retransmission "
                         f"{seconds(int(ts[again[0]] - ts[r]))} later went through: a SNAT port collision."),
                evidence=ctx.evidence(np.r_[r, again[:1], rivals[:2]],
                                      "the dropped SYN, its retransmission, the rival SYN"),
                causes=_CAUSES, details={"rival_connection": int(ctx.packet_conn(rivals[:1])[0])}))
        return out
