"""Zeek's conn_state: the TCP endpoint state machine, run as a compiled automaton over flows.

``_step`` transcribes the endpoint state machine of Zeek's TCP analyzer
(``TCPSessionAdapter::UpdateStateMachine`` and the functions it calls) for one packet.
It is compiled once into a transition table over every reachable state, then run over
all flows at once: round k applies every flow's k-th event, so the Python work is one
numpy step per round, not one call per packet. Only packets that can change a state are
events: every SYN, FIN and RST, and per run of packets between two of those, the first
packet of each (side, ACK, payload) class; the others provably leave the state as it is.
``conn_state`` then applies ``Conn::conn_state`` from Zeek's base/protocols/conn/main.zeek.
"""

from __future__ import annotations

import re
from functools import cache
from typing import NamedTuple

import numpy as np

from flowtrace.schema import CONN_STATES

INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)
"""Zeek's TCP endpoint states, in the order of its ``EndpointState`` enum."""

EV_ORIG, EV_SYN, EV_ACK, EV_FIN, EV_RST, EV_DATA = 32, 16, 8, 4, 2, 1
"""Bits of an event code: sent by the originator, SYN, ACK, FIN, RST, payload present."""


class Endpoints(NamedTuple):
    """Both endpoints' state, previous state and did_close flag."""

    o: int
    o_prev: int
    r: int
    r_prev: int
    o_closed: bool
    r_closed: bool


START = Endpoints(INACTIVE, INACTIVE, INACTIVE, INACTIVE, False, False)


def _step(s: Endpoints, code: int) -> Endpoints:
    """Zeek's state machine for one packet described by event ``code`` (EV_* bits)."""
    is_orig = bool(code & EV_ORIG)
    syn, ack, fin, rst = bool(code & EV_SYN), bool(code & EV_ACK), bool(code & EV_FIN), bool(code & EV_RST)
    has_data = bool(code & EV_DATA)
    # [state, prev_state, did_close] of the sending endpoint (e) and of its peer (p).
    e = [s.o, s.o_prev, s.o_closed] if is_orig else [s.r, s.r_prev, s.r_closed]
    p = [s.r, s.r_prev, s.r_closed] if is_orig else [s.o, s.o_prev, s.o_closed]

    def set_state(ep: list, new: int) -> None:
        if new != ep[0]:
            ep[1], ep[0] = ep[0], new

    def close_or_reset() -> bool:
        """A FIN closes the sending endpoint, a RST resets it; whether either came."""
        if fin:
            set_state(e, CLOSED)
        if rst:
            set_state(e, RESET)
        return fin or rst

    do_close = False
    state = e[0]
    if state == INACTIVE:
        if syn:
            if is_orig:
                set_state(e, SYN_ACK_SENT if ack else SYN_SENT)
            else:
                # A responder SYN (SYN-ACK or simultaneous open) establishes both sides.
                if p[0] == SYN_SENT:
                    set_state(p, ESTABLISHED)
                set_state(e, ESTABLISHED)
        do_close = close_or_reset()
        if e[0] == INACTIVE:
            orig_state = p[0] if not is_orig else e[0]
            if not is_orig and not has_data and orig_state == SYN_SENT:
                pass  # an ACK of the SYN before the SYN-ACK does not make a partial connection
            elif ack and p[0] == ESTABLISHED:
                set_state(e, ESTABLISHED)
            else:
                set_state(e, PARTIAL)
    elif state in (SYN_SENT, SYN_ACK_SENT):
        do_close = close_or_reset()
    elif state in (ESTABLISHED, PARTIAL):
        if syn and state == PARTIAL and p[0] == INACTIVE and not ack:
            set_state(e, SYN_SENT)
        if fin and not rst:
            set_state(e, CLOSED)
            if p[0] == RESET and p[1] == CLOSED:
                set_state(p, CLOSED)  # the peer's FIN then RST was a normal close
            do_close = True
        if rst:
            set_state(e, RESET)
            do_close = True
    elif state == CLOSED and rst and p[0] != CLOSED:
        set_state(e, RESET)
        if not e[2]:
            do_close = True
    if do_close:
        e[2] = True
    if is_orig:
        return Endpoints(e[0], e[1], p[0], p[1], bool(e[2]), bool(p[2]))
    return Endpoints(p[0], p[1], e[0], e[1], bool(p[2]), bool(e[2]))


class Automaton(NamedTuple):
    """The state machine compiled over its reachable states."""

    table: np.ndarray
    """(states, 64) int16: next state index for (state index, event code)."""
    states: tuple[Endpoints, ...]
    """The state of each index; index 0 is the start."""


@cache
def automaton() -> Automaton:
    """Compile ``_step`` into a transition table by exploring every reachable state."""
    index = {START: 0}
    states = [START]
    rows: list[list[int]] = []
    i = 0
    while i < len(states):
        row = []
        for code in range(64):
            nxt = _step(states[i], code)
            if nxt not in index:
                index[nxt] = len(states)
                states.append(nxt)
            row.append(index[nxt])
        rows.append(row)
        i += 1
    return Automaton(np.array(rows, dtype=np.int16), tuple(states))


def event_codes(*, from_orig: np.ndarray, flags: np.ndarray, has_data: np.ndarray) -> np.ndarray:
    """The EV_* code of each packet (uint8), from TCP flag bits (FIN 1, SYN 2, RST 4, ACK 16)."""
    f = flags.astype(np.uint8)
    code = (f & 0x02) << 3  # SYN -> EV_SYN
    code |= (f & 0x10) >> 1  # ACK -> EV_ACK
    code |= (f & 0x01) << 2  # FIN -> EV_FIN
    code |= (f & 0x04) >> 1  # RST -> EV_RST
    code |= has_data.astype(np.uint8)
    code |= from_orig.astype(np.uint8) << 5
    return code


