"""A connection as a ladder diagram: vantage points as columns, every packet as an arrow.

Columns are the captures in the order the request passes them (a capture the path
enters twice — a pod that hairpins through its node back to itself — gets two columns;
captures only the response passes are inserted where it passes them). One observation
point inside a capture (``node1 if2 in`` and ``node1 if2 out``) is not a column of its
own: NAT happens between them, so a rewrite shows as a mark on the capture's column.

Every packet of the connection is one arrow: the sightings of one packet (its sighting
group) at every observation point, in corrected time, from the first vantage point that
saw it to the last. Marks on an arrow: ``●`` seen, ``◆`` seen with a rewritten tuple
(DNAT, SNAT, port), ``○`` seen at an off-path hop, ``✕`` where it should have been seen
next and was not (the next on-path hop of its direction; TCP data counts as seen when
its bytes are covered there, however segmented). ``Ladder.build`` makes the model; it
renders itself in a terminal (flowtrace.report.ladder_text) and flowtrace.report.svg
draws the same model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from rich.console import Console, ConsoleOptions, RenderResult

from flowtrace.analysis import Analysis
from flowtrace.context.k8s import KubeNames
from flowtrace.report.format import endpoint, frame_ranges, observation_point, proto_name, tcp_flags
from flowtrace.report.path import label

DEFAULT_ARROWS = 400
"""Arrows drawn per connection unless told otherwise."""

GAP_NS = 100_000_000
"""A pause longer than this between two packets is drawn as a break in the ladder."""

GLYPHS = {"seen": "●", "rewrite": "◆", "offpath": "○", "missing": "✕"}
"""Mark kinds and their terminal glyphs."""

DIRECTION_STYLES = {"request": "blue", "response": "magenta"}
"""Terminal colour of arrows per direction."""

ICMP_NAMES = {(0, 0): "echo reply", (8, 0): "echo request", (3, 3): "port unreachable",
              (3, 4): "frag needed", (3, 1): "host unreachable", (11, 0): "time exceeded"}
"""Names of common ICMP (v4) type/code pairs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Column:
    """One vantage point of the ladder."""

    capture: str
    """Capture name."""
    role: str
    """client, node, pod, router, other."""
    title: str
    """The capture name, with ``(2)`` on a second column of the same capture."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Mark:
    """What an arrow does at one column."""

    column: int
    """Index into Ladder.columns."""
    kind: str
    """seen, rewrite, offpath or missing."""
    frames: str
    """Where it was seen there: ``node1 if2 in #5, node1 if2 out #6``; for missing, the point."""
    tuple: str
    """Source -> destination at the last sighting in this column ('' for missing)."""
    t_ns: int
    """Corrected time of the first sighting in this column, relative to the ladder's start
    (for missing: the time of the last sighting before)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrow:
    """One packet's journey through the vantage points."""

    t_ns: int
    """First sighting, relative to the ladder's start (corrected time)."""
    direction: str
    """request or response."""
    marks: tuple[Mark, ...]
    """Marks in travel order; a missing mark, if any, last."""
    label: str
    """What the packet is: ``SYN-ACK seq 0 ack 1``, ``UDP len 38 DNS id 0x1a2b`` …"""
    span_ns: int
    """Last sighting minus first."""
    rewrites: tuple[str, ...] = ()
    """Tuple rewrites it underwent, with where: ``node1: dst 203.0.113.10:80 -> 10.244.2.7:8080``."""
    new_rewrites: tuple[str, ...] = ()
    """Those not already shown on an earlier arrow of the same direction."""
    missing_at: str = ""
    """Observation point where it should have appeared next and did not."""
    gap_ns: int = 0
    """Time since the previous arrow."""

    @property
    def first(self) -> int:
        """Column it started at."""
        return self.marks[0].column

    @property
    def last_seen(self) -> int:
        """Column of its last sighting."""
        seen = [m for m in self.marks if m.kind != "missing"]
        return seen[-1].column


