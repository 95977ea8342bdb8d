"""The conntrack table each forwarding host held, rebuilt from what its capture shows.

For every connection that entered and left a host's capture, the host's netfilter
conntrack entry has the original tuple as the packet entered (before NAT) and the reply
tuple as a reply must arrive to be translated back (the tuple it left with, reversed).
Its life follows the packets the host saw, one per distinct packet however many
interfaces showed it: created by the first packet, TCP states as in
nf_conntrack_proto_tcp.c, [UNREPLIED] until a reply passed, [ASSURED] when the kernel
sets it, killed by a lone RST before any reply, re-created by a SYN after a close, and
expired after its state's timeout (capped at 300 s while data is unacknowledged or a
segment is retransmitted, as tcp_packet does). Each creation is one ``conntrack -E`` NEW
event, each change an UPDATE, each end within the capture a DESTROY.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from flowtrace.context.conntrack import ConntrackEntry, Tuple, make_entry, make_tuple
from flowtrace.correlate.path import REQUEST
from flowtrace.correlate.underlay import TunnelPackets, underlay_events
from flowtrace.flows.timeouts import resolve_timeouts

S_NONE, S_SS, S_SR, S_ES, S_FW, S_CW, S_LA, S_TW, S_CL, S_S2 = range(10)
S_IV, S_IG = 10, 11
STATE_NAMES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
               "TIME_WAIT", "CLOSE", "SYN_SENT2")
I_SYN, I_SYNACK, I_FIN, I_ACK, I_RST, I_NONE = range(6)

_sNO, _sSS, _sSR, _sES, _sFW, _sCW, _sLA, _sTW, _sCL, _sS2, _sIV, _sIG = range(12)
# tcp_conntracks[direction][index][state] as in net/netfilter/nf_conntrack_proto_tcp.c.
TCP_TRANSITIONS = np.array([
    [  # ORIGINAL
        [_sSS, _sSS, _sIG, _sIG, _sIG, _sIG, _sIG, _sSS, _sSS, _sS2],  # syn
        [_sIV, _sIV, _sSR, _sIV, _sIV, _sIV, _sIV, _sIV, _sIV, _sSR],  # synack
        [_sIV, _sIV, _sFW, _sFW, _sLA, _sLA, _sLA, _sTW, _sCL, _sIV],  # fin
        [_sES, _sIV, _sES, _sES, _sCW, _sCW, _sTW, _sTW, _sCL, _sIV],  # ack
        [_sIV, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL],  # rst
        [_sIV] * 10,                                                     # none
    ],
    [  # REPLY
        [_sIV, _sS2, _sIV, _sIV, _sIV, _sIV, _sIV, _sSS, _sIV, _sS2],  # syn
        [_sIV, _sSR, _sIG, _sIG, _sIG, _sIG, _sIG, _sIG, _sIG, _sSR],  # synack
        [_sIV, _sIV, _sFW, _sFW, _sLA, _sLA, _sLA, _sTW, _sCL, _sIV],  # fin
        [_sIV, _sIG, _sSR, _sES, _sCW, _sCW, _sTW, _sTW, _sCL, _sIG],  # ack
        [_sIV, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL],  # rst
        [_sIV] * 10,                                                     # none
    ],
], dtype=np.int8)

EVENT_KINDS = ("NEW", "UPDATE", "DESTROY")
"""``conntrack -E``'s event kinds, in the order of an entry's life."""

UDP_STREAM_AFTER_S = 2
"""Seconds after creation from which a replied UDP entry is a stream (longer timeout)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """conntrack's idle timeouts in nanoseconds (flowtrace.flows.CONNTRACK_TIMEOUTS, with
    overrides), in the shape the state walk reads them."""

    tcp: list[int]
    """Per TCP state (STATE_NAMES order; SYN_SENT2 shares SYN_SENT's)."""
    udp: int
    udp_stream: int
    icmp: int
    caps: tuple[int, int, int] = (0, 300_000_000_000, 300_000_000_000)
    """A TCP entry's timeout cap by ``cap`` code of the packet that set its timer (see
    ``_timer_caps``): none, ``tcp_max_retrans``, ``tcp_unacknowledged``."""

    @classmethod
    def of(cls, timeouts: Mapping[str, float] | None = None) -> Limits:
        """The defaults overridden by ``timeouts`` (seconds, keys of CONNTRACK_TIMEOUTS);
        raises InputError for an unknown key or a bad value."""
        ns = resolve_timeouts(timeouts)
        tcp = [0] + [ns[f"tcp_{state.lower()}"] for state in STATE_NAMES[1:9]] + [ns["tcp_syn_sent"]]
        return cls(tcp=tcp, udp=ns["udp"], udp_stream=ns["udp_stream"], icmp=ns["icmp"],
                   caps=(0, ns["tcp_max_retrans"], ns["tcp_unacknowledged"]))

    def ns(self, proto: int, state: int, stream: bool) -> int:
        """How long an entry of ``proto`` in TCP ``state`` (a UDP one: a ``stream`` or not)
        lives idle, in nanoseconds."""
        if proto == 6:
            return self.tcp[state]
        if proto == 17:
            return self.udp_stream if stream else self.udp
        return self.icmp

    def by_state(self, proto: int) -> list[list[int]]:
        """``ns`` of ``proto`` as a table, ``[state][stream]``, for walks that read it per packet."""
        return [[self.ns(proto, state, False), self.ns(proto, state, True)] for state in range(len(STATE_NAMES))]

    @property
    def shortest(self) -> int:
        """The shortest timeout: an idle gap below it expires no entry."""
        return min(*self.tcp[1:], self.udp, self.udp_stream, self.icmp)


