"""Assembling decoded batches into the packets table (declared dtypes): first as numpy
arrays (``PacketArrays``, what flow building reads without loading pandas), then as one
DataFrame on the same arrays.

The builder owns the table's final column arrays from the start: batches are decoded
straight into slices of them, so no per-batch pieces are kept and nothing is
concatenated. Capacity is projected from the bytes still to read and adjusted with
``ndarray.resize`` (a realloc; for large arrays an mremap, without a copy), then the
arrays are shrunk to the row count. Peak memory is the table itself plus one batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from flowtrace.capture.records import DIR_IN, DIR_OUT, DIR_UNKNOWN, Interface, RecordBatch
from flowtrace.decode.addresses import AddressBook
from flowtrace.decode.state import OUTPUT_COLUMNS
from flowtrace.fork import threaded_map, worth_forking
from flowtrace.schema import DECODE_STATUSES, DIRECTIONS, ENCAPSULATIONS, PACKETS, Column

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")

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


SHARED_DTYPES = dict(_STORE_DTYPES)
"""Column dtypes of a builder on fixed arrays (``PacketTableBuilder.on_columns``)."""


class TableFull(Exception):
    """A builder on fixed arrays (``PacketTableBuilder.on_columns``) has no room for a batch."""


def _small_codes(codes: np.ndarray, ncat: int) -> np.ndarray:
    """Cast categorical codes to the smallest signed integer dtype that holds ``ncat`` codes."""
    for dt in (np.int8, np.int16, np.int32):
        if ncat < np.iinfo(dt).max:
            return codes.astype(dt, copy=False)
    return codes.astype(np.int64, copy=False)


def _categorical(codes: np.ndarray, categories: Sequence[str]) -> pd.Categorical:
    import pandas as pd

    dtype = pd.CategoricalDtype(list(categories))
    return pd.Categorical.from_codes(_small_codes(codes, len(categories)), dtype=dtype, validate=False)


def _lut_index(codes: np.ndarray, size: int) -> np.ndarray:
    """Indexes into a translation table of ``size`` entries whose last one stands for
    "no address": codes as intp, -1 moved to that last entry."""
    idx = codes.astype(np.intp)
    idx[idx < 0] = size - 1
    return idx


def _resize(arr: np.ndarray, rows: int, *, pages_set: bool = False) -> np.ndarray:
    """``arr`` grown or shrunk to ``rows`` rows.

    Growing allocates anew and copies: fresh zeroed memory stays untouched, not resident,
    until rows are written (``ndarray.resize`` would write zeros over all of it at once),
    in small pages (``_small_pages``; ``pages_set``: the caller is inside it already, as
    threads must be: the setting is numpy's, global). Shrinking is done in place when numpy
    allows it (no reference to ``arr`` elsewhere).
    """
    if rows > arr.shape[0]:
        with contextlib.nullcontext() if pages_set else _small_pages():
            out = np.zeros(rows, dtype=arr.dtype)
        out[: arr.shape[0]] = arr
        return out
    try:
        arr.resize(rows, refcheck=True)
        return arr
    except ValueError:  # referenced elsewhere: fall back to a copy
        return arr[:rows].copy()


@contextlib.contextmanager
def _small_pages() -> Iterator[None]:
    """Allocate without numpy's transparent huge pages: a column filled row by row as
    batches arrive would be resident 2 MiB ahead of its rows (a hundred MB over the 52
    columns of a table when two processes fill it). Temporaries keep them."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage  # type: ignore[attr-defined]
    except ImportError:  # another numpy: its default
        yield
        return
    before = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(before)


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
        self._fixed = False

    @classmethod
    def on_columns(cls, cols: dict[str, np.ndarray]) -> PacketTableBuilder:
        """A builder that writes into ``cols`` (one array per SHARED_DTYPES column, equal
        lengths, e.g. views of shared memory) and never reallocates them: ``reserve``
        raises TableFull when a batch does not fit, ``commit`` when codes would need a
        wider dtype (then nothing of the batch is stored)."""
        builder = cls()
        builder._cols = cols
        builder.capacity = min(arr.shape[0] for arr in cols.values())
        builder._fixed = True
        return builder

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
        if self._fixed:
            raise TableFull(f"{need} rows do not fit in {self.capacity}")
        target = max(need, projected, int(self.capacity * 1.5) if not projected else 0, 1024)
        self._resize_columns(target)
        self.capacity = target

    def _resize_columns(self, rows: int) -> None:
        # Popped, not iterated: a reference held by the loop would make numpy refuse to
        # shrink in place and copy every column instead.
        for name in list(self._cols):
            self._cols[name] = _resize(self._cols.pop(name), rows)

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
        lut = np.asarray([self._label(i.label) for i in interfaces] or [self._label("")], dtype=np.int32)
        self._widen_codes(capture, int(lut.max()))
        c = self._cols
        for name in ADDRESS_COLUMNS:
            c[name][a:b] = out[name]
        c["capture"][a:b] = capture
        c["frame"][a:b] = np.arange(batch.first_frame, batch.first_frame + n, dtype=np.uint32)
        c["ts_ns"][a:b] = batch.ts_ns
        c["interface"][a:b] = lut[np.clip(batch.interface, 0, lut.size - 1)]
        c["caplen"][a:b] = batch.caplen
        c["wirelen"][a:b] = batch.wirelen
        c["direction"][a:b] = _DIRECTION_CODE[c["direction"][a:b]]
        self.size = b

    def _widen_codes(self, capture: int, top_label: int) -> None:
        """Widen to int32 the code columns whose dtype cannot hold the codes about to be
        stored: address codes start as int16, capture and interface codes as int8 (as
        their categoricals end up). A builder on fixed arrays raises TableFull instead."""
        wider = [name for name in ADDRESS_COLUMNS
                 if len(self.book) >= np.iinfo(np.int16).max and self._cols[name].dtype != np.int32]
        wider += [name for name, top in (("capture", capture), ("interface", top_label))
                  if top > np.iinfo(self._cols[name].dtype).max]
        if wider and self._fixed:
            raise TableFull(f"columns {', '.join(wider)} need wider codes")
        for name in wider:
            self._cols[name] = self._cols[name].astype(np.int32)

    def truncate(self, rows: int) -> None:
        """Forget every row from ``rows`` on (capacity and vocabularies are kept)."""
        self.size = min(self.size, rows)

    def append(self, cols: dict[str, np.ndarray], spans: list[tuple[int, int, int]], *, capture: int,
               addresses: list[tuple[int, int]], labels: list[str],
               release: Callable[[str], None] | None = None) -> None:
        """Append rows of another builder's columns (decoded from the same capture).

        ``spans`` are (first row, rows, frame offset) in the order the rows join the table;
        ``addresses`` and ``labels`` are that builder's vocabularies (``book.keys()``,
        ``interface_labels``). Its codes are translated into this builder's, its frame
        numbers shifted by each span's offset, and its rows stored as capture ``capture``.
        Columns are taken one at a time by each of two threads, popped from ``cols``, and
        ``release(name)`` is called after each so that its memory can go: the peak is this
        table plus two columns, one of them small.
        """
        address_lut = np.append(self.book.intern(addresses), np.int32(-1))
        label_lut = np.asarray([self._label(x) for x in labels] or [self._label("")], dtype=np.int32)
        self._widen_codes(capture, int(label_lut.max()))
        total = sum(rows for _, rows, _ in spans)
        capacity = max(self.capacity, self.size + total)

        def take(names: list[str]) -> None:
            # Grown one column at a time, each just before its rows arrive and the other
            # builder's copy is released.
            for name in names:
                if self._cols[name].shape[0] < capacity:
                    self._cols[name] = _resize(self._cols[name], capacity, pages_set=True)
                column = cols.pop(name)
                a = self.size
                for first, rows, frame_offset in spans:
                    src = column[first:first + rows]
                    dst = self._cols[name][a:a + rows]
                    if name in ADDRESS_COLUMNS:
                        dst[:] = address_lut[_lut_index(src, address_lut.size)]
                    elif name == "interface":
                        dst[:] = label_lut[np.clip(src, 0, label_lut.size - 1)]
                    elif name == "frame":
                        np.add(src, np.uint32(frame_offset), out=dst)
                    elif name == "capture":
                        dst[:] = capture
                    else:
                        dst[:] = src
                    a += rows
                    del src, dst
                del column
                if release is not None:
                    release(name)

        with _small_pages():
            _two_threads(take, list(cols), lambda n: cols[n].dtype.itemsize)
        self.capacity = capacity
        self.size += total

    def export_part(self) -> dict[str, Any]:
        """The raw columns and vocabularies built so far (to merge in another process)."""
        self._resize_columns(self.size)
        part = {"cols": self._cols, "addresses": list(self.book.texts), "labels": list(self.interface_labels),
                "size": self.size}
        self._cols = {}
        self.size = self.capacity = 0
        return part

    def finish(self) -> pd.DataFrame:
        """The packets table of everything added; an empty table with every column if nothing was."""
        return self.finish_arrays().frame()

    def finish_arrays(self) -> PacketArrays:
        """The packets table of everything added, as arrays (see ``PacketArrays``)."""
        vocab = _Vocabularies(captures=self.captures, labels=self.interface_labels, addresses=list(self.book.texts))
        if not self.size:
            return PacketArrays.empty(vocab)
        self._resize_columns(self.size)
        cols = self._cols
        data = {col.name: vocab.array(col.name, col.dtype, cols.pop(col.name)) for col in PACKETS.columns}
        rows = self.size
        self.size = self.capacity = 0
        return PacketArrays(columns=data, vocab=vocab, rows=rows)


def merge_parts(parts: list[dict[str, Any]], captures: list[str]) -> PacketArrays:
    """One packets table from parts built separately (one capture each, in order).

    Address and interface codes are translated into one shared vocabulary; part ``i`` is
    capture ``i``.
    """
    total = sum(int(p["size"]) for p in parts)
    if not total:
        return PacketArrays.empty(_Vocabularies(captures=captures, labels=[], addresses=[]))
    address_code: dict[str, int] = {}
    label_code: dict[str, int] = {}
    data: dict[str, np.ndarray] = {}
    luts_addr, luts_label = [], []
    for p in parts:
        luts_addr.append(np.asarray([address_code.setdefault(a, len(address_code)) for a in p["addresses"]]
                                    + [-1], dtype=np.int32))
        luts_label.append(np.asarray([label_code.setdefault(x, len(label_code)) for x in p["labels"]]
                                     + [0], dtype=np.int32))
    vocab = _Vocabularies(captures=captures, labels=list(label_code) or [""], addresses=list(address_code))

    def merge(columns: list[Column]) -> None:
        for col in columns:
            pieces = []
            for i, p in enumerate(parts):
                arr = p["cols"].pop(col.name)
                if col.name in ADDRESS_COLUMNS:
                    arr = luts_addr[i][_lut_index(arr, luts_addr[i].size)]
                elif col.name == "interface":
                    arr = luts_label[i][arr]
                elif col.name == "capture":
                    arr = np.full(arr.shape[0], i, dtype=np.int32)
                pieces.append(arr)
            arr = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
            del pieces
            data[col.name] = vocab.array(col.name, col.dtype, arr)

    _two_threads(merge, list(PACKETS.columns), lambda c: parts[0]["cols"][c.name].dtype.itemsize,
                 parallel=worth_forking(total))
    return PacketArrays(columns={c.name: data[c.name] for c in PACKETS.columns}, vocab=vocab, rows=total)


def _two_threads(work: Callable[[list[T]], None], columns: list[T], width: Callable[[T], int], *,
                 parallel: bool = True) -> None:
    """``work`` over ``columns`` shared by two threads (numpy copies without the GIL): one
    takes them from the widest down, the other from the narrowest up, so that the two
    columns in flight at once (copied, not yet released) are rarely both wide."""
    ordered = sorted(columns, key=lambda c: -width(c))
    threaded_map(work, [ordered[0::2], ordered[1::2][::-1]], parallel=parallel)


@dataclass(frozen=True, slots=True)
class _Vocabularies:
    """The categories of a finished table's code columns."""

    captures: list[str]
    labels: list[str]
    addresses: list[str]

    def categories(self, name: str) -> Sequence[str] | None:
        """The categories of code column ``name``; None for a column that holds values."""
        fixed = {"capture": self.captures, "interface": self.labels, "direction": DIRECTIONS,
                 "encap": ENCAPSULATIONS, "decode_status": DECODE_STATUSES}
        if name in fixed:
            return fixed[name]
        if name in ADDRESS_COLUMNS:
            return self.addresses
        return None

    def array(self, name: str, dtype: str, arr: np.ndarray) -> np.ndarray:
        """The stored array of column ``name``: for a code column its codes in the
        narrowest integer type that holds them (as a categorical keeps them), else ``arr``
        in its declared ``dtype``."""
        cats = self.categories(name)
        if cats is not None:
            return _small_codes(arr, len(cats))
        return arr.astype(dtype, copy=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketArrays:
    """The packets table as numpy arrays, before it is a DataFrame: ``columns`` holds one
    array per column of ``flowtrace.schema.PACKETS`` in its declared dtype, code columns
    (categoricals) as their codes (-1 missing) with their categories in ``vocab``.

    ``frame()`` makes the DataFrame on the same arrays. Flow building reads either, so the
    ``flows`` command needs no pandas (0.2 s to import) when it prints a conn.log.
    """

    columns: dict[str, np.ndarray]
    vocab: _Vocabularies
    rows: int

    @classmethod
    def empty(cls, vocab: _Vocabularies) -> PacketArrays:
        """No rows: every column empty, in its stored dtype."""
        cols = {c.name: np.zeros(0, dtype=_STORE_DTYPES.get(c.name, "int64")) for c in PACKETS.columns}
        return cls(columns={c.name: vocab.array(c.name, c.dtype, cols[c.name]) for c in PACKETS.columns},
                   vocab=vocab, rows=0)

    def __len__(self) -> int:
        return self.rows

    def categories(self, name: str) -> list[str]:
        """The categories of code column ``name`` (texts; KeyError for a value column)."""
        cats = self.vocab.categories(name)
        if cats is None:
            raise KeyError(f"{name} is not a code column")
        return [str(c) for c in cats]

    def frame(self) -> pd.DataFrame:
        """The packets table (a DataFrame sharing these arrays; code columns categoricals);
        with no rows, ``PACKETS.empty()``."""
        import pandas as pd

        if not self.rows:
            return PACKETS.empty()
        data: dict[str, object] = {}
        for name, arr in self.columns.items():
            cats = self.vocab.categories(name)
            data[name] = arr if cats is None else _categorical(arr, cats)
        return pd.DataFrame(data, copy=False)
