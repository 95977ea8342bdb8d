"""Link layers: Ethernet (802.1Q, QinQ, VN-Tag, LLC/SNAP), SLL, SLL2, raw IP, NULL/LOOP, PPP, C-HDLC,
then MPLS and PPPoE in front of IP.

Every function takes the rows to decode and the position of their link header, writes
the link-layer columns, and returns ``(rows, l3, ethertype)`` for the rows that carry
something past the link layer. Rows it gives up on get their decode_status.
"""

from __future__ import annotations

import numpy as np

from flowtrace.capture import linktypes
from flowtrace.capture.records import DIR_IN, DIR_OUT
from flowtrace.decode.state import MALFORMED, TRUNCATED, UNSUPPORTED, BatchState
from flowtrace.decode.view import FrameView

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = (0x8100, 0x88A8, 0x9100, 0x9200)
ETH_VNTAG = 0x8926
ETH_MPLS = (0x8847, 0x8848)
ETH_PPPOE = 0x8864
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057

Rows = tuple[np.ndarray, np.ndarray, np.ndarray]


def ethernet(v: FrameView, st: BatchState, rows: np.ndarray, pos: np.ndarray) -> Rows:
    """Ethernet II with any stack of 802.1Q/802.1ad/VN-Tag tags, and 802.3 LLC/SNAP."""
    rows, pos = st.captured(rows, pos, 14)
    etype = v.u16(pos + 12)
    l3 = pos + 14
    vlan = st.out["vlan"]
    for _ in range(6):
        tagged = np.isin(etype, ETH_VLAN)
        vntag = etype == ETH_VNTAG
        any_tag = tagged | vntag
        if not any_tag.any():
            break
        step = np.where(vntag, 6, 4)
        fit = ~any_tag | (l3 + step <= st.end[rows])
        st.mark(rows[~fit], TRUNCATED)
        first = tagged & fit & (vlan[rows] < 0)
        vlan[rows[first]] = (v.u16(l3[first]) & 0x0FFF).astype(np.int16)
        move = any_tag & fit
        etype[move] = v.u16(l3[move] + step[move] - 2)
        l3[move] += step[move]
        rows, l3, etype = rows[fit], l3[fit], etype[fit]
    # 802.3 frames: a length instead of an EtherType; only LLC/SNAP carries a protocol.
    length_field = etype <= 1500
    if length_field.any():
        snap = length_field & (v.u16(l3) == 0xAAAA) & (v.u8(l3 + 2) == 0x03) & (l3 + 8 <= st.end[rows])
        etype[snap] = v.u16(l3[snap] + 6)
        l3[snap] += 8
        other = length_field & ~snap
        st.out["ethertype"][rows[other]] = 0
        st.mark(rows[other], UNSUPPORTED)
        keep = ~other
        rows, l3, etype = rows[keep], l3[keep], etype[keep]
    st.out["ethertype"][rows] = etype
    return rows, l3, etype


def _pkttype_direction(st: BatchState, rows: np.ndarray, pkttype: np.ndarray) -> None:
    d = st.out["direction"]
    d[rows[pkttype == 4]] = DIR_OUT
    d[rows[pkttype < 4]] = DIR_IN


def sll(v: FrameView, st: BatchState, rows: np.ndarray, pos: np.ndarray) -> Rows:
    """Linux cooked capture v1: packet type, ARPHRD type, address, protocol (16 bytes)."""
    rows, pos = st.captured(rows, pos, 16)
    _pkttype_direction(st, rows, v.u16(pos))
    etype = v.u16(pos + 14)
    return _cooked_protocol(v, st, rows, pos + 16, etype, v.u16(pos + 2))


def sll2(v: FrameView, st: BatchState, rows: np.ndarray, pos: np.ndarray) -> Rows:
    """Linux cooked capture v2: protocol, interface index, ARPHRD type, packet type (20 bytes)."""
    rows, pos = st.captured(rows, pos, 20)
    st.out["ifindex"][rows] = v.u32(pos + 4).astype(np.int32)
    _pkttype_direction(st, rows, v.u8(pos + 10))
    etype = v.u16(pos)
    return _cooked_protocol(v, st, rows, pos + 20, etype, v.u16(pos + 8))


def _cooked_protocol(v: FrameView, st: BatchState, rows: np.ndarray, l3: np.ndarray,
                     etype: np.ndarray, arphrd: np.ndarray) -> Rows:
    # On non-Ethernet devices (tun, ipip, gre, wireguard) the protocol may be 0 or a
    # Linux ETH_P_ value; the payload is IP whenever the version nibble says so.
    etype = etype.copy()
    odd = (etype != ETH_IPV4) & (etype != ETH_IPV6) & (arphrd != 1)
    if odd.any():
        ver = v.u8(l3[odd]) >> 4
        guess = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, etype[odd]))
        etype[odd] = guess
    st.out["ethertype"][rows] = etype
    return rows, l3, etype


def raw_ip(v: FrameView, st: BatchState, rows: np.ndarray, pos: np.ndarray) -> Rows:
    """Raw IP (link types 101, 228, 229, 12, 14): the version nibble says which."""
    rows, pos = st.captured(rows, pos, 1)
    ver = v.u8(pos) >> 4
    etype = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, 0)).astype(np.uint16)
    bad = etype == 0
    st.mark(rows[bad], MALFORMED)
    st.out["ethertype"][rows] = etype
    return rows[~bad], pos[~bad], etype[~bad]


