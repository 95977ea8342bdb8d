"""``source_ip_masqueraded``: the server sees a node's address instead of the client's."""

from __future__ import annotations

import numpy as np

from flowtrace.correlate.nat import SNAT, SNAT_PORT
from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import endpoint
from flowtrace.detect.finding import Evidence, Finding

_CAUSES = ("externalTrafficPolicy=Cluster (kube-proxy masquerades traffic it may send to another node); "
           "use externalTrafficPolicy=Local to keep the client address",
           "a masquerade rule of the CNI or the node (ip-masq-agent) for this destination")


class SourceIpMasqueraded:
    """``source_ip_masqueraded``: SNAT on the request path (expected with
    externalTrafficPolicy=Cluster, so information)."""

    code = "source_ip_masqueraded"
    severity = "info"
    needs = Needs(vantage_points=1, where="a capture before and one after the SNAT (a node's -i any shows both)")
    supersedes: tuple[str, ...] = ()

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per masqueraded connection, at the hop where the source changed."""
        h = ctx.analysis.hops
        if h.empty:
            return []
        on = h["on_path"].to_numpy()
        req = on & (ctx.hop.dirc[h["hop_id"].to_numpy()] == 0)
        snat = np.flatnonzero(req & ((h["changes"].to_numpy() & (SNAT | SNAT_PORT)) != 0))
        if not snat.size:
            return []
        conn = h["connection"].to_numpy()
        snat = snat[np.r_[True, conn[snat][1:] != conn[snat][:-1]]]
        req_i = np.flatnonzero(req)
        prev = req_i[np.searchsorted(req_i, snat) - 1]
        src = h["src"].astype(object).to_numpy()
        sport = h["sport"].to_numpy()
        cap = h["capture"].astype(object).to_numpy()
        frame = h["first_frame"].to_numpy()
        hop = h["hop"].to_numpy()
        where = h["changed_at"].to_numpy()
        out = []
        for i, p in zip(snat.tolist(), prev.tolist(), strict=True):
            at = str(where[i])
            place = at if " -> " not in at else f"something between {at.replace(' -> ', ' and ')}"
            before, after = endpoint(src[p], sport[p]), endpoint(src[i], sport[i])
            out.append(Finding(
                code=self.code, severity=self.severity, connection=int(conn[i]), direction="request",
                hop=int(hop[i]), segment=at,
                message=(f"{place} masqueraded the client {before} as {after}: the server sees the node's address, "
                         "not the client's (expected with externalTrafficPolicy=Cluster)."),
                evidence=(Evidence(capture=str(cap[p]), frames=(int(frame[p]),), note="before SNAT"),
                          Evidence(capture=str(cap[i]), frames=(int(frame[i]),), note="after SNAT")),
                causes=_CAUSES, details={"before": before, "after": after}))
        return out
