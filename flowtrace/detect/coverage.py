"""Did a capture see a given moment? Capture spans in the reference clock, and capture loss.

Absence of a packet is evidence only where the capture that should have seen it was
running at that time and reports no loss. A capture is taken to run from its first to
its last packet (pcap and pcapng record no start or stop time); times are compared in
the reference capture's clock (``Analysis.offsets``). Loss is what the capture itself
reports (pcapng interface statistics: ifdrop + osdrop) or what its packets betray: the
peer acknowledging TCP bytes the capture never saw. A pcap file has no drop counters,
so it counts as lossless unless its packets say otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from flowtrace.detect.evidence import seconds

if TYPE_CHECKING:
    from flowtrace.analysis import Analysis
    from flowtrace.detect.context import Context

SEQ_SPACE = 1 << 32
SETTLE_NS = 1_000_000
"""A packet is expected at the next observation point within this time (forwarding inside
a host takes microseconds): a capture must run at least this long after the packet."""
MAX_GAP = 1 << 26
"""An acknowledgement further than this beyond the captured bytes belongs to something else
(a challenge ACK of an older connection on a reused tuple), not to lost packets."""
LOSS_MARGIN_NS = 1_000_000_000
"""Around a packet-level sign of capture loss, absences are unknown for this long."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UnseenAck:
    """A capture saw one side acknowledge bytes of the other that it never captured."""

    capture: str
    """Capture name."""
    flow: int
    """flows.flow_id at that observation point."""
    ack_row: int
    """Packets row of the first acknowledgement beyond the captured bytes."""
    before_row: int
    """Packets row of the last captured segment before the hole (-1 if none)."""
    missing_bytes: int
    """Bytes acknowledged but never captured (up to that acknowledgement)."""
    start_ns: int
    """Corrected time of the segment before the hole (or the ack), for loss windows."""
    end_ns: int
    """Corrected time of the acknowledgement."""


@dataclass(slots=True, kw_only=True)
class Span:
    """One capture's time span and loss."""

    first_ns: int | None
    """First packet, reference clock (None: no packets)."""
    last_ns: int | None
    """Last packet, reference clock."""
    drops: int | None
    """Drops the capture reports (pcapng ISB ifdrop + osdrop); None when it cannot say."""
    aligned: bool
    """Its clock was aligned with the reference by shared packets (or it is the reference)."""
    loss_windows: list[tuple[int, int]] = field(default_factory=list)
    """Reference-clock intervals where its packets show loss."""


class Coverage:
    """Capture spans and loss, with the question detectors ask: was capture X looking at T?"""

    def __init__(self, analysis: Analysis, unseen: list[UnseenAck]) -> None:
        self.spans: dict[str, Span] = {}
        many = len([s for s in analysis.captures if s.packets]) > 1
        for s in analysis.captures:
            o = analysis.offsets.get(s.capture)
            off = o.offset_ns if o is not None else 0
            aligned = o is not None and (o.samples > 0 or o.reference == s.capture or not many)
            first = None if s.first_ts_ns is None else s.first_ts_ns - off
            last = None if s.last_ts_ns is None else s.last_ts_ns - off
            self.spans[s.capture] = Span(first_ns=first, last_ns=last, drops=s.capture_drops, aligned=aligned)
        for u in unseen:
            span = self.spans.get(u.capture)
            if span is not None:
                span.loss_windows.append((u.start_ns - LOSS_MARGIN_NS, u.end_ns + LOSS_MARGIN_NS))

    def covers(self, capture: str, ts_ns: np.ndarray | int, *, settle_ns: int = SETTLE_NS) -> np.ndarray:
        """bool per time: ``capture`` ran from before ``ts_ns`` until ``settle_ns`` after it,
        reports no drops and shows no loss around it."""
        ts = np.atleast_1d(np.asarray(ts_ns, dtype=np.int64))
        span = self.spans.get(capture)
        if span is None or span.first_ns is None or span.last_ns is None or (span.drops or 0) > 0:
            return np.zeros(ts.size, dtype=bool)
        ok = (ts >= span.first_ns) & (ts + settle_ns <= span.last_ns)
        for lo, hi in span.loss_windows:
            ok &= ~((ts >= lo) & (ts <= hi))
        return ok

    def why_not(self, capture: str, ts_ns: int, *, settle_ns: int = SETTLE_NS) -> str:
        """Why ``capture`` cannot vouch for ``ts_ns``, in words ('' when it can)."""
        span = self.spans.get(capture)
        if span is None or span.first_ns is None or span.last_ns is None:
            return f"capture {capture} holds no packets"
        if (span.drops or 0) > 0:
            return f"capture {capture} reports {span.drops} dropped packets"
        if ts_ns < span.first_ns:
            return f"capture {capture} starts {seconds(span.first_ns - ts_ns)} later"
        if ts_ns + settle_ns > span.last_ns:
            return f"capture {capture} ends {seconds(max(ts_ns - span.last_ns, 0))} before it" \
                if ts_ns > span.last_ns else f"capture {capture} ends right after it"
        for lo, hi in span.loss_windows:
            if lo <= ts_ns <= hi:
                return f"capture {capture} lost packets around then (bytes acknowledged that it never saw)"
        return ""

    def aligned(self, capture: str) -> bool:
        """Whether ``capture``'s clock is aligned with the reference (else spans assume offset 0)."""
        span = self.spans.get(capture)
        return bool(span and span.aligned)


