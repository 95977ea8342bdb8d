"""conn.log data lines written by pyarrow's CSV writer (imported only when pyarrow is).

The same text as ``flowtrace.flows.zeek._rows_by_format``, column by column in Arrow's
compute functions and its C++ CSV writer (tab-separated, no quoting, no header). Importing
this module raises ImportError when pyarrow is not installed.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from flowtrace.flows.zeek import _TRANSPORT, LAYOUT, UNSET

_OPTIONS = pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")


def _seconds(ns: np.ndarray) -> pa.Array:
    """Nanoseconds as seconds with 6 decimals, truncated (Zeek's times and intervals)."""
    us = ns // 1000
    whole = pc.cast(pa.array(us // 1_000_000), pa.string())
    micro = pc.utf8_lpad(pc.cast(pa.array(us % 1_000_000), pa.string()), 6, "0")
    return pc.binary_join_element_wise(whole, micro, ".")


def _texts(col: pd.Series) -> pa.Array:
    """A text or categorical column as strings, unset (``-``) where missing or empty."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = pa.array([str(c) or UNSET for c in col.cat.categories] + [UNSET], pa.string())
        codes = col.cat.codes.to_numpy().astype(np.int32)
        return pc.take(cats, pa.array(np.where(codes < 0, len(cats) - 1, codes)))
    arr = pa.array(col.to_numpy(dtype=object), pa.string(), from_pandas=True)
    return pc.if_else(pc.fill_null(pc.equal(arr, ""), True), pa.scalar(UNSET), arr)


def arrow_rows(f: pd.DataFrame) -> str:
    """The data lines of ``f`` (a non-empty flows table), as ``zeek._rows`` gives them."""
    has_duration = pa.array(f["duration_ns"].to_numpy() > 0)
    unset = pa.array(np.full(len(f), UNSET, dtype=object), pa.string())
    cols = []
    for kind, name in LAYOUT:
        if kind == "unset":
            cols.append(unset)
            continue
        if kind == "text":
            col = _texts(f[name])
        elif kind in ("time", "interval"):
            col = _seconds(f[name].to_numpy())
        elif kind == "transport":
            col = pa.array(_TRANSPORT[f[name].to_numpy().astype(np.int64) & 255].tolist(), pa.string())
        else:  # count, port, bytes
            values = f[name].to_numpy()
            col = pa.array((np.maximum(values, 0) if kind == "port" else values).astype(np.int64))
        if kind in ("interval", "bytes"):
            col = pc.if_else(has_duration, pc.cast(col, pa.string()), pa.scalar(UNSET))
        cols.append(col)
    out = io.BytesIO()
    pcsv.write_csv(pa.table(cols, names=[f"c{i}" for i in range(len(cols))]), out, write_options=_OPTIONS)
    return out.getvalue().decode()
