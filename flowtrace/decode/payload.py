"""Payload fingerprints and transport checksum verification, vectorised over a batch.

The payload hash lets one packet be recognised at every vantage point (NAT rewrites
headers, not payload). Checksums are verified with one running sum over the batch
buffer: the sum of any byte range is a difference of two prefix sums.
"""

from __future__ import annotations

import numpy as np

from flowtrace.decode.state import OK, BatchState
from flowtrace.decode.view import FrameView
from flowtrace.schema import IP_FLAG_FRAGMENT

HASH_BYTES = 32
"""How many leading payload bytes the hash covers."""

_MASKS = np.array([0] + [(1 << (8 * k)) - 1 for k in range(1, 8)] + [(1 << 64) - 1], dtype=np.uint64)
_K0 = np.uint64(0x9E3779B97F4A7C15)
_K1 = np.uint64(0xBF58476D1CE4E5B9)
_K2 = np.uint64(0x94D049BB133111EB)


def _mix(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint64(30)
    h *= _K1
    h ^= h >> np.uint64(27)
    h *= _K2
    h ^= h >> np.uint64(31)
    return h


def hash_payloads(v: FrameView, st: BatchState) -> None:
    """Fill payload_hash for rows whose first min(payload_len, 32) payload bytes were captured."""
    plen = st.out["payload_len"].astype(np.int64)
    rows = np.flatnonzero((st.pay >= 0) & (plen > 0))
    if not rows.size:
        return
    hl = np.minimum(plen[rows], HASH_BYTES)
    ok = st.end[rows] - st.pay[rows] >= hl
    rows, hl = rows[ok], hl[ok]
    p = st.pay[rows]
    h = hl.astype(np.uint64) * _K0
    with np.errstate(over="ignore"):
        for k in range(HASH_BYTES // 8):
            nbytes = np.clip(hl - 8 * k, 0, 8)
            word = v.le64(p + 8 * k) & _MASKS[nbytes]
            h = _mix(h ^ word)
    h[h == 0] = 1
    st.out["payload_hash"][rows] = h


def _fold(s: np.ndarray) -> np.ndarray:
    """Ones' complement fold of a uint64 sum to 16 bits."""
    m = np.uint64(0xFFFF)
    for _ in range(4):
        s = (s & m) + (s >> np.uint64(16))
    return s


def verify_checksums(v: FrameView, st: BatchState) -> None:
    """Set l4_checksum to 1/0 for whole, unfragmented, fully captured TCP/UDP/ICMP/ICMPv6 segments."""
    out = st.out
    proto = out["proto"]
    version = out["ip_version"]
    candidates = (
        (out["decode_status"] == OK)
        & (st.l4 >= 0)
        & (st.ip_end <= st.end)
        & ((out["ip_flags"] & IP_FLAG_FRAGMENT) == 0)
        & ((proto == 6) | (proto == 17) | ((proto == 1) & (version == 4)) | ((proto == 58) & (version == 6)))
    )
    rows = np.flatnonzero(candidates)
    if not rows.size:
        return
    s = st.l4[rows]
    e = st.ip_end[rows]
    length = e - s
    keep = (length >= 8) & (length <= 65535)
    rows, s, e, length = rows[keep], s[keep], e[keep], length[keep]
    udp4_zero = (proto[rows] == 17) & (version[rows] == 4) & (v.u16(s + 6) == 0)
    rows, s, e, length = rows[~udp4_zero], s[~udp4_zero], e[~udp4_zero], length[~udp4_zero]
    if not rows.size:
        return
    lo, hi = int(s.min()), int(e.max())
    # Prefix sums of the buffer read as big-endian 16-bit words aligned on even offsets;
    # uint32 wraps, but no range sum of <= 64 KiB can exceed 2**32.
    w = v.data[lo - 1 : hi].astype(np.uint32)
    w[(lo - 1) % 2 :: 2] <<= 8  # bytes at even absolute offsets are high bytes
    np.cumsum(w, out=w)
    total = (w[e - lo] - w[s - lo]).astype(np.uint64)
    total = _fold(total)
    odd = (s & 1) == 1
    total[odd] = ((total[odd] & np.uint64(0xFF)) << np.uint64(8)) | (total[odd] >> np.uint64(8))
    p = proto[rows].astype(np.uint64)
    with_pseudo = p != 1
    pseudo = st.pseudo[rows] + p + (length.astype(np.uint64) & np.uint64(0xFFFF)) + (length.astype(np.uint64) >> np.uint64(16))
    total = np.where(with_pseudo, total + pseudo, total)
    out["l4_checksum"][rows] = np.where(_fold(total) == 0xFFFF, 1, 0).astype(np.int8)