def null_loop(v: FrameView, st: BatchState, rows: np.ndarray, pos: np.ndarray, *, network_order: bool) -> Rows:
    """BSD NULL (0, host byte order family) and LOOP (108, network byte order family)."""
    rows, pos = st.captured(rows, pos, 4)
    fam = v.u32(pos) if network_order else v.le32(pos)
    if not network_order:
        # Host byte order of the writer: a big-endian writer's family reads as fam << 24.
        swapped = fam > 0xFFFF
        fam = np.where(swapped, v.u32(pos), fam)
    etype = np.where(fam == 2, ETH_IPV4, np.where(np.isin(fam, (10, 23, 24, 28, 30)), ETH_IPV6, 0)).astype(np.uint16)
    st.out["ethertype"][rows] = etype
    bad = etype == 0
    st.mark(rows[bad], UNSUPPORTED)
    return rows[~bad], pos[~bad] + 4, etype[~bad]


def ppp(v: FrameView, st: BatchState, rows: np.ndarray, pos: np.ndarray) -> Rows:
    """PPP (9) and PPP in HDLC framing (50): optional FF 03, then a 2-byte protocol."""
    rows, pos = st.captured(rows, pos, 4)
    hdlc = v.u16(pos) == 0xFF03
    proto_pos = np.where(hdlc, pos + 2, pos)
    proto = v.u16(proto_pos)
    etype = np.where(proto == PPP_IPV4, ETH_IPV4, np.where(proto == PPP_IPV6, ETH_IPV6, 0)).astype(np.uint16)
    st.out["ethertype"][rows] = etype
    bad = etype == 0
    st.mark(rows[bad], UNSUPPORTED)
    keep = ~bad
    return rows[keep], proto_pos[keep] + 2, etype[keep]


def c_hdlc(v: FrameView, st: BatchState, rows: np.ndarray, pos: np.ndarray) -> Rows:
    """Cisco HDLC (104): address, control, then an EtherType."""
    rows, pos = st.captured(rows, pos, 4)
    etype = v.u16(pos + 2)
    st.out["ethertype"][rows] = etype
    return rows, pos + 4, etype


def beyond_link(v: FrameView, st: BatchState, rows: np.ndarray, l3: np.ndarray, etype: np.ndarray) -> Rows:
    """Unwrap MPLS label stacks and PPPoE sessions; keep the rows that then carry IP.

    Rows with another EtherType (ARP, LLDP, …) are marked unsupported.
    """
    etype = etype.copy()
    l3 = l3.copy()
    mpls = np.isin(etype, ETH_MPLS)
    if mpls.any():
        active = np.flatnonzero(mpls)
        for _ in range(8):
            if not active.size:
                break
            p = l3[active]
            fits = p + 4 <= st.end[rows[active]]
            st.mark(rows[active[~fits]], TRUNCATED)
            etype[active[~fits]] = 0
            active, p = active[fits], p[fits]
            bottom = (v.u8(p + 2) & 1) == 1
            l3[active] = p + 4
            done = active[bottom]
            ver = v.u8(l3[done]) >> 4
            etype[done] = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, 0))
            active = active[~bottom]
        etype[active] = 0
    pppoe = etype == ETH_PPPOE
    if pppoe.any():
        p = l3[pppoe]
        proto = v.u16(p + 6)
        fits = p + 8 <= st.end[rows[pppoe]]
        etype[pppoe] = np.where(fits & (proto == PPP_IPV4), ETH_IPV4,
                                np.where(fits & (proto == PPP_IPV6), ETH_IPV6, 0))
        l3[pppoe] = p + 8
    ip = (etype == ETH_IPV4) | (etype == ETH_IPV6)
    st.mark(rows[~ip], UNSUPPORTED)
    return rows[ip], l3[ip], etype[ip]


def decode_link(v: FrameView, st: BatchState, rows: np.ndarray, link_type: int) -> Rows:
    """Dispatch ``rows`` (all of one link type) to their link decoder; fast path only.

    Link types that need the per-packet fallback return no rows here.
    """
    pos = st.start[rows]
    if link_type == linktypes.ETHERNET:
        return ethernet(v, st, rows, pos)
    if link_type == linktypes.LINUX_SLL2:
        return sll2(v, st, rows, pos)
    if link_type == linktypes.LINUX_SLL:
        return sll(v, st, rows, pos)
    if link_type in linktypes.RAW_IP:
        return raw_ip(v, st, rows, pos)
    if link_type in (linktypes.NULL, linktypes.LOOP):
        return null_loop(v, st, rows, pos, network_order=link_type == linktypes.LOOP)
    if link_type in (linktypes.PPP, linktypes.PPP_HDLC):
        return ppp(v, st, rows, pos)
    if link_type == linktypes.C_HDLC:
        return c_hdlc(v, st, rows, pos)
    st.mark(rows, UNSUPPORTED)
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty, np.zeros(0, dtype=np.uint16)
