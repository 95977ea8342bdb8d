"""Zeek conn.log (TSV) from the flows table, laid out exactly as Zeek's ASCII writer does it.

Columns follow Zeek's ``Conn::Info`` record (base/protocols/conn/main.zeek) with
``ip_proto`` and the ``community_id`` field of the community-id policy script appended.
As in Zeek, ``duration``, ``orig_bytes`` and ``resp_bytes`` are unset when the duration is
zero, and ICMP ports are the message type and its counterpart (or code).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

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
_TRANSPORT = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}


def _stamp(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(seconds))


def _seconds(ns: np.ndarray) -> pd.Series:
    """Nanoseconds as Zeek prints times and intervals: seconds with 6 decimals (truncated)."""
    us = ns // 1000
    sec = us // 1_000_000
    frac = us - sec * 1_000_000
    return pd.Series(sec).astype(str) + "." + pd.Series(frac).astype(str).str.zfill(6)


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
    if len(flows):
        lines.append(_rows(flows))
    lines.append(f"#close\t{_stamp(close_time)}\n")
    return "".join(lines)


def _rows(f: pd.DataFrame) -> str:
    n = len(f)
    proto = f["proto"].to_numpy().astype(np.int64)
    dur = f["duration_ns"].to_numpy()
    has_dur = dur > 0
    unset = pd.Series(np.full(n, UNSET, dtype=object))

    def count(col: str) -> pd.Series:
        return pd.Series(f[col].to_numpy().astype(np.int64)).astype(str)

    def port(col: str) -> pd.Series:
        return pd.Series(np.maximum(f[col].to_numpy().astype(np.int64), 0)).astype(str)

    def text(col: str) -> pd.Series:
        s = pd.Series(f[col].to_numpy(dtype=object)).astype(object)
        s = s.where(s.notna() & (s.astype(str) != ""), UNSET)
        return s.astype(str)

    transport = pd.Series([_TRANSPORT.get(p, "unknown_transport") for p in proto.tolist()])
    cols: Sequence[pd.Series] = (
        _seconds(f["ts_ns"].to_numpy()),
        text("uid"),
        text("orig_h"), port("orig_p"), text("resp_h"), port("resp_p"),
        transport,
        unset,
        _seconds(dur).where(has_dur, UNSET),
        count("orig_bytes").where(has_dur, UNSET),
        count("resp_bytes").where(has_dur, UNSET),
        text("conn_state"),
        unset, unset,
        count("missed_bytes"),
        text("history"),
        count("orig_pkts"), count("orig_ip_bytes"), count("resp_pkts"), count("resp_ip_bytes"),
        unset,
        pd.Series(proto).astype(str),
        text("community_id"),
    )
    table = pd.concat(list(cols), axis=1, ignore_index=True)
    return table.to_csv(sep="\t", header=False, index=False, lineterminator="\n", quoting=csv.QUOTE_NONE)


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