@dataclass(slots=True, kw_only=True)
class RebuiltEntry:
    """A reconstructed conntrack entry with where it lived and when."""

    entry: ConntrackEntry
    """The entry as ``conntrack -L`` would print it at the end of the capture."""
    node: str
    """Capture of the host holding it."""
    connection: int
    """flowtrace connection id; -1 for an entry of a tunnel's own UDP flow (VXLAN, Geneve
    between nodes), which carries connections rather than being one."""
    created_ns: int
    """Corrected time of the packet that created it (the NEW event)."""
    last_ns: int
    """Corrected time of the last packet that refreshed it."""
    recreated: bool
    """An earlier entry with the same tuples was closed or expired before this one."""
    created: ConntrackEntry
    """The entry as the NEW event showed it: first state, [UNREPLIED], full timeout."""
    ended: str | None
    """Why it is gone by the end of the capture: reset (RST before any reply), reopened
    (a new SYN after close), expired, replaced (a later entry took its tuple); None when it
    is still in the table."""
    limit_ns: int = 0
    """Idle timeout of its last state (a UDP stream's when it became one), in nanoseconds."""
    updates: Sequence[tuple[int, int, bool, bool, int]] = ()
    """Its UPDATE events: (corrected time, state index in STATE_NAMES, seen a reply,
    assured, seconds of timeout) per packet that changed its TCP state, or set
    [SEEN_REPLY] or [ASSURED]."""
    destroyed: tuple[int, int, bool, bool, int] | None = None
    """Its DESTROY event, the same fields, when it ended before the end of the capture: at
    the packet that deleted it, when a later entry took its tuple, or (expired) at the end
    of its timeout, where the kernel's collector reaps it up to seconds later."""

    def events(self, kinds: Collection[str] = EVENT_KINDS) -> list[ConntrackEntry]:
        """Its ``conntrack -E`` events of ``kinds`` in order: NEW, UPDATEs, DESTROY, with
        ``event`` and ``ts_ns`` (corrected time) set, printed as conntrack prints events
        (no mark=, use=)."""
        if self.destroyed is None and not self.updates and "NEW" not in kinds:
            return []
        c = self.created
        out = []
        if "NEW" in kinds:
            out.append(make_entry(family=c.family, proto=c.proto, orig=c.orig, reply=c.reply, timeout_s=c.timeout_s,
                                  state=c.state, flags=c.flags, node=c.node, mark=None, use=None, event="NEW",
                                  ts_ns=self.created_ns, protonum=c.protonum))
        tcp = c.proto == "tcp"
        later = [("UPDATE", u) for u in self.updates] if "UPDATE" in kinds else []
        if self.destroyed is not None and "DESTROY" in kinds:
            later.append(("DESTROY", self.destroyed))
        for kind, (ts, state, seen_reply, assured, timeout_s) in later:
            out.append(make_entry(family=c.family, proto=c.proto, orig=c.orig, reply=c.reply, timeout_s=timeout_s,
                                  state=STATE_NAMES[state] if tcp else None,
                                  flags=_FLAG_SETS[(bool(seen_reply), bool(assured))], node=c.node, mark=None,
                                  use=None, event=kind, ts_ns=ts, protonum=c.protonum))
        return out


def tcp_index(flags: np.ndarray) -> np.ndarray:
    """conntrack's get_conntrack_index: RST, SYN-ACK, SYN, FIN, ACK, none."""
    return np.where(flags & 0x04, I_RST, np.where(flags & 0x02, np.where(flags & 0x10, I_SYNACK, I_SYN),
                    np.where(flags & 0x01, I_FIN, np.where(flags & 0x10, I_ACK, I_NONE)))).astype(np.int8)


