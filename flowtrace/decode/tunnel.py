"""Tunnels CNIs use: VXLAN (4789, 8472, GPE 4790), Geneve (6081), IP-in-IP (4), IPv6-in-IPv4 (41),
GRE (47, incl. transparent Ethernet and ERSPAN), and opaque WireGuard and ESP.

A tunnelled packet becomes one row for its innermost IP packet; the outermost tunnel's
kind, outer addresses and VNI stay on the row.
"""

from __future__ import annotations

import numpy as np

from flowtrace.decode.link import ETH_IPV4, ETH_IPV6, ETH_MPLS
from flowtrace.decode.state import BatchState
from flowtrace.decode.view import FrameView
from flowtrace.schema import ENCAPSULATIONS

ENCAP_CODE = {name: i for i, name in enumerate(ENCAPSULATIONS)}
ETHERNET_INNER = 0
"""Inner "EtherType" meaning: an Ethernet frame starts here."""

VXLAN_PORTS = (4789, 8472)
VXLAN_GPE_PORT = 4790
GENEVE_PORT = 6081
WIREGUARD_PORTS = (51820, 51821, 51871)
ETH_TEB = 0x6558
ETH_ERSPAN2 = 0x88BE
ETH_ERSPAN3 = 0x22EB
ETH_PPP = 0x880B

