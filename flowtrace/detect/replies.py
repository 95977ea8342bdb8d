"""Replies matched to their request by invariants that arrive from the wrong address.

A TCP SYN-ACK answers the SYN whose ISN + 1 it acknowledges, whatever its addresses say;
a DNS reply answers the query with its transaction id sent from the same socket. When
the answer comes from another address (or port) than the one the client contacted,
someone forgot to reverse a NAT: the reply bypassed the node that did the DNAT, or that
node did not translate it. Only where the reply is delivered counts: an endpoint's own
capture (one interface), or a host sending it out (a node forwarding it toward the
client unreversed); a node receiving a pod's reply before reversing it is normal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from flowtrace.detect.context import DIR_OUT

if TYPE_CHECKING:
    from flowtrace.detect.context import Context

SEQ_SPACE = 1 << 32

COLUMNS = ("kind", "capture", "request_row", "reply_row", "rst_row", "connection", "reply_connection")
"""kind: 'tcp' or 'dns'; capture: capture index; request_row: the SYN or query; reply_row:
the SYN-ACK or DNS reply from the wrong address; rst_row: the client's RST answering that
SYN-ACK (-1 if none); connection / reply_connection: of the request and reply rows."""


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: np.zeros(0, dtype=np.int64) for c in COLUMNS}).astype({"kind": object})


def _delivered(ctx: Context, rows: np.ndarray) -> np.ndarray:
    """Rows seen where a reply is delivered: endpoint captures, or going out of a host."""
    multi = np.array([n in ctx.multi_interface for n in ctx.capture_names] + [False], dtype=bool)
    return ~multi[ctx.col("capture")[rows]] | (ctx.pdir[rows] == DIR_OUT)


def mismatched_replies(ctx: Context) -> pd.DataFrame:
    """One row per request answered from an unexpected address (columns: COLUMNS).

    The request must be seen where its path starts (hop 0: the client's capture, or the
    first node when the client was not captured), so that its destination is the address
    the client contacted, not one a node already translated.
    """
    parts = [p for p in (_tcp(ctx), _dns(ctx)) if len(p)]
    if not parts:
        return _empty()
    out = pd.concat(parts, ignore_index=True)
    hop = ctx.analysis.packet_hop[out["request_row"].to_numpy()]
    first = (hop >= 0) & (ctx.hop.pos[np.maximum(hop, 0)] == 0)
    out = out[first]
    return out.sort_values(["connection", "request_row"], kind="stable").reset_index(drop=True)


def _tcp(ctx: Context) -> pd.DataFrame:
    a = ctx.analysis
    fl = a.flows
    if fl.empty:
        return _empty()
    flags = ctx.tcp_flags
    proto = ctx.col("proto")
    pf = a.packet_flow
    synack = np.flatnonzero((proto == 6) & ((flags & 0x12) == 0x12) & (pf >= 0))
    if not synack.size:
        return _empty()
    # A SYN-ACK from the wrong address lands in a flow of its own, without the SYN.
    orig_isn = np.full(int(fl["flow_id"].max()) + 1, -1, dtype=np.int64)
    orig_isn[fl["flow_id"].to_numpy()] = fl["orig_isn"].to_numpy()
    synack = synack[(orig_isn[pf[synack]] < 0)]
    synack = synack[_delivered(ctx, synack)]
    if not synack.size:
        return _empty()
    cap, src, dst = ctx.col("capture"), ctx.col("src"), ctx.col("dst")
    sport, dport = ctx.col("sport"), ctx.col("dport")
    seq, ack = ctx.col("seq").astype(np.int64), ctx.col("ack").astype(np.int64)
    isn = (ack[synack] - 1) % SEQ_SPACE
    syn = np.flatnonzero((proto == 6) & ((flags & 0x12) == 0x02) & np.isin(seq, isn)
                         & np.isin(cap, np.unique(cap[synack])))
    if not syn.size:
        return _empty()
    left = pd.DataFrame({"capture": cap[synack], "addr": dst[synack], "port": dport[synack], "isn": isn,
                         "reply_row": synack, "r_src": src[synack], "r_sport": sport[synack]})
    right = pd.DataFrame({"capture": cap[syn], "addr": src[syn], "port": sport[syn], "isn": seq[syn],
                          "request_row": syn, "q_dst": dst[syn], "q_dport": dport[syn]})
    m = left.merge(right, on=["capture", "addr", "port", "isn"])
    m = m[(m["r_src"] != m["q_dst"]) | (m["r_sport"] != m["q_dport"])]
    if m.empty:
        return _empty()
    m = m.sort_values(["request_row", "reply_row"]).drop_duplicates("request_row")
    m = m.sort_values("reply_row").drop_duplicates(["capture", "addr", "port", "isn", "r_src"])
    # The client's RST to that SYN-ACK: from the client to the replying address, seq = its ack.
    rst = np.flatnonzero((proto == 6) & ((flags & 0x04) != 0) & np.isin(cap, m["capture"].to_numpy()))
    rst_row = np.full(len(m), -1, dtype=np.int64)
    if rst.size:
        r = pd.DataFrame({"capture": cap[rst], "addr": src[rst], "port": sport[rst], "r_src": dst[rst],
                          "r_sport": dport[rst], "rseq": seq[rst], "rst_row": rst})
        mm = m.assign(rseq=(m["isn"] + 1) % SEQ_SPACE).reset_index(drop=True)
        j = mm.merge(r, on=["capture", "addr", "port", "r_src", "r_sport", "rseq"], how="left")
        j = j.drop_duplicates("request_row")
        rst_row = j["rst_row"].fillna(-1).to_numpy().astype(np.int64)
    req = m["request_row"].to_numpy().astype(np.int64)
    rep = m["reply_row"].to_numpy().astype(np.int64)
    return pd.DataFrame({"kind": "tcp", "capture": m["capture"].to_numpy().astype(np.int64), "request_row": req,
                         "reply_row": rep, "rst_row": rst_row, "connection": ctx.packet_conn(req),
                         "reply_connection": ctx.packet_conn(rep)})


def _dns(ctx: Context) -> pd.DataFrame:
    a = ctx.analysis
    fl = a.flows
    if fl.empty:
        return _empty()
    proto, dns_id = ctx.col("proto"), ctx.col("dns_id")
    sport, dport = ctx.col("sport"), ctx.col("dport")
    pf = a.packet_flow
    reply = np.flatnonzero((proto == 17) & (dns_id >= 0) & (sport == 53) & (pf >= 0))
    if not reply.size:
        return _empty()
    # A reply from the wrong address is a flow with no query in it.
    n = int(fl["flow_id"].max()) + 1
    resp_pkts = np.zeros(n, dtype=np.int64)
    resp_pkts[fl["flow_id"].to_numpy()] = fl["resp_pkts"].to_numpy()
    orig_p = np.full(n, -1, dtype=np.int64)
    orig_p[fl["flow_id"].to_numpy()] = fl["orig_p"].to_numpy()
    f = pf[reply]
    reply = reply[(orig_p[f] == 53) & (resp_pkts[f] == 0)]
    reply = reply[_delivered(ctx, reply)]
    if not reply.size:
        return _empty()
    cap, src, dst = ctx.col("capture"), ctx.col("src"), ctx.col("dst")
    query = np.flatnonzero((proto == 17) & (dport == 53) & np.isin(dns_id, dns_id[reply])
                           & np.isin(cap, np.unique(cap[reply])))
    if not query.size:
        return _empty()
    left = pd.DataFrame({"capture": cap[reply], "addr": dst[reply], "port": dport[reply], "id": dns_id[reply],
                         "reply_row": reply, "r_src": src[reply]})
    right = pd.DataFrame({"capture": cap[query], "addr": src[query], "port": sport[query], "id": dns_id[query],
                          "request_row": query, "q_dst": dst[query]})
    m = left.merge(right, on=["capture", "addr", "port", "id"])
    m = m[m["r_src"] != m["q_dst"]]
    ts = a.corrected_ts
    m = m[ts[m["reply_row"].to_numpy()] >= ts[m["request_row"].to_numpy()]]
    if m.empty:
        return _empty()
    m = m.sort_values(["request_row", "reply_row"]).drop_duplicates("request_row")
    m = m.drop_duplicates("reply_row")
    req = m["request_row"].to_numpy().astype(np.int64)
    rep = m["reply_row"].to_numpy().astype(np.int64)
    return pd.DataFrame({"kind": "dns", "capture": m["capture"].to_numpy().astype(np.int64), "request_row": req,
                         "reply_row": rep, "rst_row": np.full(req.size, -1, dtype=np.int64),
                         "connection": ctx.packet_conn(req), "reply_connection": ctx.packet_conn(rep)})
