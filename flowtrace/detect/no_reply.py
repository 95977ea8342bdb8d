"""``no_reply``: a connection attempt nobody answered, explained by how far it got."""

from __future__ import annotations

import numpy as np

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.drops import furthest_hop
from flowtrace.detect.evidence import plural, seconds
from flowtrace.detect.finding import Finding


class NoReply:
    """``no_reply``: a TCP connection attempt (Zeek S0/SH), DNS query or ping with no
    answer at any vantage point."""

    code = "no_reply"
    severity = "medium"
    needs = Needs(vantage_points=1, where="any capture")
    supersedes: tuple[str, ...] = ()

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per unanswered connection attempt."""
        c = ctx.analysis.connections
        if c.empty:
            return []
        cand = c[(c["status"].astype(object) == "no_reply").to_numpy() & (c["response_hops"].to_numpy() == 0)]
        if cand.empty:
            return []
        out = []
        for row in cand.itertuples(index=False):
            cid = int(row.connection)
            proto = int(row.proto)
            code = ctx.addr_code(row.client_dst)
            if code < 0 or ctx.multicast_address[code]:
                continue
            hop0 = int(ctx.path_hops(cid, 0)["hop_id"].iloc[0]) if len(ctx.path_hops(cid, 0)) else -1
            rows = np.flatnonzero(ctx.analysis.packet_hop == hop0) if hop0 >= 0 else np.zeros(0, np.int64)
            if proto == 6:
                rows = rows[(ctx.tcp_flags[rows] & 0x12) == 0x02]
                if _answered_anyway(ctx, cid, rows):
                    continue
                what = plural(rows.size, "SYN")
            elif proto == 17:
                dns = ctx.col("dns_id")[rows]
                if not (dns >= 0).any() and int(row.client_dport) != 53:
                    continue
                what = plural(rows.size, "DNS query", "DNS queries")
            elif proto in (1, 58):
                t = ctx.col("icmp_type")[rows]
                if not np.isin(t, (8, 128)).any():
                    continue
                what = plural(rows.size, "echo request")
            else:
                continue
            if not rows.size:
                continue
            ts = ctx.analysis.corrected_ts[rows]
            span = f" over {seconds(int(ts.max() - ts.min()))}" if rows.size > 1 else ""
            last, words = furthest_hop(ctx, cid)
            single = "," not in str(row.captures)
            reached = (f"only {words} saw it" if single else f"the furthest it got was {words}")
            out.append(Finding(
                code=self.code, severity=self.severity, connection=cid, direction="request",
                hop=int(ctx.hop.pos[last]) if last >= 0 else None,
                message=f"No answer to {ctx.connection_label(cid)} ({what}{span}); {reached}.",
                evidence=ctx.evidence(np.r_[rows, np.flatnonzero(ctx.analysis.packet_hop == last)[:8]]
                                      if last >= 0 else rows, "requests, and the furthest hop they reached"),
                causes=(("the network right after the client (firewall, load balancer, security group)",) if single
                        else (f"a drop after {words} (see drop_between_hops when the next capture covered it)",
                              "a firewall or NetworkPolicy on the way", "the server not running or not listening")),
                details={"attempts": int(rows.size), "furthest": words}))
        return out


def _answered_anyway(ctx: Context, connection: int, syn: np.ndarray) -> bool:
    """A SYN-ACK for one of these SYNs (to its port, ack = ISN + 1) is in one of the
    captures that saw them: answered, whatever the connection's status says (a host
    talking to itself over loopback confuses the orientation of its flows)."""
    if not syn.size:
        return False
    sa = ctx.shared("synacks", lambda c: np.flatnonzero((c.tcp_flags & 0x12) == 0x12))
    cap, dport, ack = ctx.col("capture"), ctx.col("dport"), ctx.col("ack").astype(np.int64)
    sa = sa[np.isin(cap[sa], cap[syn]) & np.isin(dport[sa], ctx.col("sport")[syn])]
    want = (ctx.col("seq")[syn].astype(np.int64) + 1) % (1 << 32)
    return bool(np.isin(ack[sa], want).any())
