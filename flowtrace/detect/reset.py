"""``connection_reset``: a connection ended (or was refused) by a RST; who sent it and why."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import endpoint
from flowtrace.detect.finding import Finding

SEQ_SPACE = 1 << 32


class ConnectionReset:
    """``connection_reset``: RST from the client or the server side, and whether it
    followed a reply from an unexpected address (or an answer for another connection)."""

    code = "connection_reset"
    severity = "low"
    needs = Needs(vantage_points=1, where="any capture")
    supersedes: tuple[str, ...] = ()

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per reset or refused TCP connection."""
        c = ctx.analysis.connections
        if c.empty:
            return []
        cand = c[c["status"].astype(object).isin(["reset", "rejected"]).to_numpy() & (c["proto"].to_numpy() == 6)]
        if cand.empty:
            return []
        a = ctx.analysis
        flags, ts, pdir = ctx.tcp_flags, a.corrected_ts, a.packet_path_direction
        rows = ctx.connection_rows(cand["connection"].to_numpy())
        conn = ctx.packet_conn(rows)
        rst = rows[(flags[rows] & 0x04) != 0]
        rst_conn = conn[(flags[rows] & 0x04) != 0]
        order = np.lexsort((ts[rst], rst_conn))
        rst, rst_conn = rst[order], rst_conn[order]
        first_of = pd.Series(rst).groupby(rst_conn).first()
        # Answers to a SYN that acknowledge something else: the server side still holds an
        # older connection on this tuple (TIME_WAIT, port reuse) and sends a challenge ACK.
        syn = rows[((flags[rows] & 0x12) == 0x02) & (pdir[rows] == 0)]
        isn = pd.Series(ctx.col("seq")[syn].astype(np.int64)).groupby(ctx.packet_conn(syn)).first()
        acks = rows[((flags[rows] & 0x16) == 0x10) & (pdir[rows] == 1)]
        ack_conn = ctx.packet_conn(acks)
        expected = isn.reindex(ack_conn).to_numpy()
        odd_ack = ~np.isnan(expected) & (ctx.col("ack")[acks] != (np.nan_to_num(expected).astype(np.int64) + 1)
                                         % SEQ_SPACE)
        challenged = set(ack_conn[odd_ack].tolist())
        mm = ctx.mismatched_replies
        odd = set(mm["connection"].tolist()) if len(mm) else set()
        group = a.packet_group
        out = []
        for row in cand.itertuples(index=False):
            cid = int(row.connection)
            if cid not in first_of.index:
                continue
            first = int(first_of.loc[cid])
            by_client = pdir[first] == 0
            sightings = rst[(rst_conn == cid) & (group[rst] == group[first])] if group[first] >= 0 \
                else np.array([first])
            origin = ctx.capture_names[int(ctx.col("capture")[sightings[np.argmin(ts[sightings])]])]
            label = ctx.connection_label(cid)
            evidence_rows = sightings
            causes: tuple[str, ...]
            if str(row.status) == "rejected":
                target = f" {endpoint(row.server_dst, row.server_dport)}" if row.dnat else ""
                msg = (f"The SYN of {label} was answered with RST (first seen at {origin}): the endpoint{target} "
                       "exists but nothing listens on that port.")
                causes = ("the server process is not listening on the target port (wrong targetPort, crashed app)",
                          "a firewall rule answering with a TCP reset")
            elif by_client and cid in challenged:
                msg = (f"{label} was reset by the client because the server side answered its SYN with an ACK for "
                       f"another connection (RST first seen at {origin}): it still held an older connection on the "
                       "same tuple, and the client had to retry.")
                causes = ("the tuple was reused while the server side still held the previous connection (TIME_WAIT): "
                          "a SNAT port reused too early (MASQUERADE --random-fully) or a client reusing ports quickly",
                          "IPVS or conntrack reusing an entry of a closed connection")
                challenge = acks[odd_ack & (ack_conn == cid)]
                evidence_rows = np.r_[challenge[:4], sightings]
            else:
                side = "the client" if by_client else "the server side"
                after = (" right after a reply from an unexpected address (see missing_nat_reversal)"
                         if cid in odd else "")
                msg = f"{label} was reset by {side} (RST first seen at {origin}){after}."
                causes = ((("the client rejected a reply it could not match (untranslated source address)",)
                           if cid in odd else ())
                          + ("the application closed the socket abortively (SO_LINGER 0, a crash, a timeout)",
                             "a middlebox or conntrack state timeout resetting idle connections"))
            out.append(Finding(
                code=self.code, severity=self.severity, connection=cid,
                direction="request" if by_client else "response",
                hop=int(ctx.hop.pos[a.packet_hop[first]]),
                message=msg, evidence=ctx.evidence(evidence_rows, "the RST (and what it answered)"), causes=causes,
                details={"sender": "client" if by_client else "server", "first_seen": origin,
                         "service": endpoint(row.client_dst, row.client_dport)}))
        return out
