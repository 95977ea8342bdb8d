"""``dns_conntrack_race``: two queries from one socket at once; conntrack drops one."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import endpoint, seconds
from flowtrace.detect.finding import Finding

TOGETHER_NS = 50_000_000
"""Queries this close on one 5-tuple race for one conntrack entry."""
ANSWER_NS = 4_500_000_000
"""A query unanswered this long (the resolver's 5 s timeout) is lost."""
RESEND_NS = (1_000_000_000, 12_000_000_000)
"""The resolver asks again within this range after the first query."""


class DnsConntrackRace:
    """``dns_conntrack_race``: two UDP queries with one 5-tuple (A and AAAA, different ids)
    within milliseconds; one is answered, the other never, and it is sent again ~5 s later."""

    code = "dns_conntrack_race"
    severity = "high"
    needs = Needs(vantage_points=1, where="the client pod (and the node doing the DNAT, to see the drop)")
    supersedes: tuple[str, ...] = ("no_reply", "drop_between_hops")

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per racing pair."""
        a = ctx.analysis
        proto, dport, sport = ctx.col("proto"), ctx.col("dport"), ctx.col("sport")
        dns_id = ctx.col("dns_id")
        hop = a.packet_hop
        q = np.flatnonzero((proto == 17) & (dport == 53) & (dns_id >= 0) & (hop >= 0))
        q = q[ctx.hop.pos[hop[q]] == 0]
        if q.size < 2:
            return []
        cap, src, dst = ctx.col("capture"), ctx.col("src"), ctx.col("dst")
        ts = a.corrected_ts
        df = pd.DataFrame({"row": q, "cap": cap[q], "src": src[q], "sport": sport[q], "dst": dst[q],
                           "id": dns_id[q], "ts": ts[q]}).sort_values(["cap", "src", "sport", "dst", "ts"])
        same = (df[["cap", "src", "sport", "dst"]].shift() == df[["cap", "src", "sport", "dst"]]).all(axis=1)
        close = df["ts"].diff() <= TOGETHER_NS
        other_id = df["id"].diff() != 0
        pair = np.flatnonzero((same & close & other_id).to_numpy())
        if not pair.size:
            return []
        reply = np.flatnonzero((proto == 17) & (sport == 53) & (dns_id >= 0))
        out = []
        rows_sorted = df["row"].to_numpy()
        done: set[int] = set()
        for i in pair.tolist():
            r1, r2 = int(rows_sorted[i - 1]), int(rows_sorted[i])
            if r1 in done or r2 in done:
                continue
            answered = [self._answer(ctx, r, reply) for r in (r1, r2)]
            if (answered[0] >= 0) == (answered[1] >= 0):
                continue
            lost, won = (r1, r2) if answered[0] < 0 else (r2, r1)
            answer = max(answered)
            again = self._resend(ctx, lost, q)
            if again < 0:
                continue
            done.update((r1, r2))
            group = a.packet_group[lost]
            elsewhere = np.flatnonzero(a.packet_group == group) if group >= 0 else np.array([lost])
            v = ctx.vanished
            gone = v[v["row"].isin(elsewhere)] if len(v) else v
            where = ""
            if len(gone) and bool(gone["covered"].iloc[0]):
                node = ctx.capture_names[int(gone["capture"].iloc[0])]
                where = f" ({node} saw it arrive and never forward it)"
            conn = int(ctx.packet_conn(np.array([lost]))[0])
            client = endpoint(ctx.addr(int(src[lost])), sport[lost])
            server = endpoint(ctx.addr(int(dst[lost])), dport[lost])
            out.append(Finding(
                code=self.code, severity=self.severity, connection=conn if conn >= 0 else None,
                direction="request", hop=0, segment=(f"inside {ctx.capture_names[int(gone['capture'].iloc[0])]}"
                                                     if len(gone) else None),
                message=(f"Two DNS queries from {client} to {server} left {seconds(abs(int(ts[r2] - ts[r1])))} apart on "
                         f"one socket (ids {int(dns_id[r1])} and {int(dns_id[r2])}); only id {int(dns_id[won])} was "
                         f"answered, and id {int(dns_id[lost])} was lost{where} and asked again "
                         f"{seconds(int(ts[again] - ts[lost]))} later: a conntrack insertion race."),
                evidence=ctx.evidence(np.r_[r1, r2, answer, again, elsewhere],
                                      "both queries, the one answer, the query sent again"),
                causes=("conntrack insert race on parallel UDP queries from one socket (glibc sends A and AAAA "
                        "together): 'options single-request-reopen' or 'use-vc' in resolv.conf, NodeLocal "
                        "DNSCache, or a kernel with the race fixes (5.0+)",
                        "kube-proxy DNAT choosing different endpoints for the two queries"),
                details={"lost_id": int(dns_id[lost]), "answered_id": int(dns_id[won])}))
        return out

    @staticmethod
    def _answer(ctx: Context, q: int, reply: np.ndarray) -> int:
        """Row of the reply to query row ``q`` at its capture, -1 if none within the timeout."""
        cap, src, dst = ctx.col("capture"), ctx.col("src"), ctx.col("dst")
        sport, dport, dns_id = ctx.col("sport"), ctx.col("dport"), ctx.col("dns_id")
        ts = ctx.analysis.corrected_ts
        r = reply[(cap[reply] == cap[q]) & (dst[reply] == src[q]) & (dport[reply] == sport[q])
                  & (dns_id[reply] == dns_id[q]) & (ts[reply] >= ts[q]) & (ts[reply] <= ts[q] + ANSWER_NS)]
        return int(r[0]) if r.size else -1

    @staticmethod
    def _resend(ctx: Context, q: int, queries: np.ndarray) -> int:
        """Row of the same question asked again (same id, or same socket) a few seconds later."""
        cap, src, dst = ctx.col("capture"), ctx.col("src"), ctx.col("dst")
        sport, dns_id = ctx.col("sport"), ctx.col("dns_id")
        ts = ctx.analysis.corrected_ts
        r = queries[(cap[queries] == cap[q]) & (src[queries] == src[q]) & (dst[queries] == dst[q])
                    & ((dns_id[queries] == dns_id[q]) | (sport[queries] == sport[q]))
                    & (ts[queries] >= ts[q] + RESEND_NS[0]) & (ts[queries] <= ts[q] + RESEND_NS[1])]
        return int(r[0]) if r.size else -1
