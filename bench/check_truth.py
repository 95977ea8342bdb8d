"""Accuracy of `flowtrace analyze` on a lab run directory against its truth file.

    python bench/check_truth.py bench/data/lab/many-connections

Prints how many of the truth's connections have exactly the truth's path (hop by hop: capture,
interface, tuple), the reasons the others differ, and the precision and recall of the rebuilt
conntrack events and end tables against each node's dumps, with and without the entries the
truth file calls outside the captured connections (the VXLAN underlay's own flows, which
flowtrace rebuilds, and IGMP, which it does not). The same checks as
tests/test_correlate_fixtures.py, for runs too large to commit.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

from flowtrace.analysis import Analysis
from flowtrace.context.conntrack import compare, compare_events, created_entries, read_dump
from flowtrace.lab.truth import expected_hops, matching_connection
from flowtrace.pipeline import analyze, dump_cutoffs


def _why(a: Analysis, truth: dict, conn: dict) -> str | None:
    """None when the connection's path equals the truth's, else what differs."""
    cid = matching_connection(a.connections, conn)
    if cid is None:
        return "no single connection for the client tuple"
    for direction in ("request", "response"):
        expected = expected_hops(truth, conn, direction)
        got = a.hops[(a.hops["connection"] == cid) & (a.hops["direction"] == direction) & a.hops["on_path"]]
        got = got.sort_values("hop")
        if len(got) != len(expected):
            return f"{direction}: {len(got)} hops, truth {len(expected)}"
        for e, g in zip(expected, got.itertuples(), strict=True):
            if g.capture != Path(e["capture"]).stem or (g.ifindex >= 0 and g.ifindex != e["ifindex"]):
                return f"{direction}: hop {g.hop} at {g.capture}"
            if e.get("src") and not e.get("icmp_error") and \
                    (g.src, g.sport, g.dst, g.dport) != (e["src"], e.get("sport", -1), e["dst"], e.get("dport", -1)):
                return f"{direction}: hop {g.hop} tuple"
    return None


def main() -> None:
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/data/lab/many-connections")
    truth = json.loads((directory / "truth.json").read_text())
    a = analyze([str(directory)])
    reasons: collections.Counter[str] = collections.Counter()
    examples: dict[str, int] = {}
    for conn in truth["connections"]:
        why = _why(a, truth, conn)
        if why is not None:
            kind = why.split(":")[0]
            reasons[kind] += 1
            examples.setdefault(kind, conn["id"])
    n = len(truth["connections"])
    print(f"{directory}: {n - sum(reasons.values())} of {n} truth paths match")
    for kind, count in reasons.most_common():
        print(f"  {count} differ ({kind}), e.g. truth connection {examples[kind]}")
    other = {(o["node"], o["event_line"]) for o in truth.get("other_conntrack_events", [])}
    for events in sorted(directory.glob("*.conntrack-events.txt")):
        node = events.name.split(".")[0]
        # As analyze compares them: not the events stamped after the node's capture ended,
        # nor the -L entries those made.
        dump = read_dump(events, node=node)
        cut = dump_cutoffs(a).get(node)
        late = {e.key() for e in dump if e.event == "NEW" and cut is not None and (e.ts_ns or 0) > cut}
        if late:
            print(f"{node}: {len(late)} NEW events after the capture ended, not compared")
        dump = [e for e in dump if cut is None or e.ts_ns is None or e.ts_ns <= cut]
        created = created_entries(dump)
        rebuilt = [e.created for e in a.conntrack_table(node, ended=True)]
        c = compare(rebuilt, created)
        print(f"{node} NEW events: {len(c.matched)} matched, precision {c.precision:.4f}, recall {c.recall:.4f}")
        outside = [e for e in created if (node, e.line) in other]
        outside_keys = {e.key() for e in outside}
        if outside:
            c = compare([e for e in rebuilt if e.key() not in outside_keys], [e for e in created if e not in outside])
            print(f"  without the {len(outside)} the truth file calls outside the captured connections "
                  f"(tunnel underlay, IGMP): precision {c.precision:.4f}, recall {c.recall:.4f}")
        # UPDATE and DESTROY lines of the entries created in the run (those of entries from
        # before it have no NEW line) against the rebuilt entries' events.
        made = {e.key() for e in created}
        later = [e for e in dump if e.event in ("UPDATE", "DESTROY") and e.key() in made]
        if later:
            kinds = {str(e.event) for e in later}
            c = compare_events([ev for e in a.conntrack_table(node, ended=True) for ev in e.events(kinds)], later)
            print(f"{node} {' and '.join(sorted(kinds))} events: {len(c.matched)} matched, {len(c.differing)} "
                  f"differing, precision {c.precision:.4f}, recall {c.recall:.4f}")
        table = directory / f"{node}.conntrack.txt"
        if table.exists():
            live = [e.entry for e in a.conntrack_table(node)]
            listed = [e for e in read_dump(table, node=node) if e.key() not in late]
            t = compare(live, listed, check_state=True)
            print(f"{node} -L table: {len(t.matched)} matched, precision {t.precision:.4f}, recall {t.recall:.4f}")
            # The table's entries of those connections (same tuples as their NEW events).
            inside = [e for e in listed if e.key() not in outside_keys]
            if len(inside) < len(listed):
                t = compare([e for e in live if e.key() not in outside_keys], inside, check_state=True)
                print(f"  without the {len(listed) - len(inside)} of them still listed: "
                      f"precision {t.precision:.4f}, recall {t.recall:.4f}")


if __name__ == "__main__":
    main()
