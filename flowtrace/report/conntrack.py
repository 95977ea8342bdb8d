"""Rendering reconstructed conntrack tables (``conntrack -L`` lines) and comparisons with dumps."""

from __future__ import annotations

import sys
from typing import TextIO

from flowtrace.analysis import Analysis
from flowtrace.context.conntrack import Comparison


def render_tables(a: Analysis, *, nodes: list[str], extended: bool = False, events: bool = False,
                  out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the tables of ``nodes`` in the exact ``conntrack -L`` layout; returns the count.

    With one node only entry lines are printed, so that ``diff`` against the kernel's
    ``conntrack -L`` (same ``-o`` flags) is meaningful; with several, each table is
    preceded by a ``# node`` line. ``events`` prints every entry ever created as a
    ``conntrack -E`` NEW line instead. The count goes to stderr as conntrack prints it.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    shown = 0
    for node in nodes:
        if len(nodes) > 1:
            out.write(f"# {node}\n")
        entries = a.conntrack_table(node, ended=events)
        for e in sorted(entries, key=lambda e: e.created_ns):
            if events:
                out.write(f"    [NEW] {e.created.format(extended=extended)}\n")
            else:
                out.write(e.entry.format(extended=extended) + "\n")
            shown += 1
    word = "flow events" if events else "flow entries"
    err.write(f"flowtrace (reconstructed conntrack): {shown} {word} have been shown.\n")
    return shown


def render_comparison(node: str, dump_name: str, c: Comparison, *, out: TextIO | None = None) -> None:
    """Print how node's reconstruction compares with a dump: counts, then every difference."""
    out = out or sys.stdout
    out.write(f"{node} vs {dump_name}: {len(c.matched)} matched, {len(c.differing)} differing, "
              f"{len(c.missing_in_dump)} only reconstructed, {len(c.missing_in_reconstruction)} only in the dump "
              f"(precision {c.precision:.1%}, recall {c.recall:.1%})\n")
    for r, d, what in c.differing:
        out.write(f"  differs: {'; '.join(what)}\n    reconstructed: {r.format()}\n    dump:          {d.format()}\n")
    for e in c.missing_in_dump:
        out.write(f"  only reconstructed: {e.format()}\n")
    for e in c.missing_in_reconstruction:
        out.write(f"  only in the dump:   {e.format()}\n")
