"""Decoding one record batch: link layer, network layer through any tunnels, transport, payload."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowtrace.capture import linktypes
from flowtrace.capture.records import Interface, RecordBatch
from flowtrace.decode.addresses import AddressBook
from flowtrace.decode.fallback import decode_fallback
from flowtrace.decode.ip import decode_ip
from flowtrace.decode.link import beyond_link, decode_link, ethernet
from flowtrace.decode.payload import hash_payloads, verify_checksums
from flowtrace.decode.state import MALFORMED, OK, UNSUPPORTED, BatchState
from flowtrace.decode.transport import decode_transport
from flowtrace.decode.tunnel import ETHERNET_INNER, detect_tunnels
from flowtrace.decode.view import FrameView

MAX_TUNNEL_DEPTH = 4
"""Tunnels inside tunnels decoded before the innermost packet is taken as it is."""


def _cat(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.uint16)
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def decode_batch(batch: RecordBatch, interfaces: Sequence[Interface], book: AddressBook,
                 st: BatchState | None = None, *, outermost: bool = False) -> BatchState:
    """Decode every frame of ``batch``; returns the filled BatchState (never raises on bad packets).

    ``interfaces`` gives each frame's link type through ``batch.interface``; ``book``
    interns the addresses seen so that every capture of one read shares its codes;
    ``st`` may bring output arrays to decode into (default: fresh ones). ``outermost``
    stops at the outermost IP header and the tunnel it carries (what
    ``BatchState.tunnel_ports`` collects): no inner packet, transport or payload.
    """
    st = st if st is not None else BatchState(batch)
    v = FrameView(batch.data)
    link_of = np.asarray([i.link_type for i in interfaces], dtype=np.int64)
    frame_link = link_of[batch.interface] if len(interfaces) else np.zeros(len(batch), dtype=np.int64)
    parts = []
    # The interfaces' link types, not np.unique of the frames' (which loads numpy.ma, 8 ms,
    # in every decoding process).
    link_types = sorted(set(link_of.tolist())) or [0]
    for lt in link_types:
        rows = np.flatnonzero(frame_link == lt) if len(link_types) > 1 else np.arange(len(batch))
        if not rows.size:
            continue
        if lt in linktypes.FALLBACK:
            found = decode_fallback(st, batch.data, rows, lt)
        elif linktypes.is_supported(lt):
            found = decode_link(v, st, rows, lt)
        else:
            st.mark(rows, UNSUPPORTED)
            continue
        parts.append(beyond_link(v, st, *found))
    rows, l3, etype = _cat(parts)
    for _ in range(MAX_TUNNEL_DEPTH + 1):
        decoded = decode_ip(v, st, book, rows, l3, etype)
        inner_rows, inner_pos, inner_type = detect_tunnels(v, st, decoded)
        if outermost:
            return st
        if not inner_rows.size:
            break
        eth = inner_type == ETHERNET_INNER
        nxt = [ethernet(v, st, inner_rows[eth], inner_pos[eth]),
               (inner_rows[~eth], inner_pos[~eth], inner_type[~eth])]
        rows, l3, etype = beyond_link(v, st, *_cat(nxt))
    transport = np.flatnonzero((st.status == OK) & (st.l4 >= 0))
    decode_transport(v, st, book, transport)
    hash_payloads(v, st)
    verify_checksums(v, st)
    st.mark(np.flatnonzero(st.bogus), MALFORMED)
    return st
