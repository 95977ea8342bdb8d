"""IPv4 (options, fragments) and IPv6 (extension headers, fragments), vectorised."""

from __future__ import annotations

import numpy as np

from flowtrace.decode.addresses import AddressBook
from flowtrace.decode.link import ETH_IPV4, ETH_IPV6
from flowtrace.decode.state import MALFORMED, OK, TRUNCATED, BatchState
from flowtrace.decode.view import FrameView
from flowtrace.schema import IP_FLAG_DF, IP_FLAG_FRAGMENT, IP_FLAG_MF, IP_FLAG_OPTIONS

IPV6_EXTENSIONS = np.array([0, 43, 44, 51, 60, 135, 139, 140, 253, 254])
"""Next-header values that are IPv6 extension headers (hop-by-hop, routing, fragment, AH, …)."""


def word_sum64(word: np.ndarray) -> np.ndarray:
    """Sum of the four 16-bit halves of each uint64 (for checksum pseudo headers)."""
    m = np.uint64(0xFFFF)
    return (word & m) + ((word >> np.uint64(16)) & m) + ((word >> np.uint64(32)) & m) + (word >> np.uint64(48))


def decode_ip(v: FrameView, st: BatchState, book: AddressBook, rows: np.ndarray,
              l3: np.ndarray, etype: np.ndarray) -> np.ndarray:
    """Decode the IP header at ``l3`` of ``rows``; return the rows that decoded fine.

    Fills src, dst, proto, ip_* columns, ttl, tos, and the positions l3, l4, ip_end
    (where the IP packet ends per its length field, clamped to the frame on the wire).
    """
    four = etype == ETH_IPV4
    decoded = []
    if four.any():
        decoded.append(_ipv4(v, st, book, rows[four], l3[four]))
    if (~four).any():
        six = etype == ETH_IPV6
        decoded.append(_ipv6(v, st, book, rows[six], l3[six]))
    if not decoded:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(decoded) if len(decoded) > 1 else decoded[0]


def _ipv4(v: FrameView, st: BatchState, book: AddressBook, rows: np.ndarray, p: np.ndarray) -> np.ndarray:
    rows, p = st.captured(rows, p, 20)
    end = st.end[rows]
    vhl = v.u8(p)
    ihl = (vhl & 0x0F).astype(np.int64) * 4
    total = v.u16(p + 2).astype(np.int64)
    wire_end = st.wire_end[rows]
    bad = ((vhl >> 4) != 4) | (ihl < 20) | ((total != 0) & (total < ihl))
    st.mark(rows[bad], MALFORMED)
    rows, p, end, ihl, total, wire_end = rows[~bad], p[~bad], end[~bad], ihl[~bad], total[~bad], wire_end[~bad]
    # A total length beyond the frame on the wire is bogus (Wireshark's "Bogus IP length"):
    # the headers still decode, the row ends up malformed.
    bogus = p + total > wire_end
    st.bogus[rows[bogus]] = True
    total = np.where(bogus, wire_end - p, total)
    # TSO/GSO frames captured on the sender may carry total length 0.
    total = np.where(total == 0, wire_end - p, total)
    ip_end = p + total
    out = st.out
    src = v.u32(p + 12)
    dst = v.u32(p + 16)
    ff = v.u16(p + 6)
    frag_off = (ff & 0x1FFF).astype(np.uint16) * 8
    mf = (ff & 0x2000) != 0
    flags = (np.where((ff & 0x4000) != 0, IP_FLAG_DF, 0) | np.where(mf, IP_FLAG_MF, 0)
             | np.where(mf | (frag_off > 0), IP_FLAG_FRAGMENT, 0) | np.where(ihl > 20, IP_FLAG_OPTIONS, 0))
    out["ip_version"][rows] = 4
    out["tos"][rows] = v.u8(p + 1)
    out["ip_id"][rows] = v.u16(p + 4)
    out["ttl"][rows] = v.u8(p + 8)
    out["proto"][rows] = v.u8(p + 9)
    out["src"][rows] = book.v4(src)
    out["dst"][rows] = book.v4(dst)
    out["ip_len"][rows] = (ip_end - p).astype(np.uint32)
    out["ip_flags"][rows] = flags.astype(np.uint8)
    out["frag_offset"][rows] = frag_off
    m = np.uint32(0xFFFF)
    st.pseudo[rows] = ((src >> np.uint32(16)) + (src & m) + (dst >> np.uint32(16)) + (dst & m)).astype(np.uint64)
    st.l3[rows] = p
    st.l4[rows] = p + ihl
    st.ip_end[rows] = ip_end
    cut = p + ihl > end
    st.mark(rows[cut], TRUNCATED)
    return rows[~cut]


