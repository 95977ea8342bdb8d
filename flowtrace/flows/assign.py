"""Packets to flows: group by observation point and tuple, split on port reuse and idle timeouts,
and pick each flow's originator.

Everything works on arrays in *sorted order*: packets sorted by group, then time, then
their row (capture order, frame order), so that every group and every flow is one
contiguous block and per-flow values come from ``np.*.reduceat`` over block starts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.flows.timeouts import CONNTRACK_TIMEOUTS

KIND_TCP, KIND_UDP, KIND_ICMP, KIND_OTHER = 0, 1, 2, 3
"""Protocol classes that decide how a flow is split and timed out."""

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

_DIR_FLIP = np.array([1, 0, 2], dtype=np.int8)  # in <-> out, unknown stays


def lower_direction(direction: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Direction (0 in, 1 out, 2 unknown) in which the lower endpoint's packets cross the interface.

    ``direction`` is each packet's own direction code and ``lower`` whether the lower
    endpoint sent it. A packet and its reply at one interface travel opposite ways, so
    both give the same value; the same tuple seen in *and* out with the same sender
    (forwarded back out, or looped) gives two different values and so two flows.
    """
    return np.where(lower, direction, _DIR_FLIP[direction]).astype(np.int8)


def factorize_rows(columns: list[np.ndarray]) -> np.ndarray:
    """Dense int64 ids of the distinct rows of ``columns`` (equal-length non-negative int arrays)."""
    ids: np.ndarray | None = None
    for col in columns:
        if ids is not None and col.size and col.min() == col.max():
            continue  # a constant column does not split anything
        codes, uniques = pd.factorize(col, sort=False)
        codes = codes.astype(np.int64)
        if ids is None:
            ids = codes
        else:
            ids, _ = pd.factorize(ids * np.int64(len(uniques)) + codes, sort=False)
            ids = ids.astype(np.int64)
    if ids is None:
        raise ValueError("no key columns")
    return ids


