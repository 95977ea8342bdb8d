"""The one place where the stages are wired together: captures -> packets -> … -> reports."""

from __future__ import annotations

import logging
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

import numpy as np

from flowtrace.capture.files import CaptureSource, expand_sources
from flowtrace.capture.memory import heap_temporaries, pin_mmap_threshold
from flowtrace.capture.reader import CaptureFile, CaptureMeta, CaptureReader
from flowtrace.collector import fewer_collections
from flowtrace.decode.reading import (
    Pool,
    decode_into,
    file_sizes,
    take_early_pool,
    workers_for,
)
from flowtrace.decode.table import PacketArrays, PacketTableBuilder, merge_parts
from flowtrace.decode.tunnel import GENEVE_PORT, VXLAN_PORTS, WIREGUARD_PORTS
from flowtrace.errors import CaptureWarning, InputError
from flowtrace.flows import FlowSet
from flowtrace.flows import build as build_flows
from flowtrace.fork import Forked, can_fork, worth_forking

if TYPE_CHECKING:
    import pandas as pd

    from flowtrace.analysis import Analysis
    from flowtrace.decode.summary import CaptureSummary
    from flowtrace.detect.finding import Finding

log = logging.getLogger("flowtrace")
log.addHandler(logging.NullHandler())

CaptureArg = str | PathLike[str]

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called by ``analyze`` as it goes. Stage ``read`` counts
bytes of the capture files (total: their sizes); later stages (``flows``, ``correlate``,
``conntrack``, ``detect``) are announced once with done = total = 0. The library never prints: the
CLI passes a callback that draws a progress bar."""


def _as_list(captures: CaptureArg | Sequence[CaptureArg]) -> list[str]:
    if isinstance(captures, (str, PathLike)):
        return [str(captures)]
    return [str(c) for c in captures]


def read_sources(sources: Sequence[CaptureSource], *, workers: int | None = None,
                 progress: Progress | None = None) -> tuple[pd.DataFrame, list[CaptureMeta]]:
    """Read and decode ``sources`` into one packets table; also return each capture's metadata.

    ``read_arrays`` with the table made a DataFrame.
    """
    arrays, metas = read_arrays(sources, workers=workers, progress=progress)
    return arrays.frame(), metas


def read_arrays(sources: Sequence[CaptureSource], *, workers: int | None = None,
                progress: Progress | None = None) -> tuple[PacketArrays, list[CaptureMeta]]:
    """Read and decode ``sources`` into one packets table as arrays (``PacketArrays``, no
    pandas); also return each capture's metadata.

    Several large captures are decoded in parallel worker processes (``workers``; default:
    one per core when the input exceeds PARALLEL_MIN_BYTES); otherwise each large
    uncompressed pcap is decoded by two processes (flowtrace.decode.halves), unless
    ``workers`` or FLOWTRACE_WORKERS is 1 (see flowtrace.decode.reading). Work the command
    line started early on the same files is adopted (flowtrace.decode.early). Raises
    CaptureError (CaptureOpenError, CaptureFormatError) for a file that cannot be read at
    all; a capture cut mid-record yields its complete records and a CaptureWarning.
    ``progress`` is called with stage ``read`` (see Progress).
    """
    pin_mmap_threshold()
    sizes = file_sizes(sources)
    pool = take_early_pool(sources) if workers is None else None
    n_workers = workers_for(sources, workers)
    if pool is not None or n_workers > 1:
        try:
            # Open every file first so that a bad one fails before any work starts.
            for source in sources:
                with CaptureFile(source):
                    pass
            pool = pool or Pool(sources, n_workers)
            results = []
            for i, future in enumerate(pool.futures):
                results.append(future.result())
                if progress is not None:
                    progress("read", sum(sizes[:i + 1]), sum(sizes))
        finally:
            if pool is not None:
                pool.close()
        metas = []
        for _, meta, caught in results:
            for message in caught:
                warnings.warn(message, CaptureWarning, stacklevel=2)
            metas.append(meta)
        parts = [part for part, _, _ in results]
        del results
        return merge_parts(parts, [s.name for s in sources]), metas
    builder = PacketTableBuilder()
    metas = []
    for i, source in enumerate(sources):
        code = builder.add_capture(source.name)
        on_batch = None
        if progress is not None:
            def on_batch(reader: CaptureReader, before: int = sum(sizes[:i]), size: int = sizes[i]) -> None:
                share = min(1.0, reader.consumed / reader.expected_size) if reader.expected_size else 0.0
                progress("read", before + int(size * share), sum(sizes))
        metas.append(decode_into(builder, code, source, on_batch, split=can_fork(workers),
                                 later_bytes=sum(sizes[i + 1:])))
    return builder.finish_arrays(), metas


def read_packets(captures: CaptureArg | Sequence[CaptureArg]) -> pd.DataFrame:
    """Read captures into the packets table (see docs/tables.md), one row per frame.

    ``captures`` is a path, ``NAME=PATH``, a directory of captures, or a list of them.
    Returns a DataFrame with the columns of ``flowtrace.schema.PACKETS``; rows are in
    capture order, then frame order. Raises CaptureOpenError / CaptureFormatError.
    """
    packets, _ = read_sources(expand_sources(_as_list(captures)))
    return packets


def inspect_captures(captures: CaptureArg | Sequence[CaptureArg]) -> list[CaptureSummary]:
    """Describe each capture: format, interfaces, counts per status/protocol (``flowtrace info``)."""
    from flowtrace.decode.summary import summarize

    sources = expand_sources(_as_list(captures))
    summaries = []
    for source in sources:
        packets, readers = read_sources([source])
        summaries.append(summarize(readers[0], packets))
    return summaries


def _is_frame(source: object) -> TypeGuard[pd.DataFrame]:
    """Whether ``source`` is a DataFrame. One exists only once pandas is loaded: this does
    not load it."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(source, pd.DataFrame)


