"""Replies that reach the client untranslated: asymmetric return, missing NAT reversal,
and conntrack letting an INVALID segment through unreversed (see detect.replies)."""

from __future__ import annotations

import numpy as np

from flowtrace.correlate.nat import DNAT, DNAT_PORT
from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import endpoint
from flowtrace.detect.finding import Finding

SEQ_SPACE = 1 << 32


def dnat_node(ctx: Context, connection: int) -> tuple[str, int] | None:
    """(capture, hop row in the hops table) where the connection's DNAT happened inside one
    captured host, or None (no DNAT seen, or it happened between two captures)."""
    h = ctx.path_hops(connection, 0)
    changed = h[(h["changes"].to_numpy() & (DNAT | DNAT_PORT)) != 0]
    for at, hop_id in zip(changed["changed_at"].tolist(), changed["hop_id"].tolist(), strict=True):
        if " -> " not in str(at):
            return str(at), int(hop_id)
    return None


def _reply_sightings(ctx: Context, row: int) -> np.ndarray:
    """Rows of the same packet as ``row`` at every capture."""
    g = ctx.analysis.packet_group[row]
    if g < 0:
        return np.array([row])
    return np.flatnonzero(ctx.analysis.packet_group == g)


def _describe(ctx: Context, m: object) -> tuple[str, str, str]:
    """(what the client contacted, where the reply came from, client endpoint) of a mismatch row."""
    req, rep = int(m.request_row), int(m.reply_row)  # type: ignore[attr-defined]
    src, dst, sport, dport = ctx.col("src"), ctx.col("dst"), ctx.col("sport"), ctx.col("dport")
    contacted = endpoint(ctx.addr(int(dst[req])), dport[req])
    came = endpoint(ctx.addr(int(src[rep])), sport[rep])
    client = endpoint(ctx.addr(int(src[req])), sport[req])
    return contacted, came, client