@dataclass(slots=True, kw_only=True)
class Ladder:
    """A connection's packets as arrows between vantage points."""

    connection: int
    """connections.connection."""
    title: str
    """``#2 tcp 198.51.100.10:45300 -> 203.0.113.10:80``."""
    columns: list[Column]
    """Vantage points in path order."""
    arrows: list[Arrow]
    """Arrows in time order (at most the limit given to build)."""
    start_ns: int
    """Corrected time of the first packet (reference clock)."""
    packets: int = 0
    """Packets (arrows) in the connection, drawn or not."""
    omitted: int = 0
    """Arrows left out after the limit."""
    unit: str = "ms"
    """Time unit of the time column: ms below 10 s of connection, else s."""
    names: KubeNames | None = field(default=None, repr=False)
    """Snapshot used for the tuples."""

    @staticmethod
    def build(a: Analysis, connection: int, *, names: KubeNames | None = None, limit: int | None = DEFAULT_ARROWS,
              packet_index: PacketIndex | None = None, hops: pd.DataFrame | None = None) -> Ladder:
        """The ladder of ``connection``: columns, and one arrow per packet (sighting group).

        ``limit`` caps the arrows (None: all); ``packet_index`` and ``hops`` (the
        connection's hops rows) save work when many ladders are built from one analysis.
        Raises KeyError for an unknown connection.
        """
        conn = a.connections.loc[a.connections["connection"] == connection]
        if conn.empty:
            raise KeyError(connection)
        row = conn.iloc[0]
        h = hops if hops is not None else a.hops[a.hops["connection"] == connection]
        h = h.sort_values(["direction", "hop"], kind="stable")
        proto = int(row["proto"])
        title = (f"#{connection} {proto_name(proto)} {label(names, row['client_src'], row['client_sport'], proto)} -> "
                 f"{label(names, row['client_dst'], row['client_dport'], proto)}")
        columns, col_of_hop = _columns(h, a.roles)
        index = packet_index or PacketIndex(a)
        rows = index.rows(h["hop_id"].to_numpy())
        ladder = Ladder(connection=connection, title=title, columns=columns, arrows=[], start_ns=0, names=names)
        if not len(rows):
            return ladder
        ladder.arrows, ladder.packets, ladder.start_ns = _arrows(a, rows, h, col_of_hop, proto, names, limit)
        ladder.omitted = ladder.packets - len(ladder.arrows)
        end = max((x.t_ns + x.span_ns for x in ladder.arrows), default=0)
        ladder.unit = "ms" if end < 10_000_000_000 else "s"
        return ladder

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from flowtrace.report.ladder_text import render_terminal

        yield from render_terminal(self, options.max_width)


class PacketIndex:
    """Packet rows sorted by hop once, so that a connection's packets are a few slices."""

    def __init__(self, a: Analysis) -> None:
        self._order = np.argsort(a.packet_hop, kind="stable")
        self._sorted = a.packet_hop[self._order]

    def rows(self, hop_ids: np.ndarray) -> np.ndarray:
        """Packet rows (positions in the packets table) of these hops, in table order."""
        if not len(hop_ids):
            return np.zeros(0, dtype=np.int64)
        ids = np.asarray(hop_ids, dtype=self._sorted.dtype)
        lo = np.searchsorted(self._sorted, ids, side="left")
        hi = np.searchsorted(self._sorted, ids, side="right")
        parts = [self._order[x:y] for x, y in zip(lo, hi, strict=True) if y > x]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def _columns(h: pd.DataFrame, roles: dict[str, str]) -> tuple[list[Column], dict[int, int]]:
    """Columns in path order and the column of every hop_id."""
    caps: list[str] = []
    col_of_hop: dict[int, int] = {}
    # The connection's few hops as lists (pandas per row costs more than the work here).
    capture = [str(c) for c in h["capture"].tolist()]
    hop_id, hop, on = h["hop_id"].tolist(), h["hop"].tolist(), h["on_path"].tolist()
    direction = [str(d) for d in h["direction"].tolist()]

    def on_path(d: str) -> list[int]:
        return sorted((i for i in range(len(hop_id)) if on[i] and direction[i] == d), key=lambda i: hop[i])

    for i in on_path("request"):
        if not caps or caps[-1] != capture[i]:
            caps.append(capture[i])
        col_of_hop[int(hop_id[i])] = len(caps) - 1
    pointer = len(caps) - 1 if caps else 0
    inserted: list[int] = []  # column indexes are renumbered on insertion: track by identity
    ids = list(range(len(caps)))
    for i in on_path("response"):
        cap = capture[i]
        pos = ids.index(pointer) if pointer in ids else len(ids) - 1
        hit = next((j for j in range(pos, -1, -1) if caps[ids[j]] == cap), None) if caps else None
        if hit is None and caps:
            hit = next((j for j in range(len(ids)) if caps[ids[j]] == cap), None)
        if hit is None:
            caps.append(cap)
            new = len(caps) - 1
            ids.insert(max(pos, 0), new)
            inserted.append(new)
            pointer = new
        else:
            pointer = ids[hit]
        col_of_hop[int(hop_id[i])] = pointer
    for i in (i for i in range(len(hop_id)) if not on[i]):
        cap = capture[i]
        hit = next((c for c in ids if caps[c] == cap), None)
        if hit is None:
            caps.append(cap)
            hit = len(caps) - 1
            ids.append(hit)
        col_of_hop[int(hop_id[i])] = hit
    position = {c: i for i, c in enumerate(ids)}
    seen: dict[str, int] = {}
    columns = []
    for c in ids:
        cap = caps[c]
        seen[cap] = seen.get(cap, 0) + 1
        columns.append(Column(capture=cap, role=roles.get(cap, ""),
                              title=cap if seen[cap] == 1 else f"{cap} ({seen[cap]})"))
    return columns, {hid: position[c] for hid, c in col_of_hop.items()}


