"""Rendering reconstructed conntrack tables (``conntrack -L`` lines) and comparisons with dumps."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from flowtrace.analysis import Analysis
from flowtrace.context.conntrack import Comparison, ConntrackEntry
from flowtrace.correlate.conntrack import EVENT_KINDS


def render_tables(a: Analysis, *, nodes: list[str], extended: bool = False, events: bool = False,
                  kinds: Sequence[str] = EVENT_KINDS, timestamp: bool = False,
                  out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the tables of ``nodes`` in the exact ``conntrack -L`` layout; returns the count.

    With one node only entry lines are printed, so that ``diff`` against the kernel's
    ``conntrack -L`` (same ``-o`` flags) is meaningful; with several, each table is
    preceded by a ``# node`` line. ``events`` prints the entries' ``conntrack -E`` events
    of ``kinds`` instead (NEW, UPDATE, DESTROY), in time order, with ``timestamp`` each
    prefixed by its time on the node's clock as ``-o timestamp`` prints it. The count goes
    to stderr as conntrack prints it.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    shown = 0
    for node in nodes:
        if len(nodes) > 1:
            out.write(f"# {node}\n")
        entries = sorted(a.conntrack_table(node, ended=events), key=lambda e: e.created_ns)
        if not events:
            for e in entries:
                out.write(e.entry.format(extended=extended) + "\n")
            shown += len(entries)
            continue
        offset = a.offsets[node].offset_ns if node in a.offsets else 0
        # Stable: an entry's events keep their order where times tie. A tunnel's datagram
        # and the packet inside it share a time (the packet's first sighting is the
        # datagram); conntrack sees the datagram first.
        stream = [ev for ev, _ in sorted(((ev, e.connection >= 0) for e in entries for ev in e.events(kinds)),
                                         key=lambda pair: (pair[0].ts_ns or 0, pair[1]))]
        for ev in stream:
            stamp = ""
            if timestamp:
                # conntrack 1.4.7 prints "[%-.8ld.%-.6ld]": microseconds zero-padded to six
                # digits (older versions padded them with spaces after; flowtrace reads both).
                sec, ns = divmod((ev.ts_ns or 0) + offset, 1_000_000_000)
                stamp = f"[{sec}.{ns // 1000:06d}]\t"
            out.write(f"{stamp}{ev.event_line(extended=extended)}\n")
        shown += len(stream)
    word = "flow events" if events else "flow entries"
    err.write(f"flowtrace (reconstructed conntrack): {shown} {word} have been shown.\n")
    return shown


def render_comparison(node: str, dump_name: str, c: Comparison, *, out: TextIO | None = None) -> None:
    """Print how node's reconstruction compares with a dump: counts, then every difference;
    then the same for its UPDATE and DESTROY events, when the dump has them."""
    out = out or sys.stdout
    out.write(f"{node} vs {dump_name}: {len(c.matched)} matched, {len(c.differing)} differing, "
              f"{len(c.missing_in_dump)} only reconstructed, {len(c.missing_in_reconstruction)} only in the dump "
              f"(precision {c.precision:.1%}, recall {c.recall:.1%})\n")
    _differences(c, out, event=False)
    e = c.events
    if e is not None:
        out.write(f"{node} vs {dump_name}, UPDATE and DESTROY events: {len(e.matched)} matched, "
                  f"{len(e.differing)} differing, {len(e.missing_in_dump)} only reconstructed, "
                  f"{len(e.missing_in_reconstruction)} only in the dump "
                  f"(precision {e.precision:.1%}, recall {e.recall:.1%})\n")
        _differences(e, out, event=True)


def _differences(c: Comparison, out: TextIO, *, event: bool) -> None:
    line = ConntrackEntry.event_line if event else ConntrackEntry.format

    for r, d, what in c.differing:
        out.write(f"  differs: {'; '.join(what)}\n    reconstructed: {line(r)}\n    dump:          {line(d)}\n")
    for x in c.missing_in_dump:
        out.write(f"  only reconstructed: {line(x)}\n")
    for x in c.missing_in_reconstruction:
        out.write(f"  only in the dump:   {line(x)}\n")
