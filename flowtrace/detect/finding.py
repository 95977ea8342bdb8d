"""A finding: one anomaly from the catalog (docs/anomalies.md), with its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowtrace.frozen import by_field_values

SEVERITIES = ("info", "low", "medium", "high", "critical")
"""Severities in increasing order; ``--fail-on`` compares by this order."""


def severity_rank(severity: str) -> int:
    """Position of ``severity`` in SEVERITIES (raises ValueError for an unknown one)."""
    return SEVERITIES.index(severity)


@by_field_values
@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """Packets that prove a finding: frames of one capture."""

    capture: str
    """Capture name."""
    frames: tuple[int, ...]
    """Frame numbers (as Wireshark counts them) in that capture."""
    note: str = ""
    """What these packets show, in a few words."""

    def to_dict(self) -> dict[str, Any]:
        """JSON data."""
        return {"capture": self.capture, "frames": list(self.frames), "note": self.note}


@by_field_values
@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One anomaly found in the captures."""

    code: str
    """Stable code from the catalog, e.g. ``asymmetric_return``."""
    severity: str
    """info, low, medium, high or critical."""
    message: str
    """One sentence a person on call understands."""
    connection: int | None = None
    """Connection (connections.connection) it is about, None for capture-wide findings."""
    direction: str | None = None
    """request or response, when it is about one direction."""
    hop: int | None = None
    """Hop number (hops.hop) in that direction where it happened."""
    segment: str | None = None
    """Where on the path, in words: 'inside node1', 'node1 -> node2', 'node2 -> web-1'."""
    capture: str | None = None
    """Capture it is about, for capture-wide findings (drops, gaps, clocks)."""
    evidence: tuple[Evidence, ...] = ()
    """Packets that prove it."""
    causes: tuple[str, ...] = ()
    """Likely causes, most likely first."""
    details: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """Numbers behind the finding (offsets, sizes, counts), for JSON and reports."""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        """The finding as JSON data (the keys of ``analyze --json`` findings)."""
        return {
            "code": self.code, "severity": self.severity, "message": self.message,
            "connection": self.connection, "direction": self.direction, "hop": self.hop,
            "segment": self.segment, "capture": self.capture,
            "evidence": [e.to_dict() for e in self.evidence], "causes": list(self.causes),
            "details": self.details,
        }
