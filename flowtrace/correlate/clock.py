"""Clock offsets between captures, from packets seen at several of them.

For one packet seen leaving capture A's host (A's clock) and then arriving at capture
B's (B's clock), ``t_B - t_A = theta_B - theta_A + delay`` with ``delay >= 0``: each such
pair bounds ``theta_B - theta_A`` from above, and a packet going the other way bounds it
from below (NTP's reasoning, with minima instead of means). All bounds together are a
system of difference constraints between captures; Floyd-Warshall tightens them, and
each capture's offset is fixed in turn inside its remaining interval, so the result
always satisfies every bound. An interval that contains zero gives
zero: clocks are assumed to agree unless the packets prove otherwise (captures taken on
one host, a node and its pods, do share a clock); otherwise the middle is taken. The
distance to the far end of the interval is the uncertainty: the true offset is inside
it unless delays were negative.

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
    """Largest distance from offset_ns to either end of the interval the offset must lie in;
    None when only one side is bounded or nothing links the capture to the reference."""
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


MAX_GROUPS = 50_000
"""Clean groups used for the bounds at most (spread over the capture): offsets need
thousands of packets, not millions."""


def _levels(s: Sightings) -> pd.DataFrame:
    """Per (clean group, capture, TTL): first and last sighting time and the directions seen."""
    use = (s.strength >= WEAK) & clean_groups(s)
    groups = np.unique(s.group[use])
    if groups.size > MAX_GROUPS:
        keep = np.zeros(int(s.group.max()) + 1, dtype=bool)
        keep[groups[np.linspace(0, groups.size - 1, MAX_GROUPS).astype(np.int64)]] = True
        use &= keep[s.group]
    frame = pd.DataFrame({"group": s.group[use], "capture": s.capture[use], "ttl": s.ttl[use],
                          "ts": s.ts[use], "out": s.direction[use] == DIR_OUT, "in_": s.direction[use] == DIR_IN})
    if frame.empty:
        return pd.DataFrame(columns=["group", "capture", "ttl", "first", "last", "out", "in_"])
    return frame.groupby(["group", "capture", "ttl"], sort=False).agg(
        first=("ts", "min"), last=("ts", "max"), out=("out", "any"), in_=("in_", "any")).reset_index()


def _low(values: np.ndarray) -> float:
    """The minimum, or a low quantile once there are 100+ values (robust to a few mismatches)."""
    if not values.size:
        return float("inf")
    if values.size < 100:
        return float(values.min())
    k = int(values.size * ROBUST_QUANTILE)
    return float(np.partition(values, k)[k])


def pair_bounds(s: Sightings) -> list[PairBound]:
    """Bounds between every pair of captures that saw common packets.

    A packet seen at capture a with TTL ta and at capture b with a lower TTL tb passed a
    first: ``theta_b - theta_a <= first_b - last_a``. At equal TTL only a known hand-over
    (a saw it leave a host, b saw it arrive, not also the other way) orders them; captures
    without direction information are then not compared (pods and their node share a
    kernel whose timestamps do not say who was first).
    """
    lv = _levels(s)
    if lv.empty:
        return []
    pairs = lv.merge(lv, on="group", suffixes=("_a", "_b"))
    pairs = pairs[pairs["capture_a"] != pairs["capture_b"]]
    ta, tb = pairs["ttl_a"].to_numpy(), pairs["ttl_b"].to_numpy()
    hand = pairs["out_a"].to_numpy() & pairs["in__b"].to_numpy() & ~(pairs["out_b"].to_numpy() & pairs["in__a"].to_numpy())
    a_up = (ta > tb) | ((ta == tb) & hand)
    pairs = pairs[a_up]
    if pairs.empty:
        return []
    bound = pairs["first_b"].to_numpy() - pairs["last_a"].to_numpy()
    frame = pd.DataFrame({"a": pairs["capture_a"].to_numpy(), "b": pairs["capture_b"].to_numpy(), "bound": bound})
    out: dict[tuple[int, int], list] = {}
    for (a, b), values in frame.groupby(["a", "b"])["bound"]:
        v = values.to_numpy()
        lo, hi = (a, b) if a < b else (b, a)
        entry = out.setdefault((lo, hi), [float("inf"), float("-inf"), 0, 0])
        if a == lo:  # theta_hi - theta_lo <= bound
            entry[0] = min(entry[0], _low(v))
            entry[2] += v.size
        else:        # theta_lo - theta_hi <= bound  ->  theta_hi - theta_lo >= -bound
            entry[1] = max(entry[1], -_low(v))
            entry[3] += v.size
    return [PairBound(a=int(a), b=int(b), upper_ns=u, lower_ns=lo_, forward=f, backward=r)
            for (a, b), (u, lo_, f, r) in out.items()]


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
        # The packets allow any offset in [lo, hi]: zero when it is inside (clocks agree
        # unless the packets prove otherwise; captures of one host share a clock), else
        # the middle, which bounds the error by half the interval.
        if np.isfinite(hi) and np.isfinite(lo):
            value = 0.0 if lo <= 0.0 <= hi else (hi + lo) / 2
            unc = max(value - lo, hi - value)
        elif np.isfinite(hi):
            value, unc = min(0.0, hi - typical), None
        elif np.isfinite(lo):
            value, unc = max(0.0, lo + typical), None
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
