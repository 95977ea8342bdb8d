"""Assembling decoded batches into the packets table (one DataFrame, declared dtypes).

The builder owns the table's final column arrays from the start: batches are decoded
straight into slices of them, so no per-batch pieces are kept and nothing is
concatenated. Capacity is projected from the bytes still to read and adjusted with
``ndarray.resize`` (a realloc; for large arrays an mremap, without a copy), then the
arrays are shrunk to the row count. Peak memory is the table itself plus one batch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.capture.records import DIR_IN, DIR_OUT, DIR_UNKNOWN, Interface, RecordBatch
from flowtrace.decode.addresses import AddressBook
from flowtrace.decode.state import OUTPUT_COLUMNS
from flowtrace.schema import DECODE_STATUSES, DIRECTIONS, ENCAPSULATIONS, PACKETS

ADDRESS_COLUMNS = ("src", "dst", "outer_src", "outer_dst", "quoted_src", "quoted_dst")

_DIRECTION_CODE = np.zeros(3, dtype=np.int8)
_DIRECTION_CODE[DIR_IN] = DIRECTIONS.index("in")
_DIRECTION_CODE[DIR_OUT] = DIRECTIONS.index("out")
_DIRECTION_CODE[DIR_UNKNOWN] = DIRECTIONS.index("unknown")

_RECORD_COLUMNS = {"capture": "int8", "frame": "uint32", "ts_ns": "int64", "interface": "int8",
                   "caplen": "uint32", "wirelen": "uint32"}
_STORE_DTYPES = {name: dtype for name, dtype, _ in OUTPUT_COLUMNS}
_STORE_DTYPES.update(_RECORD_COLUMNS)
for _name in ADDRESS_COLUMNS:
    _STORE_DTYPES[_name] = "int16"  # widened to int32 when a read meets 32,000 addresses


def _small_codes(codes: np.ndarray, ncat: int) -> np.ndarray:
    """Cast categorical codes to the smallest signed integer dtype that holds ``ncat`` codes."""
    for dt in (np.int8, np.int16, np.int32):
        if ncat < np.iinfo(dt).max:
            return codes.astype(dt, copy=False)
    return codes.astype(np.int64, copy=False)


def _categorical(codes: np.ndarray, categories: list[str] | tuple[str, ...]) -> pd.Categorical:
    dtype = pd.CategoricalDtype(list(categories))
    return pd.Categorical.from_codes(_small_codes(codes, len(categories)), dtype=dtype, validate=False)


def _resize(arr: np.ndarray, rows: int) -> np.ndarray:
    """Grow or shrink ``arr`` to ``rows`` rows, in place when numpy allows it."""
    try:
        arr.resize(rows, refcheck=True)
        return arr
    except ValueError:  # referenced elsewhere: fall back to a copy
        out = np.zeros(rows, dtype=arr.dtype)
        keep = min(rows, arr.shape[0])
        out[:keep] = arr[:keep]
        return out


class PacketTableBuilder:
    """Owns the packets table while captures are decoded into it; ``finish`` returns it."""

    def __init__(self) -> None:
        self.book = AddressBook()
        self.captures: list[str] = []
        self.interface_labels: list[str] = []
        self._label_codes: dict[str, int] = {}
        self.size = 0
        self.capacity = 0
        self._cols: dict[str, np.ndarray] = {
            name: np.zeros(0, dtype=dtype) for name, dtype in _STORE_DTYPES.items()
        }

    def add_capture(self, name: str) -> int:
        """Register a capture name; returns its code."""
        self.captures.append(name)
        return len(self.captures) - 1

    def _label(self, label: str) -> int:
        code = self._label_codes.get(label)
        if code is None:
            code = len(self.interface_labels)
            self._label_codes[label] = code
            self.interface_labels.append(label)
        return code

    def reserve(self, rows: int, *, projected: int = 0) -> None:
        """Make room for ``rows`` more rows; ``projected`` is the expected final row count."""
        need = self.size + rows
        if need <= self.capacity:
            return
        target = max(need, projected, int(self.capacity * 1.5) if not projected else 0, 1024)
        for name, arr in self._cols.items():
            self._cols[name] = _resize(arr, target)
        self.capacity = target

    def views(self, rows: int) -> dict[str, np.ndarray]:
        """Arrays for the decoder to fill for the next ``rows`` rows (call reserve first).

        Slices of the table's columns, except the address codes, which the decoder
        produces as int32 and ``commit`` stores in the table's narrower code dtype.
        """
        a, b = self.size, self.size + rows
        out = {name: self._cols[name][a:b] for name, _dtype, _ in OUTPUT_COLUMNS if name not in ADDRESS_COLUMNS}
        for name in ADDRESS_COLUMNS:
            out[name] = np.empty(rows, dtype=np.int32)
        return out

    def commit(self, capture: int, batch: RecordBatch, interfaces: list[Interface],
               out: dict[str, np.ndarray]) -> None:
        """Store the decoded ``out`` (from ``views``) and the record columns of ``batch``.

        Advances past the batch's rows; ``out`` must not be used after this call.
        """
        n = len(batch)
        a, b = self.size, self.size + n
        if len(self.book) >= np.iinfo(np.int16).max and self._cols["src"].dtype != np.int32:
            for name in ADDRESS_COLUMNS:
                self._cols[name] = self._cols[name].astype(np.int32)
        c = self._cols
        for name in ADDRESS_COLUMNS:
            c[name][a:b] = out[name]
        lut = np.asarray([self._label(i.label) for i in interfaces] or [self._label("")], dtype=np.int32)
        # Capture and interface codes start as int8 (as their categoricals end up) and
        # widen the first time a read has more than 127 of them.
        for name, top in (("capture", capture), ("interface", int(lut.max()))):
            if top > np.iinfo(c[name].dtype).max:
                self._cols[name] = c[name].astype(np.int32)
        c = self._cols
        c["capture"][a:b] = capture
        c["frame"][a:b] = np.arange(batch.first_frame, batch.first_frame + n, dtype=np.uint32)
        c["ts_ns"][a:b] = batch.ts_ns
        c["interface"][a:b] = lut[np.clip(batch.interface, 0, lut.size - 1)]
        c["caplen"][a:b] = batch.caplen
        c["wirelen"][a:b] = batch.wirelen
        c["direction"][a:b] = _DIRECTION_CODE[c["direction"][a:b]]
        self.size = b

    def export_part(self) -> dict[str, object]:
        """The raw columns and vocabularies built so far (to merge in another process)."""
        for name, arr in self._cols.items():
            self._cols[name] = _resize(arr, self.size)
        part = {"cols": self._cols, "addresses": list(self.book.texts), "labels": list(self.interface_labels),
                "size": self.size}
        self._cols = {}
        self.size = self.capacity = 0
        return part

    def finish(self) -> pd.DataFrame:
        """The packets table of everything added; an empty table with every column if nothing was."""
        if not self.size:
            return PACKETS.empty()
        for name, arr in self._cols.items():
            self._cols[name] = _resize(arr, self.size)
        data: dict[str, object] = {}
        addresses = list(self.book.texts)
        cols = self._cols
        for col in PACKETS.columns:
            arr = cols.pop(col.name)
            if col.name == "capture":
                data[col.name] = _categorical(arr, self.captures)
            elif col.name == "interface":
                data[col.name] = _categorical(arr, self.interface_labels)
            elif col.name == "direction":
                data[col.name] = _categorical(arr, DIRECTIONS)
            elif col.name == "encap":
                data[col.name] = _categorical(arr, ENCAPSULATIONS)
            elif col.name == "decode_status":
                data[col.name] = _categorical(arr, DECODE_STATUSES)
            elif col.name in ADDRESS_COLUMNS:
                data[col.name] = _categorical(arr, addresses)
            else:
                data[col.name] = arr.astype(col.dtype, copy=False)
            del arr
        self.size = self.capacity = 0
        return pd.DataFrame(data, copy=False)


def merge_parts(parts: list[dict[str, object]], captures: list[str]) -> pd.DataFrame:
    """One packets table from parts built separately (one capture each, in order).

    Address and interface codes are translated into one shared vocabulary; part ``i`` is
    capture ``i``.
    """
    total = sum(int(p["size"]) for p in parts)  # type: ignore[call-overload]
    if not total:
        return PACKETS.empty()
    addresses: list[str] = []
    address_code: dict[str, int] = {}
    labels: list[str] = []
    label_code: dict[str, int] = {}
    data: dict[str, object] = {}
    luts_addr, luts_label = [], []
    for p in parts:
        luts_addr.append(np.asarray([address_code.setdefault(a, len(address_code)) for a in p["addresses"]]  # type: ignore[union-attr]
                                    + [-1], dtype=np.int32))
        luts_label.append(np.asarray([label_code.setdefault(x, len(label_code)) for x in p["labels"]]  # type: ignore[union-attr]
                                     + [0], dtype=np.int32))
    addresses = list(address_code)
    labels = list(label_code) or [""]
    for col in PACKETS.columns:
        pieces = []
        for i, p in enumerate(parts):
            arr = p["cols"].pop(col.name)  # type: ignore[union-attr]
            if col.name in ADDRESS_COLUMNS:
                arr = luts_addr[i][np.where(arr < 0, luts_addr[i].size - 1, arr)]
            elif col.name == "interface":
                arr = luts_label[i][arr]
            elif col.name == "capture":
                arr = np.full(arr.shape[0], i, dtype=np.int32)
            pieces.append(arr)
        arr = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        del pieces
        if col.name == "capture":
            data[col.name] = _categorical(arr, captures)
        elif col.name == "interface":
            data[col.name] = _categorical(arr, labels)
        elif col.name == "direction":
            data[col.name] = _categorical(arr, DIRECTIONS)
        elif col.name == "encap":
            data[col.name] = _categorical(arr, ENCAPSULATIONS)
        elif col.name == "decode_status":
            data[col.name] = _categorical(arr, DECODE_STATUSES)
        elif col.name in ADDRESS_COLUMNS:
            data[col.name] = _categorical(arr, addresses)
        else:
            data[col.name] = arr.astype(col.dtype, copy=False)
    return pd.DataFrame(data, copy=False)
