"""``service_no_endpoints``: the node refuses the Service at once with ICMP port unreachable."""

from __future__ import annotations

import numpy as np

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import endpoint, seconds
from flowtrace.detect.finding import Finding

WITHIN_NS = 1_000_000_000
"""kube-proxy's REJECT answers at once; a later port unreachable is something else."""


class ServiceNoEndpoints:
    """``service_no_endpoints``: the SYN (or UDP) to the Service is answered by ICMP port
    unreachable quoting it, and nothing goes on toward a pod."""

    code = "service_no_endpoints"
    severity = "medium"
    needs = Needs(vantage_points=1, where="the client or the node doing the DNAT")
    supersedes: tuple[str, ...] = ("no_reply", "connection_reset", "drop_between_hops")

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per connection refused that way."""
        proto, t, code = ctx.col("proto"), ctx.col("icmp_type"), ctx.col("icmp_code")
        pdir = ctx.analysis.packet_path_direction
        rows = np.flatnonzero((((proto == 1) & (t == 3) & (code == 3)) | ((proto == 58) & (t == 1) & (code == 4)))
                              & (pdir == 1) & (ctx.analysis.packet_hop >= 0))
        if not rows.size:
            return []
        conn = ctx.packet_conn(rows)
        ts = ctx.analysis.corrected_ts
        src = ctx.col("src")
        out = []
        for cid in np.unique(conn).tolist():
            c = ctx.connections.loc[cid]
            if bool(c["dnat"]) or int(c["proto"]) not in (6, 17, 132):
                continue
            icmp = rows[conn == cid]
            req = ctx.connection_rows([cid])
            req = req[pdir[req] == 0]
            if not req.size:
                continue
            delay = int(ts[icmp].min() - ts[req].min())
            if delay > WITHIN_NS:
                continue
            answered_by = ctx.addr(int(src[icmp[0]]))
            if answered_by == str(c["client_dst"]):
                continue  # the contacted host itself: a closed port, not a Service without endpoints
            first_hop = ctx.path_hops(cid, 1)
            origin = str(first_hop["capture"].iloc[0]) if len(first_hop) else answered_by
            what = "SYN" if int(c["proto"]) == 6 else "request"
            out.append(Finding(
                code=self.code, severity=self.severity, connection=cid, direction="response", hop=0,
                segment=f"inside {origin}",
                message=(f"{origin} ({answered_by}) answered the {what} to {endpoint(c['client_dst'], c['client_dport'])} "
                         f"with ICMP port unreachable after {seconds(max(delay, 0))} and sent nothing on toward a pod: "
                         "the Service has no ready endpoints (kube-proxy rejects it)."),
                evidence=ctx.evidence(np.r_[req[:4], icmp], "the request and the ICMP port unreachable quoting it"),
                causes=("no ready endpoints: pods not running, failing readiness probes, or a selector that matches "
                        "no pod",
                        "the Service's port or targetPort does not match its EndpointSlices",
                        "a firewall REJECT rule for this address"),
                details={"delay_ns": delay, "answered_by": answered_by}))
        return out
