"""``no_local_endpoint_blackhole``: a node swallows traffic for a Service it has no local endpoint for."""

from __future__ import annotations

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import endpoint, plural
from flowtrace.detect.finding import Finding
from flowtrace.detect.paths import endpoint_addresses


class NoLocalEndpointBlackhole:
    """``no_local_endpoint_blackhole``: SYNs to a NodePort/LB address enter the node and
    nothing leaves it — no DNAT'd copy, no ICMP, no RST (externalTrafficPolicy=Local)."""

    code = "no_local_endpoint_blackhole"
    severity = "high"
    needs = Needs(vantage_points=1, where="the node the traffic is sent to (-i any), ideally with the client")
    supersedes: tuple[str, ...] = ("drop_between_hops", "no_reply")

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per connection swallowed untranslated by the first node."""
        v = ctx.vanished
        if v.empty:
            return []
        v = v[v["covered"].to_numpy() & (v["next_hop"].to_numpy() < 0) & (v["direction"].to_numpy() == 0)]
        out = []
        dst = ctx.col("dst")
        endpoints = set(endpoint_addresses(ctx).tolist())
        for conn, g in v.groupby("connection", sort=True):
            c = ctx.connections.loc[int(conn)]
            if bool(c["dnat"]) or int(c["response_hops"]) > 0 or int(c["proto"]) not in (6, 17, 132):
                continue
            rows = g["row"].to_numpy()
            target = str(c["client_dst"])
            if any(ctx.addr(int(d)) != target for d in dst[rows]) or ctx.addr_code(target) in endpoints:
                continue
            last = int(g["last_hop"].iloc[0])
            node = ctx.capture_names[int(ctx.hop.capture[last])]
            what = "SYN" if int(c["proto"]) == 6 else "packet"
            service = endpoint(c["client_dst"], c["client_dport"])
            out.append(Finding(
                code=self.code, severity=self.severity, connection=int(conn), direction="request",
                hop=int(ctx.hop.pos[last]), segment=f"inside {node}",
                message=(f"{plural(rows.size, what)} to {service} entered {node} ({ctx.hop_place(last)}) and nothing "
                         f"left {node} — no DNAT'd copy, no ICMP, no RST: {node} has no local endpoint for this "
                         "Service (externalTrafficPolicy=Local) and drops it."),
                evidence=ctx.evidence(rows, f"entered {node}, never forwarded or answered"),
                causes=("externalTrafficPolicy=Local and no ready endpoint on this node while the load balancer "
                        "(or the client) still sends traffic to it: check the LB health checks (healthCheckNodePort)",
                        "the Service's endpoints on this node went away (pod moved or not ready)",
                        "a firewall on the node dropping this address"),
                details={"node": node, "service": service}))
        return out
