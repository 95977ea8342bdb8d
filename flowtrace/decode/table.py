"""Assembling decoded batches into the packets table (one DataFrame, declared dtypes)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.capture.records import DIR_IN, DIR_OUT, DIR_UNKNOWN, Interface, RecordBatch
from flowtrace.decode.addresses import AddressBook
from flowtrace.decode.state import OUTPUT_COLUMNS, BatchState
from flowtrace.schema import DECODE_STATUSES, DIRECTIONS, ENCAPSULATIONS, PACKETS

ADDRESS_COLUMNS = ("src", "dst", "outer_src", "outer_dst", "quoted_src", "quoted_dst")

_DIRECTION_CODE = np.zeros(3, dtype=np.int8)
_DIRECTION_CODE[DIR_IN] = DIRECTIONS.index("in")
_DIRECTION_CODE[DIR_OUT] = DIRECTIONS.index("out")
_DIRECTION_CODE[DIR_UNKNOWN] = DIRECTIONS.index("unknown")


def _small_codes(codes: np.ndarray, ncat: int) -> np.ndarray:
    """Cast categorical codes to the smallest signed integer dtype pandas would pick."""
    for dt in (np.int8, np.int16, np.int32):
        if ncat < np.iinfo(dt).max:
            return codes.astype(dt, copy=False)
    return codes.astype(np.int64, copy=False)


def _categorical(codes: np.ndarray, categories: list[str] | tuple[str, ...]) -> pd.Categorical:
    dtype = pd.CategoricalDtype(list(categories))
    return pd.Categorical.from_codes(_small_codes(codes, len(categories)), dtype=dtype, validate=False)


class PacketTableBuilder:
    """Collects decoded batches of one or more captures; ``finish`` returns the packets table.

    Column pieces are concatenated one column at a time, freeing the pieces as it goes,
    so the peak memory is the table plus one column.
    """

    def __init__(self) -> None:
        self.book = AddressBook()
        self.captures: list[str] = []
        self.interface_labels: list[str] = []
        self._label_codes: dict[str, int] = {}
        self._parts: dict[str, list[np.ndarray]] = {c.name: [] for c in PACKETS.columns}

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

    def add(self, capture: int, batch: RecordBatch, st: BatchState, interfaces: list[Interface]) -> None:
        """Append the rows of one decoded batch of capture code ``capture``."""
        n = len(batch)
        parts = self._parts
        parts["capture"].append(np.full(n, capture, dtype=np.int32))
        parts["frame"].append(np.arange(batch.first_frame, batch.first_frame + n, dtype=np.uint32))
        parts["ts_ns"].append(batch.ts_ns.astype(np.int64, copy=False))
        lut = np.asarray([self._label(i.label) for i in interfaces] or [self._label("")], dtype=np.int32)
        parts["interface"].append(lut[np.clip(batch.interface, 0, lut.size - 1)])
        parts["caplen"].append(batch.caplen.astype(np.uint32))
        parts["wirelen"].append(batch.wirelen.astype(np.uint32))
        for name, _dtype, _default in OUTPUT_COLUMNS:
            arr = st.out[name]
            if name == "direction":
                arr = _DIRECTION_CODE[arr]
            parts[name].append(arr)

    def finish(self) -> pd.DataFrame:
        """The packets table of everything added; an empty table with every column if nothing was."""
        if not self._parts["frame"]:
            return PACKETS.empty()
        data: dict[str, object] = {}
        addresses = list(self.book.texts)
        for col in PACKETS.columns:
            pieces = self._parts[col.name]
            arr = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
            pieces.clear()
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
        return pd.DataFrame(data, copy=False)
