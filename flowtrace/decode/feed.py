"""Feeding one reader's batches through the decoder into a packets table builder."""

from __future__ import annotations

from collections.abc import Callable

from flowtrace.capture.reader import CaptureReader
from flowtrace.decode.batch import decode_batch
from flowtrace.decode.state import BatchState
from flowtrace.decode.table import PacketTableBuilder, TableFull


def feed(builder: PacketTableBuilder, code: int, reader: CaptureReader,
         on_batch: Callable[[CaptureReader], None] | None = None, *, later_bytes: int = 0) -> int | None:
    """Decode every batch of ``reader`` into ``builder`` as capture ``code``.

    ``on_batch(reader)`` is called after each batch (progress); ``later_bytes`` is the size of
    the captures still to be decoded into ``builder`` after this one (the table's capacity is
    projected over them too, so that it grows once, not per capture). Returns None when the
    reader is exhausted, or the file offset of the first record not decoded when a
    builder on fixed arrays ran out of room (TableFull).
    """
    start = builder.size
    before = reader.consumed
    for batch in reader.batches():
        n = len(batch)
        try:
            builder.reserve(n, projected=projected_rows(reader, builder.size - start + n, start, later_bytes))
            out = builder.views(n)
            decode_batch(batch, reader.interfaces, builder.book, BatchState(batch, out))
            builder.commit(code, batch, reader.interfaces, out)
        except TableFull:
            return before
        del out
        before = reader.consumed
        if on_batch is not None:
            on_batch(reader)
    return None


def projected_rows(reader: CaptureReader, rows_so_far: int, base_rows: int, later_bytes: int = 0) -> int:
    """Rows the table will hold after this capture (and ``later_bytes`` more), extrapolated
    from this capture's rows per byte so far."""
    if not reader.expected_size or not reader.consumed:
        return 0
    start = reader.window_start
    rate = rows_so_far / max(reader.consumed - start, 1)
    return base_rows + int((reader.expected_size - start + later_bytes) * rate * 1.02) + 256
