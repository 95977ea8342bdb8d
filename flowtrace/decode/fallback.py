"""Per-packet fallback for link layers the vectorised path does not cover.

802.11 (plain, radiotap, PPI) frames are parsed with dpkt; NFLOG with a TLV walk. Both
only locate the network header: the vectorised IP and transport decoders take over
from there, so the fallback costs one Python call per frame of these link types only.
"""

from __future__ import annotations

import struct

import numpy as np

from flowtrace.capture import linktypes
from flowtrace.decode.link import ETH_IPV4, ETH_IPV6, Rows
from flowtrace.decode.state import TRUNCATED, UNSUPPORTED, BatchState

_NFULA_PAYLOAD = 9


def _ieee80211(frame: bytes) -> tuple[int, int] | None:
    """(offset of the network header, EtherType) inside an 802.11 data frame, or None."""
    import dpkt  # imported on first use: most captures never need it

    wlan = dpkt.ieee80211.IEEE80211(frame)
    if wlan.type != dpkt.ieee80211.DATA_TYPE or wlan.wep:
        return None
    rest = wlan.data if isinstance(wlan.data, bytes) else bytes(wlan.data)
    header = len(frame) - len(rest)
    if rest[:3] != b"\xaa\xaa\x03" or len(rest) < 8:
        return None
    return header + 8, struct.unpack("!H", rest[6:8])[0]


def _locate(link_type: int, frame: bytes) -> tuple[int, int] | None:
    if link_type == linktypes.IEEE802_11:
        return _ieee80211(frame)
    if link_type == linktypes.IEEE802_11_RADIOTAP:
        hlen = struct.unpack_from("<H", frame, 2)[0]
        found = _ieee80211(frame[hlen:])
        return None if found is None else (hlen + found[0], found[1])
    if link_type == linktypes.PPI:
        hlen, dlt = struct.unpack_from("<HI", frame, 2)
        if dlt != linktypes.IEEE802_11:
            return None
        found = _ieee80211(frame[hlen:])
        return None if found is None else (hlen + found[0], found[1])
    if link_type == linktypes.NFLOG:
        family = frame[0]
        pos = 4
        while pos + 4 <= len(frame):
            length, tlv_type = struct.unpack_from("<HH", frame, pos)
            if length < 4:
                return None
            if tlv_type == _NFULA_PAYLOAD:
                return pos + 4, ETH_IPV4 if family == 2 else ETH_IPV6 if family == 10 else 0
            pos += (length + 3) & ~3
        return None
    return None


def decode_fallback(st: BatchState, data: np.ndarray, rows: np.ndarray, link_type: int) -> Rows:
    """Locate the IP header of ``rows`` one frame at a time; return ``(rows, l3, ethertype)``."""
    import dpkt  # imported on first use: most captures never need it

    keep: list[int] = []
    l3: list[int] = []
    etypes: list[int] = []
    for r in rows.tolist():
        s, e = int(st.start[r]), int(st.end[r])
        frame = data[s:e].tobytes()
        try:
            found = _locate(link_type, frame)
        except (dpkt.UnpackError, struct.error, IndexError, ValueError):
            st.mark(np.array([r]), TRUNCATED)
            continue
        if found is None or found[1] not in (ETH_IPV4, ETH_IPV6):
            if found is not None:
                st.out["ethertype"][r] = found[1]
            st.mark(np.array([r]), UNSUPPORTED)
            continue
        keep.append(r)
        l3.append(s + found[0])
        etypes.append(found[1])
        st.out["ethertype"][r] = found[1]
    return (
        np.asarray(keep, dtype=np.int64),
        np.asarray(l3, dtype=np.int64),
        np.asarray(etypes, dtype=np.uint16),
    )
