"""The JSON document of ``flowtrace analyze --json``: the Analysis as plain data, versioned.

Top-level keys: ``schema_version``, ``flowtrace_version``, ``reference`` (the capture
whose clock is the reference), ``captures`` (name, path, role, packets, time span, clock
offset and its uncertainty), ``connections`` (each row of the connections table with its
``request`` and ``response`` hops), ``conntrack`` (per node, the reconstructed entries:
the ``conntrack -L`` line and its parts), ``comparisons`` (reconstruction against dumps,
with ``events`` for the UPDATE and DESTROY lines of a ``-E`` dump),
``findings`` and ``notes``. Times are integers in nanoseconds; missing values are null.
With a Kubernetes snapshot, connections and hops carry a ``<address>_name`` next to each
address (``client_dst_name``: ``svc default/web:http``; hops ``src_name``, ``dst_name``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from flowtrace.analysis import Analysis
from flowtrace.context.conntrack import Comparison, ConntrackEntry, Tuple
from flowtrace.context.k8s import KubeNames, add_name_columns


def plain(value: Any) -> Any:
    """A JSON-ready version of a numpy/pandas scalar (NaN and NA become None)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def records(frame: pd.DataFrame, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows of ``frame`` as dicts of plain values (categoricals as text, NaN as null)."""
    cols = columns or list(frame.columns)
    data = {c: frame[c].astype(object).to_numpy() for c in cols}
    return [{c: plain(data[c][i]) for c in cols} for i in range(len(frame))]


def _tuple(t: Tuple) -> dict[str, Any]:
    return {k: v for k, v in (("src", t.src), ("dst", t.dst), ("sport", t.sport), ("dport", t.dport),
                              ("type", t.icmp_type), ("code", t.icmp_code), ("id", t.icmp_id)) if v is not None}


def entry_dict(e: ConntrackEntry) -> dict[str, Any]:
    """One conntrack entry as JSON data (its -L line plus the parsed fields)."""
    return {"line": e.format(), "family": e.family, "proto": e.proto, "state": e.state,
            "timeout_s": e.timeout_s, "flags": sorted(e.flags), "orig": _tuple(e.orig), "reply": _tuple(e.reply),
            "dnat": e.dnat, "snat": e.snat}


def comparison_dict(c: Comparison, *, events: bool = False) -> dict[str, Any]:
    """A reconstruction-versus-dump comparison as JSON data: entries as ``conntrack -L``
    lines, and ``events`` (UPDATE and DESTROY events, as ``conntrack -E`` lines) when the
    dump has them (``events``: ``c`` is that comparison)."""
    line = ConntrackEntry.event_line if events else ConntrackEntry.format

    out: dict[str, Any] = {
        "matched": len(c.matched), "precision": c.precision, "recall": c.recall,
        "missing_in_dump": [line(e) for e in c.missing_in_dump],
        "missing_in_reconstruction": [line(e) for e in c.missing_in_reconstruction],
        "differing": [{"reconstructed": line(r), "dump": line(d), "what": what} for r, d, what in c.differing],
    }
    if c.events is not None:
        out["events"] = comparison_dict(c.events, events=True)
    return out


HOP_FIELDS = ["hop", "on_path", "capture", "interface", "ifindex", "packet_direction", "src", "sport", "dst",
              "dport", "ttl", "encap", "outer_src", "outer_dst", "vni", "first_ts_ns", "last_ts_ns", "delay_ns",
              "latency_ns", "packets", "ip_bytes", "flow", "flows", "changes", "change_labels", "changed_at",
              "missing"]


def _head(a: Analysis, *, version: str) -> dict[str, Any]:
    """Everything in the document but the connections."""
    captures = []
    for s in a.captures:
        o = a.offsets.get(s.capture)
        captures.append({
            "capture": s.capture, "path": s.path, "role": a.roles.get(s.capture, "unknown"),
            "format": s.format, "packets": s.packets, "first_ts_ns": s.first_ts_ns, "last_ts_ns": s.last_ts_ns,
            "clock": None if o is None else {
                "offset_ns": o.offset_ns, "uncertainty_ns": o.uncertainty_ns, "lower_ns": o.lower_ns,
                "upper_ns": o.upper_ns, "reference": o.reference, "samples": o.samples},
            "capture_drops": s.capture_drops, "warnings": s.warnings,
        })
    conntrack = {}
    for node in a.conntrack_nodes():
        conntrack[node] = [
            dict(entry_dict(e.entry), connection=e.connection, created_ns=e.created_ns, last_ns=e.last_ns,
                 recreated=e.recreated, ended=e.ended)
            for e in a.conntrack_table(node, ended=True)]
    return {
        "schema_version": a.schema_version,
        "flowtrace_version": version,
        "reference": a.reference,
        "captures": captures,
        "conntrack": conntrack,
        "comparisons": {node: comparison_dict(c) for node, c in a.comparisons.items()},
        "findings": [f.to_dict() if hasattr(f, "to_dict") else f for f in a.findings],
        "notes": a.notes,
    }


def _connection_pieces(a: Analysis, names: KubeNames | None = None) -> list[str]:
    """The connections array's text, in pieces to join: each connection's object with its
    request and response hops nested in it, commas between.

    Rows are serialised column-wise by pandas (C speed), then stitched: a million-packet
    analysis has hundreds of thousands of hops, and their text is only cut and joined once.
    """
    if a.connections.empty:
        return []
    conns = a.connections.sort_values("connection")
    hops = a.hops.sort_values(["connection", "direction", "hop"], kind="stable")
    fields = HOP_FIELDS
    if names is not None:
        conns = add_name_columns("connections", conns, names)
        hops = add_name_columns("hops", hops, names)
        fields = [f for f in hops.columns if f in HOP_FIELDS or f in ("src_name", "dst_name")]
    conn_records = _Records(conns)
    hop_records = _Records(hops[fields])
    hc = hops["connection"].to_numpy()
    hd = hops["direction"].cat.codes.to_numpy() if len(hops) else np.zeros(0, dtype=np.int8)
    ids = conns["connection"].to_numpy()
    # Row ranges [start, end) of each (connection, direction) in the sorted hops.
    key = hc.astype(np.int64) * 2 + hd
    want = ids.astype(np.int64) * 2
    bounds = [np.searchsorted(key, w, side=side).tolist() for w in (want, want + 1) for side in ("left", "right")]
    out = []
    for i, (req_lo, req_hi, resp_lo, resp_hi) in enumerate(zip(*bounds, strict=True)):
        if i:
            out.append(",")
        out.append(conn_records.join(i, i + 1)[:-1])
        out.append(',"request":[')
        out.append(hop_records.join(req_lo, req_hi))
        out.append('],"response":[')
        out.append(hop_records.join(resp_lo, resp_hi))
        out.append("]}")
    return out


class _Records:
    """The rows of a table as the text of JSON objects, in row order (pandas' C encoder),
    to be joined by ranges of rows.

    pandas writes the records as one array; it is cut where one record ends and the next
    begins, ``},{"FIRST":`` (FIRST: the first column's name): an unescaped quote cannot be
    inside a JSON string, so the sequence is only found between records, or inside a
    column of objects keyed by FIRST (then the count differs, and pandas' line-delimited
    output, 0.6 s slower for a million packets' hops, is cut at its newlines instead).
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.parts: list[str] = []
        self.head = self.separator = ""
        if len(frame) == 0:
            return
        text = frame.to_json(orient="records")
        self.head = "{" + json.dumps(str(frame.columns[0])) + ":"
        self.separator = "}," + self.head
        # text is [HEAD...SEPARATOR...SEPARATOR...}]; a part is a record between HEAD and "}".
        self.parts = text[1 + len(self.head):-2].split(self.separator)
        if len(self.parts) != len(frame):
            lines = frame.to_json(orient="records", lines=True).splitlines()
            self.parts = [line[len(self.head):-1] for line in lines]

    def join(self, start: int, end: int) -> str:
        """Records ``start`` to ``end`` (exclusive) as JSON text, separated by commas."""
        if start >= end:
            return ""
        return self.head + self.separator.join(self.parts[start:end]) + "}"


def render_json(a: Analysis, *, version: str, names: KubeNames | None = None) -> str:
    """The JSON document as text (indented when small, compact when large); ``names`` adds
    Kubernetes names next to addresses."""
    head = json.dumps(_head(a, version=version))
    text = "".join([head[:-1], ',"connections":[', *_connection_pieces(a, names), "]}"])
    if len(text) < 2_000_000:
        return json.dumps(json.loads(text), indent=2)
    return text


def analysis_document(a: Analysis, *, version: str, names: KubeNames | None = None) -> dict[str, Any]:
    """The whole JSON document as a dict (what ``analyze --json`` prints)."""
    return json.loads(render_json(a, version=version, names=names))
