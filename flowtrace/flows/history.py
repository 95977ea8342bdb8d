"""Zeek's connection history letters, built for all flows at once.

Letters come from ``update_history``, ``update_window``, ``update_last_seq`` and the
checksum and gap checks of Zeek's TCP analyzer, and from its UDP analyzer; upper case for
the originator, lower case for the responder:

- ``s``/``h``/``f``/``r`` (SYN, SYN-ACK, FIN, RST): the first one, then again each time
  its sequence number (FIN: sequence number + payload) differs from the previous one of
  that kind from that side (SYN and SYN-ACK share one record);
- ``a``/``d``/``i``/``q`` (pure ACK, payload, FIN+RST, SYN+FIN or SYN+RST): once per side;
- ``c``/``t``/``w``/``g`` (bad checksum, retransmission, zero window, content gap): the 1st,
  10th, 100th… occurrence per side;
- ``^`` first, when the originator is not the sender of the flow's first packet.

Within one packet the order is Zeek's: checksum, flags, window, retransmission, gap.
Unlike Zeek, a packet with a bad checksum is otherwise counted like any other: captures
taken on the sending host carry offloaded (unfilled) checksums on every outgoing packet.
"""

from __future__ import annotations

import numpy as np

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


def _scaled(occurrence: np.ndarray) -> np.ndarray:
    """Whether a 1-based occurrence number is 1, 10, 100, … (Zeek's ScaledHistoryEntry)."""
    o = occurrence.astype(np.int64)
    out = o == 1
    p = 10
    while p <= (o.max() if o.size else 0):
        out |= o == p
        p *= 10
    return out


def _occurrence(mask: np.ndarray, flow: np.ndarray, side: np.ndarray) -> np.ndarray:
    """1-based occurrence number of each ``mask`` position within its flow and side, 0 elsewhere.

    Positions are in flow order (flows contiguous, time order inside); ``side`` is True
    for the originator.
    """
    out = np.zeros(mask.size, dtype=np.int64)
    for s in (True, False):
        idx = np.flatnonzero(mask & (side == s))
        if not idx.size:
            continue
        f = flow[idx]
        first = np.ones(idx.size, dtype=bool)
        first[1:] = f[1:] != f[:-1]
        k = np.arange(idx.size)
        out[idx] = k - np.maximum.accumulate(np.where(first, k, 0)) + 1
    return out


def _once(mask: np.ndarray, flow: np.ndarray, side: np.ndarray) -> np.ndarray:
    """The first ``mask`` position of each flow and side."""
    out = np.zeros(mask.size, dtype=bool)
    for s in (True, False):
        idx = np.flatnonzero(mask & (side == s))
        if idx.size:
            f = flow[idx]
            first = np.ones(idx.size, dtype=bool)
            first[1:] = f[1:] != f[:-1]
            out[idx[first]] = True
    return out


