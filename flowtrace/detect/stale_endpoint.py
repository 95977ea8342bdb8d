"""``stale_conntrack_endpoint``: traffic that conntrack still sends to an old endpoint (or
leaves untranslated) after the Service's endpoints changed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.correlate.nat import DNAT, DNAT_PORT
from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import endpoint, plural
from flowtrace.detect.finding import Finding

UNANSWERED_NS = 1_000_000_000
"""Requests sent this long after the last reply, unanswered, count as going nowhere."""

_CAUSES = ("conntrack entries that outlive the endpoint change: kube-proxy flushes UDP entries of removed "
           "endpoints, but a client that keeps its source port (long-lived UDP 'connection') or a missed "
           "cleanup keeps the old DNAT",
           "the entry was created while the Service had no endpoints (no DNAT) and never expired",
           "kube-proxy not running or lagging on that node")


class StaleConntrackEndpoint:
    """``stale_conntrack_endpoint``: an older connection keeps going to an endpoint that no
    longer answers while newer ones go elsewhere, or leaves the node not DNAT'd at all."""

    code = "stale_conntrack_endpoint"
    severity = "medium"
    needs = Needs(vantage_points=1, where="the node doing the DNAT (and the endpoints)")
    supersedes: tuple[str, ...] = ("no_reply", "drop_between_hops")

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per stale connection."""
        h = ctx.analysis.hops
        if h.empty:
            return []
        req = h[h["on_path"].to_numpy() & (ctx.hop.dirc[h["hop_id"].to_numpy()] == 0)]
        dn = req[(req["changes"].to_numpy() & (DNAT | DNAT_PORT)) != 0]
        dn = dn[~dn["changed_at"].astype(str).str.contains(" -> ").to_numpy()]
        if dn.empty:
            return []
        dn = dn.drop_duplicates("connection")
        conns = ctx.connections.reindex(dn["connection"].to_numpy())
        dn = dn.assign(service=(conns["client_dst"].astype(str) + "|" + conns["client_dport"].astype(str) + "|"
                                + conns["proto"].astype(str)).to_numpy(),
                       endpoint=dn["dst"].astype(str).to_numpy(), start=conns["start_ts_ns"].to_numpy(),
                       status=conns["status"].astype(str).to_numpy(), proto_=conns["proto"].to_numpy())
        sel = ctx.hop.dirc[h["hop_id"].to_numpy()]
        last_req = h[sel == 0].groupby("connection")["last_ts_ns"].max()
        last_resp = h[sel == 1].groupby("connection")["last_ts_ns"].max()
        dn = dn.assign(last_req=last_req.reindex(dn["connection"].to_numpy()).to_numpy(),
                       last_resp=last_resp.reindex(dn["connection"].to_numpy()).to_numpy())
        return self._old_endpoint(ctx, dn) + self._untranslated(ctx, req, dn)

    def _old_endpoint(self, ctx: Context, dn: pd.DataFrame) -> list[Finding]:
        """Connections still DNAT'd to an endpoint that stopped answering, while newer
        connections to the same Service through the same node go elsewhere."""
        since = np.where(np.isnan(dn["last_resp"].to_numpy(dtype=float)), dn["start"].to_numpy() - UNANSWERED_NS,
                         np.nan_to_num(dn["last_resp"].to_numpy(dtype=float)))
        tail = dn["last_req"].to_numpy(dtype=float) - since
        finished = (dn["proto_"].to_numpy() == 6) & np.isin(dn["status"].to_numpy(), ("closed", "reset"))
        cand = dn[(tail > UNANSWERED_NS) & ~finished]
        if cand.empty:
            return []
        answered = dn[~np.isnan(dn["last_resp"].to_numpy(dtype=float))]
        out = []
        for row in cand.itertuples(index=False):
            newer = answered[(answered["service"] == row.service) & (answered["capture"] == row.capture)
                             & (answered["endpoint"] != row.endpoint) & (answered["start"] > row.start)
                             & (answered["start"] < row.last_req)]
            if newer.empty:
                continue
            n = newer.iloc[0]
            cid = int(row.connection)
            c = ctx.connections.loc[cid]
            lr = None if np.isnan(row.last_resp) else int(row.last_resp)
            rows = np.flatnonzero(ctx.analysis.packet_hop == int(row.hop_id))
            after = rows[ctx.analysis.corrected_ts[rows] > (lr if lr is not None else 0)]
            service = endpoint(c["client_dst"], c["client_dport"])
            out.append(Finding(
                code=self.code, severity=self.severity, connection=cid, direction="request",
                hop=int(row.hop), segment=f"inside {row.capture}",
                message=(f"{ctx.connection_label(cid)} still goes to {endpoint(row.dst, row.dport)} "
                         f"({plural(after.size, 'packet')} without an answer{' since the last reply' if lr else ''}), "
                         f"while the newer connection {int(n['connection'])} to {service} goes to "
                         f"{endpoint(n['dst'], n['dport'])}: {row.capture}'s conntrack entry still points at an "
                         "endpoint that is gone."),
                evidence=ctx.evidence(np.r_[after[:8], int(n["first_row"])],
                                      "requests DNAT'd to the old endpoint, and a newer connection's DNAT"),
                causes=_CAUSES, details={"old_endpoint": str(row.endpoint), "new_endpoint": str(n["endpoint"]),
                                         "newer_connection": int(n["connection"])}))
        return out

    def _untranslated(self, ctx: Context, req: pd.DataFrame, dn: pd.DataFrame) -> list[Finding]:
        """Unanswered connections to a Service address that leave a node, which DNATs that
        Service for others, untranslated."""
        c = ctx.analysis.connections
        cand = c[~c["dnat"].to_numpy() & (c["response_hops"].to_numpy() == 0)
                 & np.isin(c["proto"].to_numpy(), (6, 17, 132))]
        if cand.empty:
            return []
        services = {(str(cap), svc.rsplit("|", 1)[0]) for cap, svc in zip(dn["capture"], dn["service"], strict=True)}
        out = []
        for row in cand.itertuples(index=False):
            svc = f"{row.client_dst}|{row.client_dport}"
            hr = req[req["connection"].to_numpy() == row.connection]
            for cap, hg in hr.groupby("capture", observed=True):
                if (str(cap), svc) not in services or str(cap) not in ctx.multi_interface:
                    continue
                if not {"in", "out"} <= set(hg["packet_direction"].astype(str)):
                    continue
                cid = int(row.connection)
                rows = np.flatnonzero(np.isin(ctx.analysis.packet_hop, hg["hop_id"].to_numpy()))
                service = endpoint(row.client_dst, row.client_dport)
                out.append(Finding(
                    code=self.code, severity=self.severity, connection=cid, direction="request",
                    hop=int(hg["hop"].iloc[-1]), segment=f"inside {cap}",
                    message=(f"{ctx.connection_label(cid)} passed {cap} without being DNAT'd although {cap} "
                             f"translates {service} for other connections, and got no answer: a stale conntrack "
                             "entry without NAT."),
                    evidence=ctx.evidence(rows[:12], "entered and left the node untranslated"),
                    causes=_CAUSES, details={"node": str(cap)}))
                break
        return out
