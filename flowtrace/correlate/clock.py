"""Clock offsets between captures, from packets seen at several of them.

For one packet seen leaving capture A's host (A's clock) and then arriving at capture
B's (B's clock), ``t_B - t_A = theta_B - theta_A + delay`` with ``delay >= 0``: each such
pair bounds ``theta_B - theta_A`` from above, and a packet going the other way bounds it
from below (NTP's reasoning, with minima instead of means). All bounds together are a
system of difference constraints between captures; Floyd-Warshall tightens them, and
each capture's offset is fixed in turn at the middle of its remaining interval, so the
result always satisfies every bound. The half-width of that interval is the
uncertainty: the true offset is inside it unless delays were negative.

Which of two captures saw a packet first is decided without clocks: a lower TTL is
further downstream; at equal TTL, the capture where the packet left a host ("out")
precedes the one where it arrived ("in").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from flowtrace.correlate.sightings import DIR_IN, DIR_OUT, Sightings, clean_groups
from flowtrace.correlate.signature import WEAK

ROBUST_QUANTILE = 0.01
"""Bounds use this low quantile of the samples instead of the minimum once there are 100+,
so that a handful of mismatched packets cannot pull an offset."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockOffset:
    """The estimated clock offset of one capture relative to the reference capture."""

    capture: str
    """Capture name."""
    offset_ns: int
    """This capture's clock minus the reference's: corrected time = ts_ns - offset_ns."""
    uncertainty_ns: int | None
    """Half-width of the interval the offset must lie in; None when only one side is bounded
    or nothing links the capture to the reference (then offset_ns is a guess)."""
    lower_ns: int | None
    """Lowest offset consistent with the packets (None: unbounded)."""
    upper_ns: int | None
    """Highest offset consistent with the packets (None: unbounded)."""
    reference: str
    """The capture the offset is relative to."""
    samples: int
    """Packets that bounded this capture's offset against any other capture."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PairBound:
    """Bounds on theta_b - theta_a from packets seen at both captures."""

    a: int
    b: int
    upper_ns: float
    """theta_b - theta_a <= upper (packets from a to b); inf when none."""
    lower_ns: float
    """theta_b - theta_a >= lower (packets from b to a); -inf when none."""
    forward: int
    """Packets that went from a to b."""
    backward: int
    """Packets that went from b to a."""


def _units(s: Sightings) -> pd.DataFrame:
    """Per (clean strong group, capture): the first and last sighting (entry and exit)."""
    strong = (s.strength >= WEAK) & clean_groups(s)
    group, capture = s.group[strong], s.capture[strong]
    ts, ttl, direction = s.ts[strong], s.ttl[strong], s.direction[strong]
    if not group.size:
        return pd.DataFrame(columns=["group", "capture", "e_ts", "e_ttl", "e_dir", "x_ts", "x_ttl", "x_dir"])
    key = group.astype(np.int64) * (len(s.capture_names) + 1) + capture
    start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    end = np.r_[start[1:], key.size] - 1
    return pd.DataFrame({
        "group": group[start], "capture": capture[start],
        "e_ts": ts[start], "e_ttl": ttl[start], "e_dir": direction[start],
        "x_ts": ts[end], "x_ttl": ttl[end], "x_dir": direction[end],
    })


def upstream_of(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Masks (a upstream of b, b upstream of a) for aligned unit rows of two captures.

    Higher entry TTL is upstream; at equal TTL, a unit that ends with the packet leaving
    its host precedes one that begins with it arriving, unless both readings apply.
    """
    ta, tb = a["e_ttl"].to_numpy(), b["e_ttl"].to_numpy()
    a_hands = (a["x_dir"].to_numpy() == DIR_OUT) & (b["e_dir"].to_numpy() == DIR_IN)
    b_hands = (b["x_dir"].to_numpy() == DIR_OUT) & (a["e_dir"].to_numpy() == DIR_IN)
    same = ta == tb
    a_up = (ta > tb) | (same & a_hands & ~b_hands)
    b_up = (tb > ta) | (same & b_hands & ~a_hands)
    return a_up, b_up


def _low(values: np.ndarray) -> float:
    if not values.size:
        return float("inf")
    if values.size < 100:
        return float(values.min())
    return float(np.partition(values, int(values.size * ROBUST_QUANTILE))[int(values.size * ROBUST_QUANTILE)])


def pair_bounds(s: Sightings) -> list[PairBound]:
    """Bounds between every pair of captures that saw common strong packets."""
    units = _units(s)
    if units.empty:
        return []
    pairs = units.merge(units, on="group", suffixes=("_a", "_b"))
    pairs = pairs[pairs["capture_a"] < pairs["capture_b"]]
    if pairs.empty:
        return []
    a = pairs[["e_ts_a", "e_ttl_a", "e_dir_a", "x_ts_a", "x_ttl_a", "x_dir_a"]].set_axis(
        ["e_ts", "e_ttl", "e_dir", "x_ts", "x_ttl", "x_dir"], axis=1)
    b = pairs[["e_ts_b", "e_ttl_b", "e_dir_b", "x_ts_b", "x_ttl_b", "x_dir_b"]].set_axis(
        ["e_ts", "e_ttl", "e_dir", "x_ts", "x_ttl", "x_dir"], axis=1)
    a_up, b_up = upstream_of(a, b)
    fwd = b["e_ts"].to_numpy() - a["x_ts"].to_numpy()   # >= theta_b - theta_a when a_up
    back = b["x_ts"].to_numpy() - a["e_ts"].to_numpy()  # <= theta_b - theta_a when b_up
    ca, cb = pairs["capture_a"].to_numpy(), pairs["capture_b"].to_numpy()
    out = []
    for (i, j), idx in pd.Series(np.arange(len(pairs))).groupby([ca, cb]).groups.items():
        idx = np.asarray(idx)
        f = fwd[idx][a_up[idx]]
        r = back[idx][b_up[idx]]
        out.append(PairBound(a=int(i), b=int(j), upper_ns=_low(f), lower_ns=-_low(-r),
                             forward=int(f.size), backward=int(r.size)))
    return out


