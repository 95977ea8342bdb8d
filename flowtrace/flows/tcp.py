"""TCP per flow and per endpoint: ISNs, payload bytes from sequence numbers (as Zeek counts
them), retransmissions, content gaps, handshake timing, SYN retransmissions, FIN/RST senders.

Input arrays are in flow order (flows contiguous, packets in time order inside a flow). An
*endpoint* is one side of one flow; per-endpoint work regroups packets by endpoint with a
linear counting sort. Sequence numbers are unwrapped per endpoint (successive differences as
signed 32-bit), so connections longer than 4 GiB keep counting.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from flowtrace.flows.assign import first_in_blocks, last_in_blocks

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
TOO_LARGE_SEQ_DELTA = 1_048_576
"""Zeek ignores a SYN or RST whose sequence number jumps further than this."""

_CLIP = 1 << 36  # relative sequence values are capped here (64 GiB per endpoint) ...
_BASE = 1 << 38  # ... so that per-block offsets for segmented maxima fit in int64


def seg_cummax_before(values: np.ndarray, block: np.ndarray, block_start: np.ndarray,
                      init: np.ndarray) -> np.ndarray:
    """Per position, max(init, values of earlier positions in the same block) (int64).

    ``block`` is a non-decreasing block number per position (< 2**24), ``block_start`` marks
    each block's first position and ``init`` is per position (its block's initial value).
    Pass very small values for positions that must not count.
    """
    if not values.size:
        return values.copy()
    if values.max() > _CLIP:  # beyond 64 GiB of one endpoint's stream: keep blocks apart
        values = np.minimum(values, _CLIP)
    base = block * np.int64(_BASE)
    # Positions left out carry huge negative values: whatever of an earlier block a running
    # maximum carries into this one is far below any real value, and ``init`` replaces it.
    # (In place: these arrays are as long as the packets.)
    inc = values + base
    np.maximum.accumulate(inc, out=inc)
    inc -= base
    del base
    exc = np.empty_like(inc)
    exc[1:] = inc[:-1]
    del inc
    exc[block_start] = np.iinfo(np.int64).min // 2
    return np.maximum(exc, init, out=exc)


def endpoint_order(flow_start: np.ndarray, from_orig: np.ndarray) -> np.ndarray:
    """Permutation grouping packets by endpoint: per flow the originator's packets, then the
    responder's, each in their original (time) order. A counting sort, linear time."""
    m = from_orig.size
    if not m:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(flow_start)
    lengths = np.diff(np.append(starts, m))
    is_o = from_orig.astype(np.int64)
    c_o = np.cumsum(is_o)
    c_r = np.arange(1, m + 1, dtype=np.int64) - c_o
    before_o = np.repeat(c_o[starts] - is_o[starts], lengths)
    before_r = np.repeat(c_r[starts] - (1 - is_o[starts]), lengths)
    n_o = np.repeat(np.add.reduceat(is_o, starts), lengths)
    rank = np.where(from_orig, c_o - 1 - before_o, n_o + c_r - 1 - before_r)
    order = np.empty(m, dtype=np.int64)
    order[np.repeat(starts, lengths) + rank] = np.arange(m, dtype=np.int64)
    return order


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
    ``ts`` (ns), ``flags``, ``seq``/``ack`` (the uint32 fields, any integer dtype),
    ``payload`` (bytes, int64). Flows without TCP packets get neutral values.
    """
    m = flow.size
    n_ep = n_flows * 2
    order = endpoint_order(flow_start, from_orig)
    e = flow[order] * 2 + (~from_orig[order]).astype(np.int64)
    fl = flags[order]
    f_syn = (fl & SYN) != 0
    f_fin = (fl & FIN) != 0
    f_rst = (fl & RST) != 0
    f_ack = (fl & ACK) != 0
    sq = seq[order].astype(np.uint32)
    ln = payload[order].astype(np.int64)
    bstart = np.ones(m, dtype=bool)
    if m:
        bstart[1:] = e[1:] != e[:-1]
    bidx = np.flatnonzero(bstart)
    bend = np.append(bidx[1:], m)
    blen = bend - bidx
    bep = e[bidx]
    block = np.repeat(np.arange(bidx.size, dtype=np.int64), blen)

    # ISN and start of each endpoint's sequence space.
    first_syn = first_in_blocks(f_syn, bidx, bend)
    has_syn = first_syn >= 0
    isn = np.full(n_ep, -1, dtype=np.int64)
    isn[bep[has_syn]] = sq[first_syn[has_syn]]
    start = np.zeros(n_ep, dtype=np.uint32)
    start[bep] = np.where(has_syn, sq[np.maximum(first_syn, 0)], sq[bidx] - np.uint32(1))
    # An endpoint that sent nothing starts where the peer's first ACK points (init_peer).
    acking = f_ack & ~f_rst
    ak = ack[order]
    first_ack = first_in_blocks(acking, bidx, bend)
    ok = first_ack >= 0
    silent = np.ones(n_ep, dtype=bool)
    silent[bep] = False
    peer = bep[ok] ^ 1
    quiet = silent[peer]
    start[peer[quiet]] = ak[first_ack[ok][quiet]].astype(np.uint32) - np.uint32(1)

    # Unwrapped sequence numbers relative to the start. (Large temporaries are deleted as
    # soon as they are done with: their memory serves the next ones, see
    # capture.memory.heap_temporaries.)
    rel = _unwrap(sq, bidx, blen, start[bep])
    del sq
    end = rel + (ln + f_syn + f_fin - np.where(f_rst, ln, 0))
    c_rst = np.cumsum(f_rst, dtype=np.int64)
    own_rst_before = (c_rst - f_rst - np.repeat(c_rst[bidx] - f_rst[bidx], blen)) > 0
    del c_rst
    # Zeek's last_seq begins at the first packet's end (SYN) or its sequence number.
    init_block = np.where(f_syn[bidx], end[bidx], rel[bidx])
    init = np.repeat(init_block, blen)
    tiny = np.iinfo(np.int64).min // 4
    control = f_syn | f_rst
    if control.any():
        plain = ~own_rst_before & ~control
        pm_plain = seg_cummax_before(np.where(plain, end, tiny), block, bstart, init)
        wild = control & (np.abs(end - pm_plain) > TOO_LARGE_SEQ_DELTA)
        del pm_plain
        eligible = ~own_rst_before & ~wild
    else:
        eligible = ~own_rst_before
    pm = seg_cummax_before(np.where(eligible, end, tiny), block, bstart, init)
    del block, init
    fin_first_data = f_fin & (pm == 1)
    rx = (ln > 0) & eligible & ~fin_first_data & (end <= pm)
    del pm
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
        firsts = np.flatnonzero(ab)
        arel = _unwrap(ak[acks].astype(np.uint32), firsts, np.diff(np.append(firsts, acks.size)),
                       start[target[firsts]])
        ack_rel[target[firsts]] = np.maximum(np.maximum.reduceat(arel, firsts), 0)
        del target, ab, arel
    del acks, ak, acking, own_rst_before, eligible, bstart

    fins = np.bincount(e[f_fin], minlength=n_ep)
    rsts = np.bincount(e[f_rst], minlength=n_ep)
    rx_count = np.bincount(e[rx], minlength=n_ep)

    # Content gaps: stream bytes never seen below later data or the peer's ACK.
    gap_sorted_pos, gap_ep, gap_len = _gaps(e, rel, ln, f_syn, f_rst, f_fin, end, ack_rel, n_ep)
    missed = np.bincount(gap_ep, weights=gap_len, minlength=n_ep).astype(np.int64)

    rxmit = np.zeros(m, dtype=bool)
    rxmit[order[rx]] = True
    gap_pos = order[gap_sorted_pos]
    endpoint = Endpoint(isn, last_rel, ack_rel, fins, rsts, rx_count, missed)
    hs, ackrtt, synrx, sarx = _handshake(n_flows, flow, flow_start, from_orig, ts, flags)
    return TcpResult(endpoint, rxmit, gap_pos, (gap_ep % 2) == 0, hs, ackrtt, synrx, sarx)


def _unwrap(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, base: np.ndarray) -> np.ndarray:
    """uint32 ``values`` unwrapped per block (``starts``/``lengths``), relative to each block's
    ``base`` (uint32): successive differences taken as signed 32-bit, then summed."""
    if not values.size:
        return values.astype(np.int64)
    c = np.empty(values.size, dtype=np.int64)
    c[0] = 0
    c[1:] = (values[1:] - values[:-1]).view(np.int32)
    first = (values[starts] - base).view(np.int32).astype(np.int64)
    c[starts] = first
    np.cumsum(c, out=c)  # in place: these arrays are as long as the packets
    c -= np.repeat(c[starts] - first, lengths)
    return c


def _gaps(e: np.ndarray, rel: np.ndarray, ln: np.ndarray, f_syn: np.ndarray, f_rst: np.ndarray,
          f_fin: np.ndarray, end: np.ndarray, ack_rel: np.ndarray,
          n_ep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Holes in each endpoint's stream: (position revealing it, endpoint, length)."""
    data = np.flatnonzero((ln > 0) & ~f_rst)
    d_start = rel[data] + f_syn[data]
    d_end = d_start + ln[data]
    d_ep = e[data]
    db = np.ones(data.size, dtype=bool)
    db[1:] = d_ep[1:] != d_ep[:-1]
    if data.size and ((np.diff(d_start) < 0) & ~db[1:]).any():
        o = np.lexsort((d_start, d_ep))  # out-of-order data somewhere: sort by sequence
        d_start, d_end, d_ep, data = d_start[o], d_end[o], d_ep[o], data[o]
    block = np.cumsum(db) - 1
    covered = seg_cummax_before(d_end, block, db, np.ones(data.size, dtype=np.int64))
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
    syn_count = np.bincount(flow[o_syn], minlength=n_flows)
    sa_count = np.bincount(flow[r_sa], minlength=n_flows)
    hs = np.full(n_flows, -1, dtype=np.int64)
    ackrtt = np.full(n_flows, -1, dtype=np.int64)
    if m:
        starts = np.flatnonzero(flow_start)
        fl = flow[starts]
        ends = np.append(starts[1:], m)
        first_sa = first_in_blocks(r_sa, starts, ends)
        has_sa = first_sa >= 0
        fsa = np.where(has_sa, first_sa, starts)
        ls = last_in_blocks(o_syn, starts, fsa)
        ok = has_sa & (ls >= 0)
        hs[fl[ok]] = ts[first_sa[ok]] - ts[ls[ok]]
        fa = first_in_blocks(ackf & ~syn & from_orig, fsa, ends)
        ok2 = has_sa & (fa >= 0)
        lsa = last_in_blocks(r_sa, starts, np.where(ok2, fa, starts))
        ackrtt[fl[ok2]] = ts[fa[ok2]] - ts[lsa[ok2]]
    return (hs, ackrtt, np.maximum(syn_count - 1, 0).astype(np.int32),
            np.maximum(sa_count - 1, 0).astype(np.int32))
