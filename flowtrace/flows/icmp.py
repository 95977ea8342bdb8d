"""ICMP errors: attach each one to the flow whose packet it quotes, never by its outer addresses.

An ICMP error (destination unreachable, time exceeded, packet too big…) quotes the header
of the packet it answers. That quoted 5-tuple, seen from the capture point where the error
was captured, is looked up among the flows of the same capture: first at the same
observation point (interface, index, and the quoted packet's direction, opposite to the
error's), then anywhere in the capture. Among matching flows the one active at the error's
time wins (started before it, and ended at most ``MATCH_AFTER_NS`` before it), else the
nearest one starting just after it (clock jitter between interfaces). Errors nothing
matches are returned for the caller to turn into ICMP flows of their own, as Zeek does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from flowtrace.flows.assign import lower_direction
from flowtrace.flows.key import ICMP, ICMPV6, canonical

if TYPE_CHECKING:
    import pandas as pd

MATCH_AFTER_NS = 60_000_000_000
"""How long after a flow's last packet an error quoting it is still attached to it."""
MATCH_BEFORE_NS = 1_000_000_000
"""How long before a flow's first packet an error may be captured and still attach to it."""

POINT_KEYS = ("capture", "interface", "ifindex", "ld", "encap", "vni")
TUPLE_KEYS = ("proto", "lo_a", "hi_a", "lo_p", "hi_p")


class Attachment(NamedTuple):
    """Result of ``attach``: per error row, the flow it belongs to (-1: none)."""

    flow: np.ndarray
    """Flow index per error, -1 when nothing matched."""
    quoted_from_lower: np.ndarray
    """Whether the quoted packet was sent by the flow's lower endpoint."""

    @classmethod
    def none(cls, n: int) -> Attachment:
        """``n`` errors attached to no flow."""
        return cls(np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool))


def attach(*, errors: pd.DataFrame, flows: pd.DataFrame, rank: np.ndarray) -> Attachment:
    """Match ICMP errors to flows by the tuple they quote.

    ``errors`` has, per error: ts, capture, interface, ifindex, direction (0 in, 1 out,
    2 unknown), encap, vni, quoted_src/quoted_dst (address ids), quoted_proto,
    quoted_sport/quoted_dport. ``flows`` has per flow: the POINT_KEYS and TUPLE_KEYS
    columns (lower/higher address ids and ports, ``ld`` the lower side's direction),
    ``first_ts``, ``last_ts``. ``rank`` orders address ids (``key.address_ranks``).
    """
    import pandas as pd  # loaded only for captures with ICMP errors

    n = len(errors)
    if not n or not len(flows):
        return Attachment.none(n)
    flow = np.full(n, -1, dtype=np.int64)
    qlower = np.zeros(n, dtype=bool)
    q = errors
    qproto = q["quoted_proto"].to_numpy().astype(np.int64)
    has_ports = np.isin(qproto, (6, 17, 132))
    sp = np.where(has_ports, q["quoted_sport"].to_numpy().astype(np.int64), -1)
    dp = np.where(has_ports, q["quoted_dport"].to_numpy().astype(np.int64), -1)
    src = q["quoted_src"].to_numpy().astype(np.int64)
    dst = q["quoted_dst"].to_numpy().astype(np.int64)
    low = canonical(rank[src], sp, rank[dst], dp)
    # The quoted packet crossed this interface the other way round from the error.
    qdir = np.array([1, 0, 2], dtype=np.int8)[q["direction"].to_numpy().astype(np.int64)]
    key = pd.DataFrame({
        "err": np.arange(n),
        "ts": q["ts"].to_numpy(),
        "capture": q["capture"].to_numpy(),
        "interface": q["interface"].to_numpy(),
        "ifindex": q["ifindex"].to_numpy(),
        "ld": lower_direction(qdir, low),
        "encap": q["encap"].to_numpy(),
        "vni": q["vni"].to_numpy(),
        "proto": qproto,
        "lo_a": np.where(low, src, dst),
        "hi_a": np.where(low, dst, src),
        "lo_p": np.where(low, sp, dp),
        "hi_p": np.where(low, dp, sp),
        "low": low,
    })
    fl = flows.assign(flow=np.arange(len(flows)))
    remaining = key
    for on in (
        [*POINT_KEYS, *TUPLE_KEYS],
        ["capture", *TUPLE_KEYS],
        [*POINT_KEYS, "proto", "lo_a", "hi_a"],
        ["capture", "proto", "lo_a", "hi_a"],
    ):
        if not len(remaining):
            break
        use = remaining
        if "lo_p" not in on:
            # Tuples without ports only for quoted protocols without ports (ICMP).
            use = remaining[~remaining["proto"].isin((6, 17, 132))]
        pairs = use.merge(fl[[*on, "flow", "first_ts", "last_ts"]], on=on, how="inner")
        if not len(pairs):
            continue
        chosen = _choose(pairs)
        flow[chosen["err"].to_numpy()] = chosen["flow"].to_numpy()
        qlower[chosen["err"].to_numpy()] = chosen["low"].to_numpy()
        remaining = remaining[~remaining["err"].isin(chosen["err"])]
    return Attachment(flow, qlower)


def _choose(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per error, the flow active at its time, else the nearest starting just after it."""
    ts = pairs["ts"].to_numpy()
    first, last = pairs["first_ts"].to_numpy(), pairs["last_ts"].to_numpy()
    active = (first <= ts) & (ts <= last + MATCH_AFTER_NS)
    soon = (first > ts) & (first - ts <= MATCH_BEFORE_NS)
    ok = active | soon
    # Prefer active flows, the most recently started first; then the soonest to start.
    score = np.where(active, ts - first, MATCH_AFTER_NS * 4 + (first - ts))
    cand = pairs.loc[ok].assign(score=score[ok])
    if not len(cand):
        return cand
    cand = cand.sort_values(["err", "score", "flow"], kind="stable")
    return cand.drop_duplicates("err", keep="first")


def is_icmp(proto: np.ndarray, version: np.ndarray) -> np.ndarray:
    """ICMP over IPv4 or ICMPv6 over IPv6."""
    return ((proto == ICMP) & (version == 4)) | ((proto == ICMPV6) & (version == 6))