def sort_order(group: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Permutation sorting packets by (group, ts), ties kept in input (capture, frame) order."""
    return np.lexsort((ts, group))


def block_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Positions ``starts[k] .. starts[k] + lengths[k] - 1`` for every k, concatenated."""
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return offsets + np.arange(total, dtype=np.int64)


def next_true(mask: np.ndarray) -> np.ndarray:
    """For each position j, the smallest i >= j with ``mask[i]``, or ``len(mask)`` if none."""
    n = mask.size
    pos = np.where(mask, np.arange(n, dtype=np.int64), n)
    return np.minimum.accumulate(pos[::-1])[::-1]


def first_in_blocks(mask: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per block ``[starts[k], ends[k])``, the first position where ``mask`` is True, or -1."""
    p = np.flatnonzero(mask)
    if not p.size:
        return np.full(starts.size, -1, dtype=np.int64)
    j = np.searchsorted(p, starts)
    f = p[np.minimum(j, p.size - 1)]
    return np.where((j < p.size) & (f < ends), f, -1)


def last_in_blocks(mask: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per block ``[starts[k], ends[k])``, the last position where ``mask`` is True, or -1."""
    p = np.flatnonzero(mask)
    if not p.size:
        return np.full(starts.size, -1, dtype=np.int64)
    j = np.searchsorted(p, ends) - 1
    f = p[np.maximum(j, 0)]
    return np.where((j >= 0) & (f >= starts), f, -1)


def last_true_before(mask: np.ndarray) -> np.ndarray:
    """For each position j, the largest i < j with ``mask[i]``, or -1 if none."""
    n = mask.size
    pos = np.where(mask, np.arange(n, dtype=np.int64), -1)
    acc = np.maximum.accumulate(pos) if n else pos
    return np.concatenate(([-1], acc[:-1])) if n else acc


def _counter(mask: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))


def split_flows(*, group_start: np.ndarray, kind: np.ndarray, ts: np.ndarray, flags: np.ndarray,
                seq: np.ndarray, ack: np.ndarray, lower: np.ndarray,
                timeouts: dict[str, int]) -> np.ndarray:
    """Where flows start, in sorted order: group starts plus port-reuse and idle-timeout splits.

    A TCP SYN (without ACK) starts a new flow when the flow so far was closed (a RST, or
    FINs both ways), or had a SYN with another ISN, or saw neither a SYN nor a SYN-ACK that
    fits this SYN's ISN; a SYN retransmission (same ISN) stays. A SYN-ACK starts a new flow
    when the flow has no SYN and was closed or had a SYN-ACK with another ISN. Any packet
    after an idle gap longer than conntrack's timeout for the state the flow was in starts a
    new flow. Each rule is judged on the packets of the flow since its own start, so splits
    depend on the splits before them: every candidate found from the group start is proposed
    at once, and each group keeps its proposals up to the first one that the proposed
    segmentation contradicts; groups with a contradiction go round again.

    ``timeouts`` maps the keys of ``CONNTRACK_TIMEOUTS`` to nanoseconds. Returns a bool array.
    """
    m = ts.size
    start = group_start.copy()
    gfirst = np.flatnonzero(group_start)
    gend = np.append(gfirst[1:], m)
    active = np.flatnonzero(gend - gfirst > 1)
    tmo = {k: np.int64(timeouts.get(k, round(v * 1e9))) for k, v in CONNTRACK_TIMEOUTS.items()}
    while active.size:
        idx = block_index(gfirst[active], gend[active] - gfirst[active])
        ctx = _Context(kind[idx], ts[idx], flags[idx], seq[idx], ack[idx], lower[idx], tmo)
        gs = group_start[idx]
        cur = start[idx]
        proposal = cur | ctx.candidates(cur)
        if np.array_equal(proposal, cur):
            break
        pred = ctx.candidates(proposal, members_too=True)
        wrong = np.where(proposal, ~pred, pred) & ~gs
        # Per group, keep the proposal before its first contradiction (exact by induction),
        # plus that position when it is a missed split (the first candidate after a start).
        k = idx.size
        pos = np.arange(k, dtype=np.int64)
        gpos = np.flatnonzero(gs)
        group_of = np.cumsum(gs) - 1
        gend_local = np.append(gpos[1:], k)
        fw = next_true(wrong)[gpos]
        fw = np.where(fw < gend_local, fw, k)[group_of]
        start[idx] = (proposal & (pos < fw)) | (wrong & ~proposal & (pos == fw))
        redo = np.unique(group_of[wrong])
        active = active[redo]
    return start


class _Context:
    """Segmentation-independent arrays for judging split candidates over a block of groups."""

    def __init__(self, kind: np.ndarray, ts: np.ndarray, flags: np.ndarray, seq: np.ndarray,
                 ack: np.ndarray, lower: np.ndarray, tmo: dict[str, np.int64]) -> None:
        self.kind, self.ts, self.seq, self.ack, self.lower, self.tmo = kind, ts, seq, ack, lower, tmo
        tcp = kind == KIND_TCP
        syn = tcp & ((flags & SYN) != 0)
        ackf = (flags & ACK) != 0
        fin = tcp & ((flags & FIN) != 0)
        rst = tcp & ((flags & RST) != 0)
        self.pure_syn = syn & ~ackf
        self.synack = syn & ackf
        self.c_rst = _counter(rst)
        self.c_lo = _counter(lower)
        self.p_fin_lo = np.flatnonzero(fin & lower)
        self.p_fin_hi = np.flatnonzero(fin & ~lower)
        self.p_syn = np.flatnonzero(self.pure_syn)
        self.p_sa = np.flatnonzero(self.synack)
        self.p_sa_lo = np.flatnonzero(self.synack & lower)
        self.p_sa_hi = np.flatnonzero(self.synack & ~lower)
        self.p_lo = np.flatnonzero(lower)
        self.p_hi = np.flatnonzero(~lower)
        gap = ts - np.concatenate((ts[:1], ts[:-1]))
        shortest = np.select([tcp, kind == KIND_UDP, kind == KIND_ICMP],
                             [tmo["tcp_close"], tmo["udp"], tmo["icmp"]], tmo["generic"])
        self.check = np.flatnonzero(self.pure_syn | self.synack | (gap > np.minimum(shortest, min(tmo.values()))))
        self.gap = gap

    def candidates(self, start: np.ndarray, *, members_too: bool = False) -> np.ndarray:
        """Positions that would start a flow given flows start at ``start`` (bool array).

        With ``members_too`` each position of ``start`` is judged against the segment before
        it (so that proposed starts can be confirmed); otherwise starts are never candidates.
        """
        k = start.size
        out = np.zeros(k, dtype=bool)
        i = self.check
        if not i.size:
            return out
        pos = np.arange(k, dtype=np.int64)
        seg = np.maximum.accumulate(np.where(start, pos, 0))
        if members_too:
            seg = np.concatenate(([0], seg[:-1]))
        ss = seg[i]
        valid = i > ss
        lower = self.lower[i]

        def first_in(p: np.ndarray) -> np.ndarray:
            j = np.searchsorted(p, ss)
            f = p[np.minimum(j, max(p.size - 1, 0))] if p.size else np.zeros(i.size, dtype=np.int64)
            return np.where((j < p.size) & (f < i), f, -1)

        def last_before(p: np.ndarray) -> np.ndarray:
            j = np.searchsorted(p, i) - 1
            f = p[np.maximum(j, 0)] if p.size else np.zeros(i.size, dtype=np.int64)
            return np.where((j >= 0) & (f >= ss), f, -1)

        c_lo = self.c_lo

        def other_after(first: np.ndarray) -> np.ndarray:
            f = np.maximum(first, 0)
            lo_after = c_lo[i] - c_lo[np.minimum(f + 1, i)]
            hi_after = (i - np.minimum(f + 1, i)) - lo_after
            return (first >= 0) & np.where(self.lower[f], hi_after > 0, lo_after > 0)

        tmo = self.tmo
        n_rst = self.c_rst[i] - self.c_rst[ss]
        fin_lo, fin_hi = first_in(self.p_fin_lo), first_in(self.p_fin_hi)
        both_fin = (fin_lo >= 0) & (fin_hi >= 0)
        one_fin = (fin_lo >= 0) ^ (fin_hi >= 0)
        later_fin = np.maximum(fin_lo, fin_hi)
        first_sa = first_in(self.p_sa)
        prev_syn = last_before(self.p_syn)
        t_tcp = np.select(
            [n_rst > 0, both_fin & other_after(later_fin), both_fin, one_fin & other_after(later_fin), one_fin,
             (first_sa >= 0) & other_after(first_sa), first_sa >= 0, prev_syn >= 0],
            [tmo["tcp_close"], tmo["tcp_time_wait"], tmo["tcp_last_ack"], tmo["tcp_close_wait"],
             tmo["tcp_fin_wait"], tmo["tcp_established"], tmo["tcp_syn_recv"], tmo["tcp_syn_sent"]],
            tmo["tcp_established"],
        )
        n_lo = c_lo[i] - c_lo[ss]
        replied = (n_lo > 0) & ((i - ss) - n_lo > 0)
        old = self.ts[np.maximum(i - 1, 0)] - self.ts[ss] > 2_000_000_000
        t_udp = np.where(replied & old, tmo["udp_stream"], tmo["udp"])
        kind = self.kind[i]
        limit = np.select([kind == KIND_TCP, kind == KIND_UDP, kind == KIND_ICMP],
                          [t_tcp, t_udp, tmo["icmp"]], tmo["generic"])
        timed_out = self.gap[i] > limit

        closed = (n_rst > 0) | both_fin
        seq = self.seq[i]
        seq_changed = (prev_syn >= 0) & (self.seq[np.maximum(prev_syn, 0)] != seq)
        nxt = (seq + 1) & 0xFFFFFFFF
        last_sa = last_before(self.p_sa)
        sa = np.maximum(last_sa, 0)
        sa_fits = (last_sa >= 0) & (self.lower[sa] != lower) & (self.ack[sa] == nxt)
        first_same = np.where(lower, first_in(self.p_lo), first_in(self.p_hi))
        same_fits = (first_same >= 0) & (self.seq[np.maximum(first_same, 0)] == nxt)
        new_syn = self.pure_syn[i] & (closed | seq_changed | ((prev_syn < 0) & ~sa_fits & ~same_fits))
        psa = np.where(lower, last_before(self.p_sa_lo), last_before(self.p_sa_hi))
        sa_changed = (psa >= 0) & (self.seq[np.maximum(psa, 0)] != seq)
        new_synack = self.synack[i] & (prev_syn < 0) & (closed | sa_changed)
        out[i] = valid & (timed_out | new_syn | new_synack)
        if not members_too:
            out &= ~start
        return out


def originators(*, flow_start: np.ndarray, kind: np.ndarray, flags: np.ndarray, lower: np.ndarray,
                icmp_request: np.ndarray) -> np.ndarray:
    """Per flow, whether the lower endpoint is the originator.

    TCP: the sender of the first SYN (without ACK); else the receiver of the first SYN-ACK;
    else the sender of the first packet (the flow started before the capture). ICMP: the
    sender of the first request type (echo, timestamp, solicitation…), else of the first
    packet. Anything else: the sender of the first packet, as conntrack sees it.
    """
    starts = np.flatnonzero(flow_start)
    ends = np.append(starts[1:], flow_start.size)
    tcp = kind == KIND_TCP
    syn = (flags & SYN) != 0
    ackf = (flags & ACK) != 0
    orig_lower = lower[starts].copy()
    for mask, receiver in ((icmp_request, False), (tcp & syn & ackf, True), (tcp & syn & ~ackf, False)):
        first = first_in_blocks(mask, starts, ends)
        found = first >= 0
        orig_lower[found] = lower[first[found]] ^ receiver
    return orig_lower