def packets_of(source: pd.DataFrame | PacketArrays | CaptureArg | Sequence[CaptureArg]) -> pd.DataFrame | PacketArrays:
    """The packets table of ``source``: ``source`` itself when it is one (a DataFrame or
    PacketArrays), else what ``read_packets`` takes read into PacketArrays (no pandas).
    Raises CaptureError for unreadable captures."""
    if isinstance(source, PacketArrays) or _is_frame(source):
        return source
    return read_arrays(expand_sources(_as_list(source)))[0]


def flow_set(source: pd.DataFrame | PacketArrays | CaptureArg | Sequence[CaptureArg], *,
             timeouts: Mapping[str, float] | None = None,
             ignore_checksums: bool = False) -> tuple[pd.DataFrame | PacketArrays, FlowSet]:
    """The packets table of ``source`` (``packets_of``) and its FlowSet (flows, and each
    packet's flow and side).

    pandas is loaded only when the flows table is asked for as a DataFrame
    (``FlowSet.flows``) or the captures need it (ICMP errors, IP fragments).
    ``timeouts`` overrides conntrack's idle timeouts (seconds, keys of
    ``flowtrace.flows.CONNTRACK_TIMEOUTS``); ``ignore_checksums`` leaves bad-checksum
    letters out of histories (``zeek -C``). Raises CaptureError for unreadable captures
    and InputError for a bad timeout.
    """
    packets = packets_of(source)
    return packets, build_flows(packets, timeouts=timeouts, ignore_checksums=ignore_checksums)


def flows(source: pd.DataFrame | PacketArrays | CaptureArg | Sequence[CaptureArg], *,
          timeouts: Mapping[str, float] | None = None, ignore_checksums: bool = False) -> pd.DataFrame:
    """The flows table (see docs/flows.md): one row per connection per observation point.

    ``source`` is a packets table (from ``read_packets``) or captures as ``read_packets``
    takes them. ``timeouts`` overrides conntrack's idle timeouts in seconds;
    ``ignore_checksums`` leaves bad-checksum letters out of histories (``zeek -C``). Raises
    CaptureError for unreadable captures and InputError for a bad timeout.
    """
    return flow_set(source, timeouts=timeouts, ignore_checksums=ignore_checksums)[1].flows