def state_events(*, flow: np.ndarray, flow_start: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Positions (in the given order) of the packets that can change an endpoint state.

    ``flow`` is the flow of each packet (sorted, contiguous), ``flow_start`` marks each
    flow's first packet and ``code`` is the EV_* code. Keeps every SYN/FIN/RST packet and,
    between two of them, the first packet of each (side, ACK, payload) class; then drops a
    kept event equal to the kept event before it in the same flow (each step is idempotent).
    """
    control = (code & (EV_SYN | EV_FIN | EV_RST)) != 0
    epoch = np.cumsum(control | flow_start)
    klass = code & (EV_ORIG | EV_ACK | EV_DATA)
    # Epochs are contiguous and there are at most 8 classes: per class, its positions whose
    # epoch differs from the class's previous position are the first of their epoch.
    first_of_class = np.zeros(code.size, dtype=bool)
    for c in np.unique(klass).tolist():
        at = np.flatnonzero(klass == c)
        e = epoch[at]
        first_of_class[at[np.concatenate(([True], e[1:] != e[:-1]))]] = True
    keep = np.flatnonzero(control | first_of_class)
    if keep.size > 1:
        c, f = code[keep], flow[keep]
        dup = np.concatenate(([False], (c[1:] == c[:-1]) & (f[1:] == f[:-1])))
        keep = keep[~dup]
    return keep


class Outcome(NamedTuple):
    """Per flow result of running the automaton."""

    state: np.ndarray
    """Index of the final state in ``automaton().states``."""
    closed_at: np.ndarray
    """Position of the event after which both endpoints had closed, or -1."""


def run(*, n_flows: int, event_flow: np.ndarray, event_code: np.ndarray) -> Outcome:
    """Run the automaton over each flow's events (``event_flow`` sorted, non-decreasing).

    Returns the final state per flow and the position (into the event arrays) of the
    event that completed the close of both endpoints, which ends Zeek's duration.
    """
    auto = automaton()
    both_closed = np.array([s.o_closed and s.r_closed for s in auto.states])
    st = np.zeros(n_flows, dtype=np.int16)
    closed_at = np.full(n_flows, -1, dtype=np.int64)
    if not event_flow.size:
        return Outcome(st, closed_at)
    counts = np.bincount(event_flow, minlength=n_flows)
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    act = np.flatnonzero(counts > 0)
    k = 0
    while act.size:
        pos = first[act] + k
        new = auto.table[st[act], event_code[pos]]
        done = both_closed[new] & ~both_closed[st[act]]
        closed_at[act[done]] = pos[done]
        st[act] = new
        k += 1
        act = act[counts[act] > k]
    return Outcome(st, closed_at)


def endpoint_states(state: np.ndarray) -> tuple[np.ndarray, ...]:
    """(orig state, orig previous state, resp state, resp previous state) arrays of ``state``."""
    auto = automaton()
    arr = np.array([s[:4] for s in auto.states], dtype=np.int8)
    return tuple(arr[state, i] for i in range(4))


_RSTOS0 = re.compile(r"\^?S[^HAFGIQ]*R.*")


CODE = {name: np.int8(i) for i, name in enumerate(CONN_STATES)}
"""Code of each conn_state name (its position in ``flowtrace.schema.CONN_STATES``)."""


def state_names(codes: np.ndarray) -> list[str]:
    """The conn_state names of ``codes``."""
    return [CONN_STATES[c] for c in np.asarray(codes).tolist()]


def tcp_conn_state(*, o: np.ndarray, r: np.ndarray, orig_size: np.ndarray, resp_size: np.ndarray,
                   history: list[str]) -> np.ndarray:
    """Zeek's ``conn_state`` codes (int8, see CODE) for TCP flows from the final endpoint states.

    ``o``/``r`` are the endpoint states, sizes the orig/resp payload bytes (for REJ) and
    ``history`` the history strings (for RSTOS0).
    """
    o_inactive = (o == INACTIVE) | (o == PARTIAL)
    r_inactive = (r == INACTIVE) | (r == PARTIAL)
    rej = (r == RESET) & ((o == SYN_SENT) | (o == SYN_ACK_SENT)
                          | ((o == RESET) & (orig_size == 0) & (resp_size == 0)))
    conds = [
        rej,
        (r == RESET) & o_inactive,
        r == RESET,
        (o == RESET) & r_inactive,  # RSTOS0 or OTH, by the history
        o == RESET,
        (r == CLOSED) & (o == CLOSED),
        (o == CLOSED) & r_inactive,
        o == CLOSED,
        (r == CLOSED) & o_inactive,
        r == CLOSED,
        (o == SYN_SENT) & (r == INACTIVE),
        (o == ESTABLISHED) & (r == ESTABLISHED),
    ]
    names = ["REJ", "RSTRH", "RSTR", "OTH", "RSTO", "SF", "SH", "S2", "SHR", "S3", "S0", "S1"]
    out = np.select(conds, [CODE[n] for n in names], CODE["OTH"]).astype(np.int8)
    for j in np.flatnonzero((o == RESET) & r_inactive & (r != RESET)):
        if _RSTOS0.fullmatch(history[j]):
            out[j] = CODE["RSTOS0"]
    return out


def udp_conn_state(orig_pkts: np.ndarray, resp_pkts: np.ndarray) -> np.ndarray:
    """Zeek's ``conn_state`` codes for UDP: SF both sides sent, S0 only the originator, SHR
    only the responder, OTH neither (int8)."""
    o, r = orig_pkts > 0, resp_pkts > 0
    return np.select([o & r, o, r], [CODE["SF"], CODE["S0"], CODE["SHR"]], CODE["OTH"]).astype(np.int8)
