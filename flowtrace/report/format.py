"""Formatting helpers shared by the renderers: endpoints, durations, clock offsets."""

from __future__ import annotations

import math

import pandas as pd

from flowtrace.correlate.clock import ClockOffset


def endpoint(addr: object, port: object) -> str:
    """``10.0.0.1:80``, ``[fd00::1]:80``, or the bare address without a port."""
    a = "-" if addr is None or (isinstance(addr, float) and math.isnan(addr)) else str(addr)
    try:
        p = int(port)  # type: ignore[call-overload]
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


SEVERITY_STYLES = {"critical": "bold white on red", "high": "bold red", "medium": "yellow", "low": "cyan",
                   "info": "dim"}
"""Terminal style of each finding severity."""

PROTO_NAMES = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 47: "gre", 58: "icmp6", 132: "sctp"}
"""Protocol names used in reports; others print as their number."""

TCP_FLAG_NAMES = ((0x02, "SYN"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK"), (0x20, "URG"),
                  (0x40, "ECE"), (0x80, "CWR"))


def proto_name(proto: object) -> str:
    """``tcp``, ``udp``, ``icmp6`` … or the protocol number as text."""
    try:
        p = int(proto)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return str(proto)
    return PROTO_NAMES.get(p, str(p))


def tcp_flags(flags: int) -> str:
    """TCP flags as tcpdump users read them: ``SYN``, ``SYN-ACK``, ``PSH-ACK``, ``FIN-ACK``, ``RST``."""
    names = [n for bit, n in TCP_FLAG_NAMES if flags & bit]
    return "-".join(names) if names else "none"


def frame_ranges(frames: object) -> str:
    """Frame numbers as compact ranges: ``5-7, 9, 12``."""
    nums = sorted({int(f) for f in frames})  # type: ignore[attr-defined]
    parts: list[str] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        parts.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ", ".join(parts)


def observation_point(capture: object, interface: object, ifindex: object, direction: object) -> str:
    """Where a hop was seen: ``client``, ``node1 if2 in``, ``node2 eth0 out``, ``node2 cni0:4 in``."""
    iface = "" if interface is None or (isinstance(interface, float) and math.isnan(interface)) else str(interface)
    try:
        idx = int(ifindex)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        idx = -1
    if idx >= 0:
        iface = f"{iface}:{idx}" if iface and not iface.startswith("#") else f"if{idx}"
    d = "" if str(direction) in ("unknown", "nan", "None") else str(direction)
    return " ".join(x for x in (str(capture), iface, d) if x)


def fmt_utc(ns: int | None, *, date: bool = True) -> str:
    """A UTC time with microseconds: ``2026-11-28 06:26:44.665257`` (``date=False``: time only)."""
    import datetime as dt

    if ns is None:
        return "-"
    t = dt.datetime.fromtimestamp(ns // 1_000_000_000, dt.UTC)
    text = t.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")
    return f"{text}.{(ns % 1_000_000_000) // 1000:06d}"


def fmt_relative(ns: int, *, unit: str = "ms") -> str:
    """A time since a start, in ``ms`` (3 decimals: µs) or ``s`` (6 decimals)."""
    if unit == "s":
        return f"{ns / 1e9:.6f}"
    return f"{ns / 1e6:.3f}"
