"""One pcap decoded by two processes gives exactly the table, frames and warnings of one pass."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import pytest

from flowtrace.capture.files import CaptureSource
from flowtrace.capture.pcap import PcapReader
from flowtrace.decode import halves
from flowtrace.pipeline import read_sources
from tests.craft import Rec, pcap, pcap_record_offsets

NODE = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps" / "many-connections" / "node1.pcap"


@pytest.fixture(params=[1 << 40, 64 << 10], ids=["two-segments", "many-segments"])
def splits(monkeypatch, request):
    """Split every pcap, however small, in two segments or in many; count the reads that
    really were split."""
    monkeypatch.setattr(halves, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(halves, "SEGMENT_BYTES", request.param)
    done: list[bool] = []
    real = halves.decode_halves

    def spy(*args, **kwargs):
        meta = real(*args, **kwargs)
        done.append(meta is not None)
        return meta

    monkeypatch.setattr("flowtrace.pipeline.decode_halves", spy)
    return done


def _both(path: Path):
    """(one-pass table, metas, warnings), (two-process table, metas, warnings)."""
    out = []
    for workers in (1, 2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table, metas = read_sources([CaptureSource(name="cap", path=path)], workers=workers)
        out.append((table, metas, [str(w.message) for w in caught]))
    return out


def _assert_same(path: Path) -> None:
    (one, m1, w1), (two, m2, w2) = _both(path)
    assert len(one) > 0
    assert one.equals(two)
    # Categories are listed in the order batches met them (sorted within a batch), so
    # their order depends on where batches start; the values do not.
    assert set(one["src"].cat.categories) == set(two["src"].cat.categories)
    assert two["frame"].tolist() == list(range(1, len(two) + 1))
    assert [m.frames for m in m1] == [m.frames for m in m2]
    assert [i.packets for i in m1[0].interfaces] == [i.packets for i in m2[0].interfaces]
    assert m1[0].warnings == m2[0].warnings
    assert w1 == w2


def _rewrite(path: Path, tmp_path: Path, **kwargs) -> Path:
    """The records of ``path`` rewritten with craft.pcap (other byte order, ns, ...)."""
    data = path.read_bytes()
    linktype = struct.unpack_from("<I", data, 20)[0]
    recs = []
    for start, end in pcap_record_offsets(data):
        sec, frac, _, wirelen = struct.unpack_from("<IIII", data, start)
        recs.append(Rec(data[start + 16 : end], sec, frac * (1000 if kwargs.get("nanosecond") else 1), wirelen))
    out = tmp_path / "rewritten.pcap"
    out.write_bytes(pcap(recs, linktype=linktype, **kwargs))
    return out


def test_split_equals_one_pass(splits):
    _assert_same(NODE)
    assert splits[-1] is True


@pytest.mark.parametrize("kwargs", [{"big_endian": True}, {"nanosecond": True}])
def test_split_other_byte_orders_and_resolutions(tmp_path, splits, kwargs):
    _assert_same(_rewrite(NODE, tmp_path, **kwargs))
    assert splits[-1] is True


def test_file_cut_in_the_second_half(tmp_path, splits):
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(NODE.read_bytes()[:-37])
    _assert_same(cut)
    assert splits[-1] is True


@pytest.mark.parametrize("quarter", [1, 3])
def test_corrupt_header(tmp_path, splits, quarter):
    # Whoever meets the corrupt header first: the child leaves its segment to the parent,
    # whose walk stops there as a one-pass read does; nothing after it is kept.
    data = bytearray(NODE.read_bytes())
    offsets = pcap_record_offsets(bytes(data))
    start, _ = offsets[len(offsets) * quarter // 4]
    struct.pack_into("<I", data, start + 8, 0x7FFF_FFFF)
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(bytes(data))
    _assert_same(bad)
    assert splits[-1] is True


def test_wrong_boundary_guess_falls_back(monkeypatch, splits):
    real = PcapReader.record_boundary
    monkeypatch.setattr(PcapReader, "record_boundary", lambda self, near, **kw: real(self, near, **kw) + 2)
    _assert_same(NODE)
    assert splits[-1] is False


@pytest.mark.parametrize("headroom", [0.0, 0.5])
def test_child_table_full_parent_reads_the_rest(monkeypatch, splits, headroom):
    monkeypatch.setattr("flowtrace.capture.reader.CHUNK_BYTES", 64 << 10)
    monkeypatch.setattr(halves, "HEADROOM", headroom)
    monkeypatch.setattr(halves, "MIN_ROWS", 0)
    _assert_same(NODE)
    assert splits[-1] is True


def test_small_batches(monkeypatch, splits):
    monkeypatch.setattr("flowtrace.capture.reader.CHUNK_BYTES", 16 << 10)
    _assert_same(NODE)
    assert splits[-1] is True


def test_one_worker_never_splits(splits):
    read_sources([CaptureSource(name="cap", path=NODE)], workers=1)
    assert splits == []


def test_record_boundary_finds_the_record_after_a_midpoint():
    data = NODE.read_bytes()
    offsets = [s for s, _ in pcap_record_offsets(data)]
    from flowtrace.capture.reader import CaptureFile

    with CaptureFile(CaptureSource(name="cap", path=NODE)) as reader:
        assert isinstance(reader, PcapReader)
        for near in (offsets[10] + 1, offsets[500] - 3, offsets[-40] + 5):
            assert reader.record_boundary(near) == next(o for o in offsets if o >= near)


def test_failed_child_leaves_every_segment_to_the_parent(monkeypatch, splits):
    def broken(cols):
        raise MemoryError("no room")

    monkeypatch.setattr(halves.PacketTableBuilder, "on_columns", staticmethod(broken))
    _assert_same(NODE)
    assert splits[-1] is True


def test_second_half_with_more_addresses_than_int16_codes(tmp_path, splits, monkeypatch):
    monkeypatch.setattr("flowtrace.capture.reader.CHUNK_BYTES", 256 << 10)
    # 70,000 UDP datagrams from distinct sources: the child's int16 address codes overflow,
    # it stops, and the parent decodes the rest with int32 codes.
    recs = []
    for i in range(70_000):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, i & 0xFFFF, 0, 64, 17, 0,
                         struct.pack("!I", 0x0A000000 + i), bytes([10, 255, 0, 1]))
        recs.append(Rec(ip + struct.pack("!HHHH", 1000, 53, 8, 0), frac=i))
    path = tmp_path / "many.pcap"
    path.write_bytes(pcap(recs, linktype=101))
    _assert_same(path)
    assert splits[-1] is True
