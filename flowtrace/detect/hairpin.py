"""``hairpin_failure``: a pod's connection to its own Service, sent back to itself, never arrives."""

from __future__ import annotations

import numpy as np

from flowtrace.correlate.nat import DNAT, DNAT_PORT
from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import endpoint
from flowtrace.detect.finding import Finding


class HairpinFailure:
    """``hairpin_failure``: the SYN is DNAT'd back to the pod that sent it and never
    re-enters that pod; the pod retransmits."""

    code = "hairpin_failure"
    severity = "medium"
    needs = Needs(vantage_points=1, where="the node (its -i any capture shows the DNAT'd SYN)")
    supersedes: tuple[str, ...] = ("drop_between_hops", "no_reply")

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per unanswered connection DNAT'd to its own client."""
        h = ctx.analysis.hops
        c = ctx.analysis.connections
        if h.empty or c.empty:
            return []
        req = h["on_path"].to_numpy() & (ctx.hop.dirc[h["hop_id"].to_numpy()] == 0)
        dn = np.flatnonzero(req & ((h["changes"].to_numpy() & (DNAT | DNAT_PORT)) != 0))
        if not dn.size:
            return []
        conn = h["connection"].to_numpy()[dn]
        client = ctx.connections["client_src"].astype(object).reindex(conn).to_numpy()
        dst = h["dst"].astype(object).to_numpy()[dn]
        back = dn[dst == client]
        out = []
        for i in back.tolist():
            hop = h.iloc[i]
            cid = int(hop["connection"])
            row = ctx.connections.loc[cid]
            if row["status"] not in ("no_reply", "partial") or int(row["response_hops"]) > 0:
                continue
            path = ctx.path_hops(cid, 0)
            pod_cap = str(row["client_capture"])
            later = path[(path["hop"] > hop["hop"]) & (path["capture"].astype(object) == pod_cap)]
            if len(later):
                continue
            node = str(hop["capture"])
            if not ctx.coverage.covers(node, int(hop["first_ts_ns"]))[0]:
                continue
            first = ctx.analysis.packet_hop
            start_hop = int(path["hop_id"].iloc[0])
            rows = np.flatnonzero((first == start_hop) | (first == int(hop["hop_id"])))
            pod = f"{pod_cap} ({row['client_src']})" if ctx.endpoint_capture.get(str(row["client_src"])) else \
                str(row["client_src"])
            service = endpoint(row["client_dst"], row["client_dport"])
            out.append(Finding(
                code=self.code, severity=self.severity, connection=cid, direction="request",
                hop=int(hop["hop"]), segment=f"inside {node}",
                message=(f"{pod} connected to its own Service {service}; {node} sent the SYN back to it "
                         f"({endpoint(hop['dst'], hop['dport'])}) but it never came back into the pod: the bridge "
                         "does not hairpin, so the pod retransmits until it gives up."),
                evidence=ctx.evidence(rows, "the pod's SYNs, and the DNAT'd copy sent back toward it"),
                causes=("hairpin mode off on the pod's bridge port (kubelet --hairpin-mode=hairpin-veth or "
                        "promiscuous-bridge; CNI bridge plugin hairpinMode: true)",
                        "kube-proxy's hairpin masquerade (KUBE-SEP-… -s <pod> -j KUBE-MARK-MASQ) missing",
                        "br_netfilter off on the node (net.bridge.bridge-nf-call-iptables=0)"),
                details={"node": node, "service": service}))
        return out
