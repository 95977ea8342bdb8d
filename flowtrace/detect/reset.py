"""``connection_reset``: a connection ended (or was refused) by a RST; who sent it and why."""

from __future__ import annotations

import numpy as np

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import endpoint
from flowtrace.detect.finding import Finding


class ConnectionReset:
    """``connection_reset``: RST from the client or the server side, and whether it
    followed a reply from an unexpected address."""

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
        flags = ctx.tcp_flags
        ts = ctx.analysis.corrected_ts
        pdir = ctx.analysis.packet_path_direction
        mm = ctx.mismatched_replies
        odd = set(mm["connection"].tolist()) if len(mm) else set()
        out = []
        for row in cand.itertuples(index=False):
            cid = int(row.connection)
            rows = ctx.connection_rows([cid])
            rst = rows[(flags[rows] & 0x04) != 0]
            if not rst.size:
                continue
            first = int(rst[np.argmin(ts[rst])])
            by_client = pdir[first] == 0
            sightings = rst[ctx.analysis.packet_group[rst] == ctx.analysis.packet_group[first]] \
                if ctx.analysis.packet_group[first] >= 0 else np.array([first])
            origin = ctx.capture_names[int(ctx.col("capture")[sightings[np.argmin(ts[sightings])]])]
            service = endpoint(row.client_dst, row.client_dport)
            if str(row.status) == "rejected":
                msg = (f"The SYN of {ctx.connection_label(cid)} was answered with RST (first seen at {origin}): "
                       f"the endpoint{' ' + endpoint(row.server_dst, row.server_dport) if row.dnat else ''} exists but "
                       "nothing listens on that port.")
                causes = ("the server process is not listening on the target port (wrong targetPort, crashed app)",
                          "a firewall rule answering with a TCP reset")
            else:
                side = "the client" if by_client else "the server side"
                after = (" right after a reply from an unexpected address (see missing_nat_reversal)"
                         if cid in odd else "")
                msg = f"{ctx.connection_label(cid)} was reset by {side} (RST first seen at {origin}){after}."
                causes = ((("the client rejected a reply it could not match (untranslated source address)",)
                           if cid in odd else ())
                          + ("the application closed the socket abortively (SO_LINGER 0, a crash, a timeout)",
                             "a middlebox or conntrack state timeout resetting idle connections"))
            out.append(Finding(
                code=self.code, severity=self.severity, connection=cid,
                direction="request" if by_client else "response",
                hop=int(ctx.hop.pos[ctx.analysis.packet_hop[first]]),
                message=msg, evidence=ctx.evidence(sightings, "the RST"), causes=causes,
                details={"sender": "client" if by_client else "server", "first_seen": origin,
                         "service": service}))
        return out
