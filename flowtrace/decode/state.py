"""The per-batch working state of the decoder: output columns plus layer positions."""

from __future__ import annotations

import numpy as np

from flowtrace.capture.records import RecordBatch

OK, TRUNCATED, MALFORMED, UNSUPPORTED = 0, 1, 2, 3
"""decode_status codes, in the order of schema.DECODE_STATUSES."""

# Output columns a batch fills, with their batch dtype and default. Address columns hold
# AddressBook codes (-1 = none) and enumerations hold small integer codes until the
# table builder turns them into categoricals.
OUTPUT_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("ifindex", "int32", -1),
    ("direction", "int8", 0),
    ("vlan", "int16", -1),
    ("ethertype", "uint16", 0),
    ("encap", "int8", 0),
    ("outer_src", "int32", -1),
    ("outer_dst", "int32", -1),
    ("vni", "int32", -1),
    ("ip_version", "uint8", 0),
    ("src", "int32", -1),
    ("dst", "int32", -1),
    ("proto", "int16", -1),
    ("sport", "int32", -1),
    ("dport", "int32", -1),
    ("ip_id", "uint32", 0),
    ("ttl", "uint8", 0),
    ("tos", "uint8", 0),
    ("ip_len", "uint32", 0),
    ("ip_flags", "uint8", 0),
    ("frag_offset", "uint16", 0),
    ("tcp_flags", "uint16", 0),
    ("seq", "uint32", 0),
    ("ack", "uint32", 0),
    ("window", "uint16", 0),
    ("tcp_opts", "uint8", 0),
    ("mss", "uint16", 0),
    ("wscale", "uint8", 0),
    ("tsval", "uint32", 0),
    ("tsecr", "uint32", 0),
    ("payload_len", "uint32", 0),
    ("payload_hash", "uint32", 0),
    ("l4_checksum", "int8", -1),
    ("icmp_type", "int16", -1),
    ("icmp_code", "int16", -1),
    ("icmp_id", "uint16", 0),
    ("icmp_seq", "uint16", 0),
    ("icmp_mtu", "uint32", 0),
    ("quoted_src", "int32", -1),
    ("quoted_dst", "int32", -1),
    ("quoted_proto", "int16", -1),
    ("quoted_sport", "uint16", 0),
    ("quoted_dport", "uint16", 0),
    ("quoted_ip_id", "uint16", 0),
    ("quoted_seq", "uint32", 0),
    ("dns_id", "int32", -1),
    ("decode_status", "uint8", OK),
)


class BatchState:
    """Arrays of one batch, row-aligned with the batch's frames.

    ``out`` maps output column names to arrays; the other attributes are positions
    (absolute indexes into the batch buffer, -1 where the layer is absent).
    """

    __slots__ = ("bogus", "end", "ip_end", "l3", "l4", "n", "out", "pay", "pseudo", "start", "tunnel_ports",
                 "wire_end")

    def __init__(self, batch: RecordBatch, out: dict[str, np.ndarray] | None = None) -> None:
        """Start the state of ``batch``; ``out`` may supply the output arrays (e.g. views into
        the final table), which are reset to their defaults here."""
        n = len(batch)
        self.n = n
        if out is None:
            out = {name: np.empty(n, dtype=dtype) for name, dtype, _ in OUTPUT_COLUMNS}
        for name, _dtype, default in OUTPUT_COLUMNS:
            out[name][:] = default
        self.out = out
        self.out["direction"][:] = batch.direction
        self.start = batch.offset
        self.end = batch.offset + batch.caplen
        self.wire_end = batch.offset + np.maximum(batch.wirelen, batch.caplen)
        self.l3 = np.full(n, -1, dtype=np.int64)
        self.l4 = np.full(n, -1, dtype=np.int64)
        self.ip_end = np.full(n, -1, dtype=np.int64)
        self.pay = np.full(n, -1, dtype=np.int64)
        self.pseudo = np.zeros(n, dtype=np.uint64)
        self.bogus = np.zeros(n, dtype=bool)
        """Rows whose IP length claims more than the frame: decoded, then marked malformed."""
        self.tunnel_ports: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        """When a list: (rows, outer source port, outer destination port) of the rows found
        inside a UDP tunnel (VXLAN, Geneve), outermost tunnel only, appended as found. None
        (the default) keeps nothing: the packets table has no outer port columns."""

    @property
    def status(self) -> np.ndarray:
        """decode_status codes (a view: assignments change the state)."""
        return self.out["decode_status"]

    def captured(self, rows: np.ndarray, pos: np.ndarray, need: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``rows`` whose frame holds ``need`` bytes at ``pos``, with their ``pos``; the
        other rows are marked TRUNCATED."""
        fit = pos + need <= self.end[rows]
        self.mark(rows[~fit], TRUNCATED)
        return rows[fit], pos[fit]

    def mark(self, rows: np.ndarray, code: int) -> None:
        """Set decode_status ``code`` on ``rows`` that are still OK."""
        if rows.size:
            st = self.out["decode_status"]
            sel = rows[st[rows] == OK]
            st[sel] = code