def _changed(mask: np.ndarray, flow: np.ndarray, side: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``mask`` positions that are the first of their flow and side or whose ``value`` differs
    from the previous ``mask`` position of the same flow and side."""
    out = np.zeros(mask.size, dtype=bool)
    for s in (True, False):
        idx = np.flatnonzero(mask & (side == s))
        if idx.size:
            f, v = flow[idx], value[idx]
            keep = np.ones(idx.size, dtype=bool)
            keep[1:] = (f[1:] != f[:-1]) | (v[1:] != v[:-1])
            out[idx[keep]] = True
    return out


def tcp_letters(*, flow: np.ndarray, from_orig: np.ndarray, flags: np.ndarray, seq: np.ndarray,
                payload: np.ndarray, window: np.ndarray, bad_checksum: np.ndarray, rxmit: np.ndarray,
                gap_pos: np.ndarray, gap_orig: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """History letter events of TCP packets in flow order.

    Returns (position, sub-order, letter) arrays: ``position`` indexes the input arrays,
    ``sub-order`` orders letters of one packet, ``letter`` is the ASCII code (upper case
    for the originator). ``rxmit`` marks retransmissions; ``gap_pos``/``gap_orig`` give
    each content gap's revealing packet and whose stream it is in.
    """
    side = from_orig
    syn = (flags & SYN) != 0
    fin = (flags & FIN) != 0
    rst = (flags & RST) != 0
    ackf = (flags & ACK) != 0
    bits = syn.astype(np.int8) + fin + rst
    pos_l, sub_l, let_l = [], [], []

    def emit(mask: np.ndarray, sub: int, letter: np.ndarray | str) -> None:
        idx = np.flatnonzero(mask)
        if not idx.size:
            return
        pos_l.append(idx)
        sub_l.append(np.full(idx.size, sub, dtype=np.int8))
        code = np.full(idx.size, ord(letter), dtype=np.uint8) if isinstance(letter, str) else letter[idx]
        let_l.append(code)

    emit(_scaled(_occurrence(bad_checksum, flow, side)) & bad_checksum, 0, "C")
    emit(_once((bits > 1) & fin & rst, flow, side), 1, "I")
    emit(_once((bits > 1) & ~(fin & rst), flow, side), 1, "Q")
    one = bits == 1
    synl = one & syn
    emit(_changed(synl, flow, side, seq), 1, np.where(ackf, ord("H"), ord("S")).astype(np.uint8))
    emit(_changed(one & fin, flow, side, (seq + payload) & 0xFFFFFFFF), 1, "F")
    emit(_changed(one & rst, flow, side, seq), 1, "R")
    emit(_once((bits == 0) & (payload > 0), flow, side), 1, "D")
    emit(_once((bits == 0) & (payload == 0) & ackf, flow, side), 1, "A")
    # Zero window: not on a RST, not after the peer's FIN, not after the sender's own RST.
    zw = (window == 0) & ~rst
    if zw.any():
        zw[_earlier_in_flow(zw, fin, flow, from_orig, peer=True)] = False
        zw[_earlier_in_flow(zw, rst, flow, from_orig, peer=False)] = False
    emit(_scaled(_occurrence(zw, flow, side)) & zw, 2, "W")
    emit(_scaled(_occurrence(rxmit, flow, side)) & rxmit, 3, "T")
    if gap_pos.size:
        gmask_o = np.zeros(flow.size, dtype=np.int64)
        gmask_r = np.zeros(flow.size, dtype=np.int64)
        np.add.at(gmask_o, gap_pos[gap_orig], 1)
        np.add.at(gmask_r, gap_pos[~gap_orig], 1)
        for counts, upper in ((gmask_o, True), (gmask_r, False)):
            idx = np.flatnonzero(counts)
            if not idx.size:
                continue
            g_ep = flow[idx] * 2 + (0 if upper else 1)
            o = np.lexsort((idx, g_ep))
            idx, g_ep = idx[o], g_ep[o]
            cum = np.cumsum(counts[idx])
            first = np.ones(idx.size, dtype=bool)
            first[1:] = g_ep[1:] != g_ep[:-1]
            base = (cum - counts[idx])[np.maximum.accumulate(np.where(first, np.arange(idx.size), 0))]
            lo, hi = cum - counts[idx] - base, cum - base  # occurrences (lo, hi] at this packet
            letters = np.array([_n_scaled(a, b) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)])
            rep = letters > 0
            rep_idx = np.repeat(idx[rep], letters[rep])
            pos_l.append(rep_idx)
            sub_l.append(np.full(rep_idx.size, 4, dtype=np.int8))
            let_l.append(np.full(rep_idx.size, ord("G") if upper else ord("g"), dtype=np.uint8))
    if not pos_l:
        z = np.zeros(0, dtype=np.int64)
        return z, z.astype(np.int8), z.astype(np.uint8)
    pos = np.concatenate(pos_l)
    letter = np.concatenate(let_l)
    # Responder letters are lower case, except the gap letters which carry their own case.
    sub = np.concatenate(sub_l)
    lower = ~from_orig[pos] & (sub != 4)
    letter = np.where(lower, letter + 32, letter).astype(np.uint8)
    return pos, sub, letter


def udp_letters(*, flow: np.ndarray, from_orig: np.ndarray,
                bad_checksum: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """History letter events of UDP packets in flow order: ``c`` (scaled), ``d`` once per side.

    Same output as ``tcp_letters``.
    """
    c = _scaled(_occurrence(bad_checksum, flow, from_orig)) & bad_checksum
    d = _once(np.ones(flow.size, dtype=bool), flow, from_orig)
    ci, di = np.flatnonzero(c), np.flatnonzero(d)
    pos = np.concatenate((ci, di))
    sub = np.concatenate((np.zeros(ci.size, dtype=np.int8), np.ones(di.size, dtype=np.int8)))
    letter = np.concatenate((np.full(ci.size, ord("C"), dtype=np.uint8), np.full(di.size, ord("D"), dtype=np.uint8)))
    letter = np.where(from_orig[pos], letter, letter + 32).astype(np.uint8)
    return pos, sub, letter


def assemble(*, n_flows: int, position_flow: np.ndarray, pos: np.ndarray, sub: np.ndarray, letter: np.ndarray,
             flipped: np.ndarray) -> list[str]:
    """History strings per flow from letter events.

    ``position_flow`` is the flow of each packet position (flow order); events are given
    by packet position, sub-order inside the packet (0-4) and ASCII letter. ``flipped``
    flows get a leading ``^``. Returns one string per flow.
    """
    m = position_flow.size
    grid = np.zeros(m * 5, dtype=np.uint8)
    grid[pos * 5 + sub] = letter  # letters are printable: a slot left 0 is empty
    nz = np.flatnonzero(grid)
    if nz.size == pos.size:
        key_letters, key_pos = grid[nz], nz // 5
    else:  # several letters in one slot (gaps): sort them instead
        o = np.lexsort((sub, pos))
        key_letters, key_pos = letter[o], pos[o]
    fl = position_flow[key_pos]
    text = key_letters.tobytes().decode("ascii")
    counts = np.bincount(fl, minlength=n_flows)
    ends = np.cumsum(counts)
    starts = ends - counts
    flip = flipped.tolist()
    return [("^" if f else "") + text[a:b] for a, b, f in zip(starts.tolist(), ends.tolist(), flip, strict=True)]


def _n_scaled(lo: int, hi: int) -> int:
    """How many of the occurrence numbers lo+1 .. hi are 1, 10, 100, …"""
    n, p = 0, 1
    while p <= hi:
        if p > lo:
            n += 1
        p *= 10
    return n


def _earlier_in_flow(query: np.ndarray, mask: np.ndarray, flow: np.ndarray, from_orig: np.ndarray, *,
                     peer: bool) -> np.ndarray:
    """Positions of ``query`` that have an earlier ``mask`` packet in their flow, sent by the
    query packet's peer (``peer``) or by its own side."""
    q = np.flatnonzero(query)
    hit = np.zeros(q.size, dtype=bool)
    fq = flow[q]
    flow_first = np.searchsorted(flow, fq)  # flows are contiguous and sorted
    for orig in (True, False):
        p = np.flatnonzero(mask & (from_orig == orig))
        if not p.size:
            continue
        want = (from_orig[q] != orig) if peer else (from_orig[q] == orig)
        j = np.searchsorted(p, q) - 1
        last = p[np.maximum(j, 0)]
        hit |= want & (j >= 0) & (last >= flow_first)
    return q[hit]
