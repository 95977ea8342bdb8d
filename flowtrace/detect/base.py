"""The detector interface: what every anomaly detector declares and implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from flowtrace.detect.context import Context
    from flowtrace.detect.finding import Finding


@dataclass(frozen=True, slots=True, kw_only=True)
class Needs:
    """What a detector needs from the captures before it can say anything."""

    vantage_points: int = 1
    """Captures (with packets) needed at least; with fewer the detector is skipped and the
    report says so once."""
    where: str = "any capture"
    """Which vantage points it looks at, in words (for the note and docs/anomalies.md)."""


class Detector(Protocol):
    """One code of the catalog (docs/anomalies.md).

    A detector reads the analysis through a ``Context`` (tables plus shared, cached
    derived data) and returns findings; it never prints and never changes the analysis.
    Detectors are listed in ``flowtrace.detect.registry.DETECTORS``.
    """

    code: str
    """Stable code from the catalog (public interface: never renamed)."""
    severity: str
    """Default severity (info, low, medium, high, critical); a finding may differ."""
    needs: Needs
    """Vantage points required."""
    supersedes: tuple[str, ...]
    """Codes this detector's findings explain on the same connection: those findings are
    left out in favour of this one (the root cause over its symptoms)."""

    def detect(self, ctx: Context) -> list[Finding]:
        """Findings of this code in the analysis behind ``ctx`` (empty when none)."""
        ...
