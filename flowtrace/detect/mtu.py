"""``mtu_blackhole``: large segments vanish between two hops while small ones pass.

Sizes are wire sizes: segments the sender's stack cut itself (GSO/TSO super-segments, or
GRO-merged ones at a receiver) do not count as large; the smallest segment that vanished
must be larger than everything that passed, and the sender must have sent the same
bytes again. Tunnels add their headers on the way (VXLAN 50 bytes, 70 over IPv6; Geneve
50 and more; IP-in-IP 20; WireGuard 60, 80 over IPv6), which is what usually breaks.
"""

from __future__ import annotations

import numpy as np

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.finding import Finding

OVERHEAD = {"vxlan": (50, 70), "geneve": (50, 70), "ipip": (20, 40), "ip6ip": (20, 40), "gre": (24, 44),
            "wireguard": (60, 80)}
"""Bytes a tunnel adds to the inner IP packet, over IPv4 and IPv6 underlays."""
SUPER_SEGMENT = 9000
"""Segments above this were cut by the sender's offload, not sent as such."""
WINDOW_NS = 1_000_000_000


class MtuBlackhole:
    """``mtu_blackhole``: large DF segments leave the sender and never arrive while small
    segments and ACKs pass; the same segment is retransmitted; no ICMP fragmentation-needed
    or packet-too-big reaches the sender."""

    code = "mtu_blackhole"
    severity = "high"
    needs = Needs(vantage_points=2, where="the sender's side and the receiver's side")
    supersedes: tuple[str, ...] = ("drop_between_hops", "no_reply")

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per connection and direction with that pattern."""
        v = ctx.vanished
        if v.empty:
            return []
        v = v[v["covered"].to_numpy() & v["data"].to_numpy() & (v["next_hop"].to_numpy() >= 0)
              & ~v["inside"].to_numpy()]
        out = []
        ip_len = ctx.col("ip_len").astype(np.int64)
        seq = ctx.col("seq").astype(np.int64)
        for (conn, direction), g in v.groupby(["connection", "direction"], sort=True):
            rows = g["row"].to_numpy()
            last, nxt = int(g["last_hop"].iloc[0]), int(g["next_hop"].iloc[0])
            lost = ip_len[rows]
            wire = lost[lost <= SUPER_SEGMENT]
            lost_size = int(wire.min()) if wire.size else int(lost.min())
            passed = np.flatnonzero(ctx.analysis.packet_hop == nxt)
            passed_max = int(ip_len[passed].max()) if passed.size else 0
            if lost_size <= passed_max:
                continue
            at_last = np.flatnonzero(ctx.analysis.packet_hop == last)
            lost_seq = np.unique(seq[rows])
            sent = seq[at_last][np.isin(seq[at_last], lost_seq) & (ctx.col("payload_len")[at_last] > 0)]
            retransmitted = sent.size > np.unique(sent).size
            if not retransmitted:
                continue
            encap = str(ctx.analysis.packets["encap"].iloc[int(rows[0])])
            v6 = ctx.col("ip_version")[rows[0]] == 6
            extra = OVERHEAD.get(encap, (0, 0))[1 if v6 else 0]
            size = f"{lost_size} bytes" + (f", {lost_size + extra} with the {encap.upper()} header" if extra else "")
            df = bool((ctx.col("ip_flags")[rows] & 0x01).any())
            icmp = self._frag_needed(ctx, int(g["ts"].min()) - WINDOW_NS, int(g["ts"].max()) + WINDOW_NS)
            sender_cap = int(ctx.hop.capture[int(ctx.path_hops(int(conn), int(direction))["hop_id"].iloc[0])])
            at_sender = icmp[ctx.col("capture")[icmp] == sender_cap] if icmp.size else icmp
            if not icmp.size:
                icmp_words = "no ICMP fragmentation-needed came back"
            elif at_sender.size:
                icmp_words = "an ICMP fragmentation-needed reached the sender, which kept sending large segments"
            else:
                icmp_words = "an ICMP fragmentation-needed was sent but never reached the sender"
            a, b = ctx.capture_names[int(ctx.hop.capture[last])], ctx.capture_names[int(ctx.hop.capture[nxt])]
            d = "request" if direction == 0 else "response"
            out.append(Finding(
                code=self.code, severity=self.severity, connection=int(conn), direction=d,
                hop=int(ctx.hop.pos[last]), segment=f"{a} -> {b}",
                message=(f"Large {'DF ' if df else ''}segments of {ctx.connection_label(int(conn))} ({d}, {size}) left "
                         f"{a} and never reached {b}, while packets of up to {passed_max} bytes passed and the same "
                         f"bytes were sent again; {icmp_words}: a path MTU black hole between {a} and {b}."),
                evidence=ctx.evidence(np.r_[rows, at_sender if at_sender.size else icmp],
                                      "large segments that never arrived (and any fragmentation-needed)"),
                causes=(f"a link between {a} and {b} has a smaller MTU than the pods and the overlay assume "
                        "(pod MTU + tunnel overhead > underlay MTU)",
                        "ICMP fragmentation-needed / packet-too-big filtered by a firewall or security group, so "
                        "path MTU discovery cannot work",
                        "no TCP MSS clamping on the tunnel or the gateway"),
                details={"lost_bytes": lost_size, "passed_max_bytes": passed_max, "encap": encap,
                         "overhead": extra, "segments": int(rows.size), "icmp_seen": int(icmp.size)}))
        return out

    @staticmethod
    def _frag_needed(ctx: Context, t0: int, t1: int) -> np.ndarray:
        """Rows of ICMP fragmentation-needed / packet-too-big between t0 and t1."""
        proto, t, code = ctx.col("proto"), ctx.col("icmp_type"), ctx.col("icmp_code")
        ts = ctx.analysis.corrected_ts
        return np.flatnonzero((((proto == 1) & (t == 3) & (code == 4)) | ((proto == 58) & (t == 2)))
                              & (ts >= t0) & (ts <= t1))