class _Sightings:
    """One connection's packet rows as arrays, in corrected time order."""

    def __init__(self, a: Analysis, rows: np.ndarray) -> None:
        p = a.packets
        ts = a.corrected_ts[rows]
        order = np.lexsort((p["frame"].to_numpy()[rows], p["capture"].cat.codes.to_numpy()[rows], ts))
        self.rows, self.ts = rows[order], ts[order]
        self.hop = a.packet_hop[self.rows]
        self.group = a.packet_group[self.rows]
        self.pdir = a.packet_path_direction[self.rows]
        r = self.rows

        def texts(name: str) -> np.ndarray:
            return np.asarray(p[name].array.take(r).astype(str), dtype=object)

        self.cap = texts("capture")
        self.frame = p["frame"].to_numpy()[r]
        self.src, self.dst = texts("src"), texts("dst")
        self.sport, self.dport = p["sport"].to_numpy()[r], p["dport"].to_numpy()[r]
        self.flags, self.seq, self.ack = p["tcp_flags"].to_numpy()[r], p["seq"].to_numpy()[r], p["ack"].to_numpy()[r]
        self.plen = p["payload_len"].to_numpy()[r]
        self.dns_id = p["dns_id"].to_numpy()[r]
        self.icmp_type, self.icmp_code = p["icmp_type"].to_numpy()[r], p["icmp_code"].to_numpy()[r]

    def events(self) -> list[list[int]]:
        """Sightings (indexes) grouped into packets: one sighting group each, split where a hop
        repeats (a retransmission with the same signature); ungrouped sightings alone."""
        events: list[list[int]] = []
        open_event: dict[int, int] = {}
        open_hops: dict[int, set[int]] = {}
        for i in range(len(self.rows)):
            g = int(self.group[i])
            e = open_event.get(g) if g >= 0 else None
            if e is not None and int(self.hop[i]) in open_hops[e]:
                e = None
            if e is None:
                e = len(events)
                events.append([])
                if g >= 0:
                    open_event[g] = e
                open_hops[e] = set()
            events[e].append(i)
            open_hops[e].add(int(self.hop[i]))
        events.sort(key=lambda ev: (self.ts[ev[0]], ev[0]))
        return events

    def tuple_of(self, i: int) -> tuple[object, ...]:
        """Source and destination address and port of sighting i."""
        return (self.src[i], self.sport[i], self.dst[i], self.dport[i])