class AsymmetricReturn:
    """``asymmetric_return``: the reply went around the node that did the DNAT; the client
    received it from the pod address and rejected it."""

    code = "asymmetric_return"
    severity = "high"
    needs = Needs(vantage_points=2, where="the client and the node that does the DNAT")
    supersedes: tuple[str, ...] = ("missing_nat_reversal", "no_reply", "connection_reset", "drop_between_hops")

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per connection whose SYN-ACK bypassed the captured DNAT node."""
        mm = ctx.mismatched_replies
        out = []
        for m in mm[(mm["kind"] == "tcp") & (mm["connection"] >= 0)].itertuples(index=False):
            conn = int(m.connection)
            node = dnat_node(ctx, conn)
            if node is None:
                continue
            n1, dnat_hop = node
            rep = int(m.reply_row)
            seen_back = ((ctx.hop.conn == conn) & (ctx.hop.dirc == 1)
                         & (ctx.hop.capture == ctx.capture_index(n1))).any()
            if seen_back or not ctx.coverage.covers(n1, int(ctx.analysis.corrected_ts[rep]), settle_ns=0)[0]:
                continue
            contacted, came, client = _describe(ctx, m)
            hops = ctx.analysis.hops
            dnat_rows = [int(hops["first_row"].iloc[int(ctx.hop.row[dnat_hop])])]
            prev = ctx.path_hops(conn, 0)
            before = prev[prev["hop"] < int(ctx.hop.pos[dnat_hop])]
            if len(before):
                dnat_rows.append(int(before["first_row"].iloc[-1]))
            rejected = int(m.rst_row) >= 0
            rows = np.r_[int(m.request_row), _reply_sightings(ctx, rep), dnat_rows,
                         [int(m.rst_row)] if rejected else []]
            reply_hop = ctx.analysis.packet_hop[rep]
            out.append(Finding(
                code=self.code, severity=self.severity, connection=conn, direction="response",
                hop=int(ctx.hop.pos[reply_hop]) if reply_hop >= 0 else None, segment=f"around {n1}",
                message=(f"The SYN-ACK for {client} -> {contacted} reached the client from the pod address {came} "
                         f"without passing {n1}, which did the DNAT"
                         + ("; the client rejected it (RST) and retried." if rejected else ", so it cannot match it.")),
                evidence=ctx.evidence(rows, "SYN, DNAT at the node, SYN-ACK from the pod, the client's RST"),
                causes=(f"{n1} DNATs without masquerading the client, and the pod's node routes the reply straight "
                        "to the client (externalTrafficPolicy=Local, a missing KUBE-MARK-MASQ, or a CNI that skips "
                        "masquerade)",
                        "routes from the pod network to the client's network that bypass the load-balancing node "
                        "(VPC routes, direct routing)",
                        "direct server return configured on one side only"),
                details={"dnat_node": n1, "contacted": contacted, "reply_from": came}))
        return out


class MissingNatReversal:
    """``missing_nat_reversal``: a reply matched by invariants (TCP ack = ISN + 1, DNS id)
    comes from the endpoint address instead of the address the client contacted."""

    code = "missing_nat_reversal"
    severity = "high"
    needs = Needs(vantage_points=1, where="the client (or client pod)")
    supersedes: tuple[str, ...] = ("no_reply", "connection_reset")

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per request answered from the wrong address."""
        out = []
        for m in ctx.mismatched_replies.itertuples(index=False):
            contacted, came, client = _describe(ctx, m)
            rep = int(m.reply_row)
            sightings = _reply_sightings(ctx, rep)
            unreversed_at = sorted({ctx.capture_names[int(c)] for c in ctx.col("capture")[sightings]
                                    if ctx.capture_names[int(c)] in ctx.multi_interface})
            passed = f" ({', '.join(unreversed_at)} forwarded it unchanged)" if unreversed_at else ""
            what = "SYN-ACK" if m.kind == "tcp" else f"DNS reply (id {int(ctx.col('dns_id')[rep])})"
            rejected = int(m.rst_row) >= 0
            rows = np.r_[int(m.request_row), sightings, [int(m.rst_row)] if rejected else []]
            conn = int(m.connection) if m.connection >= 0 else None
            reply_hop = ctx.analysis.packet_hop[rep]
            out.append(Finding(
                code=self.code, severity=self.severity, connection=conn, direction="response",
                hop=int(ctx.hop.pos[reply_hop]) if reply_hop >= 0 and conn is not None else None,
                message=(f"The {what} to {client} came from {came} instead of {contacted}, the address the client "
                         f"contacted{passed}: the DNAT was not reversed on the way back, so the client cannot match it"
                         + (" and answered RST." if rejected else ".")),
                evidence=ctx.evidence(rows, "request, and the reply from the untranslated address"),
                causes=("the reply bypassed the node that did the DNAT (asymmetric routing)",
                        "same-node pods on a bridge without br_netfilter (net.bridge.bridge-nf-call-iptables=0): "
                        "the reply is bridged past conntrack",
                        "the conntrack entry was gone (flushed or expired) when the reply came"),
                details={"contacted": contacted, "reply_from": came, "kind": str(m.kind)}))
        return out