def host_events(packets: pd.DataFrame, corr_sightings: pd.DataFrame, host_connections: pd.DataFrame, *,
                shortest_ns: int = 5_000_000_000) -> pd.DataFrame:
    """Packets each host's conntrack saw: one row per (host capture, connection, packet), in
    time order, from the connections' sightings at that capture. Only those that can change
    an entry are kept (see ``_relevant``; ``shortest_ns`` is the shortest idle timeout)."""
    st = corr_sightings
    rows = st["row"].to_numpy()
    capture = packets["capture"].cat.codes.to_numpy()[rows].astype(np.int64)
    conn = st["connection"].to_numpy().astype(np.int64)
    if not rows.size or host_connections.empty:
        return _no_events()
    # The host connection of each sighting, by its (capture, connection) packed in one integer.
    width = np.int64(max(int(conn.max()), int(host_connections["connection"].max())) + 1)
    host_key = host_connections["capture"].to_numpy().astype(np.int64) * width \
        + host_connections["connection"].to_numpy()
    host = _positions(host_key, capture * width + conn, int(capture.max() + 1) * int(width))
    # ICMP errors about a connection travel with it but are RELATED, not part of the entry.
    hit = np.flatnonzero((host >= 0)
                         & (packets["proto"].to_numpy()[rows] == host_connections["proto"].to_numpy()[host]))
    if not hit.size:
        return _no_events()
    key = host_connections["key"].to_numpy()[host[hit]]
    group = st["group"].to_numpy()[hit]
    ts = st["ts"].to_numpy()[hit]
    order = np.lexsort((rows[hit], ts, key))
    key, group, ts, hit = key[order], group[order], ts[order], hit[order]
    # One event per key and packet (sighting group): its earliest sighting there.
    packed = key.astype(np.int64) * np.int64(int(group.max()) + 1) + group
    first = np.sort(np.unique(packed, return_index=True)[1])
    ev = pd.DataFrame({"key": key[first], "ts": ts[first], "row": rows[hit[first]],
                       "direction": st["direction"].to_numpy()[hit[first]], "group": group[first]})
    return _relevant(ev, packets, shortest_ns)


def _positions(keys: np.ndarray, want: np.ndarray, bound: int) -> np.ndarray:
    """Index in ``keys`` (distinct non-negative integers) of each of ``want`` (non-negative,
    below ``bound``), -1 where it is not one of them: a lookup table when ``bound`` is small
    next to the lookups (0.002 s for a million, against 0.04 s by binary search), else a
    binary search."""
    if bound <= max(4 * want.size, 1 << 20):
        table = np.full(bound, -1, dtype=np.int64)
        table[keys[keys < bound]] = np.flatnonzero(keys < bound)
        return table[want]
    order = np.argsort(keys, kind="stable")
    found = order[np.minimum(np.searchsorted(keys[order], want), keys.size - 1)]
    return np.where(keys[found] == want, found, -1)


def _no_events() -> pd.DataFrame:
    """host_events' table without a row."""
    none = np.zeros(0, dtype=np.int64)
    return pd.DataFrame({"key": none, "ts": none, "row": none, "direction": none.astype(np.int8), "group": none,
                         "idle": none, "cap": none.astype(np.int8), "cap_prev": none.astype(np.int8)})


def _relevant(ev: pd.DataFrame, packets: pd.DataFrame, shortest_ns: int, *, outer: bool = False) -> pd.DataFrame:
    """The events that can change an entry: SYN, FIN and RST, the first packet of each side
    after each of them (the ACK that moves a state on), the first reply, a packet 2 s after
    creation (UDP streams), packets after idle gaps (timeouts) and each key's last packet
    (the refresh time). Everything else only refreshes the timer in the same state.
    Adds ``idle``: the time since the key's previous packet, seen or left out, and the
    timer caps ``cap`` and ``cap_prev``. ``outer``: the rows stand for their tunnel's
    outer UDP packet (flowtrace.correlate.underlay), whose TCP flags they do not have."""
    if ev.empty:
        return ev.assign(idle=np.zeros(0, dtype=np.int64), cap=np.zeros(0, dtype=np.int8),
                         cap_prev=np.zeros(0, dtype=np.int8))
    key = ev["key"].to_numpy()
    ts = ev["ts"].to_numpy()
    flags = np.zeros(key.size, dtype=np.uint16) if outer else packets["tcp_flags"].to_numpy()[ev["row"].to_numpy()]
    reply = ev["direction"].to_numpy() != REQUEST
    start = np.r_[True, key[1:] != key[:-1]]
    end = np.r_[key[1:] != key[:-1], True]
    control = (flags & 0x07) != 0
    epoch = np.cumsum(control | start)
    first_side = ~pd.Series(epoch * 2 + reply).duplicated().to_numpy()
    first_reply = reply & ~pd.Series(np.where(reply, key, -1)).duplicated().to_numpy()
    block = np.cumsum(start) - 1
    created = ts[np.flatnonzero(start)][block]
    after_2s = (ts - created) > UDP_STREAM_AFTER_S * 1_000_000_000
    first_after = after_2s & ~pd.Series(np.where(after_2s, key, -1)).duplicated().to_numpy()
    idle = np.r_[0, np.diff(ts)]
    idle[start] = 0
    gap = (idle > min(5_000_000_000, shortest_ns)) & ~start
    keep = start | end | control | first_side | first_reply | first_after | gap
    cap = np.zeros(key.size, dtype=np.int8) if outer else _timer_caps(packets, ev["row"].to_numpy(), reply, start)
    cap_prev = np.r_[0, cap[:-1]]
    cap_prev[start] = 0
    # The packets left out refreshed the timer: the walk judges expiry by the idle time
    # before each event it sees, not by the time since the previous event it sees, with
    # the cap the packet before it (seen by the walk or not) set.
    return ev[keep].assign(idle=idle[keep], cap=cap[keep], cap_prev=cap_prev[keep]).reset_index(drop=True)