UNDERLAY_PORTS = (*VXLAN_PORTS, GENEVE_PORT)
"""UDP ports of VXLAN and Geneve, whose own (outer) conntrack entries are rebuilt at a host
whose capture shows tunnelled packets (flowtrace.correlate.underlay)."""
TUNNEL_PORTS = (*UNDERLAY_PORTS, *WIREGUARD_PORTS)
"""UDP ports of tunnels: a dump's entries of them are left out of the comparison, but
UNDERLAY_PORTS' at a host whose tunnel entries were rebuilt."""
AFTER_CAPTURE_NS = 1_000_000_000
"""How long after a node's last captured packet a ``conntrack -E`` event may be stamped and
still be compared (conntrack stamps an event when it reads it, shortly after the packet)."""
DUMP_NOTE = "conntrack dump entries"
"""Words every note about dump entries left out of the comparisons contains (the
``conntrack --compare`` command prints those notes)."""


@fewer_collections()
def analyze(captures: CaptureArg | Sequence[CaptureArg], *, manifest: CaptureArg | None = None,
            conntrack_dumps: Sequence[str] | None = None, reference: str | None = None,
            timeouts: Mapping[str, float] | None = None, ignore_checksums: bool = False,
            window_ns: int | None = None, progress: Progress | None = None, detect: bool = True,
            directory_dumps: bool = True) -> Analysis:
    """Read captures and follow every connection across them (``flowtrace analyze``).

    ``captures`` are files, ``NAME=PATH`` or directories (conntrack dumps found in a
    directory are compared with the reconstruction). ``manifest`` is a YAML file naming
    roles, hosts and the reference clock (see flowtrace.context.manifest);
    ``conntrack_dumps`` are ``[NODE=]PATH`` of ``conntrack -L``/``-E`` output; ``reference``
    names the capture whose clock is the reference; ``progress`` is called as stages
    advance (see Progress). ``detect=False`` leaves the anomaly detectors out (no
    findings; ``detect_anomalies`` runs them later); ``directory_dumps=False`` compares
    only ``conntrack_dumps``, not the dumps found in directories. Returns an Analysis.
    Raises CaptureError for unreadable captures and InputError for a bad manifest or dump.
    """
    # What only analyze needs is imported here: ``flows`` and ``info`` start sooner.
    from flowtrace.analysis import Analysis
    from flowtrace.context.manifest import Manifest, read_manifest
    from flowtrace.correlate.assemble import correlate
    from flowtrace.correlate.conntrack import rebuild_tables
    from flowtrace.correlate.roles import infer_roles
    from flowtrace.correlate.underlay import tunnel_packets
    from flowtrace.decode.summary import summarize

    args = _as_list(captures)
    sources = expand_sources(args)
    man = read_manifest(manifest) if manifest is not None else Manifest()
    # A manifest may describe more captures than one run reads; a reference asked for here
    # must be one of them.
    names = [s.name for s in sources]
    if reference is not None and reference not in names:
        raise InputError("", f"the reference {reference!r} is not a capture (captures: {', '.join(names)})")
    step = progress or (lambda stage, done, total: None)
    packets, readers = read_sources(sources, progress=progress)
    # Rows are in capture order: each capture's rows are one slice (a view, not a copy).
    bounds = np.searchsorted(packets["capture"].cat.codes.to_numpy(), np.arange(len(readers) + 1))
    summaries = [summarize(r, packets.iloc[bounds[i]:bounds[i + 1]]) for i, r in enumerate(readers)]
    step("flows", 0, 0)
    fs = build_flows(packets, timeouts=timeouts, ignore_checksums=ignore_checksums)
    step("correlate", 0, 0)

    def resplit(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        nonlocal fs
        fs = build_flows(packets, timeouts=timeouts, ignore_checksums=ignore_checksums, split_before=rows,
                         previous=fs)
        return fs.flow_id, fs.from_orig, fs.flows

    with heap_temporaries():
        corr = correlate(packets, fs.flow_id, fs.from_orig, flows=fs.flows,
                         reference=reference or man.reference, same_clock=man.same_clock, resplit=resplit,
                         **({"window_ns": window_ns} if window_ns else {}))
    multi = {s.capture for s in summaries if s.sll2_ifindexes or len(s.interfaces) > 1}
    roles = infer_roles(corr.hops, multi)
    roles.update({name: info.role for name, info in man.captures.items() if info.role})
    ends = {s.capture: s.last_ts_ns - corr.offsets[s.capture].offset_ns
            for s in summaries if s.last_ts_ns is not None and s.capture in corr.offsets}
    step("conntrack", 0, 0)
    # A dump found in a directory and also named with --compare is read once.
    found = find_dumps(args) if directory_dumps else []
    dumps = list({(node, path.resolve()): (node, path)
                  for node, path in found + [_dump_arg(d) for d in conntrack_dumps or []]}.values())
    analysis = Analysis(packets=packets, flows=fs.flows, connections=corr.connections, hops=corr.hops,
                        offsets=corr.offsets, conntrack=[], roles=roles, captures=summaries,
                        packet_flow=fs.flow_id, packet_hop=corr.packet_hop,
                        packet_path_direction=corr.packet_direction, corrected_ts=corr.corrected_ts,
                        packet_group=corr.packet_group, notes=list(corr.notes))
    # The detectors do not read conntrack tables or dumps: they run in a second process
    # while this one rebuilds the tables and compares them with the dumps.
    detection = Forked(partial(_detect, analysis), fork=worth_forking(len(packets))) if detect else None
    try:
        tunnels, tunnel_notes = tunnel_packets(packets, sources, corr.corrected_ts)
        analysis.notes.extend(tunnel_notes)
        analysis.conntrack = rebuild_tables(packets, corr.hops, corr.sightings, end_ns=ends, timeouts=timeouts,
                                            tunnels=tunnels)
        _compare_dumps(analysis, dumps)
        if detection is not None:
            step("detect", 0, 0)
            _store_findings(analysis, *detection.result())
    finally:
        if detection is not None:
            detection.cancel()
    return analysis


def detect_anomalies(analysis: Analysis) -> None:
    """Run the anomaly detectors (flowtrace.detect) on ``analysis`` and store what they
    found: ``findings`` (most severe first), their count per connection in
    ``connections.findings``, and what they could not check in ``notes``."""
    _store_findings(analysis, *_detect(analysis))


def _detect(analysis: Analysis) -> tuple[list[Finding], list[str]]:
    from flowtrace.detect.registry import run_detectors

    return run_detectors(analysis)


def _store_findings(analysis: Analysis, findings: list[Finding], notes: list[str]) -> None:
    analysis.findings = findings
    analysis.notes.extend(n for n in notes if n not in analysis.notes)
    counts: dict[int, int] = {}
    for f in findings:
        if f.connection is not None:
            counts[f.connection] = counts.get(f.connection, 0) + 1
    if counts and len(analysis.connections):
        conn = analysis.connections["connection"]
        analysis.connections["findings"] = conn.map(counts).fillna(0).astype("int32")


def _dump_arg(arg: str) -> tuple[str, Path]:
    """``NODE=PATH`` or ``PATH`` (node: the file name up to its first dot)."""
    if "=" in arg and not Path(arg).exists():
        node, path = arg.split("=", 1)
        return node, Path(path)
    p = Path(arg)
    return p.name.split(".", 1)[0], p


def find_dumps(args: Sequence[str]) -> list[tuple[str, Path]]:
    """conntrack dumps (``-L``/``-E`` output) inside the directories among ``args``."""
    from flowtrace.context.conntrack import looks_like_dump

    found = []
    for arg in args:
        d = Path(arg.split("=", 1)[1] if "=" in arg and not Path(arg).exists() else arg)
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if p.is_file() and "conntrack" in p.name and looks_like_dump(p):
                found.append((p.name.split(".", 1)[0], p))
    return found


def dump_cutoffs(a: Analysis) -> dict[str, int]:
    """Per capture with packets, the latest time (its own clock) a ``conntrack -E`` event of
    its node may be stamped and still be compared with the rebuilt table: its last packet
    plus AFTER_CAPTURE_NS."""
    return {s.capture: s.last_ts_ns + AFTER_CAPTURE_NS for s in a.captures if s.last_ts_ns is not None}


def _compare_dumps(a: Analysis, dumps: list[tuple[str, Path]]) -> None:
    """Attach dumps and their comparisons (created entries vs -E NEW events, live vs -L)."""
    from flowtrace.context.conntrack import compare, compare_events, created_entries, read_dump
    from flowtrace.correlate.conntrack import REBUILT_PROTOCOLS

    # A dump's entries of other protocols (IGMP and others conntrack lists as ``unknown``,
    # GRE, DCCP) are left out of the comparisons, and a note says so.
    rebuilt_names = set(REBUILT_PROTOCOLS.values())
    tunnel_notes = earlier = 0
    others: Counter[str] = Counter()
    # Nodes whose capture showed VXLAN or Geneve packets have their tunnels' own entries rebuilt.
    underlay = {e.node for e in a.conntrack if e.connection == -1}
    # Events stamped after the node's capture ended (a retransmission after tcpdump
    # stopped) are not the captured packets' doing (-E stamps on the node's clock), nor are
    # the entries they made, which a -L dump of the node taken later lists.
    ended = dump_cutoffs(a)
    read = [(node, path, read_dump(path, node=node)) for node, path in dumps]
    late = {(node, e.key()) for node, _, entries in read for e in entries
            if e.event == "NEW" and node in ended and e.ts_ns is not None and e.ts_ns > ended[node]}
    later_notes = 0
    for node, path, entries in read:
        a.dumps.setdefault(node, []).extend(entries)
        kept = [e for e in entries if not (e.ts_ns is not None and node in ended and e.ts_ns > ended[node])
                and not (late and e.event is None and (node, e.key()) in late)]
        later_notes += len(entries) - len(kept)
        entries = kept
        skipped = WIREGUARD_PORTS if node in underlay else TUNNEL_PORTS
        inner = [e for e in entries if not (e.proto == "udp" and e.orig.dport in skipped)]
        tunnel_notes += len(entries) - len(inner)
        others.update(f"{e.proto} {e.proto_number}" for e in inner if e.proto not in rebuilt_names)
        entries = [e for e in inner if e.proto in rebuilt_names]
        if any(e.event for e in entries):
            table = a.conntrack_table(node, ended=True)
            created = created_entries(entries)
            comparison = compare([e.entry for e in table], created)
            # UPDATE and DESTROY lines (unless conntrack -E was given -e NEW) against the
            # rebuilt entries' events of the kinds the dump has.
            later = [e for e in entries if e.event in ("UPDATE", "DESTROY")]
            if later:
                kinds = [k for k in ("UPDATE", "DESTROY") if any(e.event == k for e in later)]
                events = compare_events([ev for e in table for ev in e.events(kinds)], later)
                if events.missing_in_reconstruction:
                    # Not those of entries neither the dump saw made nor flowtrace rebuilt:
                    # made before both began.
                    known = {e.key() for e in created} | {e.entry.key() for e in table}
                    kept = [e for e in events.missing_in_reconstruction if e.key() in known]
                    earlier += len(events.missing_in_reconstruction) - len(kept)
                    events = replace(events, missing_in_reconstruction=kept)
                comparison = replace(comparison, events=events)
            a.comparisons[f"{node} ({path.name})"] = comparison
        else:
            rebuilt = [e.entry for e in a.conntrack_table(node)]
            a.comparisons[f"{node} ({path.name})"] = compare(rebuilt, entries, check_state=True)
    if tunnel_notes:
        a.notes.append(f"{tunnel_notes} {DUMP_NOTE} of tunnel (outer UDP) flows are not compared: flowtrace "
                       "rebuilds those of VXLAN and Geneve only at a host whose capture shows the tunnelled packets")
    if later_notes:
        a.notes.append(f"{later_notes} {DUMP_NOTE} are events stamped more than {AFTER_CAPTURE_NS // 1_000_000_000} s "
                       "after their node's capture ended, or entries those events made: not compared")
    if earlier:
        a.notes.append(f"{earlier} {DUMP_NOTE} (UPDATE and DESTROY events) belong to entries made before the "
                       "dump and the captures began (no NEW event in the dump, no packet in the captures): "
                       "not compared")
    if others:
        listed = ", ".join(f"{name} ({n})" for name, n in sorted(others.items()))
        a.notes.append(f"{DUMP_NOTE} of protocols flowtrace does not rebuild (it rebuilds TCP, UDP, SCTP and ICMP) "
                       f"are not compared: {listed}")
