"""Decoding several captures in worker processes gives the same table as one process."""

from __future__ import annotations

import warnings
from pathlib import Path

from flowtrace.capture.files import expand_sources
from flowtrace.errors import CaptureWarning
from flowtrace.pipeline import read_sources

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"


def test_workers_give_the_same_table():
    sources = expand_sources([str(FIXTURES / "cross-node-vxlan")] + [f"dns-{p.stem}={p}" for p in sorted((FIXTURES / "dns").glob("*.pcap"))])
    serial, metas1 = read_sources(sources, workers=1)
    parallel, metas2 = read_sources(sources, workers=2)
    assert serial.equals(parallel)
    assert [m.frames for m in metas1] == [m.frames for m in metas2]
    assert list(parallel["src"].cat.categories) == list(serial["src"].cat.categories)


def test_worker_warnings_reach_the_caller(tmp_path):
    data = (FIXTURES / "cross-node" / "client.pcap").read_bytes()
    (tmp_path / "a.pcap").write_bytes(data[:-30])
    (tmp_path / "b.pcap").write_bytes(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table, _ = read_sources(expand_sources([str(tmp_path)]), workers=2)
    assert any(issubclass(w.category, CaptureWarning) for w in caught)
    assert len(table) > 0


def test_early_pool_is_adopted_by_the_read(monkeypatch):
    from flowtrace.decode import early, reading

    monkeypatch.setattr(reading, "PARALLEL_MIN_BYTES", 0)
    args = [str(FIXTURES / "cross-node-vxlan")] + [f"dns-{p.stem}={p}" for p in sorted((FIXTURES / "dns").glob("*.pcap"))]
    serial, metas1 = read_sources(expand_sources(args), workers=1)
    early.start_early(args)
    assert len(reading._EARLY) == 1
    pool = reading._EARLY[0]
    parallel, metas2 = read_sources(expand_sources(args))
    assert reading._EARLY == []
    assert all(f.done() for f in pool.futures)
    assert serial.equals(parallel)
    assert [m.frames for m in metas1] == [m.frames for m in metas2]


def test_early_pool_for_other_files_is_stopped_not_adopted(monkeypatch):
    from flowtrace.decode import early, reading

    monkeypatch.setattr(reading, "PARALLEL_MIN_BYTES", 0)
    early.start_early([str(FIXTURES / "cross-node")])
    try:
        (pool,) = reading._EARLY
        assert reading.take_early_pool(expand_sources([str(FIXTURES / "same-node")])) is None
        assert reading._EARLY == []
        assert all(f.done() for f in pool.futures)
    finally:
        early.abandon_early()


def test_no_early_pool_for_a_command_reading_captures_one_by_one(monkeypatch):
    from flowtrace.decode import early, reading

    monkeypatch.setattr(reading, "PARALLEL_MIN_BYTES", 0)
    early.start_early([str(FIXTURES / "cross-node")], pool=False)
    assert reading._EARLY == []


def test_no_early_work_when_a_capture_is_not_a_regular_file(monkeypatch):
    # A pipe (<(zcat capture.gz)) read ahead would lose the data the command reads itself;
    # /dev/null stands for it here (reading it cannot block the test).
    from flowtrace.decode import early, halves, reading

    monkeypatch.setattr(reading, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(halves, "SPLIT_MIN_BYTES", 0)
    try:
        early.start_early([str(FIXTURES / "cross-node" / "client.pcap"), "/dev/null"])
        assert reading._EARLY == [] and halves._EARLY == {}
    finally:
        early.abandon_early()