def _arrows(a: Analysis, rows: np.ndarray, h: pd.DataFrame, col_of_hop: dict[int, int], proto: int,
            names: KubeNames | None, limit: int | None) -> tuple[list[Arrow], int, int]:
    """Arrows of the connection whose packets are ``rows``; also the arrow count and start."""
    s = _Sightings(a, rows)
    events = s.events()
    start = int(s.ts[0])
    isn = _isns(s.pdir, s.flags, s.seq)
    coverage = _Coverage(s.hop, s.pdir, s.seq, s.plen, proto, isn)
    labels_isn = dict(isn)
    next_on_path = _next_on_path(h)
    hops_by_id = {int(r.hop_id): r for r in h.itertuples(index=False)}
    shown_rewrites: dict[str, set[str]] = {"request": set(), "response": set()}
    arrows: list[Arrow] = []
    prev_t: int | None = None
    for ev in events if limit is None else events[:limit]:
        direction = "request" if s.pdir[ev[0]] == 0 else "response"
        marks, rewrites = _marks(s, ev, col_of_hop, hops_by_id, names, proto, start)
        last_i = ev[-1]
        missing_at = ""
        nxt = next_on_path.get(int(s.hop[last_i]))
        if nxt is not None and not coverage.covered(ev[0], nxt):
            missing_at = _point(hops_by_id[nxt])
            marks.append(Mark(column=col_of_hop.get(nxt, marks[-1].column), kind="missing", frames=missing_at,
                              tuple="", t_ns=int(s.ts[last_i]) - start))
        t = int(s.ts[ev[0]]) - start
        new = tuple(r for r in rewrites if r not in shown_rewrites[direction])
        shown_rewrites[direction].update(new)
        i0 = ev[0]
        if s.flags[i0] & 0x02:  # a SYN (again): sequence numbers restart from it, as Wireshark counts
            labels_isn[int(s.pdir[i0])] = int(s.seq[i0])
        arrows.append(Arrow(
            t_ns=t, direction=direction, marks=tuple(marks),
            label=_packet_label(s, i0, proto, labels_isn),
            span_ns=int(s.ts[last_i] - s.ts[i0]), rewrites=tuple(rewrites), new_rewrites=new,
            missing_at=missing_at, gap_ns=0 if prev_t is None else t - prev_t))
        prev_t = t
    return arrows, len(events), start


def _marks(s: _Sightings, ev: list[int], col_of_hop: dict[int, int], hops_by_id: dict[int, object],
           names: KubeNames | None, proto: int, start: int) -> tuple[list[Mark], list[str]]:
    """The marks of one packet (consecutive sightings in one column are one mark) and its rewrites."""
    runs: list[tuple[int, list[int], bool]] = []
    rewrites: list[str] = []
    prev: int | None = None
    for i in ev:
        col = col_of_hop.get(int(s.hop[i]), 0)
        changed = prev is not None and s.tuple_of(i) != s.tuple_of(prev)
        if changed:
            rewrites += _rewrite(s, prev, i, names, proto)  # type: ignore[arg-type]
        if not runs or runs[-1][0] != col:
            runs.append((col, [], False))
        if changed:
            runs[-1] = (col, runs[-1][1], True)
        runs[-1][1].append(i)
        prev = i
    marks = []
    for col, members, rewritten in runs:
        off = all(not hops_by_id[int(s.hop[j])].on_path for j in members)  # type: ignore[attr-defined]
        kind = "rewrite" if rewritten else ("offpath" if off else "seen")
        where = ", ".join(f"{_point(hops_by_id[int(s.hop[j])])} #{s.frame[j]}" for j in members)
        last = members[-1]
        marks.append(Mark(column=col, kind=kind, frames=where, t_ns=int(s.ts[members[0]]) - start,
                          tuple=f"{label(names, s.src[last], s.sport[last], proto)} -> "
                                f"{label(names, s.dst[last], s.dport[last], proto)}"))
    return marks, list(dict.fromkeys(rewrites))


def _point(r: object) -> str:
    return observation_point(r.capture, r.interface, r.ifindex, r.packet_direction)  # type: ignore[attr-defined]


def _rewrite(s: _Sightings, i: int, j: int, names: KubeNames | None, proto: int) -> list[str]:
    """``node1: dst 203.0.113.10:80 -> 10.244.2.7:8080`` (one per rewritten side): how sighting
    j's tuple differs from i's."""
    parts = []
    if (s.dst[i], s.dport[i]) != (s.dst[j], s.dport[j]):
        parts.append(f"dst {endpoint(s.dst[i], s.dport[i])} -> {label(names, s.dst[j], s.dport[j], proto)}")
    if (s.src[i], s.sport[i]) != (s.src[j], s.sport[j]):
        parts.append(f"src {endpoint(s.src[i], s.sport[i])} -> {label(names, s.src[j], s.sport[j], proto)}")
    where = s.cap[j] if s.cap[i] == s.cap[j] else f"{s.cap[i]} -> {s.cap[j]}"
    return [f"{where}: {part}" for part in parts]


def _isns(pdir: np.ndarray, flags: np.ndarray, seq: np.ndarray) -> dict[int, int]:
    """Initial sequence number per path direction (SYN, else SYN-ACK, else the first seq seen)."""
    out: dict[int, int] = {}
    for d in (0, 1):
        sel = pdir == d
        syn = sel & ((flags & 0x02) != 0)
        if syn.any():
            out[d] = int(seq[np.flatnonzero(syn)[0]])
        elif sel.any():
            out[d] = int(seq[np.flatnonzero(sel)[0]])
    return out