class InvalidConntrackRst:
    """``invalid_conntrack_rst``: mid-connection, a server segment reaches the client with the
    pod address (conntrack called it INVALID and left it untranslated); the client RSTs it."""

    code = "invalid_conntrack_rst"
    severity = "high"
    needs = Needs(vantage_points=1, where="the client")
    supersedes: tuple[str, ...] = ("connection_reset", "missing_nat_reversal")

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per established connection hit by such a segment."""
        a = ctx.analysis
        fl = a.flows
        if fl.empty:
            return []
        proto, flags, pf = ctx.col("proto"), ctx.tcp_flags, a.packet_flow
        n = int(fl["flow_id"].max()) + 1
        isn_o = np.full(n, -1, dtype=np.int64)
        isn_r = np.full(n, -1, dtype=np.int64)
        isn_o[fl["flow_id"].to_numpy()] = fl["orig_isn"].to_numpy()
        isn_r[fl["flow_id"].to_numpy()] = fl["resp_isn"].to_numpy()
        rst = np.flatnonzero((proto == 6) & ((flags & 0x04) != 0) & (pf >= 0))
        rst = rst[(isn_o[pf[rst]] < 0) & (isn_r[pf[rst]] < 0)]
        if not rst.size:
            return []
        multi = np.array([c in ctx.multi_interface for c in ctx.capture_names] + [False], dtype=bool)
        rst = rst[~multi[ctx.col("capture")[rst]]]
        src, dst, sport, dport = ctx.col("src"), ctx.col("dst"), ctx.col("sport"), ctx.col("dport")
        seq, ack = ctx.col("seq").astype(np.int64), ctx.col("ack").astype(np.int64)
        ts = a.corrected_ts
        by_id = fl.set_index("flow_id")
        fl_cap = fl["capture"].astype(object).to_numpy()
        fl_oh, fl_rh = fl["orig_h"].astype(object).to_numpy(), fl["resp_h"].astype(object).to_numpy()
        fl_op = fl["orig_p"].to_numpy()
        out = []
        seen_flows: set[int] = set()
        for r in rst.tolist():
            f = int(pf[r])
            if f in seen_flows:
                continue
            seen_flows.add(f)
            frows = np.flatnonzero(pf == f)
            leak = frows[(src[frows] == dst[r]) & (sport[frows] == dport[r]) & ((flags[frows] & 0x12) != 0x12)
                         & (ts[frows] <= ts[r])]
            if not leak.size:
                continue
            match = leak[ack[leak] == seq[r]]
            lk = int(match[-1] if match.size else leak[-1])
            cap = ctx.capture_names[int(ctx.col("capture")[r])]
            client, cport = ctx.addr(int(src[r])), int(sport[r])
            pod = ctx.addr(int(src[lk]))
            is_orig = (fl_cap == cap) & (fl_oh == client) & (fl_op == cport) & (fl_rh != pod)
            est = np.flatnonzero(is_orig & (fl["resp_isn"].to_numpy() >= 0) & (fl["flow_id"].to_numpy() != f)
                                 & (fl["ts_ns"].to_numpy() <= a.packets["ts_ns"].iloc[lk]))
            hit = None
            for e in est[::-1].tolist():
                risn = int(fl["resp_isn"].iloc[e])
                if (int(seq[lk]) - risn) % SEQ_SPACE < SEQ_SPACE // 2:
                    hit = int(fl["flow_id"].iloc[e])
                    break
            if hit is None:
                continue
            erows = np.flatnonzero(pf == hit)
            conn = int(ctx.packet_conn(erows[:1])[0]) if erows.size else -1
            info = by_id.loc[hit]
            contacted = endpoint(info["resp_h"], info["resp_p"])
            c_ep = endpoint(client, cport)
            status = str(ctx.connections.loc[conn, "status"]) if conn >= 0 else ""
            out.append(Finding(
                code=self.code, severity=self.severity, connection=conn if conn >= 0 else None,
                direction="response", segment=f"at {cap}",
                message=(f"Mid-connection, a segment of {c_ep} -> {contacted} reached the client from the pod address "
                         f"{endpoint(pod, sport[lk])} instead of {contacted} (conntrack left it untranslated, as it does "
                         "for a packet it calls INVALID); the client answered RST, which resets the server side"
                         + (" and the connection died." if status == "reset" else ".")),
                evidence=ctx.evidence([lk, r, *_reply_sightings(ctx, r).tolist()],
                                      "untranslated segment from the pod, and the client's RST"),
                causes=("conntrack marks an out-of-window segment (often a retransmission) INVALID and skips NAT: "
                        "drop INVALID in FORWARD (kube-proxy's rule) or set net.netfilter.nf_conntrack_tcp_be_liberal=1",
                        "the reply path bypasses the DNAT node for some packets"),
                details={"pod": endpoint(pod, sport[lk]), "contacted": contacted}))
        return out