def solve_offsets(bounds: list[PairBound], captures: list[str], *, reference: str | None = None,
                  same_clock: list[set[str]] | None = None) -> dict[str, ClockOffset]:
    """Offsets of every capture from pairwise bounds (difference constraints).

    ``reference`` names the capture whose clock is the reference (default: the capture
    with the most bounded packets). ``same_clock`` lists groups of captures known to share
    one clock (taken on one host).
    """
    n = len(captures)
    d = np.full((n, n), np.inf)
    np.fill_diagonal(d, 0.0)
    samples = np.zeros(n, dtype=np.int64)
    for pb in bounds:
        # theta_b - theta_a <= upper -> d[a][b]; theta_a - theta_b <= -lower -> d[b][a]
        d[pb.a, pb.b] = min(d[pb.a, pb.b], pb.upper_ns)
        d[pb.b, pb.a] = min(d[pb.b, pb.a], -pb.lower_ns)
        samples[pb.a] += pb.forward + pb.backward
        samples[pb.b] += pb.forward + pb.backward
    index = {c: i for i, c in enumerate(captures)}
    for group in same_clock or []:
        members = [index[c] for c in group if c in index]
        for x in members:
            for y in members:
                d[x, y] = min(d[x, y], 0.0)
    d = _floyd_warshall(d)
    if (np.diag(d) < 0).any():
        d = _relax(d)
    ref = index[reference] if reference in index else int(np.argmax(samples)) if n else 0
    result: dict[str, ClockOffset] = {}
    fixed = np.zeros(n, dtype=bool)
    if n:
        fixed[ref] = True
    # Captures in order of how tightly they are bounded against the reference.
    order = sorted(range(n), key=lambda x: (d[ref, x] + d[x, ref], x))
    # Where only one side is bounded, assume the typical one-way delay seen elsewhere.
    two_sided = [(pb.upper_ns - pb.lower_ns) / 2 for pb in bounds
                 if np.isfinite(pb.upper_ns) and np.isfinite(pb.lower_ns) and pb.upper_ns >= pb.lower_ns]
    typical = float(np.median(two_sided)) if two_sided else 0.0
    theta = np.zeros(n)
    for x in order:
        if x == ref:
            result[captures[x]] = ClockOffset(capture=captures[x], offset_ns=0, uncertainty_ns=0,
                                              lower_ns=0, upper_ns=0, reference=captures[ref],
                                              samples=int(samples[x]))
            continue
        hi = d[ref, x]   # theta_x - theta_ref <= hi
        lo = -d[x, ref]  # theta_x - theta_ref >= lo
        if np.isfinite(hi) and np.isfinite(lo):
            value, unc = (hi + lo) / 2, (hi - lo) / 2
        elif np.isfinite(hi):
            value, unc = hi - typical, None
        elif np.isfinite(lo):
            value, unc = lo + typical, None
        else:
            value, unc = 0.0, None
        theta[x] = value
        fixed[x] = True
        d[ref, x] = min(d[ref, x], value)
        d[x, ref] = min(d[x, ref], -value)
        d = _floyd_warshall(d)
        result[captures[x]] = ClockOffset(
            capture=captures[x], offset_ns=round(value),
            uncertainty_ns=None if unc is None else round(unc),
            lower_ns=round(lo) if np.isfinite(lo) else None,
            upper_ns=round(hi) if np.isfinite(hi) else None,
            reference=captures[ref], samples=int(samples[x]),
        )
    return result


def _floyd_warshall(d: np.ndarray) -> np.ndarray:
    d = d.copy()
    for k in range(d.shape[0]):
        d = np.minimum(d, d[:, k : k + 1] + d[k : k + 1, :])
    return d


def _relax(d: np.ndarray) -> np.ndarray:
    """Inconsistent bounds (a negative cycle: some packet went back in time on every reading):
    widen every finite bound by the worst violation so that the system becomes feasible."""
    worst = -float(np.min(np.diag(d)))
    d = np.where(np.isfinite(d), d + worst, d)
    np.fill_diagonal(d, 0.0)
    return _floyd_warshall(d)


def estimate_offsets(s: Sightings, *, reference: str | None = None,
                     same_clock: list[set[str]] | None = None) -> dict[str, ClockOffset]:
    """Clock offset of every capture in ``s`` relative to ``reference`` (see module doc)."""
    return solve_offsets(pair_bounds(s), s.capture_names, reference=reference, same_clock=same_clock)


def corrected(ts: np.ndarray, capture: np.ndarray, offsets: dict[str, ClockOffset],
              names: list[str]) -> np.ndarray:
    """``ts`` (int64 ns) of captures ``capture`` (codes into ``names``) in reference time."""
    shift = np.array([offsets[c].offset_ns if c in offsets else 0 for c in names] or [0], dtype=np.int64)
    return ts - shift[capture]
