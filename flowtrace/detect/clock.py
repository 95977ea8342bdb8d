"""``clock_skew``: captures whose clocks disagree with the reference capture's."""

from __future__ import annotations

import numpy as np

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import plural, seconds
from flowtrace.detect.finding import Finding

LOW_ABOVE_NS = 1_000_000_000
"""Offsets beyond this are worth fixing (low); smaller ones are information."""


class ClockSkew:
    """``clock_skew``: the estimated offset of a capture's clock, with its uncertainty."""

    code = "clock_skew"
    severity = "info"
    needs = Needs(vantage_points=2, where="two captures sharing packets")
    supersedes: tuple[str, ...] = ()

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per capture whose packets prove a non-zero offset."""
        out = []
        for name, o in sorted(ctx.analysis.offsets.items()):
            if o.offset_ns == 0 or o.samples == 0 or name == o.reference:
                continue
            ahead = "ahead of" if o.offset_ns > 0 else "behind"
            unc = f" ± {seconds(o.uncertainty_ns)}" if o.uncertainty_ns is not None else " (bounded on one side only)"
            out.append(Finding(
                code=self.code, severity="low" if abs(o.offset_ns) > LOW_ABOVE_NS else "info", capture=name,
                message=(f"The clock of {name} is {seconds(abs(o.offset_ns))}{unc} {ahead} {o.reference}'s "
                         f"(from {plural(int(o.samples), 'packet')} both saw); uncorrected, packets going one way "
                         "between them would seem to arrive before they were sent. Its times were corrected."),
                evidence=ctx.evidence(_shared_pair(ctx, name, o.reference), "one packet seen by both captures"),
                causes=("NTP/chrony not running or not synchronised on one host",
                        "a capture file shifted or taken on a host with a wrong time zone setting"),
                details={"offset_ns": int(o.offset_ns),
                         "uncertainty_ns": None if o.uncertainty_ns is None else int(o.uncertainty_ns),
                         "lower_ns": None if o.lower_ns is None else int(o.lower_ns),
                         "upper_ns": None if o.upper_ns is None else int(o.upper_ns),
                         "samples": int(o.samples), "reference": o.reference}))
        return out


def _shared_pair(ctx: Context, a: str, b: str) -> list[int]:
    """Rows of one packet seen in both captures (the first such), or nothing."""
    cap = ctx.col("capture")
    group = ctx.analysis.packet_group
    ia, ib = ctx.capture_index(a), ctx.capture_index(b)
    ra = np.flatnonzero((cap == ia) & (group >= 0))
    rb = np.flatnonzero((cap == ib) & (group >= 0))
    both = np.intersect1d(group[ra], group[rb])
    if not both.size:
        return []
    g = both[0]
    return [int(ra[group[ra] == g][0]), int(rb[group[rb] == g][0])]
