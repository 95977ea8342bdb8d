"""Transport headers: TCP (flags, seq/ack, window, MSS/WS/SACK/timestamp options), UDP, SCTP,
ICMP and ICMPv6 (echo, errors with the quoted packet's 5-tuple)."""

from __future__ import annotations

import numpy as np

from flowtrace.decode.addresses import AddressBook
from flowtrace.decode.state import MALFORMED, TRUNCATED, BatchState
from flowtrace.decode.view import FrameView
from flowtrace.schema import (
    IP_FLAG_MF,
    TCP_OPT_FASTOPEN,
    TCP_OPT_MSS,
    TCP_OPT_SACK,
    TCP_OPT_SACK_PERM,
    TCP_OPT_TIMESTAMP,
    TCP_OPT_WSCALE,
)

TCP, UDP, SCTP, ICMP, ICMPV6 = 6, 17, 132, 1, 58
ICMP_ERRORS = (3, 4, 5, 11, 12)
ICMPV6_ERRORS = (1, 2, 3, 4)
ICMP_ECHO = (0, 8, 13, 14, 15, 16, 17, 18)
ICMPV6_ECHO = (128, 129)
DNS_PORTS = (53, 5353)


def decode_transport(v: FrameView, st: BatchState, book: AddressBook, rows: np.ndarray) -> None:
    """Decode the transport header of decoded IP ``rows``; sets st.pay to the payload start."""
    out = st.out
    proto = out["proto"][rows]
    first = out["frag_offset"][rows] == 0
    version = out["ip_version"][rows]
    l4 = st.l4[rows]
    # Non-first fragments and protocols without a decoded header: the payload starts at l4.
    other = ~first | ~np.isin(proto, (TCP, UDP, SCTP, ICMP, ICMPV6))
    _payload(st, rows[other], l4[other], 0)
    _tcp(v, st, rows[first & (proto == TCP)])
    _udp(v, st, rows[first & (proto == UDP)])
    _sctp(v, st, rows[first & (proto == SCTP)])
    icmp4 = first & (proto == ICMP) & (version == 4)
    icmp6 = first & (proto == ICMPV6) & (version == 6)
    _icmp(v, st, book, rows[icmp4], six=False)
    _icmp(v, st, book, rows[icmp6], six=True)
    odd = first & (((proto == ICMP) & (version != 4)) | ((proto == ICMPV6) & (version != 6)))
    _payload(st, rows[odd], l4[odd], 0)


def _payload(st: BatchState, rows: np.ndarray, l4: np.ndarray, header: np.ndarray | int) -> np.ndarray:
    """Set payload position and length; returns the mask of rows with a negative length."""
    pay = l4 + header
    length = st.ip_end[rows] - pay
    st.pay[rows] = pay
    st.out["payload_len"][rows] = np.maximum(length, 0).astype(np.uint32)
    return length < 0


def _fragment_head(v: FrameView, st: BatchState, rows: np.ndarray, header: int) -> np.ndarray:
    """First fragments whose transport header continues in the next fragment: fill the
    ports (and the TCP sequence number) that this fragment holds; returns the other rows."""
    out = st.out
    p = st.l4[rows]
    head = ((out["ip_flags"][rows] & IP_FLAG_MF) != 0) & (st.ip_end[rows] - p < header)
    if head.any():
        r, q = rows[head], p[head]
        room = np.minimum(st.ip_end[r], st.end[r]) - q
        ports = room >= 4
        out["sport"][r[ports]] = v.u16(q[ports])
        out["dport"][r[ports]] = v.u16(q[ports] + 2)
        if header == 20:
            seq = room >= 8
            out["seq"][r[seq]] = v.u32(q[seq] + 4)
        st.pay[r] = -1
        out["payload_len"][r] = 0
    return rows[~head]


