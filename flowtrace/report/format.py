"""Formatting helpers shared by the renderers: endpoints, durations, clock offsets."""

from __future__ import annotations

import math

import pandas as pd

from flowtrace.correlate.clock import ClockOffset


def endpoint(addr: object, port: object) -> str:
    """``10.0.0.1:80``, ``[fd00::1]:80``, or the bare address without a port."""
    a = "-" if addr is None or (isinstance(addr, float) and math.isnan(addr)) else str(addr)
    try:
        p = int(port)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        p = -1
    if p < 0 or (isinstance(port, float) and pd.isna(port)):
        return a
    return f"[{a}]:{p}" if ":" in a else f"{a}:{p}"


def fmt_duration(ns: int | float | None) -> str:
    """A duration with a unit that keeps three significant digits: 850 ns, 12.3 µs, 4.56 ms, 1.20 s."""
    if ns is None or (isinstance(ns, float) and math.isnan(ns)):
        return "-"
    v = float(ns)
    sign = "-" if v < 0 else ""
    v = abs(v)
    if v < 1_000:
        return f"{sign}{v:.0f} ns"
    if v < 1_000_000:
        return f"{sign}{v / 1e3:.3g} µs"
    if v < 1_000_000_000:
        return f"{sign}{v / 1e6:.3g} ms"
    return f"{sign}{v / 1e9:.3f} s"


def fmt_offset(o: ClockOffset | None) -> str:
    """``reference``, ``+2.500 s ± 2 µs``, or ``not aligned``."""
    if o is None:
        return "-"
    if o.capture == o.reference:
        return "reference"
    if o.samples == 0:
        return "not aligned"
    value = ("+" if o.offset_ns >= 0 else "") + fmt_duration(o.offset_ns)
    if o.uncertainty_ns is None:
        return f"{value} (one-sided)"
    return f"{value} ± {fmt_duration(o.uncertainty_ns)}"
