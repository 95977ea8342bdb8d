"""TCP per flow and per endpoint: ISNs, payload bytes from sequence numbers (as Zeek counts
them), retransmissions, content gaps, handshake timing, SYN retransmissions, FIN/RST senders.

Input arrays are in flow order (flows contiguous, packets in time order inside a flow). An
*endpoint* is one side of one flow; per-endpoint work re-sorts packets by endpoint, stably.
Sequence numbers are unwrapped per endpoint (successive differences as signed 32-bit), so
connections longer than 4 GiB keep counting.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from flowtrace.flows.assign import next_true

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
TOO_LARGE_SEQ_DELTA = 1_048_576
"""Zeek ignores a SYN or RST whose sequence number jumps further than this."""

_CLIP = 1 << 36  # relative sequence values are clipped here (64 GiB per endpoint) ...
_BASE = 1 << 38  # ... so that per-block offsets for segmented maxima fit in int64


def int32_delta(a: np.ndarray) -> np.ndarray:
    """``a`` (int64 differences of uint32 values) reduced to signed 32-bit, as int64."""
    return ((a + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def seg_cummax_before(values: np.ndarray, block_start: np.ndarray, init: np.ndarray) -> np.ndarray:
    """Per position, max(init, values of earlier positions in the same block) (int64).

    ``block_start`` marks the first position of each block; ``init`` is per position (the
    block's initial value). Pass very small values for positions that must not count.
    """
    if not values.size:
        return values.copy()
    block = np.cumsum(block_start) - 1
    base = block * np.int64(_BASE)
    v = np.clip(values, -_CLIP, _CLIP) + base
    inc = np.maximum.accumulate(v) - base
    exc = np.empty_like(inc)
    exc[1:] = inc[:-1]
    exc[block_start] = np.iinfo(np.int64).min // 2
    return np.maximum(exc, init)


class Endpoint(NamedTuple):
    """Per-endpoint values, index = flow * 2 + (0 orig, 1 resp)."""

    isn: np.ndarray
    """Sequence number of the endpoint's first SYN, -1 if none."""
    last_rel: np.ndarray
    """Highest end of sequence space sent, relative to the start (Zeek's last_seq)."""
    ack_rel: np.ndarray
    """Highest acknowledgement the peer sent for it, relative (Zeek's ack_seq)."""
    fins: np.ndarray
    """FIN packets sent."""
    rsts: np.ndarray
    """RST packets sent."""
    retransmissions: np.ndarray
    """Packets with payload at or below the highest sequence already sent (Zeek's 't')."""
    missed_bytes: np.ndarray
    """Bytes of its stream never seen although later data or the peer's ACK covered them."""


class TcpResult(NamedTuple):
    """Output of ``analyze``."""

    endpoint: Endpoint
    rxmit: np.ndarray
    """Per packet (flow order): a retransmission as Zeek counts them."""
    gap_pos: np.ndarray
    """Per content gap: position (flow order) of the packet that revealed it."""
    gap_orig: np.ndarray
    """Per content gap: whether the originator's stream has it."""
    handshake_rtt_ns: np.ndarray
    """Per flow: last SYN before the first SYN-ACK to that SYN-ACK, -1 if not seen."""
    ack_rtt_ns: np.ndarray
    """Per flow: last SYN-ACK to the originator's first ACK after it, -1 if not seen."""
    syn_retransmissions: np.ndarray
    """Per flow: SYNs from the originator after its first one."""
    synack_retransmissions: np.ndarray
    """Per flow: SYN-ACKs from the responder after its first one."""


def analyze(*, n_flows: int, flow: np.ndarray, flow_start: np.ndarray, from_orig: np.ndarray,
            ts: np.ndarray, flags: np.ndarray, seq: np.ndarray, ack: np.ndarray,
            payload: np.ndarray) -> TcpResult:
    """Per-endpoint sequence accounting and per-flow handshake figures for TCP packets.

    Arrays are the TCP packets in flow order: ``flow`` (int64 flow index < n_flows,
    non-decreasing), ``flow_start`` (True at each flow's first packet), ``from_orig``,
    ``ts`` (ns), ``flags``, ``seq``/``ack`` (int64 of the uint32 fields), ``payload``
    (bytes). Flows without TCP packets get neutral values.
    """
    m = flow.size
    n_ep = n_flows * 2
    ep = flow * 2 + (~from_orig).astype(np.int64)
    order = np.argsort(ep, kind="stable")
    e = ep[order]
    f_syn = (flags[order] & SYN) != 0
    f_fin = (flags[order] & FIN) != 0
    f_rst = (flags[order] & RST) != 0
    f_ack = (flags[order] & ACK) != 0
    sq = seq[order]
    ln = payload[order]
    bstart = np.ones(m, dtype=bool)
    if m:
        bstart[1:] = e[1:] != e[:-1]
    bidx = np.flatnonzero(bstart)
    bep = e[bidx]
    has_pkts = np.zeros(n_ep, dtype=bool)
    has_pkts[bep] = True

    # ISN and start of each endpoint's sequence space.
    first_syn_pos = next_true(f_syn)[bidx] if m else bidx
    bend = np.append(bidx[1:], m)
    syn_in_block = first_syn_pos < bend
    isn = np.full(n_ep, -1, dtype=np.int64)
    isn[bep[syn_in_block]] = sq[first_syn_pos[syn_in_block]]
    start = np.zeros(n_ep, dtype=np.int64)
    start[bep] = (sq[bidx] - 1) & 0xFFFFFFFF
    start[bep[syn_in_block]] = isn[bep[syn_in_block]]
    # An endpoint that sent nothing starts where the peer's first ACK points (init_peer).
    peer_ack = np.zeros(n_ep, dtype=np.int64)
    has_peer_ack = np.zeros(n_ep, dtype=bool)
    acking = f_ack & ~f_rst
    first_ack_pos = next_true(acking)[bidx] if m else bidx
    ok = first_ack_pos < bend
    peer_of = bep ^ 1
    peer_ack[peer_of[ok]] = ack[order][first_ack_pos[ok]]
    has_peer_ack[peer_of[ok]] = True
    silent = ~has_pkts & has_peer_ack
    start[silent] = (peer_ack[silent] - 1) & 0xFFFFFFFF

    # Unwrapped sequence numbers relative to the start.
    rel = _unwrap(sq, bstart, start[e])
    seg_len = ln + f_syn + f_fin - np.where(f_rst, ln, 0)
    end = rel + seg_len
    own_rst_before = _count_before(f_rst, bstart) > 0
    # Zeek's last_seq begins at the first packet's end (SYN) or its sequence number.
    first_is_syn = f_syn[bidx] if m else f_syn
    init_block = np.where(first_is_syn, end[bidx], rel[bidx]) if m else rel
    init = np.repeat(init_block, bend - bidx)
    tiny = np.iinfo(np.int64).min // 4
    plain = ~own_rst_before & ~f_syn & ~f_rst
    pm_plain = seg_cummax_before(np.where(plain, end, tiny), bstart, init)
    wild = (f_syn | f_rst) & (np.abs(end - pm_plain) > TOO_LARGE_SEQ_DELTA)
    eligible = ~own_rst_before & ~wild
    pm = seg_cummax_before(np.where(eligible, end, tiny), bstart, init)
    fin_first_data = f_fin & (pm == 1)
    rx = (ln > 0) & eligible & ~fin_first_data & (end <= pm)
    last_rel = np.zeros(n_ep, dtype=np.int64)
    if m:
        last_rel[bep] = np.maximum(init_block, np.maximum.reduceat(np.where(eligible, end, tiny), bidx))

    # Highest acknowledgement from the peer, relative to this endpoint's start.
    ack_rel = np.zeros(n_ep, dtype=np.int64)
    acks = np.flatnonzero(acking)
    if acks.size:
        target = e[acks] ^ 1
        ab = np.ones(acks.size, dtype=bool)
        ab[1:] = target[1:] != target[:-1]
        arel = _unwrap(ack[order][acks], ab, start[target])
        firsts = np.flatnonzero(ab)
        ack_rel[target[firsts]] = np.maximum(np.maximum.reduceat(arel, firsts), 0)

    fins = np.bincount(e[f_fin], minlength=n_ep)
    rsts = np.bincount(e[f_rst], minlength=n_ep)
    rx_count = np.bincount(e[rx], minlength=n_ep)

    # Content gaps: stream bytes never seen below later data or the peer's ACK.
    gap_sorted_pos, gap_ep, gap_len = _gaps(e, bstart, rel, ln, f_syn, f_rst, f_fin, end, ack_rel, n_ep)
    missed = np.bincount(gap_ep, weights=gap_len, minlength=n_ep).astype(np.int64)

    rxmit = np.zeros(m, dtype=bool)
    rxmit[order[rx]] = True
    gap_pos = order[gap_sorted_pos]
    endpoint = Endpoint(isn, last_rel, ack_rel, fins, rsts, rx_count, missed)
    hs, ackrtt, synrx, sarx = _handshake(n_flows, flow, flow_start, from_orig, ts, flags)
    return TcpResult(endpoint, rxmit, gap_pos, (gap_ep % 2) == 0, hs, ackrtt, synrx, sarx)


def _unwrap(values: np.ndarray, block_start: np.ndarray, base: np.ndarray) -> np.ndarray:
    """uint32 ``values`` unwrapped per block, relative to ``base`` (per position)."""
    if not values.size:
        return values.astype(np.int64)
    d = np.empty(values.size, dtype=np.int64)
    d[0] = 0
    d[1:] = int32_delta(values[1:] - values[:-1])
    first = int32_delta(values - base)
    d[block_start] = first[block_start]
    c = np.cumsum(d)
    block = np.cumsum(block_start) - 1
    starts = np.flatnonzero(block_start)
    # cumsum restarted at each block: subtract the running total before the block
    offset = (c[starts] - d[starts])[block]
    return c - offset


def _count_before(mask: np.ndarray, block_start: np.ndarray) -> np.ndarray:
    """Per position, how many earlier positions of its block have ``mask``."""
    c = np.cumsum(mask, dtype=np.int64) - mask
    if not c.size:
        return c
    block = np.cumsum(block_start) - 1
    return c - c[np.flatnonzero(block_start)][block]


def _gaps(e: np.ndarray, bstart: np.ndarray, rel: np.ndarray, ln: np.ndarray, f_syn: np.ndarray,
          f_rst: np.ndarray, f_fin: np.ndarray, end: np.ndarray, ack_rel: np.ndarray,
          n_ep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Holes in each endpoint's stream: (position revealing it, endpoint, length)."""
    data = np.flatnonzero((ln > 0) & ~f_rst)
    d_start = rel[data] + f_syn[data]
    d_end = d_start + ln[data]
    d_ep = e[data]
    o = np.lexsort((d_start, d_ep))
    d_start, d_end, d_ep, data = d_start[o], d_end[o], d_ep[o], data[o]
    db = np.ones(data.size, dtype=bool)
    db[1:] = d_ep[1:] != d_ep[:-1]
    covered = seg_cummax_before(d_end, db, np.ones(data.size, dtype=np.int64))
    hole = d_start > covered
    pos = [data[hole]]
    eps = [d_ep[hole]]
    lens = [d_start[hole] - covered[hole]]
    # Tail: acknowledged by the peer beyond everything seen (the FIN's own byte excluded).
    cov_end = np.ones(n_ep, dtype=np.int64)
    if data.size:
        firsts = np.flatnonzero(db)
        cov_end[d_ep[firsts]] = np.maximum(np.maximum.reduceat(d_end, firsts), 1)
    fin_at = np.full(n_ep, np.iinfo(np.int64).max, dtype=np.int64)
    fins = np.flatnonzero(f_fin)
    if fins.size:
        np.minimum.at(fin_at, e[fins], end[fins] - 1)
    acked = np.minimum(ack_rel, fin_at)
    tail = np.flatnonzero((ack_rel > 0) & (acked > cov_end))
    if tail.size:
        # revealed by the endpoint's last packet (the peer's ACK is in the other block)
        last_pos = np.full(n_ep, -1, dtype=np.int64)
        last_pos[e] = np.arange(e.size)
        has = last_pos[tail] >= 0
        pos.append(last_pos[tail[has]])
        eps.append(tail[has])
        lens.append((acked - cov_end)[tail[has]])
    return np.concatenate(pos), np.concatenate(eps), np.concatenate(lens).astype(np.float64)


def _handshake(n_flows: int, flow: np.ndarray, flow_start: np.ndarray, from_orig: np.ndarray,
               ts: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, ...]:
    """Handshake RTTs and SYN / SYN-ACK retransmission counts per flow."""
    m = flow.size
    syn = (flags & SYN) != 0
    ackf = (flags & ACK) != 0
    o_syn = syn & ~ackf & from_orig
    r_sa = syn & ackf & ~from_orig
    o_ack = ackf & ~syn & from_orig
    syn_count = np.bincount(flow[o_syn], minlength=n_flows)
    sa_count = np.bincount(flow[r_sa], minlength=n_flows)
    hs = np.full(n_flows, -1, dtype=np.int64)
    ackrtt = np.full(n_flows, -1, dtype=np.int64)
    if m:
        starts = np.flatnonzero(flow_start)
        fl = flow[starts]
        ends = np.append(starts[1:], m)
        first_sa = next_true(r_sa)[starts]
        has_sa = first_sa < ends
        pos = np.arange(m, dtype=np.int64)
        last_syn = np.maximum.accumulate(np.where(o_syn, pos, -1))
        ls = last_syn[np.minimum(first_sa, m - 1)]
        ok = has_sa & (ls >= starts)
        hs[fl[ok]] = ts[first_sa[ok]] - ts[ls[ok]]
        nxt_ack = next_true(o_ack)
        fa = nxt_ack[np.minimum(first_sa, m - 1)]
        ok2 = has_sa & (fa < ends)
        last_sa = np.maximum.accumulate(np.where(r_sa, pos, -1))
        lsa = last_sa[np.minimum(fa, m - 1)]
        ackrtt[fl[ok2]] = ts[fa[ok2]] - ts[lsa[ok2]]
    return (hs, ackrtt, np.maximum(syn_count - 1, 0).astype(np.int32),
            np.maximum(sa_count - 1, 0).astype(np.int32))