def _tcp(v: FrameView, st: BatchState, rows: np.ndarray) -> None:
    if not rows.size:
        return
    rows = _fragment_head(v, st, rows, 20)
    rows, p = st.captured(rows, st.l4[rows], 20)
    out = st.out
    out["sport"][rows] = v.u16(p)
    out["dport"][rows] = v.u16(p + 2)
    out["seq"][rows] = v.u32(p + 4)
    out["ack"][rows] = v.u32(p + 8)
    off_flags = v.u16(p + 12)
    doff = (off_flags >> 12).astype(np.int64) * 4
    out["tcp_flags"][rows] = off_flags & 0x01FF
    out["window"][rows] = v.u16(p + 14)
    negative = _payload(st, rows, p, doff)
    # A first fragment may end inside the options: not malformed, its options are in the
    # next fragment.
    split = negative & (doff >= 20) & ((out["ip_flags"][rows] & IP_FLAG_MF) != 0)
    st.pay[rows[split]] = -1
    bad = (doff < 20) | (negative & ~split)
    st.mark(rows[bad], MALFORMED)
    st.pay[rows[bad]] = -1
    out["payload_len"][rows[bad]] = 0
    cut = ~bad & ~split & (p + doff > st.end[rows])
    st.mark(rows[cut], TRUNCATED)
    opts = ~bad & ~cut & ~split & (doff > 20)
    if opts.any():
        # Most segments of an established Linux connection carry exactly NOP, NOP, TS.
        ts_only = opts & (doff == 32) & (v.u32(p + 20) == 0x0101080A)
        if ts_only.any():
            r, q = rows[ts_only], p[ts_only]
            out["tsval"][r] = v.u32(q + 24)
            out["tsecr"][r] = v.u32(q + 28)
            out["tcp_opts"][r] = TCP_OPT_TIMESTAMP
            opts &= ~ts_only
        # Linux SYN and SYN-ACK: MSS, SACK permitted, timestamps, NOP, window scale.
        syn = opts & (doff == 40) & (v.u32(p + 20) >> 16 == 0x0204) & (v.u32(p + 24) == 0x0402080A) \
            & (v.u32(p + 36) >> 8 == 0x010303)
        if syn.any():
            r, q = rows[syn], p[syn]
            out["mss"][r] = v.u16(q + 22)
            out["tsval"][r] = v.u32(q + 28)
            out["tsecr"][r] = v.u32(q + 32)
            out["wscale"][r] = v.u8(q + 39)
            out["tcp_opts"][r] = TCP_OPT_MSS | TCP_OPT_SACK_PERM | TCP_OPT_TIMESTAMP | TCP_OPT_WSCALE
            opts &= ~syn
        if opts.any():
            _tcp_options(v, st, rows[opts], p[opts] + 20, p[opts] + doff[opts])


def _tcp_options(v: FrameView, st: BatchState, rows: np.ndarray, start: np.ndarray, limit: np.ndarray) -> None:
    """Walk the option lists of ``rows`` in lockstep, one option per round."""
    out = st.out
    present = np.zeros(rows.size, dtype=np.uint8)
    pos = start.copy()
    active = np.arange(rows.size)
    for _ in range(40):
        if not active.size:
            break
        ps = pos[active]
        kind = v.u8(ps)
        length = v.u8(ps + 1).astype(np.int64)
        nop = kind == 1
        done = (kind == 0) | (ps >= limit[active])
        broken = ~done & ~nop & ((length < 2) | (ps + length > limit[active]))
        good = ~done & ~nop & ~broken
        r = rows[active]
        m = good & (kind == 2) & (length == 4)
        out["mss"][r[m]] = v.u16(ps[m] + 2)
        present[active[m]] |= TCP_OPT_MSS
        m = good & (kind == 3) & (length == 3)
        out["wscale"][r[m]] = v.u8(ps[m] + 2)
        present[active[m]] |= TCP_OPT_WSCALE
        m = good & (kind == 4)
        present[active[m]] |= TCP_OPT_SACK_PERM
        m = good & (kind == 5)
        present[active[m]] |= TCP_OPT_SACK
        m = good & (kind == 8) & (length == 10)
        out["tsval"][r[m]] = v.u32(ps[m] + 2)
        out["tsecr"][r[m]] = v.u32(ps[m] + 6)
        present[active[m]] |= TCP_OPT_TIMESTAMP
        m = good & (kind == 34)
        present[active[m]] |= TCP_OPT_FASTOPEN
        pos[active] = ps + np.where(nop, 1, np.maximum(length, 1))
        active = active[~done & ~broken]
    out["tcp_opts"][rows] = present


def _udp(v: FrameView, st: BatchState, rows: np.ndarray) -> None:
    if not rows.size:
        return
    rows = _fragment_head(v, st, rows, 8)
    rows, p = st.captured(rows, st.l4[rows], 8)
    out = st.out
    sport = v.u16(p)
    dport = v.u16(p + 2)
    out["sport"][rows] = sport
    out["dport"][rows] = dport
    bad = _payload(st, rows, p, 8)
    st.mark(rows[bad], MALFORMED)
    dns = ~bad & (np.isin(sport, DNS_PORTS) | np.isin(dport, DNS_PORTS))
    dns &= (out["payload_len"][rows] >= 2) & (p + 10 <= st.end[rows])
    out["dns_id"][rows[dns]] = v.u16(p[dns] + 8)


