"""The one place that decides a flow's canonical orientation and the port-like pair of a packet.

Every other module (grouping, ICMP error matching, Community ID) asks this module which
endpoint of a packet is the *lower* one and what its two "ports" are, so that a packet and
its reply always land on the same key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import numpy as np

TCP, UDP, SCTP, ICMP, ICMPV6 = 6, 17, 132, 1, 58
PORT_PROTOS = (TCP, UDP, SCTP)

# Zeek's ICMP4_counterpart / ICMP6_counterpart (also the Community ID spec): a message
# type with a counterpart is two-way (request <-> reply) and maps to ports
# (type, counterpart); any other type is one-way with ports (type, code).
_COUNTERPART_V4 = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_COUNTERPART_V6 = {
    128: 129, 129: 128, 130: 131, 131: 130, 133: 134, 134: 133, 135: 136, 136: 135,
    139: 140, 140: 139, 144: 145, 145: 144,
}
ICMP_REQUESTS_V4 = (8, 13, 15, 10, 17)
"""ICMP types whose sender is the originator (the request side of a counterpart pair)."""
ICMP_REQUESTS_V6 = (128, 130, 133, 135, 139, 144)
"""ICMPv6 types whose sender is the originator."""
ICMP_ERRORS_V4 = (3, 4, 5, 11, 12)
"""ICMP types that quote the packet they answer."""
ICMP_ERRORS_V6 = (1, 2, 3, 4)
"""ICMPv6 types that quote the packet they answer."""
ICMP_ID_TYPES_V4 = (0, 8, 13, 14, 15, 16, 17, 18)
"""ICMP types whose identifier is part of the flow key (as conntrack keys them)."""
ICMP_ID_TYPES_V6 = (128, 129)
"""ICMPv6 types whose identifier is part of the flow key."""


def _table(mapping: dict[int, int]) -> np.ndarray:
    t = np.full(256, -1, dtype=np.int32)
    for k, v in mapping.items():
        t[k] = v
    return t


COUNTERPART_V4 = _table(_COUNTERPART_V4)
"""Counterpart of each ICMP type, -1 for one-way types."""
COUNTERPART_V6 = _table(_COUNTERPART_V6)
"""Counterpart of each ICMPv6 type, -1 for one-way types."""


def _member(values: np.ndarray, members: Sequence[int]) -> np.ndarray:
    t = np.zeros(256, dtype=bool)
    t[list(members)] = True
    return t[np.clip(values, 0, 255)] & (values >= 0)


def icmp_is(kind: str, version: np.ndarray, icmp_type: np.ndarray) -> np.ndarray:
    """Mask of ICMP/ICMPv6 packets whose type is of ``kind``: 'request', 'error' or 'id'.

    ``version`` is the IP version (4 or 6) and ``icmp_type`` the type (-1 when absent).
    """
    v4, v6 = {
        "request": (ICMP_REQUESTS_V4, ICMP_REQUESTS_V6),
        "error": (ICMP_ERRORS_V4, ICMP_ERRORS_V6),
        "id": (ICMP_ID_TYPES_V4, ICMP_ID_TYPES_V6),
    }[kind]
    return np.where(version == 6, _member(icmp_type, v6), _member(icmp_type, v4))


def flow_ports(proto: np.ndarray, version: np.ndarray, sport: np.ndarray, dport: np.ndarray,
               icmp_type: np.ndarray, icmp_code: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (source, destination) port pair of each packet as Zeek and Community ID see it.

    TCP/UDP/SCTP: the ports. ICMP/ICMPv6: (type, counterpart type) for two-way types,
    (type, code) for one-way types. Other protocols: (-1, -1). Returns int32 arrays
    ``(port_a, port_b)`` and a bool array ``one_way`` (only ICMP one-way types).
    """
    is_port = (proto == TCP) | (proto == UDP) | (proto == SCTP)
    is_icmp = ((proto == ICMP) & (version == 4)) | ((proto == ICMPV6) & (version == 6))
    t = np.clip(icmp_type, 0, 255)
    cp = np.where(version == 6, COUNTERPART_V6[t], COUNTERPART_V4[t])
    one_way = is_icmp & (cp < 0)
    pa = np.where(is_port, sport, np.where(is_icmp, icmp_type, -1)).astype(np.int32)
    pb = np.where(is_port, dport, np.where(one_way, icmp_code, np.where(is_icmp, cp, -1))).astype(np.int32)
    return pa, pb, one_way


def address_ranks(categories: Sequence[str]) -> tuple[np.ndarray, list[bytes]]:
    """Order addresses as Community ID does: network-order bytes, IPv4 before IPv6.

    ``categories`` are address texts. Returns ``rank`` (int64, position of each address in
    that order) and ``packed`` (the network-order bytes of each address, b'' if unparsable).
    """
    packed = []
    for text in categories:
        try:
            packed.append(ipaddress.ip_address(text).packed)
        except ValueError:
            packed.append(b"")
    order = sorted(range(len(packed)), key=lambda i: (len(packed[i]), packed[i]))
    rank = np.empty(len(packed), dtype=np.int64)
    rank[order] = np.arange(len(packed), dtype=np.int64)
    return rank, packed


def canonical(rank_a: np.ndarray, port_a: np.ndarray, rank_b: np.ndarray, port_b: np.ndarray,
              one_way: np.ndarray | None = None) -> np.ndarray:
    """True where endpoint A is the canonical first (lower) endpoint of the pair (A, B).

    The lower endpoint is the smaller address (network-order bytes, see ``address_ranks``),
    then the smaller port, exactly the ordering of the Community ID spec; a one-way ICMP
    message keeps its own direction. Flows are keyed on (lower, higher) so that a packet
    and its reply share a key; the orientation a flow is *reported* in (originator first)
    is decided later from the TCP handshake or the first packet.
    """
    lower = (rank_a < rank_b) | ((rank_a == rank_b) & (port_a <= port_b))
    if one_way is not None:
        lower |= one_way
    return lower
