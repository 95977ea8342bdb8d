"""``syn_retransmission``: the client sent its SYN again, with the gaps and what the delay suggests."""

from __future__ import annotations

import numpy as np

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import plural, seconds
from flowtrace.detect.finding import Finding

SEQ_SPACE = 1 << 32

FINGERPRINTS = ((0.8e9, 1.5e9, "the 1 s fingerprint of one lost SYN: a SNAT port collision or IPVS port reuse"),
                (2.5e9, 3.5e9, "one lost SYN with the older 3 s initial timeout"),
                (4.5e9, 5.5e9, "the 5 s fingerprint of a DNS or conntrack race retried by the application"),
                (60e9, 70e9, "the 63 s fingerprint of six lost SYNs: the checksum offload bug (VXLAN + "
                             "MASQUERADE --random-fully)"))
"""(low, high, words) for the time from the first SYN to the answer."""


class SynRetransmission:
    """``syn_retransmission``: the same ISN sent again at the client (or client pod)."""

    code = "syn_retransmission"
    severity = "medium"
    needs = Needs(vantage_points=1, where="the client or client pod")
    supersedes: tuple[str, ...] = ()

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per connection whose originator retransmitted its SYN."""
        h = ctx.analysis.hops
        fl = ctx.analysis.flows
        if h.empty or fl.empty:
            return []
        first = h[h["on_path"].to_numpy() & (h["hop"].to_numpy() == 0) & (ctx.hop.dirc[h["hop_id"].to_numpy()] == 0)
                  & (h["proto"].to_numpy() == 6)]
        retrans = fl.set_index("flow_id")["syn_retransmissions"].reindex(first["flow"].to_numpy()).to_numpy()
        first = first[np.nan_to_num(retrans, nan=0) > 0]
        out = []
        ts_all = ctx.analysis.corrected_ts
        seq_all = ctx.col("seq").astype(np.int64)
        for hop in first.itertuples(index=False):
            cid = int(hop.connection)
            rows = np.flatnonzero(ctx.analysis.packet_hop == int(hop.hop_id))
            syn = rows[(ctx.tcp_flags[rows] & 0x12) == 0x02]
            if syn.size < 2:
                continue
            isn = np.bincount(np.unique(seq_all[syn], return_inverse=True)[1].reshape(-1)).argmax()
            isn = np.unique(seq_all[syn])[isn]
            syn = syn[seq_all[syn] == isn]
            syn = syn[np.argsort(ts_all[syn])]
            if syn.size < 2:
                continue
            gaps = np.diff(ts_all[syn])
            pattern = _pattern(gaps)
            answer = self._answer_delay(ctx, cid, int(isn), int(ts_all[syn[0]]), int(ctx.col("capture")[syn[0]]))
            mm = ctx.mismatched_replies
            if answer is None and len(mm) and (mm["connection"] == cid).any():
                outcome = "and only got answers from the wrong address"
            elif answer is None:
                outcome = "and never got an answer"
            else:
                words = next((w for lo, hi, w in FINGERPRINTS if lo <= answer <= hi), "")
                outcome = f"and was answered {seconds(answer)} after the first" + (f" ({words})" if words else "")
            out.append(Finding(
                code=self.code, severity=self.severity, connection=cid, direction="request", hop=0,
                message=(f"{hop.capture} sent the SYN of {ctx.connection_label(cid)} {plural(int(syn.size), 'time')} "
                         f"(gaps {', '.join(seconds(g) for g in gaps[:8])}{pattern}) {outcome}."),
                evidence=ctx.evidence(syn, "the same SYN (one ISN) sent again"),
                causes=("the SYN or its answer is lost on the way (see drop findings for where)",
                        "a SNAT port collision or conntrack race dropping the first SYN (1 s delay)",
                        "the server's listen backlog overflowing"),
                details={"syns": int(syn.size), "gaps_ns": [int(g) for g in gaps],
                         "answered_after_ns": None if answer is None else int(answer)}))
        return out

    @staticmethod
    def _answer_delay(ctx: Context, connection: int, isn: int, t0: int, capture: int) -> int | None:
        """Time from the first SYN to the first SYN-ACK the client could use: at its own
        capture, from the address it contacted."""
        rows = ctx.connection_rows([connection])
        flags = ctx.tcp_flags[rows]
        ack = ctx.col("ack")[rows].astype(np.int64)
        contacted = ctx.addr_code(ctx.connections.loc[connection, "client_dst"])
        sa = rows[((flags & 0x12) == 0x12) & (ack == (isn + 1) % SEQ_SPACE)
                  & (ctx.col("capture")[rows] == capture) & (ctx.col("src")[rows] == contacted)]
        if not sa.size:
            return None
        return int(ctx.analysis.corrected_ts[sa].min() - t0)


def _pattern(gaps: np.ndarray) -> str:
    """', exponential backoff' / ', linear 1 s steps' / ''."""
    if gaps.size >= 2:
        ratio = gaps[1:] / np.maximum(gaps[:-1], 1)
        if (np.abs(ratio - 2) < 0.35).all():
            return ", exponential backoff"
        if (np.abs(gaps - 1e9) < 0.2e9).all():
            return ", linear 1 s steps (Linux 6.5+ tcp_syn_linear_timeouts)"
    return ""
