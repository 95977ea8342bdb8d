"""``connection_reset``: a connection ended (or was refused) by a RST; who sent it and why."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import endpoint, seconds
from flowtrace.detect.finding import Evidence, Finding

SEQ_SPACE = 1 << 32
HELD_NS = 120_000_000_000
"""How long after a connection ended its server-side tuple may still be held (conntrack's
TIME_WAIT is 120 s, a Linux socket's 60 s): an earlier connection on the tuple that ended
longer ago is not named as the one the server still held."""


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
        isn = _client_isns(ctx, rows)
        acks = rows[((flags[rows] & 0x16) == 0x10) & (pdir[rows] == 1)]
        ack_conn = ctx.packet_conn(acks)
        expected = isn.reindex(ack_conn).to_numpy()
        odd_ack = ~np.isnan(expected) & (ctx.col("ack")[acks] != (np.nan_to_num(expected).astype(np.int64) + 1)
                                         % SEQ_SPACE)
        challenged = set(ack_conn[odd_ack].tolist())
        mm = ctx.mismatched_replies
        odd = set(mm["connection"].tolist()) if len(mm) else set()
        group = a.packet_group
        holders = previous_holders(c) if challenged else {}
        held_rows = _rows_of(ctx, [holders[x] for x in challenged if x in holders])
        retried = _retries(ctx, c, challenged)
        # Of each earlier connection: (its client endpoint, when it ended).
        earlier = {int(e.connection): (endpoint(e.client_src, e.client_sport), int(e.end_ts_ns))
                   for e in c[c["connection"].isin(list(held_rows)).to_numpy()].itertuples(index=False)}
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
            extra: tuple[Evidence, ...] = ()
            details: dict[str, Any] = {"sender": "client" if by_client else "server", "first_seen": origin,
                                       "service": endpoint(row.client_dst, row.client_dport)}
            if str(row.status) == "rejected":
                target = f" {endpoint(row.server_dst, row.server_dport)}" if row.dnat else ""
                msg = (f"The SYN of {label} was answered with RST (first seen at {origin}): the endpoint{target} "
                       "exists but nothing listens on that port.")
                causes = ("the server process is not listening on the target port (wrong targetPort, crashed app)",
                          "a firewall rule answering with a TCP reset")
            elif by_client and cid in challenged:
                challenge = acks[odd_ack & (ack_conn == cid)]
                evidence_rows = np.r_[challenge[:4], sightings]
                held = holders.get(cid)
                if held is not None and (int(row.start_ts_ns) - earlier[held][1] > HELD_NS
                                         or not _acknowledged(ctx, challenge, held_rows[held], str(row.server_capture))):
                    held = None
                if held is None:
                    msg = (f"{label} was reset by the client because the server side answered its SYN with an ACK "
                           f"for another connection (RST first seen at {origin}): it still held an older connection "
                           "on the same tuple, and the client had to retry.")
                    causes = _REUSED
                else:
                    msg, causes, more = _held_tuple(row, label, origin, held, *earlier[held])
                    details.update(more)
                    extra = ctx.evidence(_last_rows(ctx, held_rows[held], str(row.server_capture)),
                                         f"the end of connection {held} on the same tuple")
                if cid in retried:
                    again, wait, status = retried[cid]
                    msg += (f" Its SYN, sent again {seconds(wait)} later, is connection {again} ({status}): the "
                            "client waited that long.")
                    details.update(retry_connection=again, retry_after_ns=wait)
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
                message=msg, evidence=ctx.evidence(evidence_rows, "the RST (and what it answered)") + extra,
                causes=causes, details=details))
        return out


_REUSED = ("the tuple was reused while the server side still held the previous connection (TIME_WAIT): "
           "a SNAT port reused too early (MASQUERADE --random-fully) or a client reusing ports quickly",
           "IPVS or conntrack reusing an entry of a closed connection")
_SNAT_REUSED = ("the node's SNAT gave a new connection a port whose previous connection the server still held in "
                "TIME_WAIT (MASQUERADE --random-fully picks among all ports; many connections from one node to one "
                "endpoint make it likely)",
                "IPVS or conntrack reusing an entry of a closed connection")
_CLIENT_REUSED = ("the client reused its source port before the server's TIME_WAIT (60 s on Linux) ended",
                  "IPVS or conntrack reusing an entry of a closed connection")

_SERVER_TUPLE = ["proto", "server_capture", "server_src", "server_sport", "server_dst", "server_dport"]


def previous_holders(connections: pd.DataFrame) -> dict[int, int]:
    """For each connection, the connection that last had its server-side tuple (as the server
    saw it) before it started, where one did: connection -> that earlier connection."""
    c = connections[connections["server_capture"].notna().to_numpy()]
    earlier, later = _successive(c, _SERVER_TUPLE)
    conn = c["connection"].to_numpy()
    return dict(zip(conn[later].tolist(), conn[earlier].tolist(), strict=True))


def _successive(c: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(earlier, later): positions in ``c`` (a connections table) of each two connections
    with the same ``keys`` that follow one another in start order."""
    key = c[keys].astype(str).groupby(keys, sort=False).ngroup().to_numpy()
    order = np.lexsort((c["connection"].to_numpy(), c["start_ts_ns"].to_numpy(), key))
    same = np.flatnonzero(key[order][1:] == key[order][:-1])
    return order[same], order[same + 1]


def _held_tuple(row: Any, label: str, origin: str, held: int, earlier: str, ended_ns: int
                ) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """Message, causes and details of a reset whose server side still held connection ``held``
    (``row``: the reset connection's row of the connections table, ``label`` its name;
    ``origin``: where its RST was first seen; ``earlier``: the held connection's client
    endpoint, ``ended_ns`` its end)."""
    tuple_ = f"{endpoint(row.server_src, row.server_sport)} -> {endpoint(row.server_dst, row.server_dport)}"
    gap = int(row.start_ts_ns) - ended_ns
    when = f"which ended {seconds(gap)} before" if gap >= 0 else "which was still open"
    there = "TIME_WAIT at the server" if gap >= 0 else "still open at the server"
    if earlier != endpoint(row.client_src, row.client_sport):
        how = f"connection {held} came from {earlier}: the SNAT gave this connection the port it had ({there})."
        causes = _SNAT_REUSED
    else:
        how = f"connection {held} came from the same client port: the client reused it ({there})."
        causes = _CLIENT_REUSED
    msg = (f"{label} was reset by the client because the server side answered its SYN with an ACK for another "
           f"connection (RST first seen at {origin}): {row.server_capture} still held connection {held} on the same "
           f"tuple {tuple_}, {when}, and the client had to retry; {how}")
    return msg, causes, {"previous_connection": held, "server_tuple": tuple_, "previous_ended_ns_before": gap,
                         "previous_client": earlier}


def _retries(ctx: Context, c: pd.DataFrame, connections: set[int]) -> dict[int, tuple[int, int, str]]:
    """For each of ``connections`` whose SYN the client sent again (the same ISN, later, on
    the same client tuple: conntrack made a new entry for it, so flowtrace a new connection):
    (that connection, how much later in ns, its status)."""
    if not connections:
        return {}
    isn = _client_isns(ctx, np.arange(ctx.tcp_flags.size))
    if isn.empty:
        return {}
    t = c[c["connection"].isin(isn.index).to_numpy()]
    t = t.assign(isn=isn.reindex(t["connection"].to_numpy()).to_numpy())
    earlier, later = _successive(t, ["proto", "client_src", "client_sport", "client_dst", "client_dport", "isn"])
    cid, start, status = t["connection"].to_numpy(), t["start_ts_ns"].to_numpy(), t["status"].astype(str).to_numpy()
    return {int(cid[e]): (int(cid[n]), int(start[n] - start[e]), str(status[n]))
            for e, n in zip(earlier.tolist(), later.tolist(), strict=True) if int(cid[e]) in connections}


def _client_isns(ctx: Context, rows: np.ndarray) -> pd.Series:
    """The client's initial sequence number of each connection with a SYN among packet
    ``rows``: that of its earliest SYN (corrected time; a retransmitted SYN repeats it),
    indexed by connection."""
    flags, pdir = ctx.tcp_flags, ctx.analysis.packet_path_direction
    syn = rows[((flags[rows] & 0x12) == 0x02) & (pdir[rows] == 0)]
    conn = ctx.packet_conn(syn)
    syn, conn = syn[conn >= 0], conn[conn >= 0]
    order = np.lexsort((ctx.analysis.corrected_ts[syn], conn))
    syn, conn = syn[order], conn[order]
    first = np.r_[True, conn[1:] != conn[:-1]] if conn.size else np.zeros(0, dtype=bool)
    return pd.Series(ctx.col("seq")[syn[first]].astype(np.int64), index=conn[first])


def _rows_of(ctx: Context, connections: list[int]) -> dict[int, np.ndarray]:
    """Packet rows of each of ``connections`` (both directions), in corrected time order."""
    rows = ctx.connection_rows(connections)
    if not rows.size:
        return {}
    rows = rows[np.argsort(ctx.analysis.corrected_ts[rows], kind="stable")]
    conn = ctx.packet_conn(rows)
    order = np.argsort(conn, kind="stable")
    rows, conn = rows[order], conn[order]
    cuts = np.flatnonzero(conn[1:] != conn[:-1]) + 1
    return {int(c[0]): r for c, r in zip(np.split(conn, cuts), np.split(rows, cuts), strict=True)}


def _acknowledged(ctx: Context, challenge: np.ndarray, held_rows: np.ndarray, capture: str) -> bool:
    """Whether a challenge ACK (rows ``challenge``) acknowledges exactly where the client's
    side of the earlier connection (its rows ``held_rows``) ended at ``capture``: the sequence
    number the server still expects on it (the last client segment's, after its payload, SYN
    and FIN)."""
    rows = _last_rows(ctx, held_rows, capture, direction=0)[-1:]
    if not rows.size or not challenge.size:
        return False
    r = int(rows[0])
    flags = int(ctx.tcp_flags[r])
    end = (int(ctx.col("seq")[r]) + int(ctx.col("payload_len")[r]) + (flags & 0x01) + ((flags >> 1) & 0x01)) % SEQ_SPACE
    return bool(np.any(ctx.col("ack")[challenge].astype(np.int64) == end))


def _last_rows(ctx: Context, rows: np.ndarray, capture: str, direction: int | None = None) -> np.ndarray:
    """The last two of a connection's ``rows`` (in time order) of one ``direction`` (0
    request, 1 response, None both) at ``capture`` (its close as the server saw it), or
    anywhere when that capture did not see it."""
    if direction is not None:
        rows = rows[ctx.analysis.packet_path_direction[rows] == direction]
    there = rows[ctx.col("capture")[rows] == ctx.capture_names.index(capture)] if capture in ctx.capture_names \
        else rows[:0]
    return (there if there.size else rows)[-2:]
