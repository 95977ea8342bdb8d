"""Packets table -> FlowSet: the flows table plus, per packet, its flow and side.

The steps, all over numpy arrays: select IP packets with a transport tuple; key them by
observation point and canonical tuple (``key``); sort by key and time; split flows on port
reuse and idle timeouts (``assign``); pick originators; aggregate per flow with reduceat;
TCP sequence accounting (``tcp``), conn_state (``state``) and history (``history``); attach
ICMP errors to the flows they quote (``icmp``); Community IDs (``community_id``); and
assemble the declared table (``table``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from flowtrace.capture.memory import heap_temporaries
from flowtrace.decode.table import PacketArrays
from flowtrace.flows import assign, history, icmp, state, tcp
from flowtrace.flows.columns import PacketColumns, i64
from flowtrace.flows.community_id import community_ids
from flowtrace.flows.key import address_ranks, canonical, flow_ports, icmp_is
from flowtrace.flows.table import FlowColumns, assemble
from flowtrace.flows.timeouts import resolve_timeouts
from flowtrace.fork import threaded_map, worth_forking
from flowtrace.schema import DIRECTIONS, PACKETS

if TYPE_CHECKING:
    import pandas as pd

_IN, _OUT, _UNKNOWN = (DIRECTIONS.index(d) for d in ("in", "out", "unknown"))


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowSet:
    """The flows of a packets table and how its packets map onto them."""

    table: FlowColumns
    """The flows table as arrays; ``flows`` is the same as a DataFrame."""
    flow_id: np.ndarray
    """Per packet row (aligned with the packets table): its flow, -1 when it belongs to none
    (not IP, not decoded far enough, no transport tuple)."""
    from_orig: np.ndarray
    """Per packet row: sent by the flow's originator. For an attached ICMP error: whether it
    travels in the originator's direction (it answers a packet of the responder)."""
    related: np.ndarray
    """Per packet row: an ICMP error attached to ``flow_id`` by the packet it quotes; it is
    not counted in the flow's packets and bytes."""
    basis: _Basis | None = field(default=None, repr=False, compare=False)
    """What ``build(previous=...)`` reuses: the per-flow work before numbering."""
    _frame: list[pd.DataFrame] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def flows(self) -> pd.DataFrame:
        """The flows table (``flowtrace.schema.FLOWS``), ``flow_id`` equal to the row
        position: ``table`` as a DataFrame, made on first use (pandas is loaded then)."""
        if not self._frame:
            self._frame.append(self.table.frame())
        return self._frame[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Basis:
    """The inputs and the main core of one build, kept for rebuilding with more cuts."""

    packets: pd.DataFrame | PacketArrays
    timeouts: dict[str, int]
    ignore_checksums: bool
    forced: np.ndarray | None
    core: _Core
    parts: int
    """How many parts the rows were grouped in (group ids depend on it, see ``_main_core``)."""
    grouping: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    """Per part, its rows with their lower-endpoint flags and group ids (cuts do not change
    them: a rebuild takes them from here)."""


def build(packets: pd.DataFrame | PacketArrays, *, timeouts: Mapping[str, float] | None = None,
          ignore_checksums: bool = False, split_before: np.ndarray | None = None,
          previous: FlowSet | None = None) -> FlowSet:
    """Build the flows of ``packets`` (a packets table, ``flowtrace.schema.PACKETS``, as a
    DataFrame or as the PacketArrays it is made from: then pandas is not loaded unless the
    packets hold ICMP errors or IP fragments, or ``flows`` is read).

    ``timeouts`` overrides conntrack's idle timeouts in seconds (keys of
    ``flowtrace.flows.CONNTRACK_TIMEOUTS``). ``ignore_checksums`` leaves the bad-checksum
    letters (c) out of the history, as ``zeek -C`` does; use it for captures taken on a
    host that offloads checksums. ``split_before`` lists packet rows that start a new flow
    whatever their own flow's packets say (the cuts ``analyze`` finds by looking at other
    observation points, see flowtrace.correlate.bridges). ``previous``, a FlowSet built
    from the same ``packets`` with the same timeouts and checksum setting, lets the groups
    of packets (observation point and tuple) whose cuts did not change keep their flows
    instead of being rebuilt; the result is the same as without it. Raises InputError for
    a bad timeout and KeyError if ``packets`` lacks a declared column. ``packets`` is not
    modified.

    A large table is built by two threads where the machine allows (flowtrace.fork), each
    taking the groups of one part of the packets.
    """
    tmo = resolve_timeouts(timeouts)
    missing = [c for c in PACKETS.names if c not in packets.columns]  # a dict's keys or the frame's columns
    if missing:
        raise KeyError(f"not a packets table, missing columns: {', '.join(missing)}")
    forced = None
    if split_before is not None and len(split_before):
        forced = np.zeros(len(packets), dtype=bool)
        forced[np.asarray(split_before, dtype=np.int64)] = True
    basis = previous.basis if previous is not None else None
    if basis is not None and (basis.packets is not packets or basis.timeouts != tmo
                              or basis.ignore_checksums != ignore_checksums):
        basis = None
    with heap_temporaries():
        return _build(packets, tmo, ignore_checksums, forced, basis)


def _build(packets: pd.DataFrame | PacketArrays, tmo: dict[str, int], ignore_checksums: bool,
           forced: np.ndarray | None = None, basis: _Basis | None = None) -> FlowSet:
    n = len(packets)
    p = PacketColumns(packets)
    if ignore_checksums:
        p.checksum = np.full(n, -1, dtype=np.int8)
    rank, packed = address_ranks(p.addresses)
    ok = p.eligible()
    err = ok & icmp_is("error", p.ip_version, p.icmp_type) & icmp.is_icmp(p.proto, p.ip_version) \
        & (p.quoted_proto >= 0) & (p.quoted_src >= 0) & (p.quoted_dst >= 0)
    main_rows = np.flatnonzero(ok & ~err)
    n_parts = basis.parts if basis is not None else 2 if worth_forking(main_rows.size) else 1
    first, grouping = _main_core(p, main_rows, tmo, rank, forced, basis, n_parts)
    err_rows = np.flatnonzero(err)
    # Checked here too: the frames attach reads would load pandas.
    att = icmp.attach(errors=p.error_frame(err_rows), flows=first.key_frame(), rank=rank) \
        if err_rows.size and first.n_flows else icmp.Attachment.none(err_rows.size)
    rest = err_rows[att.flow < 0]
    second = _Core(p, rest, *_group(p, rest, rank), tmo, forced)

    # One numbering for both, in order of first packet.
    cores = [first, second]
    starts = np.concatenate([c.per_flow["ts_ns"] for c in cores])
    cap = np.concatenate([c.per_flow["capture"] for c in cores])
    ff = np.concatenate([c.per_flow["first_frame"] for c in cores])
    order = np.lexsort((ff, cap, starts))
    new_id = np.empty(order.size, dtype=np.int64)
    new_id[order] = np.arange(order.size, dtype=np.int64)
    offset = first.n_flows

    flow_id = np.full(n, -1, dtype=np.int64)
    from_orig = np.zeros(n, dtype=bool)
    related = np.zeros(n, dtype=bool)
    for core, off in ((first, 0), (second, offset)):
        flow_id[core.rows] = new_id[core.flow + off]
        from_orig[core.rows] = core.from_orig
    matched = att.flow >= 0
    mrows = err_rows[matched]
    mflow = att.flow[matched]
    flow_id[mrows] = new_id[mflow]
    # The quoted packet came from the originator -> the error travels back to it.
    q_orig = att.quoted_from_lower[matched] == first.per_flow["orig_lower"][mflow]
    from_orig[mrows] = ~q_orig
    related[mrows] = True

    per_flow: dict[str, Any] = {k: np.concatenate([first.per_flow[k], second.per_flow[k]])[order]
                                for k in first.per_flow}
    per_flow["history"] = [h for c in cores for h in c.history]
    per_flow["history"] = [per_flow["history"][i] for i in order.tolist()]
    errs = _error_columns(p, mrows, new_id[mflow], order.size)
    per_flow.update(errs)
    per_flow["community_id"] = community_ids(
        proto=per_flow["proto"].astype(np.int64), addr_a=per_flow["orig_h"], port_a=per_flow["orig_p"],
        addr_b=per_flow["resp_h"], port_b=per_flow["resp_p"], one_way=per_flow["one_way"],
        rank=rank, packed=packed)
    flows = assemble(per_flow, captures=p.captures, interfaces=p.interfaces, addresses=p.addresses,
                     outer_addresses=p.outer_addresses)
    return FlowSet(table=flows, flow_id=flow_id, from_orig=from_orig, related=related,
                   basis=_Basis(packets=packets, timeouts=tmo, ignore_checksums=ignore_checksums,
                                forced=forced, core=first, parts=n_parts, grouping=grouping))


def _main_core(p: PacketColumns, rows: np.ndarray, tmo: dict[str, int], rank: np.ndarray,
               forced: np.ndarray | None, basis: _Basis | None,
               n_parts: int) -> tuple[_Core, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The flows of ``rows`` (all packets but ICMP errors): the groups whose cuts changed
    since ``basis`` (all of them without one) are built; the others are taken from
    ``basis``. The rows are parted in ``n_parts`` (1 or 2) by their address pair and ports
    (all packets of a group fall in one part), each part grouped and built in its own
    thread when there are many packets; group ids interleave the parts' own, so a rebuild
    must part as its basis did. Returns the core and the grouping (see _Basis.grouping)."""
    threads = worth_forking(rows.size)
    if basis is None:
        parted = _parts(p, rows) if n_parts == 2 else [rows]

        def group_and_build(k: int) -> tuple[_Core, tuple[np.ndarray, np.ndarray, np.ndarray]]:
            lower, gid = _group(p, parted[k], rank)
            grouped = (parted[k], lower, gid * n_parts + k)  # one numbering over the parts
            return _Core(p, *grouped, tmo, forced), grouped

        built = threaded_map(group_and_build, range(n_parts), parallel=threads)
        return _Core.join([c for c, _ in built]), [g for _, g in built]

    def core(k: int) -> _Core:
        return _Core(p, *picked[k], tmo, forced)

    # A group keeps its flows when the cuts forced now include those forced before and
    # fall where its flows started anyway: splitting is decided left to right, so forcing a
    # start where one was decided changes nothing after it.
    grouped = basis.grouping
    n = len(p.ts)
    before = basis.forced if basis.forced is not None else np.zeros(n, dtype=bool)
    now = forced if forced is not None else np.zeros(n, dtype=bool)
    started = np.zeros(n, dtype=bool)
    started[basis.core.first_rows()] = True
    changed = (now & ~started) | (before & ~now)
    top = max((int(g.max()) for _, _, g in grouped if g.size), default=-1)
    todo = np.zeros(max(top, int(basis.core.group.max(initial=-1))) + 1, dtype=bool)
    for r, _, gid in grouped:
        todo[gid[changed[r]]] = True
    kept = basis.core.take(~todo[basis.core.group])
    picked = []
    for r, lower, gid in grouped:
        pick = todo[gid]
        picked.append((r[pick], lower[pick], gid[pick]))
    return _Core.join([kept, *threaded_map(core, range(n_parts), parallel=threads)]), grouped


def _parts(p: PacketColumns, rows: np.ndarray) -> list[np.ndarray]:
    """``rows`` in two parts such that the packets of one group (observation point and
    canonical tuple) are in the same part: by a hash of the unordered address pair and the
    sum of the ports (ICMP types and codes differ between a request and its reply: left out)."""
    ports = p.proto[rows]
    ports = (ports == 6) | (ports == 17) | (ports == 132)
    mix = (p.src[rows].astype(np.int64) + p.dst[rows]) * np.int64(0x9E3779B1)
    mix += np.where(ports, p.sport[rows].astype(np.int64) + p.dport[rows], 0)
    odd = ((mix ^ (mix >> 7)) & 1).astype(bool)
    return [rows[~odd], rows[odd]]


def _error_columns(p: PacketColumns, rows: np.ndarray, flows: np.ndarray, n_flows: int) -> dict[str, object]:
    count = np.bincount(flows, minlength=n_flows).astype(np.int32)
    types = np.full(n_flows, "", dtype=object)
    frames = np.full(n_flows, "", dtype=object)
    if rows.size:
        o = np.lexsort((p.frame[rows], p.ts[rows], flows))
        by_flow: dict[int, tuple[list[str], list[str]]] = {}
        for r, f in zip(rows[o].tolist(), flows[o].tolist(), strict=True):
            t, fr = by_flow.setdefault(f, ([], []))
            t.append(f"{p.icmp_type[r]}/{p.icmp_code[r]}")
            fr.append(str(p.frame[r]))
        for f, (t, fr) in by_flow.items():
            types[f] = ",".join(t)
            frames[f] = ",".join(fr)
    return {"icmp_error_count": count, "icmp_error_types": types, "icmp_error_frames": frames}


def _group(p: PacketColumns, rows: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether its sender is the lower endpoint, and the id of its group (observation
    point and canonical tuple; see ``key``)."""
    proto, ver = i64(p.proto, rows), p.ip_version[rows]
    src, dst = p.src[rows], p.dst[rows]
    pa, pb, one_way = flow_ports(proto, ver, p.sport[rows], p.dport[rows], p.icmp_type[rows], p.icmp_code[rows])
    lower = canonical(rank[src], pa, rank[dst], pb, one_way)
    del one_way
    n_addr = np.int64(max(len(p.addresses), 1))
    pair = np.where(lower, src, dst) * n_addr + np.where(lower, dst, src)
    del src, dst
    # ports and protocol in 43 bits; the address pair above them when it fits in 20 bits
    ports = (np.where(lower, pa, pb) + np.int64(1)) * np.int64(1 << 17) + (np.where(lower, pb, pa) + 1)
    ports = ports * np.int64(1 << 9) + (proto + 1)
    del pa, pb
    is_icmp = icmp.is_icmp(proto, ver)
    iid = np.where(is_icmp & icmp_is("id", ver, p.icmp_type[rows]), p.icmp_id[rows].astype(np.int32), -1)
    del proto, is_icmp
    point = (p.capture[rows] * np.int64(1 << 20) + p.interface[rows]) * 16 + p.encap[rows]
    tunnel = (p.ifindex[rows] + np.int64(1)) * np.int64(1 << 25) + (p.vni[rows] + np.int64(1))
    if n_addr * n_addr < (1 << 20):
        key = [pair * np.int64(1 << 43) + ports, iid, point, tunnel]
    else:
        key = [pair, ports, iid, point, tunnel]
    del pair, ports, iid, point, tunnel
    if not rows.size:
        return lower, np.zeros(0, dtype=np.int64)
    # The tuple at one interface first, then the direction that sets points apart there.
    at_interface = assign.factorize_rows(key)
    ld = assign.point_direction(at_interface, p.direction[rows], lower)
    gid = assign.factorize_rows([at_interface * 3 + ld])
    return lower, gid


class _Core:
    """Flows of the packet rows ``rows`` (with, per row, whether its sender is the lower
    endpoint and its group, from ``_group``): splitting and per-flow aggregates. Flows are
    numbered 0..n_flows-1 in the order of their groups, then time."""

    __slots__ = ("flow", "from_orig", "group", "history", "n_flows", "per_flow", "rows")

    def __init__(self, p: PacketColumns, rows: np.ndarray, lower: np.ndarray, gid: np.ndarray,
                 tmo: dict[str, int], forced: np.ndarray | None = None) -> None:
        o = assign.sort_order(gid, p.ts[rows])
        g = gid[o]
        del gid
        self.rows = r = rows[o]
        lower_s = lower[o]
        del lower, o
        m = r.size
        gstart = np.ones(m, dtype=bool)
        gstart[1:] = g[1:] != g[:-1]
        if forced is not None:
            gstart |= forced[r]
        proto_s = p.proto[r]
        icmp_s = icmp.is_icmp(proto_s, p.ip_version[r])
        kind = np.where(proto_s == 6, assign.KIND_TCP, np.where(proto_s == 17, assign.KIND_UDP, np.where(
            icmp_s, assign.KIND_ICMP, assign.KIND_OTHER))).astype(np.int8)
        flags = np.where(proto_s == 6, p.flags[r], 0).astype(np.uint16)
        ts_s = p.ts[r]
        seq_s, ack_s = p.seq[r], p.ack[r]
        fstart = assign.split_flows(group_start=gstart, kind=kind, ts=ts_s, flags=flags, seq=seq_s,
                                    ack=ack_s, lower=lower_s, timeouts=tmo)
        del gstart
        flow = np.cumsum(fstart) - 1
        starts = np.flatnonzero(fstart)
        F = starts.size
        self.n_flows = F
        self.group = g[starts]
        del g
        self.flow = flow
        ends = np.append(starts[1:], m)
        req = icmp_s & icmp_is("request", p.ip_version[r], p.icmp_type[r])
        orig_lower = assign.originators(flow_start=fstart, kind=kind, flags=flags, lower=lower_s, icmp_request=req)
        del req, icmp_s
        fo = lower_s == orig_lower[flow]
        self.from_orig = fo
        pf: dict[str, np.ndarray] = {}
        self.per_flow = pf
        pf["orig_lower"] = orig_lower
        fs = starts
        rf = r[fs]
        pf["capture"] = p.capture[rf]
        pf["interface"] = p.interface[rf]
        pf["ifindex"] = i64(p.ifindex, rf)
        low_f = lower_s[fs]
        ld_f = assign.lower_direction(p.direction[rf], low_f).astype(np.int64)
        pf["ld"] = ld_f
        flip_dir = np.array([_OUT, _IN, _UNKNOWN], dtype=np.int64)
        pf["orig_direction"] = np.where(orig_lower, ld_f, flip_dir[ld_f])
        pf["encap"] = p.encap[rf]
        first_from_orig = fo[fs]
        pf["outer_orig_h"] = np.where(first_from_orig, p.outer_src[rf], p.outer_dst[rf])
        pf["outer_resp_h"] = np.where(first_from_orig, p.outer_dst[rf], p.outer_src[rf])
        pf["vni"] = i64(p.vni, rf)
        ver_f, proto_f = i64(p.ip_version, rf), i64(p.proto, rf)
        pf["ip_version"] = ver_f
        pf["proto"] = proto_f
        pa, pb, one_way = flow_ports(proto_f, ver_f, p.sport[rf], p.dport[rf], p.icmp_type[rf], p.icmp_code[rf])
        src_f, dst_f = p.src[rf], p.dst[rf]
        la, ha = np.where(low_f, src_f, dst_f), np.where(low_f, dst_f, src_f)
        lp, hp = np.where(low_f, pa, pb).astype(np.int64), np.where(low_f, pb, pa).astype(np.int64)
        pf["lo_a"], pf["hi_a"], pf["lo_p"], pf["hi_p"] = la, ha, lp, hp
        pf["orig_h"] = np.where(orig_lower, la, ha)
        pf["resp_h"] = np.where(orig_lower, ha, la)
        pf["orig_p"] = np.where(orig_lower, lp, hp)
        pf["resp_p"] = np.where(orig_lower, hp, lp)
        pf["one_way"] = one_way
        is_icmp_f = icmp.is_icmp(proto_f, ver_f)
        pf["icmp_id"] = np.where(is_icmp_f & icmp_is("id", ver_f, p.icmp_type[rf]), i64(p.icmp_id, rf), -1)
        pf["ts_ns"] = ts_s[fs]
        pf["first_ts"] = pf["ts_ns"]
        last_ts = ts_s[ends - 1] if F else ts_s[fs]
        pf["last_ts_ns"] = last_ts
        pf["last_ts"] = last_ts
        pf["first_frame"] = p.frame[r[fs]]
        pf["last_frame"] = p.frame[r[ends - 1]] if F else p.frame[r[fs]]

        def per_side(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if not F:
                z = np.zeros(0, dtype=np.int64)
                return z, z
            total = np.add.reduceat(values, fs, dtype=np.int64)
            orig = np.add.reduceat(np.where(fo, values, 0), fs, dtype=np.int64)
            return orig, total - orig

        orig_pkts = np.add.reduceat(fo, fs, dtype=np.int64) if F else np.zeros(0, dtype=np.int64)
        pf["orig_pkts"], pf["resp_pkts"] = orig_pkts, (ends - fs) - orig_pkts
        pf["orig_ip_bytes"], pf["resp_ip_bytes"] = per_side(p.ip_len[r])
        payload_s = p.payload[r]
        pf["orig_bytes"], pf["resp_bytes"] = per_side(payload_s)

        def first_where(mask: np.ndarray, values: np.ndarray, missing: int) -> np.ndarray:
            """Per flow, ``values`` (a packet column) of its first packet with ``mask``."""
            pos = assign.first_in_blocks(mask, fs, ends)
            out = np.full(F, missing, dtype=np.int64)
            found = pos >= 0
            out[found] = values[r[pos[found]]]
            return out

        has_ts = (p.tcp_opts[r] & 0x10) != 0
        pf["orig_first_tsval"] = first_where(fo & has_ts, p.tsval, -1)
        pf["resp_first_tsval"] = first_where(~fo & has_ts, p.tsval, -1)
        pf["orig_first_ip_id"] = first_where(fo & (p.ip_version[r] == 4), p.ip_id, -1)
        pf["orig_ttl"] = first_where(fo, p.ttl, 0)
        pf["resp_ttl"] = first_where(~fo, p.ttl, 0)
        duration = last_ts - pf["ts_ns"]
        conn_state = np.full(F, state.CODE["OTH"], dtype=np.int8)
        hist = [""] * F
        tcp_cols = _tcp_columns(p, F, flow, fstart, fo, r, kind, ts_s, flags, seq_s, ack_s, payload_s, pf)
        if tcp_cols is not None:
            tcp_flows, cs, hs_list, closing_ts = tcp_cols
            conn_state[tcp_flows] = cs
            for i, h in zip(tcp_flows.tolist(), hs_list, strict=True):
                hist[i] = h
            closed = closing_ts >= 0
            duration[tcp_flows[closed]] = closing_ts[closed] - pf["ts_ns"][tcp_flows[closed]]
        udp = np.flatnonzero(kind[fs] == assign.KIND_UDP) if F else np.zeros(0, dtype=np.int64)
        if udp.size:
            conn_state[udp] = state.udp_conn_state(pf["orig_pkts"][udp], pf["resp_pkts"][udp])
            sel = kind == assign.KIND_UDP
            local = np.full(F, -1, dtype=np.int64)
            local[udp] = np.arange(udp.size)
            pos, sub, let = history.udp_letters(flow=local[flow[sel]], from_orig=fo[sel],
                                                bad_checksum=p.checksum[r[sel]] == 0)
            texts = history.assemble(n_flows=udp.size, position_flow=local[flow[sel]], pos=pos, sub=sub,
                                     letter=let, flipped=np.zeros(udp.size, dtype=bool))
            for i, h in zip(udp.tolist(), texts, strict=True):
                hist[i] = h
        pf["duration_ns"] = duration
        pf["conn_state"] = conn_state
        self.history = hist

    def first_rows(self) -> np.ndarray:
        """The packet row that starts each flow."""
        starts = np.ones(self.flow.size, dtype=bool)
        starts[1:] = self.flow[1:] != self.flow[:-1]
        return self.rows[starts]

    def take(self, keep: np.ndarray) -> _Core:
        """The flows where ``keep`` (a mask over flows) holds, renumbered in their order."""
        out = _Core.__new__(_Core)
        number = np.cumsum(keep) - 1
        row_keep = keep[self.flow]
        out.rows = self.rows[row_keep]
        out.flow = number[self.flow[row_keep]]
        out.from_orig = self.from_orig[row_keep]
        out.per_flow = {k: v[keep] for k, v in self.per_flow.items()}
        out.history = [h for h, k in zip(self.history, keep.tolist(), strict=True) if k]
        out.group = self.group[keep]
        out.n_flows = int(keep.sum())
        return out

    @staticmethod
    def join(parts: list[_Core]) -> _Core:
        """One core of the flows of ``parts`` (disjoint rows), numbered part after part."""
        parts = [c for c in parts if c.n_flows] or parts[:1]
        if len(parts) == 1:
            return parts[0]
        out = _Core.__new__(_Core)
        offsets = np.cumsum([0] + [c.n_flows for c in parts])
        out.rows = np.concatenate([c.rows for c in parts])
        out.flow = np.concatenate([c.flow + off for c, off in zip(parts, offsets.tolist(), strict=False)])
        out.from_orig = np.concatenate([c.from_orig for c in parts])
        out.per_flow = {k: np.concatenate([c.per_flow[k] for c in parts]) for k in parts[0].per_flow}
        out.history = [h for c in parts for h in c.history]
        out.group = np.concatenate([c.group for c in parts])
        out.n_flows = int(offsets[-1])
        return out

    def key_frame(self) -> pd.DataFrame:
        """Per flow, the observation point and tuple keys ``icmp.attach`` matches on."""
        import pandas as pd  # only for captures with ICMP errors

        pf = self.per_flow
        return pd.DataFrame({
            "capture": pf["capture"], "interface": pf["interface"], "ifindex": pf["ifindex"],
            "ld": pf["ld"], "encap": pf["encap"], "vni": pf["vni"], "proto": pf["proto"],
            "lo_a": pf["lo_a"], "hi_a": pf["hi_a"], "lo_p": pf["lo_p"], "hi_p": pf["hi_p"],
            "first_ts": pf["first_ts"], "last_ts": pf["last_ts"],
        })


def _tcp_columns(p: PacketColumns, F: int, flow: np.ndarray, fstart: np.ndarray, fo: np.ndarray, r: np.ndarray,
                 kind: np.ndarray, ts_s: np.ndarray, flags_s: np.ndarray, seq_s: np.ndarray, ack_s: np.ndarray,
                 payload_s: np.ndarray, pf: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray] | None:
    """TCP columns into ``pf``; returns (TCP flow indices, their conn_state, history, close ts)."""
    starts = np.flatnonzero(fstart)
    is_tcp_flow = kind[starts] == assign.KIND_TCP if F else np.zeros(0, dtype=bool)
    defaults = {
        "orig_isn": -1, "resp_isn": -1, "handshake_rtt_ns": -1, "ack_rtt_ns": -1,
        "syn_retransmissions": 0, "synack_retransmissions": 0, "orig_retransmissions": 0,
        "resp_retransmissions": 0, "missed_bytes": 0, "fin_sender": 0, "rst_sender": 0,
    }
    for k, v in defaults.items():
        pf[k] = np.full(F, v, dtype=np.int64)
    pf["midstream"] = np.zeros(F, dtype=bool)
    tcp_flows = np.flatnonzero(is_tcp_flow)
    if not tcp_flows.size:
        return None
    T = tcp_flows.size
    local = np.full(F, -1, dtype=np.int64)
    local[tcp_flows] = np.arange(T)
    sel_mask = (kind == assign.KIND_TCP) & ~p.frag_tail[r]
    if sel_mask.all():
        def take(a: np.ndarray) -> np.ndarray:
            return a
    else:
        sel = np.flatnonzero(sel_mask)

        def take(a: np.ndarray) -> np.ndarray:
            return a[sel]
    lf = local[take(flow)]
    rs = take(r)
    lstart = np.ones(lf.size, dtype=bool)
    if lf.size:
        lstart[1:] = lf[1:] != lf[:-1]
    flags = take(flags_s)
    fo_t = take(fo)
    ts_t = take(ts_s)
    seq_t, payload_t = take(seq_s), take(payload_s)
    res = tcp.analyze(n_flows=T, flow=lf, flow_start=lstart, from_orig=fo_t, ts=ts_t, flags=flags,
                      seq=seq_t, ack=take(ack_s), payload=payload_t)
    ep = res.endpoint
    o_isn, r_isn = ep.isn[0::2], ep.isn[1::2]
    pf["orig_isn"][tcp_flows] = o_isn
    pf["resp_isn"][tcp_flows] = r_isn
    pf["handshake_rtt_ns"][tcp_flows] = res.handshake_rtt_ns
    pf["ack_rtt_ns"][tcp_flows] = res.ack_rtt_ns
    pf["syn_retransmissions"][tcp_flows] = res.syn_retransmissions
    pf["synack_retransmissions"][tcp_flows] = res.synack_retransmissions
    pf["orig_retransmissions"][tcp_flows] = ep.retransmissions[0::2]
    pf["resp_retransmissions"][tcp_flows] = ep.retransmissions[1::2]
    pf["missed_bytes"][tcp_flows] = ep.missed_bytes[0::2] + ep.missed_bytes[1::2]
    pf["fin_sender"][tcp_flows] = (ep.fins[0::2] > 0) * 1 + (ep.fins[1::2] > 0) * 2
    pf["rst_sender"][tcp_flows] = (ep.rsts[0::2] > 0) * 1 + (ep.rsts[1::2] > 0) * 2
    orig_syn = (flags & 0x12) == 0x02
    has_orig_syn = np.bincount(lf[orig_syn & fo_t], minlength=T) > 0
    pf["midstream"][tcp_flows] = ~has_orig_syn

    # conn_state: the endpoint automaton over each flow's state events.
    code = state.event_codes(from_orig=fo_t, flags=flags, has_data=payload_t > 0)
    ev = state.state_events(flow=lf, flow_start=lstart, code=code)
    outcome = state.run(n_flows=T, event_flow=lf[ev], event_code=code[ev])
    os_, ops, rs_, rps = state.endpoint_states(outcome.state)
    closing_ts = np.full(T, -1, dtype=np.int64)
    closed = outcome.closed_at >= 0
    closing_ts[closed] = ts_t[ev][outcome.closed_at[closed]]

    # Payload bytes as Zeek's TCP_Endpoint::Size().
    sizes = []
    for side, (st, prev, peer) in enumerate(((os_, ops, rs_), (rs_, rps, os_))):
        last, ackr, fins = ep.last_rel[side::2], ep.ack_rel[side::2], ep.fins[side::2]
        size = np.maximum(np.maximum(last, ackr), 0)
        size = np.where(size != 0, size - 1, 0)
        size = np.where((fins > 0) & (size != 0), size - 1, size)
        aborted = (prev == state.SYN_SENT) & (st == state.RESET) & (peer == state.INACTIVE) & ~np.isin(ackr, (0, 1))
        sizes.append(np.where(aborted, 0, size))
    pf["orig_bytes"][tcp_flows] = sizes[0]
    pf["resp_bytes"][tcp_flows] = sizes[1]

    # History.
    pos, sub, let = history.tcp_letters(
        flow=lf, from_orig=fo_t, flags=flags, seq=seq_t, payload=payload_t, window=p.window[rs],
        bad_checksum=p.checksum[rs] == 0, rxmit=res.rxmit, gap_pos=res.gap_pos, gap_orig=res.gap_orig)
    first_pkt_orig = fo[starts][tcp_flows]
    texts = history.assemble(n_flows=T, position_flow=lf, pos=pos, sub=sub, letter=let, flipped=~first_pkt_orig)
    cs = state.tcp_conn_state(o=os_, r=rs_, orig_size=sizes[0], resp_size=sizes[1], history=texts)
    return tcp_flows, cs, texts, closing_ts
