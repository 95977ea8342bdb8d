"""Packet signatures: what a NAT does not rewrite, hashed, so one packet is recognised anywhere.

NAT rewrites addresses and ports, routing rewrites the TTL, tunnels add and remove outer
headers; the TCP sequence and acknowledgement numbers, the TCP timestamp, the payload,
and (IPv4) the IP identification survive all of them. A signature is a 64-bit hash of
those invariants, so that "the same packet at another vantage point" is an equality join.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.hashing import GOLDEN, splitmix64
from flowtrace.schema import TCP_OPT_TIMESTAMP

NONE, WEAK, STRONG = 0, 1, 2
"""Signature strengths: none (not an IP packet we can match), weak (UDP, ICMP, other IP:
IP id and payload, may repeat; matched within a time window), strong (TCP: 64 bits of
sequence space plus timestamp and payload; unique for practical purposes)."""

TCP_MATCH_FLAGS = 0x07 | 0x10
"""FIN, SYN, RST and ACK take part in TCP signatures; PSH, URG and ECN bits may be
rewritten by segmentation offload or routers, so they do not."""


def _mix(h: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Fold ``value`` into the running uint64 hash ``h`` (splitmix64 finaliser)."""
    return splitmix64((h ^ value.astype(np.uint64)) * GOLDEN)


def packet_signatures(packets: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Signature (uint64) and strength (int8) of every packet row; 0 / NONE where unmatchable.

    TCP: sequence, acknowledgement, FIN/SYN/RST/ACK, timestamp value, payload length and
    payload fingerprint. UDP: IPv4 id, payload length and fingerprint, DNS id. ICMP echo:
    type, code, sequence, IPv4 id, payload. ICMP errors: type, code, IPv4 id, and the
    quoted packet's protocol, IP id and TCP sequence (the quoted addresses are rewritten
    by NAT reversal, so they are left out). Other IP protocols: IPv4 id and payload.
    """
    n = len(packets)
    sig = np.zeros(n, dtype=np.uint64)
    strength = np.zeros(n, dtype=np.int8)
    if not n:
        return sig, strength
    ok = (packets["decode_status"] == "ok").to_numpy() & (packets["ip_version"].to_numpy() > 0)
    proto = packets["proto"].to_numpy()
    v4 = packets["ip_version"].to_numpy() == 4
    ip_id = np.where(v4, packets["ip_id"].to_numpy(), 0).astype(np.uint64)
    plen = packets["payload_len"].to_numpy().astype(np.uint64)
    phash = packets["payload_hash"].to_numpy().astype(np.uint64)
    with np.errstate(over="ignore"):
        tcp = ok & (proto == 6) & (packets["sport"].to_numpy() >= 0)
        if tcp.any():
            i = np.flatnonzero(tcp)
            has_ts = (packets["tcp_opts"].to_numpy()[i] & TCP_OPT_TIMESTAMP) != 0
            h = np.full(i.size, 6, dtype=np.uint64)
            h = _mix(h, packets["seq"].to_numpy()[i])
            h = _mix(h, packets["ack"].to_numpy()[i])
            h = _mix(h, packets["tcp_flags"].to_numpy()[i] & TCP_MATCH_FLAGS)
            h = _mix(h, np.where(has_ts, packets["tsval"].to_numpy()[i].astype(np.uint64) + 1, 0))
            h = _mix(h, plen[i])
            h = _mix(h, phash[i])
            sig[i] = h
            strength[i] = STRONG
        itype = packets["icmp_type"].to_numpy()
        icmp = ok & ((proto == 1) | (proto == 58)) & (itype >= 0)
        if icmp.any():
            i = np.flatnonzero(icmp)
            quoted = packets["quoted_proto"].to_numpy()[i] >= 0
            h = np.full(i.size, 1, dtype=np.uint64)
            h = _mix(h, proto[i])
            h = _mix(h, itype[i])
            h = _mix(h, packets["icmp_code"].to_numpy()[i])
            h = _mix(h, ip_id[i])
            h = _mix(h, np.where(quoted, packets["quoted_proto"].to_numpy()[i], packets["icmp_seq"].to_numpy()[i]))
            h = _mix(h, np.where(quoted, packets["quoted_ip_id"].to_numpy()[i], plen[i]))
            h = _mix(h, np.where(quoted, packets["quoted_seq"].to_numpy()[i], phash[i]))
            sig[i] = h
            strength[i] = WEAK
        other = ok & ~tcp & ~icmp
        if other.any():
            i = np.flatnonzero(other)
            h = np.full(i.size, 17, dtype=np.uint64)
            h = _mix(h, proto[i])
            h = _mix(h, ip_id[i])
            h = _mix(h, plen[i])
            h = _mix(h, phash[i])
            h = _mix(h, packets["dns_id"].to_numpy()[i] + 1)
            sig[i] = h
            strength[i] = WEAK
    sig[sig == 0] = 1
    sig[strength == NONE] = 0
    return sig, strength