CAP_NONE, CAP_RETRANS, CAP_UNACK = 0, 1, 2
"""What caps the timeout a TCP packet sets (``Limits.caps``): nothing, the retransmission
timeout (a segment sent the fourth time in a row, or a zero window), the unacknowledged-
data timeout."""


def _timer_caps(packets: pd.DataFrame, rows: np.ndarray, reply: np.ndarray, start: np.ndarray) -> np.ndarray:
    """int8 per event (one key's packets in time order, keys one after the other, ``start``
    marking each key's first): the cap on the timeout the packet sets, as
    nf_conntrack_proto_tcp.c's tcp_packet chooses it after tcp_in_window.

    - CAP_RETRANS when the packet repeats the previous one of the entry (direction,
      sequence, acknowledgement, end and window) for the third time or more
      (``nf_conntrack_tcp_max_retrans``);
    - else CAP_UNACK when a side has data the other has not acknowledged: its highest
      sequence end advanced beyond its first packet's, and no packet from the other side
      since then acknowledged exactly that end (or came without ACK);
    - else CAP_RETRANS for a zero window (not a RST);
    - CAP_NONE otherwise, and for other protocols.
    """
    n = rows.size
    if not n:
        return np.zeros(0, dtype=np.int8)
    tcp = packets["proto"].to_numpy()[rows] == 6
    flags = packets["tcp_flags"].to_numpy()[rows].astype(np.int64)
    seq = packets["seq"].to_numpy()[rows].astype(np.int64)
    ack = packets["ack"].to_numpy()[rows].astype(np.int64)
    win = packets["window"].to_numpy()[rows].astype(np.int64)
    end = (seq + packets["payload_len"].to_numpy()[rows].astype(np.int64) + ((flags >> 1) & 1) + (flags & 1)) % (1 << 32)
    side = reply.astype(np.int64)
    block = np.cumsum(start) - 1
    index = np.arange(n)
    block_start = np.flatnonzero(start)[block]
    # Retransmissions: runs of packets equal to the one before them.
    same = np.zeros(n, dtype=bool)
    same[1:] = ((block[1:] == block[:-1]) & (side[1:] == side[:-1]) & (seq[1:] == seq[:-1]) & (ack[1:] == ack[:-1])
                & (end[1:] == end[:-1]) & (win[1:] == win[:-1]))
    count = np.cumsum(same)
    run = count - np.maximum.accumulate(np.where(same, 0, count))
    unack = np.zeros(n, dtype=bool)
    span = np.int64(1) << 34  # above any sequence offset: keys' running maxima stay apart
    for x in (0, 1):
        mine = side == x
        # Sequence numbers of side x relative to its first packet in the key.
        first = np.where(mine, index, n)
        first_of_block = np.minimum.reduceat(first, np.flatnonzero(start))[block]
        has = first_of_block < n
        base = seq[np.minimum(first_of_block, n - 1)]
        rel_end = np.where(mine & has, (end - base) % (1 << 32), -1)
        top = np.maximum.accumulate(rel_end + block * span) - block * span
        top = np.where(top >= 0, top, -1)
        before = np.r_[-1, top[:-1]]
        before[start] = -1
        advanced = mine & (before >= 0) & (top > before)
        rel_ack = (ack - base) % (1 << 32)
        cleared = ~mine & has & (top >= 0) & (((flags & 0x10) == 0) | (rel_ack == top))
        last_set = np.maximum.accumulate(np.where(advanced, index, -1))
        last_clear = np.maximum.accumulate(np.where(cleared, index, -1))
        unack |= (last_set >= block_start) & (last_set > last_clear)
    rst = (flags & 0x04) != 0
    cap = np.where(run >= 3, CAP_RETRANS, np.where(unack, CAP_UNACK, np.where((win == 0) & ~rst, CAP_RETRANS,
                                                                                   CAP_NONE)))
    return np.where(tcp, cap, CAP_NONE).astype(np.int8)


