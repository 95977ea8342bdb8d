"""Idle timeouts that end a flow, per protocol and TCP state: Linux conntrack's defaults."""

from __future__ import annotations

import math
from collections.abc import Mapping

from flowtrace.errors import InputError

CONNTRACK_TIMEOUTS: Mapping[str, float] = {
    "tcp_syn_sent": 120.0,
    "tcp_syn_recv": 60.0,
    "tcp_established": 432000.0,
    "tcp_fin_wait": 120.0,
    "tcp_close_wait": 60.0,
    "tcp_last_ack": 30.0,
    "tcp_time_wait": 120.0,
    "tcp_close": 10.0,
    "tcp_unacknowledged": 300.0,
    "tcp_max_retrans": 300.0,
    "udp": 30.0,
    "udp_stream": 120.0,
    "icmp": 30.0,
    "generic": 600.0,
}
"""Linux defaults in seconds (net.netfilter.nf_conntrack_*_timeout*)."""

KUBE_PROXY_TIMEOUTS: Mapping[str, float] = {
    **CONNTRACK_TIMEOUTS,
    "tcp_established": 86400.0,
    "tcp_close_wait": 3600.0,
}
"""The defaults with the two values kube-proxy sets on every node it runs on."""


def resolve_timeouts(timeouts: Mapping[str, float] | None) -> dict[str, int]:
    """Conntrack's defaults overridden by ``timeouts`` (seconds), as nanoseconds.

    Raises InputError for an unknown key or a value that is not a positive number.
    """
    merged = dict(CONNTRACK_TIMEOUTS)
    for key, value in (timeouts or {}).items():
        if key not in CONNTRACK_TIMEOUTS:
            known = ", ".join(CONNTRACK_TIMEOUTS)
            raise InputError("", f"unknown timeout {key!r} (known: {known})")
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise InputError("", f"timeout {key} must be a number of seconds, not {value!r}") from None
        if not (seconds > 0 and math.isfinite(seconds)) or seconds > 1e9:
            raise InputError("", f"timeout {key} must be a positive number of seconds (at most 1e9), not {value!r}")
        merged[key] = seconds
    return {k: round(v * 1e9) for k, v in merged.items()}
