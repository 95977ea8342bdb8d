"""Payload fingerprints and transport checksum verification, vectorised over a batch.

The payload hash lets one packet be recognised at every vantage point (NAT rewrites
headers, not payload). Checksums are verified with one running sum over the batch
buffer: the sum of any byte range is a difference of two prefix sums.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from flowtrace.decode.state import OK, BatchState
from flowtrace.decode.view import FrameView
from flowtrace.hashing import GOLDEN, splitmix64
from flowtrace.schema import IP_FLAG_FRAGMENT

HASH_BYTES = 32
"""How many leading payload bytes the hash covers."""

_MASKS = np.array([0] + [(1 << (8 * k)) - 1 for k in range(1, 8)] + [(1 << 64) - 1], dtype=np.uint64)


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
    h = hl.astype(np.uint64) * GOLDEN
    with np.errstate(over="ignore"):
        for k in range(HASH_BYTES // 8):
            nbytes = np.clip(hl - 8 * k, 0, 8)
            word = v.le64(p + 8 * k) & _MASKS[nbytes]
            h = splitmix64(h ^ word)
    h32 = ((h >> np.uint64(32)) ^ h).astype(np.uint32)
    h32[h32 == 0] = 1
    st.out["payload_hash"][rows] = h32


def _fold(s: np.ndarray) -> np.ndarray:
    """Ones' complement fold of a uint64 sum to 16 bits."""
    m = np.uint64(0xFFFF)
    for _ in range(4):
        s = (s & m) + (s >> np.uint64(16))
    return s


SUM_SPAN_WORDS = 1 << 17
"""32-bit words summed per prefix-sum pass (a 1 MiB work buffer of uint64 prefix sums,
kept for the process's life)."""


_SCRATCH: list[np.ndarray] = [np.zeros(0, dtype=np.uint64)]


def _scratch(n: int) -> np.ndarray:
    """A uint64 work array of ``n`` elements, reused from call to call."""
    if _SCRATCH[0].size < n:
        _SCRATCH[0] = np.zeros(max(n, SUM_SPAN_WORDS + 4096), dtype=np.uint64)
    return _SCRATCH[0][:n]


def _byte_sums(data: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Per segment ``data[s[i]:e[i]]`` (sorted, disjoint, non-empty), the exact uint64 sum of
    its bytes weighted by 256 ** (position mod 4): the sum of the little-endian 32-bit words
    of ``data`` that the segment covers, less the bytes of those words outside it. Zero only
    for a segment of zero bytes.

    The words are taken in spans of SUM_SPAN_WORDS (plus the segment that crosses a span's
    end), each widened into one reused work buffer whose prefix sums give every segment's
    sum as a difference (fresh large arrays cost a page fault per 4 KiB, and reduceat
    makes them).
    """
    n_words = -(-int(e[-1]) // 4)
    if n_words * 4 > data.shape[0]:  # the last segment's word runs past the buffer
        data = np.concatenate([data, np.zeros(n_words * 4 - data.shape[0], dtype=np.uint8)])
    words = data[: n_words * 4].view("<u4")
    a = s // 4
    b = (e + 3) // 4
    sums = np.empty(a.size, dtype=np.uint64)
    cuts = np.searchsorted(a, np.arange(a[0], a[-1] + 1, SUM_SPAN_WORDS), side="left").tolist()
    cuts.append(a.size)
    for i, j in pairwise(cuts):
        if i == j:
            continue
        lo, hi = int(a[i]), int(b[j - 1])
        prefix = _scratch(hi - lo + 1)
        prefix[0] = 0
        np.copyto(prefix[1:], words[lo:hi], casting="unsafe")
        np.cumsum(prefix, out=prefix)
        sums[i:j] = prefix[b[i:j] - lo] - prefix[a[i:j] - lo]
    # The bytes of the first and last words outside the segment: up to 3 on each side.
    for k in range(1, 4):
        lead = (s & 3) >= k  # byte s - k shares the first word
        q = s[lead] - k
        sums[lead] -= data[q].astype(np.uint64) << (8 * (q & 3)).astype(np.uint64)
        trail = (-e & 3) >= k  # byte e + k - 1 shares the last word
        q = e[trail] + (k - 1)
        sums[trail] -= data[q].astype(np.uint64) << (8 * (q & 3)).astype(np.uint64)
    return sums


def verify_checksums(v: FrameView, st: BatchState) -> None:
    """Set l4_checksum for whole, unfragmented, fully captured TCP/UDP/ICMP/ICMPv6 segments:
    1 verified, 0 wrong, 2 the offload placeholder (only the pseudo-header sum).

    Prefix sums over the batch buffer read as little-endian 32-bit words sum every
    segment; the ones' complement sum of 16-bit words is that sum modulo 65535, with the
    weights of the bytes swapped where the segment starts at an even offset (RFC 1071:
    byte order independence, and sums over wider words fold to the same value).
    """
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
    udp4_zero = keep & (proto[rows] == 17) & (version[rows] == 4) & (v.u16(s + 6) == 0)
    keep &= ~udp4_zero
    rows, s, e, length = rows[keep], s[keep], e[keep], length[keep]
    if not rows.size:
        return
    order = np.argsort(s, kind="stable")
    if (np.diff(s[order]) < 0).any():  # pragma: no cover - argsort guarantees order
        return
    rows, s, e, length = rows[order], s[order], e[order], length[order]
    # Ones' complement sums are sums modulo 65535, where 2**16 is 1: a byte's weight is 256
    # or 1 by the parity of its position, whatever the word size. The segment read as
    # big-endian 16-bit words from s gives weight 256 to the bytes at s, s + 2, ...: that is
    # the weight _byte_sums gives them when s is odd, and 256 times it when s is even.
    raw = _byte_sums(v.data, s, e)
    seg = raw % np.uint64(0xFFFF)
    seg = np.where((s & 1) == 0, seg * np.uint64(256), seg)
    p = proto[rows].astype(np.uint64)
    ln = length.astype(np.uint64)
    pseudo = st.pseudo[rows] + p + (ln & np.uint64(0xFFFF)) + (ln >> np.uint64(16))
    with_pseudo = p != 1
    total = np.where(with_pseudo, seg + pseudo, seg)
    # A right checksum makes the folded sum 0xFFFF: the sum is 0 modulo 65535 but not 0
    # (TCP, UDP and ICMPv6 sums include the protocol number; an ICMP message is all zeros).
    good = (total % np.uint64(0xFFFF) == 0) & (with_pseudo | (raw != 0))
    result = np.where(good, 1, 0).astype(np.int8)
    # Checksum offload: a sender that leaves the sum to the NIC writes only the pseudo-header
    # sum in the field (CHECKSUM_PARTIAL), and a capture on that host (or on a veth, which
    # never fills it in) sees exactly that. Not an error: 2, not 0.
    bad = np.flatnonzero(~good & with_pseudo)
    if bad.size:
        field_at = np.where(proto[rows[bad]] == 6, s[bad] + 16, np.where(proto[rows[bad]] == 17, s[bad] + 6,
                                                                        s[bad] + 2))
        field = v.u16(field_at).astype(np.uint64)
        placeholder = _fold(pseudo[bad]) & np.uint64(0xFFFF)
        partial = field == placeholder
        result[bad[partial]] = 2
    out["l4_checksum"][rows] = result
