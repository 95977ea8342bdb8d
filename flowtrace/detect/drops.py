"""``drop_between_hops``: packets seen at one hop and never at the next, with the segment named."""

from __future__ import annotations

import numpy as np

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import endpoint, plural
from flowtrace.detect.finding import Finding
from flowtrace.detect.nat_reversal import dnat_node

CAUSES = {
    "dnat_node": ("a filter rule on the node doing the Service DNAT (kube-proxy's KUBE-* chains, a firewall, "
                  "a NetworkPolicy enforced there)",
                  "conntrack on that node marked the packet INVALID or could not insert an entry",
                  "rp_filter dropping it (asymmetric routes)"),
    "between_nodes": ("the network between the nodes: a security group or firewall, missing routes for the pod "
                      "CIDRs",
                      "the overlay: its UDP port (VXLAN 8472/4789, Geneve 6081) blocked, or an MTU too small for "
                      "the encapsulated packet"),
    "node_pod": ("a NetworkPolicy (or the CNI's firewall) on the destination node",
                 "the pod's veth or interface down, or the pod gone",
                 "rp_filter or a wrong route to the pod on that node"),
    "client_node": ("the network between the client and the node: a firewall, the load balancer, a security group",),
    "inside": ("a filter rule on that host (iptables/nftables, NetworkPolicy)", "no route for the destination"),
    "between": ("the network between the two capture points: a firewall, routing, MTU",),
}
"""Likely causes by the kind of segment a packet vanished in."""


def name_segment(ctx: Context, connection: int, last_hop: int, next_hop: int, row: int) -> tuple[str, str, str]:
    """(segment label, kind — a key of CAUSES —, words for a message) for a packet last seen at
    ``last_hop`` and expected at ``next_hop`` (-1: it should have left ``last_hop``'s host)."""
    names = ctx.capture_names
    x = names[int(ctx.hop.capture[last_hop])]
    roles = ctx.analysis.roles
    if next_hop < 0 or ctx.hop.capture[next_hop] == ctx.hop.capture[last_hop]:
        c = ctx.connections.loc[connection]
        dst = ctx.addr(int(ctx.col("dst")[row]))
        node = dnat_node(ctx, connection)
        before_dnat = not bool(c["dnat"]) and dst == str(c["client_dst"])
        if (node is not None and node[0] == x) or before_dnat:
            return f"inside {x}", "dnat_node", f"inside {x}, the node doing the Service DNAT"
        pod = ctx.endpoint_capture.get(dst)
        if pod is not None and pod != x:
            return f"{x} -> {pod}", "node_pod", f"inside {x}, before it reached the pod {pod} ({dst})"
        if bool(c["dnat"]) and dst == str(c["server_dst"]):
            return f"{x} -> {dst}", "node_pod", f"inside {x}, before it reached the endpoint {dst}"
        return f"inside {x}", "inside", f"inside {x}"
    y = names[int(ctx.hop.capture[next_hop])]
    rx, ry = roles.get(x, ""), roles.get(y, "")
    if rx == "node" and ry == "node":
        kind = "between_nodes"
    elif "pod" in (rx, ry):
        kind = "node_pod"
    elif "client" in (rx, ry):
        kind = "client_node"
    else:
        kind = "between"
    return f"{x} -> {y}", kind, f"between {x} and {y}"


def answered_by(ctx: Context, connection: int, capture: int) -> bool:
    """Whether the host of ``capture`` answered the connection itself (an ICMP error or a
    RST starting the response path there): a refusal, not a silent drop."""
    first = (ctx.hop.conn == connection) & (ctx.hop.dirc == 1) & ctx.hop.on_path & (ctx.hop.pos == 0)
    return bool((ctx.hop.capture[first] == capture).any())


class DropBetweenHops:
    """``drop_between_hops``: a packet (TCP: bytes) seen at hop k never seen at hop k+1
    while the capture there was running without loss."""

    code = "drop_between_hops"
    severity = "medium"
    needs = Needs(vantage_points=1, where="two consecutive hops (a node's -i any shows a packet enter and leave)")
    supersedes: tuple[str, ...] = ("no_reply",)

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per connection, direction and segment where covered packets vanished."""
        v = ctx.vanished
        if v.empty:
            return []
        v = v[v["covered"].to_numpy()]
        out = []
        for (conn, direction, last, nxt), g in v.groupby(["connection", "direction", "last_hop", "next_hop"],
                                                         sort=True):
            conn, last, nxt = int(conn), int(last), int(nxt)
            if nxt < 0 and answered_by(ctx, conn, int(ctx.hop.capture[last])):
                continue
            rows = g["row"].to_numpy()
            segment, kind, words = name_segment(ctx, conn, last, nxt, int(rows[0]))
            handshake = bool(g["handshake"].any())
            what = _what(ctx, rows)
            d = "request" if direction == 0 else "response"
            where = ctx.hop_label(last)
            gone = (f"and never left {ctx.capture_names[int(ctx.hop.capture[last])]}" if nxt < 0
                    else f"and never at {ctx.hop_label(nxt)}")
            out.append(Finding(
                code=self.code, severity="high" if handshake else self.severity, connection=conn, direction=d,
                hop=int(ctx.hop.pos[last]), segment=segment,
                message=(f"{what} of {ctx.connection_label(conn)}{' (response)' if direction else ''} "
                         f"{'was' if rows.size == 1 or what.startswith('The SYN') else 'were'} seen "
                         f"at {where} {gone}: dropped {words}."),
                evidence=ctx.evidence(rows, f"last seen here, never at the next hop ({segment})"),
                causes=CAUSES[kind],
                details={"packets": int(rows.size), "handshake": handshake, "kind": kind,
                         "next": ctx.hop_label(nxt) if nxt >= 0 else None}))
        return out


def _what(ctx: Context, rows: np.ndarray) -> str:
    """'The SYN (sent 4 times)', '3 packets (1448 payload bytes)'."""
    flags = ctx.tcp_flags[rows]
    proto = ctx.col("proto")[rows]
    if (proto == 6).all() and ((flags & 0x12) == 0x02).all():
        return "The SYN" + (f" (sent {rows.size} times)" if rows.size > 1 else "")
    if (proto == 6).all() and ((flags & 0x12) == 0x12).all():
        return "The SYN-ACK" + (f" (sent {rows.size} times)" if rows.size > 1 else "")
    size = int(ctx.col("payload_len")[rows].astype(np.int64).sum())
    return plural(rows.size, "packet") + (f" ({plural(size, 'payload byte')})" if size else "")


def furthest_hop(ctx: Context, connection: int) -> tuple[int, str]:
    """(hop id, words) of the most downstream on-path request hop of a connection."""
    h = ctx.path_hops(connection, 0)
    if h.empty:
        return -1, "nowhere"
    last = h.iloc[-1]
    words = ctx.hop_label(int(last["hop_id"]))
    c = ctx.connections.loc[connection]
    if bool(c["dnat"]):
        words += f", after DNAT to {endpoint(c['server_dst'], c['server_dport'])}"
    return int(last["hop_id"]), words