def _ipv6(v: FrameView, st: BatchState, book: AddressBook, rows: np.ndarray, p: np.ndarray) -> np.ndarray:
    rows, p = st.captured(rows, p, 40)
    end = st.end[rows]
    w0 = v.u32(p)
    bad = (w0 >> 28) != 6
    st.mark(rows[bad], MALFORMED)
    rows, p, end, w0 = rows[~bad], p[~bad], end[~bad], w0[~bad]
    plen = v.u16(p + 4).astype(np.int64)
    wire_end = st.wire_end[rows]
    bogus = (plen != 0) & (p + 40 + plen > wire_end)
    st.bogus[rows[bogus]] = True
    # Payload length 0: a jumbogram or a GSO/GRO frame; it ends with the frame.
    ip_end = np.where((plen == 0) | bogus, wire_end, p + 40 + plen)
    nh = v.u8(p + 6).astype(np.int16)
    s_hi, s_lo, d_hi, d_lo = v.u64(p + 8), v.u64(p + 16), v.u64(p + 24), v.u64(p + 32)
    out = st.out
    out["ip_version"][rows] = 6
    out["tos"][rows] = ((w0 >> 20) & 0xFF).astype(np.uint8)
    out["ttl"][rows] = v.u8(p + 7)
    out["src"][rows] = book.v6(s_hi, s_lo)
    out["dst"][rows] = book.v6(d_hi, d_lo)
    out["ip_len"][rows] = (ip_end - p).astype(np.uint32)
    st.pseudo[rows] = word_sum64(s_hi) + word_sum64(s_lo) + word_sum64(d_hi) + word_sum64(d_lo)

    cur = p + 40
    flags = np.zeros(rows.size, dtype=np.uint8)
    frag_off = np.zeros(rows.size, dtype=np.uint16)
    ident = np.zeros(rows.size, dtype=np.uint32)
    alive = np.ones(rows.size, dtype=bool)
    for _ in range(12):
        ext = np.flatnonzero(alive & np.isin(nh, IPV6_EXTENSIONS))
        if not ext.size:
            break
        c = cur[ext]
        fits = c + 8 <= end[ext]
        st.mark(rows[ext[~fits]], TRUNCATED)
        alive[ext[~fits]] = False
        ext, c = ext[fits], c[fits]
        kind = nh[ext]
        hlen = np.where(kind == 44, 8, np.where(kind == 51, (v.u8(c + 1).astype(np.int64) + 2) * 4,
                                                 (v.u8(c + 1).astype(np.int64) + 1) * 8))
        frag = kind == 44
        if frag.any():
            fe, fc = ext[frag], c[frag]
            offflags = v.u16(fc + 2)
            frag_off[fe] = offflags & 0xFFF8
            more = (offflags & 1) != 0
            flags[fe] |= (IP_FLAG_FRAGMENT | np.where(more, IP_FLAG_MF, 0)).astype(np.uint8)
            ident[fe] = v.u32(fc + 4)
        flags[ext] |= IP_FLAG_OPTIONS
        nh[ext] = v.u8(c)
        cur[ext] = c + hlen
    out["proto"][rows] = nh
    out["ip_flags"][rows] = flags
    out["frag_offset"][rows] = frag_off
    out["ip_id"][rows] = ident
    st.l3[rows] = p
    st.l4[rows] = cur
    st.ip_end[rows] = ip_end
    return rows[alive & (st.status[rows] == OK)]
