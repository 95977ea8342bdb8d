"""Zeek conn.log (TSV) from the flows table, laid out exactly as Zeek's ASCII writer does it.

Columns follow Zeek's ``Conn::Info`` record (base/protocols/conn/main.zeek) with
``ip_proto`` and the ``community_id`` field of the community-id policy script appended.
As in Zeek, ``duration``, ``orig_bytes`` and ``resp_bytes`` are unset when the duration is
zero, and ICMP ports are the message type and its counterpart (or code).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from flowtrace.fork import can_fork, forked_map

FIELDS: tuple[tuple[str, str], ...] = (
    ("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"),
    ("id.resp_h", "addr"), ("id.resp_p", "port"), ("proto", "enum"), ("service", "string"),
    ("duration", "interval"), ("orig_bytes", "count"), ("resp_bytes", "count"),
    ("conn_state", "string"), ("local_orig", "bool"), ("local_resp", "bool"),
    ("missed_bytes", "count"), ("history", "string"), ("orig_pkts", "count"),
    ("orig_ip_bytes", "count"), ("resp_pkts", "count"), ("resp_ip_bytes", "count"),
    ("tunnel_parents", "set[string]"), ("ip_proto", "count"), ("community_id", "string"),
)
"""conn.log field names and Zeek types, in order."""

UNSET = "-"
PARALLEL_ROWS = 20_000
"""From this many flows on, a second process formats half of the lines (flowtrace.fork)."""
_TRANSPORT = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}


def _stamp(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(seconds))


def _seconds(ns: np.ndarray) -> list[str]:
    """Nanoseconds as Zeek prints times and intervals: seconds with 6 decimals (truncated)."""
    us = (ns // 1000).tolist()
    return [f"{u // 1_000_000}.{u % 1_000_000:06d}" for u in us]


def _texts(col: pd.Series) -> list[str]:
    """A text or categorical column as strings, unset (``-``) where missing or empty."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = np.array([str(c) or UNSET for c in col.cat.categories] + [UNSET], dtype=object)
        return cats[col.cat.codes.to_numpy().astype(np.int64)].tolist()
    return [v if isinstance(v, str) and v else UNSET for v in col.tolist()]


def _counts(values: np.ndarray) -> list[str]:
    return list(map(str, values.astype(np.int64).tolist()))


def conn_log(flows: pd.DataFrame, *, open_time: float | None = None, close_time: float | None = None) -> str:
    """The conn.log text of ``flows`` (a flows table), header and ``#close`` line included.

    ``open_time``/``close_time`` (epoch seconds) default to now.
    """
    header = [
        "#separator \\x09",
        "#set_separator\t,",
        "#empty_field\t(empty)",
        f"#unset_field\t{UNSET}",
        "#path\tconn",
        f"#open\t{_stamp(open_time)}",
        "#fields\t" + "\t".join(name for name, _ in FIELDS),
        "#types\t" + "\t".join(kind for _, kind in FIELDS),
    ]
    lines = ["\n".join(header), "\n"]
    n = len(flows)
    if n >= PARALLEL_ROWS and can_fork():
        lines.extend(forked_map(_rows, [flows.iloc[: n // 2], flows.iloc[n // 2 :]]))
    elif n:
        lines.append(_rows(flows))
    lines.append(f"#close\t{_stamp(close_time)}\n")
    return "".join(lines)


def _rows(f: pd.DataFrame) -> str:
    n = len(f)
    proto = f["proto"].to_numpy().astype(np.int64)
    dur = f["duration_ns"].to_numpy()
    has_dur = (dur > 0).tolist()
    unset = [UNSET] * n

    def when_duration(values: list[str]) -> list[str]:
        return [v if ok else UNSET for v, ok in zip(values, has_dur, strict=True)]

    cols: list[list[str]] = [
        _seconds(f["ts_ns"].to_numpy()),
        _texts(f["uid"]),
        _texts(f["orig_h"]), _counts(np.maximum(f["orig_p"].to_numpy(), 0)),
        _texts(f["resp_h"]), _counts(np.maximum(f["resp_p"].to_numpy(), 0)),
        [_TRANSPORT.get(p, "unknown_transport") for p in proto.tolist()],
        unset,
        when_duration(_seconds(dur)),
        when_duration(_counts(f["orig_bytes"].to_numpy())),
        when_duration(_counts(f["resp_bytes"].to_numpy())),
        _texts(f["conn_state"]),
        unset, unset,
        _counts(f["missed_bytes"].to_numpy()),
        _texts(f["history"]),
        _counts(f["orig_pkts"].to_numpy()), _counts(f["orig_ip_bytes"].to_numpy()),
        _counts(f["resp_pkts"].to_numpy()), _counts(f["resp_ip_bytes"].to_numpy()),
        unset,
        list(map(str, proto.tolist())),
        _texts(f["community_id"]),
    ]
    return "".join(["\t".join(row) + "\n" for row in zip(*cols, strict=True)])


def parse_conn_log(text: str) -> tuple[dict[str, str], pd.DataFrame]:
    """Read a Zeek ASCII conn.log: (header fields by name, rows as strings, '-' kept).

    Raises ValueError when the ``#fields`` line is missing.
    """
    meta: dict[str, str] = {}
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("#separator"):
            meta["separator"] = line.split(" ", 1)[1]
        elif line.startswith("#"):
            key, _, value = line[1:].partition("\t")
            meta[key] = value
        elif line:
            rows.append(line.split("\t"))
    if "fields" not in meta:
        raise ValueError("no #fields line: not a Zeek log")
    names = meta["fields"].split("\t")
    return meta, pd.DataFrame(rows, columns=names, dtype=object)
