"""The one place where the stages are wired together: captures -> packets -> … -> reports."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from os import PathLike

import pandas as pd

from flowtrace.capture.files import CaptureSource, expand_sources
from flowtrace.capture.memory import pin_mmap_threshold
from flowtrace.capture.reader import CaptureFile, CaptureReader
from flowtrace.decode.batch import decode_batch
from flowtrace.decode.state import BatchState
from flowtrace.decode.summary import CaptureSummary, summarize
from flowtrace.decode.table import PacketTableBuilder
from flowtrace.flows import FlowSet
from flowtrace.flows import build as build_flows

log = logging.getLogger("flowtrace")
log.addHandler(logging.NullHandler())

CaptureArg = str | PathLike[str]


def _as_list(captures: CaptureArg | Sequence[CaptureArg]) -> list[str]:
    if isinstance(captures, (str, PathLike)):
        return [str(captures)]
    return [str(c) for c in captures]


def read_sources(sources: Sequence[CaptureSource]) -> tuple[pd.DataFrame, list[CaptureReader]]:
    """Read and decode ``sources`` into one packets table; also return each capture's reader.

    Raises CaptureError (CaptureOpenError, CaptureFormatError) for a file that cannot be
    read at all; a capture cut mid-record yields its complete records and a CaptureWarning.
    """
    pin_mmap_threshold()
    builder = PacketTableBuilder()
    readers: list[CaptureReader] = []
    for source in sources:
        code = builder.add_capture(source.name)
        with CaptureFile(source) as reader:
            start = builder.size
            for batch in reader.batches():
                n = len(batch)
                builder.reserve(n, projected=_projected_rows(reader, builder.size - start + n, start))
                out = builder.views(n)
                decode_batch(batch, reader.interfaces, builder.book, BatchState(batch, out))
                builder.commit(code, batch, reader.interfaces, out)
                del out
            reader.close()
        readers.append(reader)
        log.debug("read %s: %d frames", source.path, reader.frames)
    return builder.finish(), readers


def _projected_rows(reader: CaptureReader, rows_so_far: int, base_rows: int) -> int:
    """Rows the table will hold after this capture, extrapolated from the bytes read so far."""
    if not reader.expected_size or not reader.consumed:
        return 0
    rate = rows_so_far / max(reader.consumed, 1)
    return base_rows + int(reader.expected_size * rate * 1.02) + 256


def read_packets(captures: CaptureArg | Sequence[CaptureArg]) -> pd.DataFrame:
    """Read captures into the packets table (see docs/tables.md), one row per frame.

    ``captures`` is a path, ``NAME=PATH``, a directory of captures, or a list of them.
    Returns a DataFrame with the columns of ``flowtrace.schema.PACKETS``; rows are in
    capture order, then frame order. Raises CaptureOpenError / CaptureFormatError.
    """
    packets, _ = read_sources(expand_sources(_as_list(captures)))
    return packets


def inspect_captures(captures: CaptureArg | Sequence[CaptureArg]) -> list[CaptureSummary]:
    """Describe each capture: format, interfaces, counts per status/protocol (``flowtrace info``)."""
    sources = expand_sources(_as_list(captures))
    summaries = []
    for source in sources:
        packets, readers = read_sources([source])
        summaries.append(summarize(readers[0], packets))
    return summaries


def flow_set(source: pd.DataFrame | CaptureArg | Sequence[CaptureArg], *,
             timeouts: Mapping[str, float] | None = None,
             ignore_checksums: bool = False) -> tuple[pd.DataFrame, FlowSet]:
    """The packets table of ``source`` and its FlowSet (flows, and each packet's flow and side).

    ``source`` is a packets table or what ``read_packets`` takes. ``timeouts`` overrides
    conntrack's idle timeouts (seconds, keys of ``flowtrace.flows.CONNTRACK_TIMEOUTS``);
    ``ignore_checksums`` leaves bad-checksum letters out of histories (``zeek -C``).
    Raises CaptureError for unreadable captures and InputError for a bad timeout.
    """
    packets = source if isinstance(source, pd.DataFrame) else read_packets(source)
    return packets, build_flows(packets, timeouts=timeouts, ignore_checksums=ignore_checksums)


def flows(source: pd.DataFrame | CaptureArg | Sequence[CaptureArg], *,
          timeouts: Mapping[str, float] | None = None, ignore_checksums: bool = False) -> pd.DataFrame:
    """The flows table (see docs/flows.md): one row per connection per observation point.

    ``source`` is a packets table (from ``read_packets``) or captures as ``read_packets``
    takes them. ``timeouts`` overrides conntrack's idle timeouts in seconds;
    ``ignore_checksums`` leaves bad-checksum letters out of histories (``zeek -C``). Raises
    CaptureError for unreadable captures and InputError for a bad timeout.
    """
    return flow_set(source, timeouts=timeouts, ignore_checksums=ignore_checksums)[1].flows
