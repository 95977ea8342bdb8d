"""Community ID v1 (corelight/community-id-spec) for many flows at once.

``"1:" + base64(sha1(seed_u16 ‖ addr_a ‖ addr_b ‖ proto_u8 ‖ 0 ‖ port_a_u16 ‖ port_b_u16))``
with (a, b) the canonical order of ``key.canonical``; ports only for TCP, UDP, SCTP, ICMP
and ICMPv6 (ICMP types map to ports as ``key.flow_ports`` does). The message bytes are
built column-wise, only distinct messages are hashed, and base64 is done in numpy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from flowtrace.flows.key import ICMP, ICMPV6, PORT_PROTOS, canonical

_B64 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", dtype=np.uint8)
_WITH_PORTS = (*PORT_PROTOS, ICMP, ICMPV6)


def community_ids(*, proto: np.ndarray, addr_a: np.ndarray, port_a: np.ndarray, addr_b: np.ndarray,
                  port_b: np.ndarray, one_way: np.ndarray, rank: np.ndarray, packed: Sequence[bytes],
                  seed: int = 0) -> np.ndarray:
    """Community ID strings (object array; '' where an address is not IP) of flows A -> B.

    ``addr_a``/``addr_b`` index ``packed`` (network-order bytes per address) and ``rank``
    (their order, see ``key.address_ranks``); ports are ``key.flow_ports`` values;
    ``one_way`` marks ICMP types without a counterpart (never reordered).
    """
    n = proto.size
    out = np.full(n, "", dtype=object)
    if not n:
        return out
    lens = np.array([len(p) for p in packed] or [0], dtype=np.int64)
    first = canonical(rank[addr_a], port_a, rank[addr_b], port_b, one_way)
    lo = np.where(first, addr_a, addr_b)
    hi = np.where(first, addr_b, addr_a)
    plo = np.where(first, port_a, port_b)
    phi = np.where(first, port_b, port_a)
    with_ports = np.isin(proto, _WITH_PORTS)
    for width in (4, 16):
        table = np.zeros((len(packed) or 1, width), dtype=np.uint8)
        for i, p in enumerate(packed):
            if len(p) == width:
                table[i] = np.frombuffer(p, dtype=np.uint8)
        for ports in (True, False):
            sel = np.flatnonzero((lens[lo] == width) & (lens[hi] == width) & (with_ports == ports))
            if not sel.size:
                continue
            cols = [
                np.tile(np.array([seed >> 8, seed & 0xFF], dtype=np.uint8), (sel.size, 1)),
                table[lo[sel]], table[hi[sel]],
                proto[sel].astype(np.uint8)[:, None], np.zeros((sel.size, 1), dtype=np.uint8),
            ]
            if ports:
                for side in (plo[sel], phi[sel]):
                    port = side.astype(np.int64)
                    cols.append(np.stack(((port >> 8) & 0xFF, port & 0xFF), axis=1).astype(np.uint8))
            msg = np.ascontiguousarray(np.concatenate(cols, axis=1))
            rows = msg.view(np.dtype((np.void, msg.shape[1]))).ravel()
            uniq, inverse = np.unique(rows, return_inverse=True)
            buf, w, sha1 = uniq.tobytes(), msg.shape[1], hashlib.sha1
            digests = b"".join([sha1(buf[i:i + w]).digest() for i in range(0, len(buf), w)])
            out[sel] = _render(np.frombuffer(digests, dtype=np.uint8).reshape(-1, 20))[inverse.ravel()]
    return out


def _render(digests: np.ndarray) -> np.ndarray:
    """'1:' + base64 of each 20-byte row (object array of str)."""
    k = digests.shape[0]
    padded = np.zeros((k, 21), dtype=np.uint8)
    padded[:, :20] = digests
    g = padded.reshape(k, 7, 3).astype(np.uint32)
    v = (g[:, :, 0] << 16) | (g[:, :, 1] << 8) | g[:, :, 2]
    idx = np.stack(((v >> 18) & 63, (v >> 12) & 63, (v >> 6) & 63, v & 63), axis=2).reshape(k, 28)
    chars = _B64[idx]
    chars[:, 27] = ord("=")
    text = np.concatenate((np.tile(np.frombuffer(b"1:", dtype=np.uint8), (k, 1)), chars), axis=1)
    return np.ascontiguousarray(text).view("S30").ravel().astype(str).astype(object)
