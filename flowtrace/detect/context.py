"""What detectors read: the analysis plus derived views computed once and shared.

Detectors never recompute what another one needs too: packet columns as numpy arrays,
the hops indexed by hop id, who owns which address, which captures cover which time,
packets that vanished between hops, replies from the wrong address. Everything is built
lazily on first use, so a detector that finds nothing to look at costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pandas as pd

from flowtrace.detect.evidence import is_loopback, is_multicast
from flowtrace.detect.finding import Evidence

if TYPE_CHECKING:
    from flowtrace.analysis import Analysis
    from flowtrace.detect.coverage import Coverage, UnseenAck

T = TypeVar("T")

DIR_IN, DIR_OUT, DIR_UNKNOWN = 0, 1, 2
"""Codes of ``HopIndex.pdir`` and ``Context.pdir``: packets.direction as small integers."""


class HopIndex:
    """The hops table as numpy arrays indexed by ``hop_id``.

    ``conn``, ``dirc`` (0 request, 1 response), ``pos`` (hops.hop), ``on_path``,
    ``capture`` (index into ``Context.capture_names``), ``pdir`` (DIR_*), ``ttl``,
    ``row`` (row position in the hops table); ``-1``/False for ids no hop has.
    """

    def __init__(self, hops: pd.DataFrame, capture_names: list[str]) -> None:
        ids = hops["hop_id"].to_numpy().astype(np.int64)
        n = int(ids.max()) + 1 if ids.size else 0
        self.size = n

        def _spread(values: np.ndarray, fill: int, dtype: type) -> np.ndarray:
            out: np.ndarray = np.full(n, fill, dtype=dtype)
            out[ids] = values
            return out

        self.conn = _spread(hops["connection"].to_numpy(), -1, np.int64)
        self.dirc = _spread(codes_of(hops["direction"], ["request", "response"]), -1, np.int8)
        self.pos = _spread(hops["hop"].to_numpy(), -1, np.int64)
        self.on_path = _spread(hops["on_path"].to_numpy(), False, bool)
        self.capture = _spread(codes_of(hops["capture"], capture_names), -1, np.int32)
        self.pdir = _spread(codes_of(hops["packet_direction"], ["in", "out", "unknown"]), DIR_UNKNOWN, np.int8)
        self.ttl = _spread(hops["ttl"].to_numpy(), -1, np.int64)
        self.row = _spread(np.arange(len(hops)), -1, np.int64)


def remap(codes: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``lut[codes]`` with -1 where a code is -1 (missing) or ``lut`` is empty."""
    codes = np.asarray(codes)
    if not lut.size:
        return np.full(codes.shape, -1, dtype=np.int64)
    return np.where(codes >= 0, lut[np.clip(codes, 0, lut.size - 1)], -1)


