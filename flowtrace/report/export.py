"""Writing an analysis's tables to files: Parquet or CSV, one file per table, plus metadata.json.

``flowtrace export`` and the Python API write the tables of ``flowtrace.schema.TABLES``
(packets, flows, connections, hops, and anomalies where the schema declares it) from an
Analysis. The packets table gets the analysis's per-packet columns appended (EXTRA_PACKET
_COLUMNS) so that packets join hops and flows; a Kubernetes snapshot adds a
``<address column>_name`` column after each address column. Parquet files carry
``flowtrace.schema_version`` and ``flowtrace.table`` in their key-value metadata; pyarrow is
imported only when Parquet is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from flowtrace.analysis import Analysis
from flowtrace.context.k8s import KubeNames, add_name_columns
from flowtrace.errors import InputError
from flowtrace.schema import SCHEMA_VERSION, TABLES

FORMATS = ("parquet", "csv")
"""File formats ``export`` writes."""

EXTRA_PACKET_COLUMNS = (
    ("flow_id", "int64", "flows.flow_id of the packet's flow at its observation point; -1 for none."),
    ("hop_id", "int64", "hops.hop_id of the hop the packet was seen at; -1 outside any connection."),
    ("path_direction", "int8", "0 request, 1 response, -1 outside any connection."),
    ("corrected_ts_ns", "int64", "ts_ns in the reference capture's clock (ts_ns minus the capture's offset)."),
    ("sighting_group", "int64", "Packets with the same value are one packet seen at several points; -1 none."),
)
"""Columns appended to the exported packets table: (name, dtype, meaning)."""


def table_names() -> list[str]:
    """Tables ``export`` writes, in order (anomalies only where the schema declares it)."""
    return [name for name in ("packets", "flows", "connections", "hops", "anomalies") if name in TABLES]


def anomalies_table(findings: Sequence[object]) -> pd.DataFrame:
    """The anomalies table of ``findings`` (flowtrace.detect's, when it provides one)."""
    try:
        from flowtrace.detect.table import findings_table
    except ImportError:  # detectors not installed in this build: a plain table of the findings
        rows = [f.to_dict() for f in findings]  # type: ignore[attr-defined]
        frame = pd.DataFrame(rows, columns=["code", "severity", "connection", "direction", "hop", "segment",
                                            "capture", "evidence", "message", "causes"])
        frame["evidence"] = [";".join(f"{e['capture']}:{','.join(map(str, e['frames']))}" for e in ev)
                             for ev in frame["evidence"]]
        frame["causes"] = ["; ".join(c) for c in frame["causes"]]
        return frame
    return findings_table(list(findings))  # type: ignore[arg-type]


def analysis_table(a: Analysis, name: str, *, names: KubeNames | None = None) -> pd.DataFrame:
    """Table ``name`` of ``a`` as exported: packets with EXTRA_PACKET_COLUMNS, name columns
    when ``names`` is given. Raises KeyError for an unknown table."""
    if name == "packets":
        frame = a.packets.copy()
        n = len(frame)
        extras = {
            "flow_id": _column(a.packet_flow, n, -1, np.int64),
            "hop_id": _column(a.packet_hop, n, -1, np.int64),
            "path_direction": _column(a.packet_path_direction, n, -1, np.int8),
            "corrected_ts_ns": _column(a.corrected_ts, n, None, np.int64, fallback=frame["ts_ns"].to_numpy()),
            "sighting_group": _column(a.packet_group, n, -1, np.int64),
        }
        for col, values in extras.items():
            frame[col] = values
    elif name == "anomalies":
        frame = anomalies_table(a.findings)
    elif name in ("flows", "connections", "hops"):
        frame = getattr(a, name)
    else:
        raise KeyError(name)
    return add_name_columns(name, frame, names) if names is not None else frame


def _column(values: np.ndarray, n: int, fill: int | None, dtype: type, fallback: np.ndarray | None = None
            ) -> np.ndarray:
    if len(values) == n:
        return values.astype(dtype, copy=False)
    if fallback is not None:
        return fallback.astype(dtype, copy=False)
    return np.full(n, fill, dtype=dtype)


def write_tables(a: Analysis, directory: str | Path, *, fmt: str = "parquet", names: KubeNames | None = None,
                 tables: Sequence[str] | None = None, version: str = "") -> dict[str, Path]:
    """Write the tables of ``a`` into ``directory`` (created if needed) as ``TABLE.parquet`` or
    ``TABLE.csv``, plus ``metadata.json`` (schema_version, flowtrace_version, captures,
    reference, per table: file, rows, columns). Returns the file of each table.

    Raises InputError for an unknown format or table, or a directory that cannot be
    written; ImportError (with how to install it) when Parquet is asked without pyarrow.
    """
    if fmt not in FORMATS:
        raise InputError("", f"unknown export format {fmt!r} (choose {' or '.join(FORMATS)})")
    wanted = list(tables) if tables else table_names()
    unknown = [t for t in wanted if t not in table_names()]
    if unknown:
        raise InputError("", f"unknown table {', '.join(unknown)} (tables: {', '.join(table_names())})")
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(out, f"cannot create the export directory: {e.strerror or e}") from None
    files: dict[str, Path] = {}
    meta: dict[str, object] = {"schema_version": SCHEMA_VERSION, "flowtrace_version": version, "format": fmt,
                               "reference": a.reference, "captures": [c.capture for c in a.captures],
                               "kubernetes_snapshot": names.source if names is not None else None, "tables": {}}
    for name in wanted:
        frame = analysis_table(a, name, names=names)
        path = out / f"{name}.{fmt}"
        try:
            if fmt == "parquet":
                write_parquet(frame, path, table=name)
            else:
                write_csv(frame, path)
        except OSError as e:
            raise InputError(path, f"cannot write: {e.strerror or e}") from None
        files[name] = path
        meta["tables"][name] = {"file": path.name, "rows": len(frame), "columns": list(frame.columns)}  # type: ignore[index]
    (out / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return files


def write_parquet(frame: pd.DataFrame, path: Path, *, table: str) -> None:
    """One table as a Parquet file (categoricals as dictionary columns) with flowtrace metadata."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a test dependency
        raise ImportError("Parquet export needs pyarrow: pip install 'flowtrace[parquet]'") from e
    t = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(t.schema.metadata or {})
    metadata[b"flowtrace.schema_version"] = str(SCHEMA_VERSION).encode()
    metadata[b"flowtrace.table"] = table.encode()
    pq.write_table(t.replace_schema_metadata(metadata), path)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """One table as CSV with a header row; categoricals as text, missing categoricals empty."""
    frame.to_csv(path, index=False, lineterminator="\n")