Inner = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(rows, position of the inner header, inner EtherType or ETHERNET_INNER)."""


def _mark_tunnel(st: BatchState, rows: np.ndarray, kind: str, vni: np.ndarray | None = None) -> None:
    """Record the outermost tunnel on ``rows``: kind, outer addresses, VNI."""
    out = st.out
    fresh = rows[out["encap"][rows] == 0]
    out["encap"][fresh] = ENCAP_CODE[kind]
    out["outer_src"][fresh] = out["src"][fresh]
    out["outer_dst"][fresh] = out["dst"][fresh]
    if vni is not None:
        first = out["encap"][rows] == ENCAP_CODE[kind]
        keep = np.isin(rows, fresh) & first
        out["vni"][rows[keep]] = vni[keep].astype(np.int32)


def detect_tunnels(v: FrameView, st: BatchState, rows: np.ndarray) -> Inner:
    """Find tunnels among decoded IP ``rows``; return where their inner packets start.

    Opaque tunnels (WireGuard, ESP) are labelled and return nothing to decode.
    """
    out = st.out
    proto = out["proto"][rows]
    whole = out["frag_offset"][rows] == 0
    l4 = st.l4[rows]
    end = st.end[rows]
    found_rows: list[np.ndarray] = []
    found_pos: list[np.ndarray] = []
    found_type: list[np.ndarray] = []

    def emit(sel: np.ndarray, pos: np.ndarray, etype: np.ndarray | int, kind: str,
             vni: np.ndarray | None = None) -> None:
        r = rows[sel]
        if not r.size:
            return
        _mark_tunnel(st, r, kind, vni)
        found_rows.append(r)
        found_pos.append(pos)
        found_type.append(np.broadcast_to(np.asarray(etype, dtype=np.uint16), r.shape).copy())

    # IP in IP: proto 4 carries IPv4, proto 41 carries IPv6.
    emit(whole & (proto == 4), l4[whole & (proto == 4)], ETH_IPV4, "ipip")
    emit(whole & (proto == 41), l4[whole & (proto == 41)], ETH_IPV6, "ip6ip")

    esp = whole & (proto == 50)
    if esp.any():
        _mark_tunnel(st, rows[esp], "esp")

    gre = np.flatnonzero(whole & (proto == 47) & (l4 + 4 <= end))
    if gre.size:
        p = l4[gre]
        flags = v.u16(p)
        ptype = v.u16(p + 2)
        version = flags & 7
        csum = ((flags & 0xC000) != 0).astype(np.int64)
        key = ((flags & 0x2000) != 0).astype(np.int64)
        seqn = ((flags & 0x1000) != 0).astype(np.int64)
        routing = (flags & 0x4000) != 0
        ackn = ((flags & 0x0080) != 0).astype(np.int64)
        hlen = np.where(version == 1, 8 + 4 * seqn + 4 * ackn, 4 + 4 * csum + 4 * key + 4 * seqn)
        inner = p + hlen
        etype = ptype.copy()
        # ERSPAN type II has an 8-byte header (sequence bit set); type I has none.
        e2 = ptype == ETH_ERSPAN2
        inner = np.where(e2 & (seqn == 1), inner + 8, inner)
        e3 = ptype == ETH_ERSPAN3
        inner = np.where(e3, inner + 12 + 8 * (v.u8(inner + 11) & 1), inner)
        ppp = ptype == ETH_PPP
        if ppp.any():
            pp = inner[ppp]
            hdlc = v.u16(pp) == 0xFF03
            pp = np.where(hdlc, pp + 2, pp)
            pproto = v.u16(pp)
            etype[ppp] = np.where(pproto == 0x0021, ETH_IPV4, np.where(pproto == 0x0057, ETH_IPV6, 0))
            inner[ppp] = pp + 2
        etype = np.where((ptype == ETH_TEB) | e2 | e3, ETHERNET_INNER, etype)
        usable = (~routing & (version <= 1) & np.isin(etype, (ETHERNET_INNER, ETH_IPV4, ETH_IPV6, *ETH_MPLS))
                  & (inner <= end[gre]))
        sel = np.zeros(rows.size, dtype=bool)
        sel[gre[usable]] = True
        emit(sel, inner[usable], etype[usable], "gre")

    udp = np.flatnonzero(whole & (proto == 17) & (l4 + 8 <= end))
    if udp.size:
        p = l4[udp]
        sport = v.u16(p)
        dport = v.u16(p + 2)
        room = end[udp]
        vx = np.isin(dport, VXLAN_PORTS) & (p + 16 <= room) & ((v.u8(p + 8) & 0x08) != 0)
        outermost = out["encap"][rows[udp]] == 0 if st.tunnel_ports is not None else None
        _emit_udp(emit, rows.size, udp[vx], p[vx] + 16, ETHERNET_INNER, "vxlan", v.u32(p[vx] + 12) >> 8)
        gpe = (dport == VXLAN_GPE_PORT) & (p + 16 <= room) & ((v.u8(p + 8) & 0x04) != 0)
        if gpe.any():
            nxt = v.u8(p[gpe] + 11)
            etype = np.where(nxt == 1, ETH_IPV4, np.where(nxt == 2, ETH_IPV6, np.where(nxt == 3, ETHERNET_INNER, 1)))
            ok = etype != 1
            _emit_udp(emit, rows.size, udp[gpe][ok], p[gpe][ok] + 16, etype[ok], "vxlan",
                      v.u32(p[gpe][ok] + 12) >> 8)
        gen = (dport == GENEVE_PORT) & (p + 16 <= room) & ((v.u8(p + 8) >> 6) == 0)
        if gen.any():
            g = p[gen]
            optlen = (v.u8(g + 8) & 0x3F).astype(np.int64) * 4
            ptype = v.u16(g + 10)
            etype = np.where(ptype == ETH_TEB, ETHERNET_INNER, ptype)
            ok = np.isin(etype, (ETHERNET_INNER, ETH_IPV4, ETH_IPV6))
            _emit_udp(emit, rows.size, udp[gen][ok], g[ok] + 16 + optlen[ok], etype[ok], "geneve",
                      v.u32(g[ok] + 12) >> 8)
        if outermost is not None and st.tunnel_ports is not None:
            found = outermost & (out["encap"][rows[udp]] != 0)
            st.tunnel_ports.append((rows[udp[found]], sport[found], dport[found]))
        wg = ((np.isin(dport, WIREGUARD_PORTS) | np.isin(sport, WIREGUARD_PORTS)) & (p + 12 <= room)
              & np.isin(v.u8(p + 8), (1, 2, 3, 4)) & ((v.u32(p + 8) & 0x00FFFFFF) == 0))
        if wg.any():
            _mark_tunnel(st, rows[udp[wg]], "wireguard")

    if not found_rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.uint16)
    return np.concatenate(found_rows), np.concatenate(found_pos), np.concatenate(found_type)


def _emit_udp(emit, nrows: int, idx: np.ndarray, pos: np.ndarray, etype: np.ndarray | int,
              kind: str, vni: np.ndarray) -> None:
    if not idx.size:
        return
    sel = np.zeros(nrows, dtype=bool)
    sel[idx] = True
    # emit() selects rows in row order; idx is increasing, so positions line up.
    order = np.argsort(idx, kind="stable")
    et = etype if np.isscalar(etype) else np.asarray(etype)[order]
    emit(sel, pos[order], et, kind, vni[order])