def acked_unseen(ctx: Context) -> list[UnseenAck]:
    """Per TCP flow with content gaps (flows.missed_bytes > 0): the first acknowledgement
    of bytes the observation point never captured, if any.

    Only flows Zeek already counts gaps for are examined (a cheap filter). A flow is cut
    into epochs at each SYN with a new ISN (a reused tuple is a new connection); within
    one, a side's bytes are captured up to the first hole, and an ACK from the other side
    beyond that hole (by less than MAX_GAP) proves the capture lost them. A gap followed
    by later data but never acknowledged is loss on the network, not in the capture.
    """
    a = ctx.analysis
    fl = a.flows
    if fl.empty:
        return []
    cand = (fl["proto"].to_numpy() == 6) & (fl["missed_bytes"].to_numpy() > 0)
    if not cand.any():
        return []
    flow_ids = fl["flow_id"].to_numpy()[cand]
    rows = np.flatnonzero(np.isin(a.packet_flow, flow_ids))
    if not rows.size:
        return []
    n = int(fl["flow_id"].max()) + 1
    orig_addr = np.full(n, -2, dtype=np.int64)
    orig_port = np.full(n, -2, dtype=np.int64)
    orig_addr[fl["flow_id"].to_numpy()] = _addr_codes(ctx, fl["orig_h"])
    orig_port[fl["flow_id"].to_numpy()] = fl["orig_p"].to_numpy()
    pf = a.packet_flow[rows]
    ts = a.corrected_ts[rows]
    order = np.lexsort((rows, ts, pf))
    rows, pf, ts = rows[order], pf[order], ts[order]
    flags = ctx.tcp_flags[rows]
    seq = ctx.col("seq")[rows].astype(np.int64)
    ack = ctx.col("ack")[rows].astype(np.int64)
    orig = (ctx.col("src")[rows] == orig_addr[pf]) & (ctx.col("sport")[rows] == orig_port[pf])
    # Epochs: a new flow, or an originator SYN with a new ISN.
    syn = orig & ((flags & 0x12) == 0x02)
    new_flow = np.r_[True, pf[1:] != pf[:-1]]
    syn_i = np.flatnonzero(syn)
    new_isn = np.zeros(rows.size, dtype=bool)
    if syn_i.size:
        prev_same = np.r_[False, (pf[syn_i][1:] == pf[syn_i][:-1]) & (seq[syn_i][1:] == seq[syn_i][:-1])]
        new_isn[syn_i[~prev_same]] = True
    epoch = np.cumsum(new_flow | new_isn)
    side = np.where(orig, 0, 1)
    key = epoch * 2 + side
    length = ctx.col("payload_len")[rows].astype(np.int64) + ((flags & 0x02) != 0) + ((flags & 0x01) != 0)
    base = pd.Series(seq).groupby(key).first()
    rel = (seq - base.reindex(key).to_numpy()) % SEQ_SPACE
    valid = rel < SEQ_SPACE // 2
    srt = np.flatnonzero(valid)[np.lexsort((rel[valid], key[valid]))]
    k, r, e = key[srt], rel[srt], rel[srt] + length[srt]
    run_end = pd.Series(e).groupby(k).cummax().to_numpy()
    same = np.r_[False, k[1:] == k[:-1]]
    hole = same & (r > np.r_[0, run_end[:-1]])
    # Contiguous captured bytes of each key: up to the first hole (or everything).
    first_hole = pd.Series(np.flatnonzero(hole)).groupby(k[hole]).first()
    last_of = pd.Series(np.arange(k.size)).groupby(k).last()
    end_i = last_of.copy()
    end_i.loc[first_hole.index] = first_hole.to_numpy() - 1
    prefix_end = pd.Series(run_end[end_i.to_numpy()], index=end_i.index)
    before_row = pd.Series(rows[srt[end_i.to_numpy()]], index=end_i.index)
    nxt = pd.Series(np.where(np.isin(end_i.index, first_hole.index),
                             r[np.minimum(end_i.to_numpy() + 1, k.size - 1)], -1), index=end_i.index)
    active = pd.Series(((flags & 0x10) != 0) & ((flags & 0x06) == 0)).groupby(key).any()
    # Acknowledgements from the other side of the same epoch.
    ak = np.flatnonzero((flags & 0x10) != 0)
    sender = epoch[ak] * 2 + (1 - side[ak])
    pe = prefix_end.reindex(sender).to_numpy()
    bs = base.reindex(sender).to_numpy()
    act = active.reindex(sender).fillna(False).to_numpy().astype(bool)
    ok = ~np.isnan(pe) & act
    ak, sender, pe, bs = ak[ok], sender[ok], pe[ok].astype(np.int64), bs[ok].astype(np.int64)
    ack_rel = (ack[ak] - bs) % SEQ_SPACE
    beyond = (ack_rel > pe) & (ack_rel - pe < MAX_GAP)
    if not beyond.any():
        return []
    hit = pd.DataFrame({"key": sender[beyond], "i": ak[beyond], "ack_rel": ack_rel[beyond]}).drop_duplicates("key")
    caps = fl.set_index("flow_id")["capture"].astype(object)
    out = []
    for key_, i, arel in zip(hit["key"].tolist(), hit["i"].tolist(), hit["ack_rel"].tolist(), strict=True):
        p_end = int(prefix_end.loc[key_])
        nx = int(nxt.loc[key_])
        missing = (min(arel, nx) if nx > p_end else arel) - p_end
        before = int(before_row.loc[key_])
        t_before = a.corrected_ts[before]
        out.append(UnseenAck(capture=str(caps.loc[int(pf[i])]), flow=int(pf[i]), ack_row=int(rows[i]),
                             before_row=before, missing_bytes=max(int(missing), 1),
                             start_ns=int(min(t_before, ts[i])), end_ns=int(ts[i])))
    return out


def _addr_codes(ctx: Context, series: pd.Series) -> np.ndarray:
    """Codes in ``ctx.addresses`` of an address column of another table (-1 if unknown)."""
    from flowtrace.detect.context import remap

    cats = pd.Index([str(c) for c in series.cat.categories], dtype=object)
    return remap(series.cat.codes.to_numpy(), ctx.addresses.get_indexer(cats)).astype(np.int64)


def capture_losses(ctx: Context) -> list[UnseenAck]:
    """The packet-level signs of capture loss (shared by Coverage and capture_drops)."""
    return ctx.unseen_acks

