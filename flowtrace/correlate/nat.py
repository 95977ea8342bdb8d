"""What changed between consecutive hops: DNAT, SNAT, port rewrites, tunnels, TTL.

Each hop shows the connection's packets with the tuple they carry there. Comparing a
hop's tuple with the previous hop's says what rewrote them and where: inside one host
when both hops are in one capture (the packet went in on one interface and out on
another), else somewhere between two vantage points.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.correlate.path import REQUEST

DNAT = 0x01
"""Request path: the destination address changed (a Service/LB address became a pod's)."""
DNAT_PORT = 0x02
"""Request path: the destination port changed."""
SNAT = 0x04
"""Request path: the source address changed (masquerade to a node address)."""
SNAT_PORT = 0x08
"""Request path: the source port changed (MASQUERADE --random-fully, port collisions)."""
ENCAP = 0x10
"""The packet was put into a tunnel (VXLAN, Geneve, IP-in-IP, GRE)."""
DECAP = 0x20
"""The packet came out of a tunnel."""
ROUTED = 0x40
"""The TTL went down: a router (or a node routing) forwarded it."""

CHANGE_NAMES = {DNAT: "DNAT", DNAT_PORT: "DNAT port", SNAT: "SNAT", SNAT_PORT: "SNAT port",
                ENCAP: "encapsulation", DECAP: "decapsulation", ROUTED: "routed"}
RESPONSE_NAMES = {DNAT: "reverse DNAT", DNAT_PORT: "reverse DNAT port", SNAT: "reverse SNAT",
                  SNAT_PORT: "reverse SNAT port", ENCAP: "encapsulation", DECAP: "decapsulation",
                  ROUTED: "routed"}
"""On the response path the rewrites undo the request's: a changed source address there is
the DNAT being reversed, a changed destination the SNAT."""


def change_mask(prev: pd.DataFrame, cur: pd.DataFrame, direction: np.ndarray, *, none: object = "none") -> np.ndarray:
    """Bit mask of changes from ``prev`` to ``cur`` hop tuples (aligned rows).

    Both frames carry src, dst, sport, dport, encap, ttl (addresses and encap may be
    categorical codes); ``none`` is the encap value meaning no tunnel. ``direction`` is
    REQUEST or RESPONSE per row: on the response path the reversed fields are compared.
    """
    req = direction == REQUEST
    src_changed = prev["src"].to_numpy() != cur["src"].to_numpy()
    dst_changed = prev["dst"].to_numpy() != cur["dst"].to_numpy()
    sport_changed = prev["sport"].to_numpy() != cur["sport"].to_numpy()
    dport_changed = prev["dport"].to_numpy() != cur["dport"].to_numpy()
    # Request: destination rewrites are DNAT. Response: source rewrites undo the DNAT.
    d_addr = np.where(req, dst_changed, src_changed)
    d_port = np.where(req, dport_changed, sport_changed)
    s_addr = np.where(req, src_changed, dst_changed)
    s_port = np.where(req, sport_changed, dport_changed)
    pe = prev["encap"].to_numpy() != none
    ce = cur["encap"].to_numpy() != none
    mask = (np.where(d_addr, DNAT, 0) | np.where(d_port, DNAT_PORT, 0) | np.where(s_addr, SNAT, 0)
            | np.where(s_port, SNAT_PORT, 0) | np.where(ce & ~pe, ENCAP, 0) | np.where(pe & ~ce, DECAP, 0)
            | np.where(cur["ttl"].to_numpy() < prev["ttl"].to_numpy(), ROUTED, 0))
    return mask.astype(np.int16)


def change_labels(mask: int, direction: int) -> list[str]:
    """Names of the changes in ``mask``, in the words of the path direction; an address
    rewrite includes its port rewrite (``DNAT``), a port rewritten alone is ``DNAT port``."""
    names = CHANGE_NAMES if direction == REQUEST else RESPONSE_NAMES
    if mask & DNAT:
        mask &= ~DNAT_PORT
    if mask & SNAT:
        mask &= ~SNAT_PORT
    return [name for bit, name in names.items() if mask & bit]
