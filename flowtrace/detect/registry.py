"""Every detector, listed once, and ``run_detectors``: the detect stage's entry point.

Adding a detector is adding its module and one line to DETECTORS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from flowtrace.detect.base import Detector
from flowtrace.detect.blackhole import NoLocalEndpointBlackhole
from flowtrace.detect.capture_quality import CaptureDrops, CaptureGap, CaptureTruncated
from flowtrace.detect.checksum import BadChecksumReceived, OffloadArtifact
from flowtrace.detect.clock import ClockSkew
from flowtrace.detect.conntrack_full import ConntrackTableFull
from flowtrace.detect.context import Context
from flowtrace.detect.dns_race import DnsConntrackRace
from flowtrace.detect.drops import DropBetweenHops
from flowtrace.detect.duplicate import DuplicatePacket
from flowtrace.detect.encapsulation import OpaqueEncapsulation
from flowtrace.detect.finding import Finding, severity_rank
from flowtrace.detect.hairpin import HairpinFailure
from flowtrace.detect.masquerade import SourceIpMasqueraded
from flowtrace.detect.mtu import MtuBlackhole
from flowtrace.detect.nat_reversal import AsymmetricReturn, InvalidConntrackRst, MissingNatReversal
from flowtrace.detect.no_endpoints import ServiceNoEndpoints
from flowtrace.detect.no_reply import NoReply
from flowtrace.detect.reset import ConnectionReset
from flowtrace.detect.snat_collision import SnatPortCollision
from flowtrace.detect.stale_endpoint import StaleConntrackEndpoint
from flowtrace.detect.syn_retransmission import SynRetransmission
from flowtrace.detect.ttl import TtlExpired

if TYPE_CHECKING:
    from flowtrace.analysis import Analysis

DETECTORS: tuple[Detector, ...] = (
    AsymmetricReturn(),
    MissingNatReversal(),
    InvalidConntrackRst(),
    HairpinFailure(),
    SourceIpMasqueraded(),
    NoLocalEndpointBlackhole(),
    ServiceNoEndpoints(),
    DnsConntrackRace(),
    SnatPortCollision(),
    ConntrackTableFull(),
    StaleConntrackEndpoint(),
    DropBetweenHops(),
    SynRetransmission(),
    NoReply(),
    ConnectionReset(),
    MtuBlackhole(),
    TtlExpired(),
    BadChecksumReceived(),
    CaptureTruncated(),
    CaptureDrops(),
    CaptureGap(),
    ClockSkew(),
    OffloadArtifact(),
    DuplicatePacket(),
    OpaqueEncapsulation(),
)
"""Every detector, in catalog order (docs/anomalies.md)."""


def run_detectors(analysis: Analysis, *, detectors: Sequence[Detector] = DETECTORS,
                  ) -> tuple[list[Finding], list[str]]:
    """Run ``detectors`` on ``analysis``; return (findings, notes).

    Findings come most severe first, then by connection. A detector needing more
    vantage points than the analysis has is skipped with one note saying so; notes also
    say what detectors could not decide. A finding another one explains (``supersedes``,
    same connection) is left out. The analysis is not changed.
    """
    ctx = Context(analysis)
    # Captures without packets still count as looked at (an empty capture can report drops).
    have = max(len(ctx.active_captures), 1 if analysis.captures else 0)
    found: list[Finding] = []
    notes: list[str] = []
    for d in detectors:
        if have < d.needs.vantage_points:
            notes.append(f"{d.code} needs captures from at least {d.needs.vantage_points} vantage points "
                         f"({d.needs.where}): not checked")
            continue
        found.extend(d.detect(ctx))
    found = supersede(found, {d.code: d.supersedes for d in detectors})
    found.sort(key=lambda f: (-severity_rank(f.severity), f.connection is None,
                              f.connection if f.connection is not None else 0, f.code))
    return found, list(dict.fromkeys(notes + ctx.notes))


def supersede(findings: list[Finding], supersedes: dict[str, tuple[str, ...]]) -> list[Finding]:
    """``findings`` without those another finding on the same connection explains.

    ``supersedes`` maps a code to the codes its findings explain; a capture-wide finding
    explains them on the connections listed in its ``details['connections']``.
    """
    explained: set[tuple[int, str]] = set()
    for f in findings:
        codes = supersedes.get(f.code, ())
        if not codes:
            continue
        conns = [f.connection] if f.connection is not None else []
        conns += [int(c) for c in f.details.get("connections", ())]
        explained.update((conn, code) for conn in conns for code in codes)
    if not explained:
        return findings
    return [f for f in findings if f.connection is None or (f.connection, f.code) not in explained]