def codes_of(series: pd.Series, names: list[str]) -> np.ndarray:
    """Index of each value of a categorical (or text) column in ``names`` (-1 if absent)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        lut = pd.Index(names, dtype=object).get_indexer(pd.Index([str(c) for c in series.cat.categories], dtype=object))
        return remap(series.cat.codes.to_numpy(), lut)
    return pd.Index(names, dtype=object).get_indexer(pd.Index(series.astype(object).to_numpy(), dtype=object))


class Context:
    """The analysis as detectors read it, with shared derived data built on first use.

    ``notes`` collects what a detector could not decide, for the report (once each).
    """

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.notes: list[str] = []
        self._cols: dict[str, np.ndarray] = {}
        self._shared: dict[str, object] = {}

    def shared(self, name: str, build: Callable[[Context], T]) -> T:
        """``build(self)``, computed once per context under ``name`` (for analyses two
        detectors need, defined next to them)."""
        if name not in self._shared:
            self._shared[name] = build(self)
        return self._shared[name]  # type: ignore[return-value]

    # ------------------------------------------------------------------ packets

    def col(self, name: str) -> np.ndarray:
        """A packets column as a numpy array (categoricals: codes, see ``addr``)."""
        got = self._cols.get(name)
        if got is None:
            s = self.analysis.packets[name]
            if isinstance(s.dtype, pd.CategoricalDtype):
                got = self._category_codes(name, s)
            else:
                got = s.to_numpy()
            self._cols[name] = got
        return got

    def _category_codes(self, name: str, s: pd.Series) -> np.ndarray:
        if name in ("src", "dst", "outer_src", "outer_dst", "quoted_src", "quoted_dst"):
            lut = self.addresses.get_indexer(pd.Index([str(c) for c in s.cat.categories], dtype=object))
            return remap(s.cat.codes.to_numpy(), lut).astype(np.int32)
        if name == "capture":
            return s.cat.codes.to_numpy().astype(np.int32)
        return s.cat.codes.to_numpy()

    @cached_property
    def addresses(self) -> pd.Index:
        """Every address text in the packets table; ``col('src')`` etc. index into it."""
        p = self.analysis.packets
        cats: dict[str, None] = {}
        for name in ("src", "dst", "outer_src", "outer_dst", "quoted_src", "quoted_dst"):
            if name in p.columns and isinstance(p[name].dtype, pd.CategoricalDtype):
                cats.update(dict.fromkeys(str(c) for c in p[name].cat.categories))
        return pd.Index(list(cats), dtype=object)

    def addr(self, code: int) -> str:
        """The text of an address code (``''`` for -1)."""
        return str(self.addresses[code]) if code >= 0 else ""

    def addr_code(self, text: object) -> int:
        """The code of an address text, -1 if no packet has it."""
        got = self.addresses.get_indexer([str(text)])[0]
        return int(got)

    @cached_property
    def multicast_address(self) -> np.ndarray:
        """bool per address code: multicast or broadcast (flooded, never a single path)."""
        return np.array([is_multicast(str(a)) for a in self.addresses], dtype=bool)

    @cached_property
    def loopback_address(self) -> np.ndarray:
        """bool per address code: a loopback address (127.0.0.0/8, ::1), local to any host."""
        return np.array([is_loopback(str(a)) for a in self.addresses], dtype=bool)

    @cached_property
    def capture_names(self) -> list[str]:
        """Capture names; ``col('capture')`` indexes into this list."""
        return [str(c) for c in self.analysis.packets["capture"].cat.categories]

    def capture_index(self, name: str) -> int:
        """Index of capture ``name`` in ``capture_names`` (-1 if unknown)."""
        try:
            return self.capture_names.index(name)
        except ValueError:
            return -1

    @cached_property
    def pdir(self) -> np.ndarray:
        """int8 DIR_* per packet row (packets.direction)."""
        s = self.analysis.packets["direction"]
        return codes_of(s, ["in", "out", "unknown"]).astype(np.int8)

    @cached_property
    def tcp_flags(self) -> np.ndarray:
        """TCP flags per packet row (0 for other protocols)."""
        return self.col("tcp_flags").astype(np.int64)

    # ------------------------------------------------------------------ hops and connections

    @cached_property
    def hop(self) -> HopIndex:
        """The hops table indexed by hop id."""
        return HopIndex(self.analysis.hops, self.capture_names)

    def packet_conn(self, rows: np.ndarray) -> np.ndarray:
        """Connection of each packet row (-1 outside any connection)."""
        h = self.analysis.packet_hop[rows]
        out = np.full(rows.size, -1, dtype=np.int64)
        ok = h >= 0
        out[ok] = self.hop.conn[h[ok]]
        return out

    @cached_property
    def connections(self) -> pd.DataFrame:
        """The connections table indexed by connection number."""
        return self.analysis.connections.set_index("connection", drop=False)

    def connection_rows(self, connections: np.ndarray | list[int]) -> np.ndarray:
        """Packet rows (ascending) of the given connections, both directions."""
        conns = np.asarray(connections, dtype=np.int64)
        if not conns.size or not self.hop.size:
            return np.zeros(0, dtype=np.int64)
        want = np.zeros(self.hop.size, dtype=bool)
        want[np.isin(self.hop.conn, conns)] = True
        ph = self.analysis.packet_hop
        return np.flatnonzero((ph >= 0) & want[np.maximum(ph, 0)])

    def path_hops(self, connection: int, direction: int) -> pd.DataFrame:
        """On-path hops of one connection and direction (0 request, 1 response), in order."""
        h = self.analysis.hops
        rows = np.flatnonzero((self.hop.conn == connection) & (self.hop.dirc == direction) & self.hop.on_path)
        return h.iloc[np.sort(self.hop.row[rows])]

    # ------------------------------------------------------------------ captures

    @cached_property
    def multi_interface(self) -> set[str]:
        """Captures that see several interfaces (``tcpdump -i any``, dumpcap -i a -i b):
        a packet crossing such a host shows going in and going out."""
        return {s.capture for s in self.analysis.captures if s.sll2_ifindexes or len(s.interfaces) > 1}

    @cached_property
    def active_captures(self) -> list[str]:
        """Captures that hold at least one packet."""
        return [s.capture for s in self.analysis.captures if s.packets]

    @cached_property
    def own_addresses(self) -> dict[str, set[str]]:
        """Addresses of the host behind each capture.

        An endpoint capture (a client or pod's single interface) is its host's: where a
        path starts in it, the source is its address; where a path ends in it, the
        destination (the address with most such votes per IP version wins). Without
        paths, the one address nearly every TCP/UDP packet there carries, if it is the
        only one. A node's addresses are the sources of paths that start there going out
        (what it originated: ICMP errors, its own connections, its servers' answers).
        """
        a = self.analysis
        out: dict[str, set[str]] = {name: set() for name in self.capture_names}
        votes: dict[str, dict[str, int]] = {}
        h = a.hops
        if len(h):
            hop_id = h["hop_id"].to_numpy()
            caps = codes_of(h["capture"], self.capture_names)
            src_c = codes_of(h["src"], list(self.addresses))
            dst_c = codes_of(h["dst"], list(self.addresses))
            multi = np.array([n in self.multi_interface for n in self.capture_names] + [False], dtype=bool)
            on_all = h["on_path"].to_numpy()
            on = np.flatnonzero(on_all & np.isin(h["proto"].to_numpy(), (6, 17, 132)))
            key = h["connection"].to_numpy()[on] * 2 + self.hop.dirc[hop_id[on]]
            first = on[np.r_[True, key[1:] != key[:-1]]] if on.size else on
            last = on[np.r_[key[1:] != key[:-1], True]] if on.size else on
            pairs = np.r_[caps[first].astype(np.int64) * (1 << 32) + src_c[first],
                          caps[last].astype(np.int64) * (1 << 32) + dst_c[last]]
            pairs = pairs[~multi[pairs >> 32] & ((pairs & 0xFFFFFFFF) < len(self.addresses))]
            uniq, counts = np.unique(pairs, return_counts=True)
            for pair, n in zip(uniq.tolist(), counts.tolist(), strict=True):
                addr = int(pair & 0xFFFFFFFF)
                if self.multicast_address[addr]:
                    continue
                v = votes.setdefault(self.capture_names[pair >> 32], {})
                v[self.addr(addr)] = int(n)
            on = np.flatnonzero(on_all)
            key = h["connection"].to_numpy()[on] * 2 + self.hop.dirc[hop_id[on]]
            first = on[np.r_[True, key[1:] != key[:-1]]] if on.size else on
            start = first[(self.hop.pdir[hop_id[first]] == DIR_OUT) & multi[caps[first]]]
            for pair in np.unique(caps[start].astype(np.int64) * (1 << 32) + src_c[start]).tolist():
                if (pair & 0xFFFFFFFF) < len(self.addresses):
                    out[self.capture_names[pair >> 32]].add(self.addr(int(pair & 0xFFFFFFFF)))
        for name, v in votes.items():
            for version in (4, 6):
                mine = {k: n for k, n in v.items() if (":" in k) == (version == 6)}
                if mine:
                    out.setdefault(name, set()).add(max(sorted(mine), key=lambda k: mine[k]))
        proto, cap = self.col("proto"), self.col("capture")
        src, dst, ver = self.col("src"), self.col("dst"), self.col("ip_version")
        l4 = np.isin(proto, (6, 17, 132))
        for i, name in enumerate(self.capture_names):
            if name in self.multi_interface or name in votes or a.roles.get(name) in ("node", "router"):
                continue
            for version in (4, 6):
                rows = np.flatnonzero(l4 & (cap == i) & (ver == version))
                if rows.size < 2:
                    continue
                n = len(self.addresses)
                s, d = src[rows], dst[rows]
                both = np.bincount(s[s >= 0], minlength=n) + np.bincount(d[d >= 0], minlength=n)
                top = np.flatnonzero(both * 10 >= rows.size * 9)
                if top.size == 1 and not self.multicast_address[top[0]]:
                    out[name].add(self.addr(int(top[0])))
        return out

    @cached_property
    def endpoint_capture(self) -> dict[str, str]:
        """Address -> the endpoint capture (client or pod) whose host owns it."""
        out: dict[str, str] = {}
        for name, addrs in self.own_addresses.items():
            if name in self.multi_interface:
                continue
            for addr in addrs:
                out.setdefault(addr, name)
        return out

    @cached_property
    def coverage(self) -> Coverage:
        """Which capture covers which time without reported loss."""
        from flowtrace.detect.coverage import Coverage, capture_losses

        return Coverage(self.analysis, capture_losses(self))

    # ------------------------------------------------------------------ shared analyses

    @cached_property
    def unseen_acks(self) -> list[UnseenAck]:
        """Acknowledgements of TCP bytes a capture never saw (see detect.coverage)."""
        from flowtrace.detect.coverage import acked_unseen

        return acked_unseen(self)

    @cached_property
    def vanished(self) -> pd.DataFrame:
        """Packets last seen at one hop and never at the next (see detect.paths)."""
        from flowtrace.detect.paths import vanished_packets

        return vanished_packets(self)

    @cached_property
    def mismatched_replies(self) -> pd.DataFrame:
        """Replies that reached the client from another address than it contacted
        (see detect.replies)."""
        from flowtrace.detect.replies import mismatched_replies

        return mismatched_replies(self)

    @cached_property
    def repeated_at_point(self) -> np.ndarray:
        """Packet rows whose packet (sighting group) shows more than once at one observation
        point (capture, interface, interface index, direction): duplicates, loops, or
        retransmissions a weak signature cannot tell apart. Ascending."""
        group = self.analysis.packet_group
        rows = np.flatnonzero(group >= 0)
        if not rows.size:
            return rows
        ifindex = self.col("ifindex")[rows].astype(np.int64) + 1
        iface = self.col("interface")[rows].astype(np.int64) + 1
        key = ((group[rows].astype(np.int64) << 30) | (self.col("capture")[rows].astype(np.int64) << 24)
               | ((iface & 0x3F) << 18) | ((ifindex & 0xFFFF) << 2) | self.pdir[rows].astype(np.int64))
        s = np.sort(key)
        again = np.unique(s[1:][s[1:] == s[:-1]])
        if not again.size:
            return rows[:0]
        return rows[np.isin(key, again)]

    # ------------------------------------------------------------------ evidence

    def evidence(self, rows: np.ndarray | list[int], note: str = "", *, limit: int = 16) -> tuple[Evidence, ...]:
        """Evidence records (one per capture, frames ascending) for packet ``rows``.

        At most ``limit`` frames per capture are listed: the first ones.
        """
        r = np.unique(np.asarray(rows, dtype=np.int64))
        r = r[r >= 0]
        if not r.size:
            return ()
        cap = self.col("capture")[r]
        frame = self.col("frame")[r]
        out = []
        for c in np.unique(cap):
            f = np.sort(frame[cap == c])[:limit]
            out.append(Evidence(capture=self.capture_names[int(c)], frames=tuple(int(x) for x in f), note=note))
        return tuple(out)

    def hop_place(self, hop_id: int) -> str:
        """A hop's interface and direction inside its capture: 'if2, in', 'eth0', ''."""
        h = self.analysis.hops.iloc[int(self.hop.row[hop_id])]
        iface = str(h["interface"]) or (f"if{int(h['ifindex'])}" if int(h["ifindex"]) >= 0 else "")
        direction = str(h["packet_direction"])
        return ", ".join(x for x in (iface, direction if direction != "unknown" else "") if x)

    def hop_label(self, hop_id: int) -> str:
        """Where a hop is, in words: 'node1 if2 (in)', 'client'."""
        h = self.analysis.hops.iloc[int(self.hop.row[hop_id])]
        cap = str(h["capture"])
        iface = str(h["interface"]) or (f"if{int(h['ifindex'])}" if int(h["ifindex"]) >= 0 else "")
        direction = str(h["packet_direction"])
        parts = [cap]
        if iface:
            parts.append(iface)
        if direction != "unknown":
            parts.append(f"({direction})")
        return " ".join(parts)

    def connection_label(self, connection: int) -> str:
        """'TCP 198.51.100.10:35056 -> 203.0.113.10:80': the connection as the client sent it."""
        from flowtrace.detect.evidence import endpoint, proto_name

        c = self.connections.loc[connection]
        return (f"{proto_name(int(c['proto']))} {endpoint(c['client_src'], c['client_sport'])} -> "
                f"{endpoint(c['client_dst'], c['client_dport'])}")