def _next_on_path(h: pd.DataFrame) -> dict[int, int]:
    """hop_id of an on-path hop -> hop_id of the next on-path hop of its direction."""
    out: dict[int, int] = {}
    for _, d in h[h["on_path"]].groupby("direction", observed=True):
        ids = d.sort_values("hop")["hop_id"].to_numpy()
        out.update({int(x): int(y) for x, y in itertools.pairwise(ids)})
    return out


class _Coverage:
    """Whether a packet shows at a hop: by sighting, or for TCP data by covered byte ranges."""

    def __init__(self, hop: np.ndarray, pdir: np.ndarray, seq: np.ndarray, plen: np.ndarray, proto: int,
                 isn: dict[int, int]) -> None:
        self.hop, self.pdir, self.plen, self.proto = hop, pdir, plen, proto
        base = np.array([isn.get(int(d), 0) for d in (0, 1)], dtype=np.int64)
        self.rel = (seq.astype(np.int64) - base[np.clip(pdir, 0, 1)]) % (1 << 32)
        self._merged: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def covered(self, i: int, hop_id: int) -> bool:
        """Packet i (a TCP segment with data) has all its bytes seen at hop_id."""
        if self.proto != 6 or self.plen[i] == 0:
            return False
        lo, hi = self._ranges(hop_id)
        s, e = int(self.rel[i]), int(self.rel[i] + self.plen[i])
        k = np.searchsorted(lo, s, side="right") - 1
        return bool(k >= 0 and hi[k] >= e)

    def _ranges(self, hop_id: int) -> tuple[np.ndarray, np.ndarray]:
        got = self._merged.get(hop_id)
        if got is None:
            sel = (self.hop == hop_id) & (self.plen > 0)
            s = self.rel[sel]
            e = s + self.plen[sel].astype(np.int64)
            order = np.argsort(s)
            s, e = s[order], e[order]
            los: list[int] = []
            his: list[int] = []
            for a, b in zip(s.tolist(), e.tolist(), strict=True):
                if his and a <= his[-1]:
                    his[-1] = max(his[-1], b)
                else:
                    los.append(a)
                    his.append(b)
            got = (np.array(los, dtype=np.int64), np.array(his, dtype=np.int64))
            self._merged[hop_id] = got
        return got


def _packet_label(s: _Sightings, i: int, proto: int, isn: dict[int, int]) -> str:
    """The arrow's text for sighting ``i``: TCP flags with sequence numbers relative to
    ``isn`` (by path direction), UDP length and DNS id, ICMP type and code."""
    plen = int(s.plen[i])
    if proto == 6:
        flags, seq, ack, d = int(s.flags[i]), int(s.seq[i]), int(s.ack[i]), int(s.pdir[i])
        rel_seq = (seq - isn.get(d, seq)) % (1 << 32)
        text = f"{tcp_flags(flags)} seq {rel_seq}"
        if flags & 0x10:
            text += f" ack {(ack - isn.get(1 - d, ack)) % (1 << 32)}"
        return text + (f" len {plen}" if plen else "")
    if proto == 17:
        text = f"UDP len {plen}"
        dns = int(s.dns_id[i])
        return text + (f" DNS id 0x{dns:04x}" if dns >= 0 else "")
    if proto in (1, 58):
        t, c = int(s.icmp_type[i]), int(s.icmp_code[i])
        name = ICMP_NAMES.get((t, c)) if proto == 1 else _icmp6_name(t, c)
        return f"{'ICMP' if proto == 1 else 'ICMPv6'} {t}/{c}" + (f" {name}" if name else "")
    return f"proto {proto} len {plen}"


def _icmp6_name(t: int, c: int) -> str | None:
    return {(128, 0): "echo request", (129, 0): "echo reply", (1, 4): "port unreachable",
            (2, 0): "packet too big", (3, 0): "hop limit exceeded", (135, 0): "neighbor solicitation",
            (136, 0): "neighbor advertisement", (133, 0): "router solicitation"}.get((t, c))


def evidence_frames(ladder: Ladder) -> dict[str, str]:
    """Frames drawn per capture (``{"client": "5-16"}``), for captions and tests."""
    frames: dict[str, list[int]] = {}
    for arrow in ladder.arrows:
        for m in arrow.marks:
            if m.kind == "missing":
                continue
            for part in m.frames.split(", "):
                point, _, num = part.rpartition(" #")
                frames.setdefault(point.split(" ")[0], []).append(int(num))
    return {c: frame_ranges(f) for c, f in frames.items()}
