"""``snat_port_collision``: two connections squeezed into one post-NAT tuple."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.detect.base import Needs
from flowtrace.detect.context import DIR_OUT, Context
from flowtrace.detect.evidence import endpoint, seconds
from flowtrace.detect.finding import Finding

RACE_NS = 10_000_000
OPEN_NS = 120_000_000_000
"""A conntrack entry of an unclosed connection lives at least this long (SYN_SENT/ESTABLISHED)."""
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
        """SYNs leaving a node with one post-NAT tuple but different ISNs, coming in with
        different pre-NAT tuples, the first connection not closed (FIN or RST on the
        tuple) in between."""
        a = ctx.analysis
        flags, proto = ctx.tcp_flags, ctx.col("proto")
        multi = np.array([n in ctx.multi_interface for n in ctx.capture_names] + [False], dtype=bool)
        cap = ctx.col("capture")
        syn = np.flatnonzero((proto == 6) & ((flags & 0x12) == 0x02) & (ctx.pdir == DIR_OUT) & multi[cap])
        if syn.size < 2:
            return []
        key = _tuple_key(ctx, syn)
        df = pd.DataFrame({"key": key, "seq": ctx.col("seq")[syn], "row": syn, "ts": a.corrected_ts[syn]})
        df = df.sort_values(["key", "ts"], kind="stable").drop_duplicates(["key", "seq"])
        k, ts, rows = df["key"].to_numpy(), df["ts"].to_numpy(), df["row"].to_numpy()
        pair = np.flatnonzero((k[1:] == k[:-1]) & (ts[1:] - ts[:-1] <= OPEN_NS)) + 1
        if not pair.size:
            return []
        first, second = rows[pair - 1], rows[pair]
        open_ = ~_closed_between(ctx, k[pair], ts[pair - 1], ts[pair])
        first, second = first[open_], second[open_]
        out = []
        for r1, r2 in zip(first.tolist(), second.tolist(), strict=True):
            pre = [self._pre_nat(ctx, r) for r in (r1, r2)]
            if pre[0] is None or pre[1] is None or pre[0][0] == pre[1][0]:
                continue
            conn = int(ctx.packet_conn(np.array([pre[1][1]]))[0])
            node = ctx.capture_names[int(cap[r2])]
            post = (f"{endpoint(ctx.addr(int(ctx.col('src')[r2])), ctx.col('sport')[r2])} -> "
                    f"{endpoint(ctx.addr(int(ctx.col('dst')[r2])), ctx.col('dport')[r2])}")
            dt = int(a.corrected_ts[r2] - a.corrected_ts[r1])
            out.append(Finding(
                code=self.code, severity=self.severity, connection=conn if conn >= 0 else None,
                direction="request", segment=f"inside {node}",
                message=(f"{node} translated {pre[0][0]} and {pre[1][0]} to the same tuple {post} "
                         f"{seconds(dt)} apart while the first was still open: a SNAT port collision, "
                         "one of the two connections fails."),
                evidence=ctx.evidence([pre[0][1], r1, pre[1][1], r2],
                                      "two connections before and after NAT, one post-NAT tuple"),
                causes=_CAUSES, details={"tuple": post, "pre_nat": [pre[0][0], pre[1][0]]}))
        return out

    @staticmethod
    def _pre_nat(ctx: Context, row: int) -> tuple[str, int] | None:
        """('client:port', row) of the same SYN arriving at the node before NAT."""
        g = ctx.analysis.packet_group[row]
        if g < 0:
            return None
        same = np.flatnonzero(ctx.analysis.packet_group == g)
        cap = ctx.col("capture")
        inside = same[(cap[same] == cap[row]) & (ctx.pdir[same] != DIR_OUT)]
        if not inside.size:
            return None
        r = int(inside[0])
        return endpoint(ctx.addr(int(ctx.col("src")[r])), ctx.col("sport")[r]), r

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


def _tuple_key(ctx: Context, rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row of its capture and TCP/UDP tuple, the same for both directions."""
    cap = ctx.col("capture")[rows].astype(np.int64)
    a = ctx.col("src")[rows].astype(np.int64) * 65536 + ctx.col("sport")[rows].astype(np.int64)
    b = ctx.col("dst")[rows].astype(np.int64) * 65536 + ctx.col("dport")[rows].astype(np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    frame = pd.DataFrame({"cap": cap, "lo": lo, "hi": hi})
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _closed_between(ctx: Context, key: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """bool per query: a FIN or RST on tuple ``key`` (either way) strictly between t0 and t1."""
    fin = np.flatnonzero((ctx.tcp_flags & 0x05) != 0)
    if not fin.size:
        return np.zeros(key.size, dtype=bool)
    fk = _tuple_key(ctx, fin)
    ft = ctx.analysis.corrected_ts[fin]
    order = np.lexsort((ft, fk))
    fk, ft = fk[order], ft[order]
    lo = np.searchsorted(fk, key, side="left")
    hi = np.searchsorted(fk, key, side="right")
    out = np.zeros(key.size, dtype=bool)
    for i in np.flatnonzero(hi > lo).tolist():
        # The first FIN/RST of the tuple after t0: is it before t1?
        j = lo[i] + np.searchsorted(ft[lo[i]:hi[i]], t0[i], side="right")
        out[i] = j < hi[i] and ft[j] < t1[i]
    return out
