"""Packets to flows: group by observation point and tuple, split on port reuse and idle timeouts,
and pick each flow's originator.

Everything works on arrays in *sorted order*: packets sorted by group, then time, then
their row (capture order, frame order), so that every group and every flow is one
contiguous block and per-flow values come from ``np.*.reduceat`` over block starts.
"""

from __future__ import annotations

import numpy as np

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


def point_direction(group: np.ndarray, direction: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Per row, the direction that sets its flow's observation point apart: ``lower_direction``,
    except in a group (one interface, one tuple) where both endpoints' packets cross the
    interface the same way and only that way, where it is unknown (2).

    Both ways "in" is a loopback interface in a ``tcpdump -i any`` capture (each packet is
    seen once, as received) or a mirror port: there the direction tells the two sides of
    one connection apart, not two points that saw it. ``group`` numbers the rows' groups
    (0..n-1), ``direction`` and ``lower`` are as for ``lower_direction``.
    """
    ld = lower_direction(direction, lower)
    if not group.size:
        return ld
    # Which of the six (sender, direction) pairs each group has, as bits: 1 << (lower * 3 + direction).
    pair = group * np.int64(6) + lower.astype(np.int64) * 3 + direction.astype(np.int64)
    seen = (np.bincount(pair, minlength=(int(group.max()) + 1) * 6).reshape(-1, 6) > 0) @ (1 << np.arange(6))
    one_way = (seen == 0b001_001) | (seen == 0b010_010)  # both senders, all in / all out
    if one_way.any():
        ld[one_way[group]] = 2
    return ld


def factorize_rows(columns: list[np.ndarray]) -> np.ndarray:
    """Dense int64 ids (0..n-1, in no particular order) of the distinct rows of ``columns``
    (equal-length integer arrays)."""
    ids: np.ndarray | None = None
    for col in columns:
        if ids is not None and col.size and col.min() == col.max():
            continue  # a constant column does not split anything
        codes, distinct = dense_ids(col)
        if ids is None:
            ids = codes
        else:
            ids, _ = dense_ids(ids * np.int64(distinct) + codes)
    if ids is None:
        raise ValueError("no key columns")
    return ids


LOOKUP_RANGE = 1 << 22
"""Values spanning fewer than this many integers are numbered through a lookup table."""
_FIBONACCI = np.uint64(0x9E3779B97F4A7C15)


def dense_ids(values: np.ndarray) -> tuple[np.ndarray, int]:
    """(Per value of ``values``, an integer array, the int64 id of its distinct value; the
    number of distinct values k), ids 0..k-1 in no particular order.

    The distinct values come from numpy's hash table (``np.unique(sorted=False)``); each
    value finds its id through a lookup table when they span few integers, else through
    an open-addressing table of at least four slots per distinct value, probed for all
    values at once (Fibonacci hashing, linear probing: a round per extra probe, for the
    few values whose slot another value took first). A sort would cost ten times more.
    """
    n = values.size
    if not n:
        return np.zeros(0, dtype=np.int64), 0
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < LOOKUP_RANGE:
        seen = np.zeros(hi - lo + 1, dtype=bool)
        seen[values - lo] = True
        lut = np.cumsum(seen, dtype=np.int64) - 1
        return lut[values - lo], int(lut[-1]) + 1
    try:
        distinct = np.unique(values, sorted=False)
    except TypeError:  # numpy before 2.3 sorts
        distinct = np.unique(values)
    k = distinct.size
    bits = max(int(4 * k - 1).bit_length(), 3)
    mask = (1 << bits) - 1
    shift = np.uint64(64 - bits)

    def home(v: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return ((v.astype(np.int64).view(np.uint64) * _FIBONACCI) >> shift).astype(np.intp)

    table = np.full(mask + 1, -1, dtype=np.int64)
    slot = home(distinct)
    pending = np.arange(k)
    while pending.size:  # insert: each distinct value takes the first free slot from its home
        at = slot[pending]
        free = table[at] < 0
        table[at[free]] = pending[free]  # several on one free slot: one of them gets it
        pending = pending[table[slot[pending]] != pending]
        slot[pending] = (slot[pending] + 1) & mask
    at = home(values)
    ids = table[at]
    wrong = np.flatnonzero(distinct[ids] != values)  # every slot on a value's probe path is taken
    while wrong.size:
        at[wrong] = (at[wrong] + 1) & mask
        found = table[at[wrong]]
        hit = distinct[found] == values[wrong]
        ids[wrong[hit]] = found[hit]
        wrong = wrong[~hit]
    return ids, k


def sort_order(group: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Permutation sorting packets by (group, ts), ties kept in input (capture, frame) order.

    ``group`` holds dense ids (0..G-1). With fewer than 65536 groups the group sort is
    numpy's stable radix sort on uint16, after a stable sort by time when rows are not
    already in time order.
    """
    if group.size and group.max() < 65536:
        in_time = bool((ts[1:] >= ts[:-1]).all())
        by_time = np.arange(ts.size) if in_time else np.argsort(ts, kind="stable")
        return by_time[np.argsort(group[by_time].astype(np.uint16), kind="stable")]
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
    for _ in range(m + 1):  # each round adds at least one split to every group it keeps
        if not active.size:
            break
        idx = block_index(gfirst[active], gend[active] - gfirst[active])
        if idx.size == m:  # every position (no group of one packet): no copies to gather
            ctx = _Context(kind, ts, flags, seq, ack, lower, tmo)
            gs, cur = group_start, start.copy()
        else:
            ctx = _Context(kind[idx], ts[idx], flags[idx], seq[idx], ack[idx], lower[idx], tmo)
            gs, cur = group_start[idx], start[idx]
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
        self.p_rst = np.flatnonzero(rst)
        self.p_fin_lo = np.flatnonzero(fin & lower)
        self.p_fin_hi = np.flatnonzero(fin & ~lower)
        self.p_syn = np.flatnonzero(self.pure_syn)
        self.p_sa = np.flatnonzero(self.synack)
        self.p_sa_lo = np.flatnonzero(self.synack & lower)
        self.p_sa_hi = np.flatnonzero(self.synack & ~lower)
        self.p_lo = np.flatnonzero(lower)
        self.p_hi = np.flatnonzero(~lower)
        gap = ts - np.concatenate((ts[:1], ts[:-1]))
        shortest = np.array([tmo["tcp_close"], tmo["udp"], tmo["icmp"], tmo["generic"]], dtype=np.int64)
        shortest = np.minimum(shortest, min(tmo.values()))  # a split needs a gap above the least timeout
        long_gap = gap > shortest[kind]
        self.check = np.flatnonzero(self.pure_syn | self.synack | long_gap)
        self.gap = gap[self.check]
        self.long_gap = long_gap[self.check]

    def candidates(self, start: np.ndarray, *, members_too: bool = False) -> np.ndarray:
        """Positions that would start a flow given flows start at ``start`` (bool array).

        With ``members_too`` each position of ``start`` is judged against the segment before
        it (so that proposed starts can be confirmed); otherwise starts are never candidates.
        """
        out = np.zeros(start.size, dtype=bool)
        i = self.check
        if not i.size:
            return out
        starts = np.flatnonzero(start)
        # the segment start of each checked position (the start before it, with members_too)
        ss = starts[np.maximum(np.searchsorted(starts, i, side="left" if members_too else "right") - 1, 0)]
        valid = i > ss
        hit = np.zeros(i.size, dtype=bool)
        t = np.flatnonzero(valid & self.long_gap)
        if t.size:
            hit[t] = self._timed_out(i[t], ss[t], self.gap[t])
        r = np.flatnonzero(valid & (self.pure_syn[i] | self.synack[i]))
        if r.size:
            hit[r] |= self._reused(i[r], ss[r])
        out[i[hit]] = True
        if not members_too:
            out &= ~start
        return out

    @staticmethod
    def _first_in(p: np.ndarray, ss: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Per query, the first position of ``p`` in [ss, i), or -1."""
        if not p.size:
            return np.full(i.size, -1, dtype=np.int64)
        j = np.searchsorted(p, ss)
        f = p[np.minimum(j, p.size - 1)]
        return np.where((j < p.size) & (f < i), f, -1)

    @staticmethod
    def _last_in(p: np.ndarray, ss: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Per query, the last position of ``p`` in [ss, i), or -1."""
        if not p.size:
            return np.full(i.size, -1, dtype=np.int64)
        j = np.searchsorted(p, i) - 1
        f = p[np.maximum(j, 0)]
        return np.where((j >= 0) & (f >= ss), f, -1)

    @staticmethod
    def _count(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """How many positions of ``p`` lie in [a, b)."""
        return np.searchsorted(p, b) - np.searchsorted(p, a)

    def _other_after(self, first: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Whether a packet from the other side than ``first``'s sender came after it, before i."""
        f = np.maximum(first, 0)
        a = np.minimum(f + 1, i)
        lo_after = self._count(self.p_lo, a, i)
        hi_after = (i - a) - lo_after
        return (first >= 0) & np.where(self.lower[f], hi_after > 0, lo_after > 0)

    def _fins(self, ss: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fin_lo, fin_hi = self._first_in(self.p_fin_lo, ss, i), self._first_in(self.p_fin_hi, ss, i)
        return fin_lo, fin_hi

    def _timed_out(self, i: np.ndarray, ss: np.ndarray, gap: np.ndarray) -> np.ndarray:
        """Whether the gap before each position exceeds the timeout of the state before it."""
        tmo = self.tmo
        n_rst = self._count(self.p_rst, ss, i)
        fin_lo, fin_hi = self._fins(ss, i)
        both_fin = (fin_lo >= 0) & (fin_hi >= 0)
        one_fin = (fin_lo >= 0) ^ (fin_hi >= 0)
        later_fin = np.maximum(fin_lo, fin_hi)
        first_sa = self._first_in(self.p_sa, ss, i)
        prev_syn = self._last_in(self.p_syn, ss, i)
        t_tcp = np.select(
            [n_rst > 0, both_fin & self._other_after(later_fin, i), both_fin,
             one_fin & self._other_after(later_fin, i), one_fin,
             (first_sa >= 0) & self._other_after(first_sa, i), first_sa >= 0, prev_syn >= 0],
            [tmo["tcp_close"], tmo["tcp_time_wait"], tmo["tcp_last_ack"], tmo["tcp_close_wait"],
             tmo["tcp_fin_wait"], tmo["tcp_established"], tmo["tcp_syn_recv"], tmo["tcp_syn_sent"]],
            tmo["tcp_established"],
        )
        # UDP: 30 s until a reply was seen and the flow is older than 2 s, then the stream timeout.
        n_lo = self._count(self.p_lo, ss, i)
        replied = (n_lo > 0) & ((i - ss) - n_lo > 0)
        old = self.ts[np.maximum(i - 1, 0)] - self.ts[ss] > 2_000_000_000
        t_udp = np.where(replied & old, tmo["udp_stream"], tmo["udp"])
        kind = self.kind[i]
        limit = np.select([kind == KIND_TCP, kind == KIND_UDP, kind == KIND_ICMP],
                          [t_tcp, t_udp, tmo["icmp"]], tmo["generic"])
        return gap > limit

    def _reused(self, i: np.ndarray, ss: np.ndarray) -> np.ndarray:
        """Whether each SYN / SYN-ACK position starts a new connection on the same tuple."""
        n_rst = self._count(self.p_rst, ss, i)
        fin_lo, fin_hi = self._fins(ss, i)
        closed = (n_rst > 0) | ((fin_lo >= 0) & (fin_hi >= 0))
        seq = self.seq[i]
        lower = self.lower[i]
        prev_syn = self._last_in(self.p_syn, ss, i)
        seq_changed = (prev_syn >= 0) & (self.seq[np.maximum(prev_syn, 0)] != seq)
        pure = self.pure_syn[i]
        new = pure & (closed | seq_changed)
        # A first SYN in a flow that already has packets: a new connection unless it fits
        # them (a SYN-ACK acknowledging it, or its own side's first sequence number).
        q = np.flatnonzero(pure & ~new & (prev_syn < 0))
        if q.size:
            iq, sq, lq = i[q], ss[q], lower[q]
            nxt = (seq[q] + 1) & 0xFFFFFFFF
            last_sa = self._last_in(self.p_sa, sq, iq)
            sa = np.maximum(last_sa, 0)
            fits = (last_sa >= 0) & (self.lower[sa] != lq) & (self.ack[sa] == nxt)
            first_same = np.where(lq, self._first_in(self.p_lo, sq, iq), self._first_in(self.p_hi, sq, iq))
            fits |= (first_same >= 0) & (self.seq[np.maximum(first_same, 0)] == nxt)
            new[q] = ~fits
        sa_pos = np.flatnonzero(self.synack[i] & (prev_syn < 0))
        if sa_pos.size:
            ia, sa_ss, la = i[sa_pos], ss[sa_pos], lower[sa_pos]
            psa = np.where(la, self._last_in(self.p_sa_lo, sa_ss, ia), self._last_in(self.p_sa_hi, sa_ss, ia))
            changed = (psa >= 0) & (self.seq[np.maximum(psa, 0)] != seq[sa_pos])
            new[sa_pos] = closed[sa_pos] | changed
        return new


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