def _lifecycle(ev: pd.DataFrame, packets: pd.DataFrame, limits: Limits, *, outer: bool = False) -> pd.DataFrame:
    """Run conntrack over each key's events; one output row per created entry (``outer``:
    the rows stand for their tunnel's outer UDP packet, as in ``_relevant``).

    Besides its end state, each row has the entry's ``updates``: one (time, state, seen a
    reply, assured, seconds of timeout) per packet that changed its TCP state, or set
    [SEEN_REPLY] or [ASSURED] (what ``conntrack -E`` shows as UPDATE events), and ``killed``:
    (time, state, seen a reply, assured, seconds left) of the packet that deleted it (a RST
    before any reply, a SYN reopening a closed connection), else None.
    """
    rows = ev["row"].to_numpy()
    proto = np.full(rows.size, 17) if outer else packets["proto"].to_numpy()[rows]
    flags = packets["tcp_flags"].to_numpy()[rows]
    key_np = ev["key"].to_numpy()
    # The walk reads Python lists: indexing numpy arrays one element at a time costs more.
    reply = (ev["direction"].to_numpy() != REQUEST).tolist()
    ts = ev["ts"].to_numpy().astype(np.int64).tolist()
    idle = ev["idle"].to_numpy().astype(np.int64).tolist()
    cap = ev["cap"].to_numpy().tolist()
    cap_prev = ev["cap_prev"].to_numpy().tolist()
    caps = limits.caps
    caps_s = [c // 1_000_000_000 for c in caps]
    key = key_np.tolist()
    idx = tcp_index(flags).tolist()
    transitions = TCP_TRANSITIONS.tolist()
    columns = list(LIFE_COLUMNS)
    if not key_np.size:
        return pd.DataFrame({c: [] for c in columns})
    # Idle limits by (state, stream) for each protocol present, asked of ``limits`` once.
    starts = np.flatnonzero(np.r_[True, key_np[1:] != key_np[:-1]])
    ends = np.r_[starts[1:], key_np.size]
    key_proto = proto[starts].tolist()
    limit_of = {p: limits.by_state(p) for p in set(key_proto)}
    limit_s_of = {p: [[ns // 1_000_000_000 for ns in row] for row in rows] for p, rows in limit_of.items()}
    out: list[tuple] = []
    # Per key a short Python walk over its few state-relevant events; pure ACK and data
    # packets in ESTABLISHED only refresh the timer, so they are skipped in bulk. The
    # entry being walked lives in local variables; ``alive`` says whether there is one.
    for a, b, p in zip(starts.tolist(), ends.tolist(), key_proto, strict=True):
        is_tcp, udp, limit, limit_s = p == 6, p == 17, limit_of[p], limit_s_of[p]
        k = key[a]
        alive = recreated = seen_reply = assured = stream = False
        created = last = state = created_state = last_cap = 0
        updates: list[tuple[int, int, bool, bool, int]] = []
        for i in range(a, b):
            t = ts[i]
            timer = 0
            if alive:
                # The timer the previous packet set: its state's timeout, or a TCP cap.
                timer = _capped(limit[state][stream], caps, is_tcp, state == S_ES and not seen_reply, cap_prev[i])
                if idle[i] > timer:
                    # Its last packet was the one before this (seen by the walk or not).
                    out.append((k, created, t - idle[i], state, created_state, seen_reply, assured, stream,
                                recreated, "expired", updates, None, cap_prev[i]))
                    alive = False
            d = 1 if reply[i] else 0
            if not alive:
                if is_tcp:
                    state = transitions[0][idx[i]][S_NONE] if d == 0 else S_IV
                    if state >= S_IV:
                        continue  # conntrack creates no entry for this packet
                else:
                    state = 0
                alive, created, last, created_state, last_cap = True, t, t, state, cap[i]
                seen_reply = assured = stream = False
                recreated = bool(out) and out[-1][0] == k
                updates = []
                continue
            changed = False
            if is_tcp:
                old = state
                new = transitions[d][idx[i]][old]
                if d == 0 and idx[i] == I_SYN and old in (S_TW, S_CL):
                    # A SYN reopening a closed connection: the kernel kills the entry and the
                    # SYN creates a fresh one (another NEW event).
                    out.append((k, created, last, state, created_state, seen_reply, assured, stream, recreated,
                                "reopened", updates, (t, state, seen_reply, assured, _left_s(timer, idle[i])),
                                last_cap))
                    created, last, state, created_state, last_cap = t, t, S_SS, S_SS, cap[i]
                    seen_reply = assured = stream = False
                    recreated = True
                    updates = []
                    continue
                if new == S_IV:
                    continue
                if idx[i] == I_RST and not seen_reply:
                    # Only a RST and no reply yet: the kernel sets CLOSE and deletes the entry
                    # at once, its timer not refreshed.
                    out.append((k, created, last, state, created_state, seen_reply, assured, stream, recreated,
                                "reset", updates, (t, S_CL, seen_reply, assured, _left_s(timer, idle[i])),
                                last_cap))
                    alive = False
                    continue
                if new != S_IG:
                    if seen_reply and not assured and old in (S_SR, S_ES) and new == S_ES:
                        assured = changed = True
                    if new != old:
                        state, changed = new, True
                if d == 1 and not seen_reply:
                    seen_reply = changed = True
                last, last_cap = t, cap[i]
            else:
                if d == 1 and not seen_reply:
                    seen_reply = changed = True
                if seen_reply and t - created > UDP_STREAM_AFTER_S * 1_000_000_000:
                    stream = True
                    if udp and not assured:
                        assured = changed = True
                last = t
            if changed:
                seconds = _capped(limit_s[state][stream], caps_s, is_tcp, state == S_ES and not seen_reply, cap[i])
                updates.append((t, state, seen_reply, assured, seconds))
        if alive:
            out.append((k, created, last, state, created_state, seen_reply, assured, stream, recreated, None,
                        updates, None, last_cap))
    return pd.DataFrame(out, columns=columns)


def _capped(timeout: int, caps: Sequence[int], tcp: bool, picked_up: bool, cap: int) -> int:
    """The timeout a TCP packet sets: its state's ``timeout``, or less where the packet's
    ``cap`` (``_timer_caps``) caps it, or where the connection was picked up midstream and
    has seen no reply yet (``picked_up``: ESTABLISHED without [SEEN_REPLY], which the
    kernel keeps on the unacknowledged-data timeout). ``caps`` are by cap code, in the
    unit of ``timeout``."""
    if tcp:
        c = CAP_UNACK if picked_up else cap
        if c and caps[c] < timeout:
            return caps[c]
    return timeout


def _left_s(limit_ns: int, idle_ns: int) -> int:
    """Whole seconds an entry has left ``idle_ns`` after its timer was last set to
    ``limit_ns`` (by the previous packet, seen by the walk or not); conntrack prints the
    jiffies left divided by HZ, truncated."""
    return max((limit_ns - idle_ns) // 1_000_000_000, 0)


_UNREPLIED = frozenset({"UNREPLIED"})
_FLAG_SETS = {(False, False): _UNREPLIED, (False, True): frozenset({"UNREPLIED", "ASSURED"}),
              (True, False): frozenset(), (True, True): frozenset({"ASSURED"})}
"""An entry's flags by (seen a reply, assured)."""

ICMP_REQUESTS = (8, 13, 15, 17)
"""ICMP types that create a conntrack entry (echo, timestamp, info, address mask requests)."""
ICMPV6_REQUESTS = (128, 130)
"""ICMPv6 types that create a conntrack entry (echo request, MLD query)."""
ICMP_REPLY_TYPE = {8: 0, 13: 14, 15: 16, 17: 18, 128: 129, 130: 131}
PORT_PROTOCOLS = (6, 17, 132)
"""Protocols whose entries every packet makes, keyed by ports (TCP, UDP, SCTP)."""
REBUILT_PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmpv6"}
"""The protocols whose entries ``rebuild_tables`` rebuilds (ICMP: requests only), by number,
with conntrack's names for them."""


def rebuild_tables(packets: pd.DataFrame, hops: pd.DataFrame, sightings: pd.DataFrame, *,
                   end_ns: dict[str, int] | None = None, timeouts: Mapping[str, float] | None = None,
                   tunnels: TunnelPackets | None = None) -> list[RebuiltEntry]:
    """The conntrack entries of every host whose capture shows connections entering and
    leaving it, and (``tunnels``: the tunnelled packets with their outer UDP ports, see
    flowtrace.correlate.underlay) of the tunnels' own UDP flows at each such host that
    shows them, with connection -1.

    ``end_ns`` gives, per capture, the (corrected) time the table is read at (default: the
    capture's last packet), for the seconds-left column. ``timeouts`` overrides conntrack's
    idle timeouts in seconds (keys of ``flowtrace.flows.CONNTRACK_TIMEOUTS``, as for flows):
    they decide when an idle entry expired and the seconds it has left. Raises InputError
    for a bad timeout.
    """
    limits = Limits.of(timeouts)
    read_at = end_ns or {}
    out = _connection_entries(packets, hops, sightings, limits, read_at)
    if tunnels is not None:
        out += _underlay_entries(packets, tunnels, limits, read_at, hosts={e.node for e in out})
    return _mark_replaced(out)


def _connection_entries(packets: pd.DataFrame, hops: pd.DataFrame, sightings: pd.DataFrame, limits: Limits,
                        read_at: Mapping[str, int]) -> list[RebuiltEntry]:
    """``rebuild_tables``' entries of the connections (hops and sightings of correlate)."""
    is_req = (hops["direction"] == "request").to_numpy()
    req = hops[is_req].reset_index(drop=True)
    if req.empty:
        return []
    # Per (connection, capture): the first and last request hop in it (rows are in path order).
    cap = req["capture"].cat.codes.to_numpy().astype(np.int64)
    key = req["connection"].to_numpy() * 4096 + cap
    order = np.lexsort((req["hop"].to_numpy(), key))
    k_sorted = key[order]
    starts = np.r_[True, k_sorted[1:] != k_sorted[:-1]]
    ends = np.r_[k_sorted[1:] != k_sorted[:-1], True]
    first_i, last_i = order[starts], order[ends]
    size = np.diff(np.r_[np.flatnonzero(starts), k_sorted.size])
    multi = size >= 2
    first_i, last_i = first_i[multi], last_i[multi]
    if not first_i.size:
        return []
    first = req.iloc[first_i].reset_index(drop=True)
    last = req.iloc[last_i].reset_index(drop=True)
    span = pd.DataFrame({"connection": first["connection"].to_numpy(), "capture": first["capture"].to_numpy(),
                         "min": first["hop"].to_numpy(), "max": last["hop"].to_numpy()})
    # conntrack confirms an entry only when the packet leaves the host (POSTROUTING): a
    # request last seen arriving (dropped or hairpinned inside the host) created none.
    # Neighbour discovery, router solicitations and other ICMP that is not a request are
    # not tracked either.
    left = last["packet_direction"].to_numpy() != "in"
    proto = first["proto"].to_numpy()
    first_icmp = packets["icmp_type"].to_numpy()[first["first_row"].to_numpy()]
    trackable = np.isin(proto, PORT_PROTOCOLS) | ((proto == 1) & np.isin(first_icmp, ICMP_REQUESTS)) \
        | ((proto == 58) & np.isin(first_icmp, ICMPV6_REQUESTS))
    keep = left & trackable
    span, first, last = (x[keep].reset_index(drop=True) for x in (span, first, last))
    if span.empty:
        return []
    names = [str(c) for c in packets["capture"].cat.categories]
    code = {n: i for i, n in enumerate(names)}
    hop_capture = first["capture"].cat
    packet_code = np.array([code[str(c)] for c in hop_capture.categories], dtype=np.int64)
    span = span.assign(capture_code=packet_code[hop_capture.codes.to_numpy()], key=np.arange(len(span)),
                       proto=first["proto"].to_numpy())
    hosts = span.rename(columns={"capture": "capture_name"}).rename(columns={"capture_code": "capture"})
    ev = host_events(packets, sightings, hosts, shortest_ns=limits.shortest)
    life = _lifecycle(ev, packets, limits)
    out: list[RebuiltEntry] = []
    f_src, f_dst = first["src"].astype(object).tolist(), first["dst"].astype(object).tolist()
    f_sport, f_dport = first["sport"].tolist(), first["dport"].tolist()
    f_proto, f_ver, f_row = first["proto"].tolist(), first["ip_version"].tolist(), first["first_row"].tolist()
    l_src, l_dst = last["src"].astype(object).tolist(), last["dst"].astype(object).tolist()
    l_sport, l_dport, l_row = last["sport"].tolist(), last["dport"].tolist(), last["first_row"].tolist()
    h_name, h_conn = hosts["capture_name"].astype(str).tolist(), hosts["connection"].tolist()
    icmp_type, icmp_code = packets["icmp_type"].to_numpy(), packets["icmp_code"].to_numpy()
    icmp_id = packets["icmp_id"].to_numpy()
    # Per protocol, the idle limit in ns by [state][stream], asked of ``limits`` once.
    limit_of = {p: limits.by_state(p) for p in set(f_proto)}
    for life_row in zip(*(life[c].tolist() for c in LIFE_COLUMNS), strict=True):
        k = life_row[0]
        proto_num = f_proto[k]
        if proto_num in PORT_PROTOCOLS:
            orig = make_tuple(src=f_src[k], dst=f_dst[k], sport=f_sport[k], dport=f_dport[k])
            rep = make_tuple(src=l_dst[k], dst=l_src[k], sport=l_dport[k], dport=l_sport[k])
        else:
            row = f_row[k]
            itype = int(icmp_type[row])
            orig = make_tuple(src=f_src[k], dst=f_dst[k], icmp_type=itype, icmp_code=int(icmp_code[row]),
                              icmp_id=int(icmp_id[row]))
            rep = make_tuple(src=l_dst[k], dst=l_src[k], icmp_type=ICMP_REPLY_TYPE.get(itype, itype), icmp_code=0,
                             icmp_id=int(icmp_id[l_row[k]]))
        out.append(rebuilt_entry(life_row, family="ipv6" if f_ver[k] == 6 else "ipv4", proto_num=proto_num,
                                 orig=orig, reply=rep, node=h_name[k], connection=h_conn[k],
                                 limit=limit_of[proto_num], limits=limits, read_at=read_at))
    return out


LIFE_COLUMNS = ("key", "created", "last", "state", "created_state", "seen_reply", "assured", "stream", "recreated",
                "ended", "updates", "killed", "last_cap")
"""The columns of ``_lifecycle``'s table, in the order ``rebuilt_entry`` reads a row of it."""


def rebuilt_entry(life_row: Sequence, *, family: str, proto_num: int, orig: Tuple, reply: Tuple, node: str,
                  connection: int, limit: list[list[int]], limits: Limits, read_at: Mapping[str, int]) -> RebuiltEntry:
    """The entry ``_lifecycle`` walked (``life_row``: its values of LIFE_COLUMNS) at host
    ``node``, with its tuples, for ``connection``: the ``-L`` line at the time ``read_at``
    gives for ``node`` (default: its last refresh), its NEW line, its UPDATE and DESTROY
    events. ``limit`` is ``limits.by_state(proto_num)``."""
    (_, created_ns, last_ns, state_i, created_state, seen_reply, assured, stream, recreated, ended_how, updates,
     killed, last_cap) = life_row
    proto = REBUILT_PROTOCOLS[proto_num]
    tcp = proto_num == 6
    caps = limits.caps
    limit_ns = _capped(limit[state_i][1 if stream else 0], caps, tcp, state_i == S_ES and not seen_reply, last_cap)
    end = read_at.get(node, last_ns)
    left = max(limit_ns // 1_000_000_000 - (end - last_ns) // 1_000_000_000, 0)
    entry = make_entry(family=family, proto=proto, orig=orig, reply=reply, timeout_s=left,
                       state=STATE_NAMES[state_i] if tcp else None,
                       flags=_FLAG_SETS[(bool(seen_reply), bool(assured))], node=node)
    ended = ended_how if isinstance(ended_how, str) else None
    destroyed = killed if isinstance(killed, tuple) else None
    if ended is None and end - last_ns > limit_ns:
        ended = "expired"
    if ended == "expired":
        destroyed = (last_ns + limit_ns, state_i, bool(seen_reply), bool(assured), 0)
    created = make_entry(family=family, proto=proto, orig=orig, reply=reply,
                         timeout_s=_capped(limit[created_state][0], caps, tcp, created_state == S_ES,
                                           CAP_NONE) // 1_000_000_000,
                         state=STATE_NAMES[created_state] if tcp else None, flags=_UNREPLIED, node=node,
                         mark=None, use=None)  # as conntrack -E prints a NEW event: no mark=, no use=
    return RebuiltEntry(entry=entry, node=node, connection=connection, created_ns=created_ns, last_ns=last_ns,
                        recreated=bool(recreated), created=created, ended=ended, limit_ns=limit_ns,
                        updates=updates, destroyed=destroyed)


def _underlay_entries(packets: pd.DataFrame, tunnels: TunnelPackets, limits: Limits, read_at: Mapping[str, int],
                      hosts: Collection[str]) -> list[RebuiltEntry]:
    """The entries of the tunnels' own UDP flows (flowtrace.correlate.underlay), with
    connection -1, at each of ``hosts`` (captures) that shows them. A capture that is no
    host of the connections (a mirror port, a node's underlay interface alone) shows
    datagrams passing, not a conntrack table."""
    names = [str(c) for c in packets["capture"].cat.categories]
    codes = [i for i, name in enumerate(names) if name in hosts]
    mine = np.isin(packets["capture"].cat.codes.to_numpy()[tunnels.rows], codes)
    if not mine.any():
        return []
    tunnels = TunnelPackets(rows=tunnels.rows[mine], sport=tunnels.sport[mine], dport=tunnels.dport[mine],
                            ts=tunnels.ts[mine])
    ev, flows = underlay_events(packets, tunnels)
    ev = _relevant(ev, packets, limits.shortest, outer=True)
    life = _lifecycle(ev, packets, limits, outer=True)
    limit = limits.by_state(17)
    src, dst = flows["src"].tolist(), flows["dst"].tolist()
    sport, dport = flows["sport"].tolist(), flows["dport"].tolist()
    node, family = flows["capture"].tolist(), flows["family"].tolist()
    out = []
    for life_row in zip(*(life[c].tolist() for c in LIFE_COLUMNS), strict=True):
        k = life_row[0]
        out.append(rebuilt_entry(life_row, family=family[k], proto_num=17,
                                 orig=make_tuple(src=src[k], dst=dst[k], sport=sport[k], dport=dport[k]),
                                 reply=make_tuple(src=dst[k], dst=src[k], sport=dport[k], dport=sport[k]),
                                 node=node[k], connection=-1, limit=limit, limits=limits, read_at=read_at))
    return out


def _mark_replaced(entries: list[RebuiltEntry]) -> list[RebuiltEntry]:
    """Entries whose original or reply tuple a later entry on the same host took over
    (port reuse) are no longer in that host's table."""
    latest: dict[tuple, int] = {}
    order = sorted(range(len(entries)), key=lambda i: entries[i].created_ns)
    replaced: dict[int, int] = {}  # entry -> the first later entry that took one of its tuples
    for i in order:
        e = entries[i]
        for k in ((e.node, "o", e.entry.orig.key()), (e.node, "r", e.entry.reply.key())):
            if k in latest and latest[k] != i:
                replaced.setdefault(latest[k], i)
            latest[k] = i
    for i, by in replaced.items():
        e = entries[i]
        if e.ended is None:
            e.ended = "replaced"
            # The kernel deleted it when the later entry's packet came (a SYN reopening a
            # closed connection), unless its timeout had run out before.
            t = min(entries[by].created_ns, e.last_ns + e.limit_ns)
            state = STATE_NAMES.index(e.entry.state) if e.entry.state else 0
            e.destroyed = (t, state, "UNREPLIED" not in e.entry.flags, "ASSURED" in e.entry.flags,
                           _left_s(e.limit_ns, t - e.last_ns))
    return entries


def live_entries(entries: list[RebuiltEntry], node: str | None = None) -> list[RebuiltEntry]:
    """The entries still in the table at the end of the capture (what ``conntrack -L`` lists)."""
    return [e for e in entries if e.ended is None and (node is None or e.node == node)]