def _sctp(v: FrameView, st: BatchState, rows: np.ndarray) -> None:
    if not rows.size:
        return
    rows, p = st.captured(rows, st.l4[rows], 12)
    st.out["sport"][rows] = v.u16(p)
    st.out["dport"][rows] = v.u16(p + 2)
    bad = _payload(st, rows, p, 12)
    st.mark(rows[bad], MALFORMED)


def _icmp(v: FrameView, st: BatchState, book: AddressBook, rows: np.ndarray, *, six: bool) -> None:
    if not rows.size:
        return
    rows, p = st.captured(rows, st.l4[rows], 4)
    out = st.out
    itype = v.u8(p)
    out["icmp_type"][rows] = itype
    out["icmp_code"][rows] = v.u8(p + 1)
    bad = _payload(st, rows, p, 8)
    st.mark(rows[bad], MALFORMED)
    st.out["payload_len"][rows[bad]] = 0
    full = ~bad & (p + 8 <= st.end[rows])
    echo = full & np.isin(itype, ICMPV6_ECHO if six else ICMP_ECHO)
    out["icmp_id"][rows[echo]] = v.u16(p[echo] + 4)
    out["icmp_seq"][rows[echo]] = v.u16(p[echo] + 6)
    if six:
        big = full & (itype == 2)
        out["icmp_mtu"][rows[big]] = v.u32(p[big] + 4)
    else:
        frag_needed = full & (itype == 3) & (v.u8(p + 1) == 4)
        out["icmp_mtu"][rows[frag_needed]] = v.u16(p[frag_needed] + 6)
    err = full & np.isin(itype, ICMPV6_ERRORS if six else ICMP_ERRORS)
    if err.any():
        _quoted(v, st, book, rows[err], p[err] + 8)


def _quoted(v: FrameView, st: BatchState, book: AddressBook, rows: np.ndarray, q: np.ndarray) -> None:
    """Decode the IP header and first transport bytes an ICMP error quotes."""
    out = st.out
    end = st.end[rows]
    ver = v.u8(q) >> 4
    q4 = (ver == 4) & (q + 20 <= end)
    if q4.any():
        r, p = rows[q4], q[q4]
        ihl = (v.u8(p) & 0x0F).astype(np.int64) * 4
        proto = v.u8(p + 9)
        out["quoted_proto"][r] = proto
        out["quoted_ip_id"][r] = v.u16(p + 4)
        out["quoted_src"][r] = book.v4(v.u32(p + 12))
        out["quoted_dst"][r] = book.v4(v.u32(p + 16))
        not_frag = (v.u16(p + 6) & 0x1FFF) == 0
        _quoted_ports(v, st, r, p + ihl, proto, not_frag & (ihl >= 20))
    q6 = (ver == 6) & (q + 40 <= end)
    if q6.any():
        r, p = rows[q6], q[q6]
        nh = v.u8(p + 6)
        ql4 = p + 40
        frag = nh == 44
        first = np.ones(r.size, dtype=bool)
        if frag.any():
            fit = ql4 + 8 <= st.end[r]
            first[frag] = fit[frag] & ((v.u16(ql4[frag] + 2) & 0xFFF8) == 0)
            nh = np.where(frag & fit, v.u8(ql4), nh)
            ql4 = np.where(frag, ql4 + 8, ql4)
        out["quoted_proto"][r] = nh
        out["quoted_src"][r] = book.v6(v.u64(p + 8), v.u64(p + 16))
        out["quoted_dst"][r] = book.v6(v.u64(p + 24), v.u64(p + 32))
        _quoted_ports(v, st, r, ql4, nh, first)


def _quoted_ports(v: FrameView, st: BatchState, rows: np.ndarray, l4: np.ndarray, proto: np.ndarray,
                  first: np.ndarray) -> None:
    out = st.out
    ports = first & np.isin(proto, (TCP, UDP, SCTP)) & (l4 + 4 <= st.end[rows])
    out["quoted_sport"][rows[ports]] = v.u16(l4[ports])
    out["quoted_dport"][rows[ports]] = v.u16(l4[ports] + 2)
    seq = ports & (proto == TCP) & (l4 + 8 <= st.end[rows])
    out["quoted_seq"][rows[seq]] = v.u32(l4[seq] + 4)
