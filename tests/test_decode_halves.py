"""One pcap decoded by two processes gives exactly the table, frames and warnings of one pass."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import pytest

from flowtrace.capture.files import CaptureSource
from flowtrace.capture.pcap import PcapReader
from flowtrace.decode import early, halves
from flowtrace.pipeline import read_sources
from tests.craft import Rec, pcap, pcap_record_offsets

NODE = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps" / "many-connections" / "node1.pcap"


@pytest.fixture(params=[2, 16], ids=["two-segments", "many-segments"])
def splits(monkeypatch, request):
    """Split every pcap, however small, in two segments or in many; count the reads that
    really were split."""
    monkeypatch.setattr(halves, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(halves, "READ_SEGMENTS", request.param)
    done: list[bool] = []
    real = halves.decode_halves

    def spy(*args, **kwargs):
        meta = real(*args, **kwargs)
        done.append(meta is not None)
        return meta

    monkeypatch.setattr("flowtrace.decode.reading.decode_halves", spy)
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


# -- started early, by the command line, before its imports -------------------------------

def _wait_for_child(split: halves._Split, timeout: float = 10.0) -> None:
    """Until the child has ended (taken every segment it will take)."""
    import time

    pid = split.child._child[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.01)
    raise AssertionError("the early child did not end")


def _early_then_read(path: Path, monkeypatch) -> tuple[halves._Split, list[list[tuple[int, int, int]]]]:
    """Start ``path`` early, let the child take every segment it will, then read it with
    two processes and check the table, frames and warnings against a one-pass read;
    returns the split and the spans the read appended."""
    monkeypatch.setattr(halves, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(halves, "SEGMENT_BYTES", 64 << 10)
    appended: list[list[tuple[int, int, int]]] = []
    real_append = halves.PacketTableBuilder.append

    def spy(self, cols, spans, **kwargs):
        appended.append(list(spans))
        return real_append(self, cols, spans, **kwargs)

    monkeypatch.setattr(halves.PacketTableBuilder, "append", spy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        one, m1 = read_sources([CaptureSource(name="cap", path=path)], workers=1)
    w1 = [str(w.message) for w in caught]
    early.start_early([f"cap={path}"])
    assert len(halves._EARLY) == 1
    split = next(iter(halves._EARLY.values()))
    _wait_for_child(split)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        two, m2 = read_sources([CaptureSource(name="cap", path=path)])
    assert halves._EARLY == {}
    assert one.equals(two)
    assert [m.frames for m in m1] == [m.frames for m in m2] == [len(two)]
    assert m1[0].warnings == m2[0].warnings
    assert w1 == [str(w.message) for w in caught]
    return split, appended


def test_early_split_is_adopted_by_the_read(monkeypatch):
    split, appended = _early_then_read(NODE, monkeypatch)
    # The child had time for every segment but the first: all of them were its rows.
    assert sum(len(spans) for spans in appended) == len(split.bounds) - 2


@pytest.mark.parametrize("problem", ["cut", "corrupt", "full"])
def test_early_child_leaves_a_bad_segment_to_the_parent(monkeypatch, tmp_path, problem):
    data = bytearray(NODE.read_bytes())
    if problem == "cut":
        data = data[:-37]
    elif problem == "corrupt":
        offsets = pcap_record_offsets(bytes(data))
        struct.pack_into("<I", data, offsets[len(offsets) * 3 // 4][0] + 8, 0x7FFF_FFFF)
    else:
        monkeypatch.setattr(halves, "HEADROOM", 0.3)
        monkeypatch.setattr(halves, "MIN_ROWS", 0)
    path = tmp_path / "bad.pcap"
    path.write_bytes(bytes(data))
    split, appended = _early_then_read(path, monkeypatch)
    taken = sum(len(spans) for spans in appended)
    if problem == "full":
        # The child stopped at the segment that did not fit, which the parent decoded
        # itself, and kept the ones after it.
        assert 0 < taken < len(split.bounds) - 2
    else:
        # The cut segment is the last; at the corrupt header the walk stops, as one pass
        # stops there: nothing of the child's is used.
        assert taken == 0


def test_start_early_leaves_what_it_cannot_use_to_the_command(monkeypatch, tmp_path):
    monkeypatch.setattr(halves, "SPLIT_MIN_BYTES", 0)
    text = tmp_path / "notes.txt"
    text.write_text("not a capture\n" * 10)
    try:
        early.start_early([str(text)])  # not a capture: the command reports it
        early.start_early([str(tmp_path / "missing.pcap")])
        early.start_early([])
        assert halves._EARLY == {}
        monkeypatch.setenv("FLOWTRACE_WORKERS", "1")
        early.start_early([str(NODE)])
        assert halves._EARLY == {}
    finally:
        early.abandon_early()


def test_early_split_of_a_file_that_changed_is_stopped(monkeypatch, tmp_path):
    import os

    monkeypatch.setattr(halves, "SPLIT_MIN_BYTES", 0)
    path = tmp_path / "growing.pcap"
    path.write_bytes(NODE.read_bytes())
    early.start_early([str(path)])
    (split,) = halves._EARLY.values()
    pid = split.child._child[0]
    with path.open("ab") as f:  # tcpdump still writing
        f.write(NODE.read_bytes()[24:])
    two, _ = read_sources([CaptureSource(name="cap", path=path)])
    one, _ = read_sources([CaptureSource(name="cap", path=path)], workers=1)
    assert one.equals(two)
    assert halves._EARLY == {}
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_abandoned_early_split_stops_its_child(monkeypatch):
    import os

    monkeypatch.setattr(halves, "SPLIT_MIN_BYTES", 0)
    early.start_early([str(NODE)])
    (split,) = halves._EARLY.values()
    pid = split.child._child[0]
    early.abandon_early()
    assert halves._EARLY == {}
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.fixture(scope="module")
def big_pcap(tmp_path_factory):
    """A pcap above SPLIT_MIN_BYTES: node1.pcap's records repeated, 1,000 s apart."""
    data = NODE.read_bytes()
    body = [data[s:e] for s, e in pcap_record_offsets(data)]
    copies = halves.SPLIT_MIN_BYTES // (len(data) - 24) + 1
    out = [data[:24]]
    for k in range(copies):
        for rec in body:
            sec = struct.unpack_from("<I", rec, 0)[0] + 1000 * k
            out.append(struct.pack("<I", sec) + rec[4:])
    path = tmp_path_factory.mktemp("big") / "big.pcap"
    path.write_bytes(b"".join(out))
    return path


def test_command_line_reads_a_large_capture_early(big_pcap):
    import os
    import subprocess
    import sys

    def conn_log(**env: str) -> list[str]:
        run = subprocess.run([sys.executable, "-m", "flowtrace", "flows", "--zeek", str(big_pcap)],
                             capture_output=True, text=True, check=True, env={**os.environ, **env})
        assert run.stderr == ""
        return [line for line in run.stdout.splitlines() if not line.startswith(("#open", "#close"))]

    early = conn_log()
    assert early == conn_log(FLOWTRACE_WORKERS="1")
    assert len(early) > 1000


def test_early_child_dies_with_its_parent(big_pcap, tmp_path):
    # A command that ends (an error, os._exit) before its read adopted the early child:
    # Linux kills the child with it, mid-file.
    import subprocess
    import sys
    import time

    script = ("import os, sys\n"
              "from flowtrace.decode import early, halves\n"
              "early.start_early([sys.argv[1]])\n"
              "(split,) = halves._EARLY.values()\n"
              "print(split.child._child[0], flush=True)\n"
              "os._exit(0)\n")
    out = tmp_path / "pid"
    with out.open("w") as f:  # a file, not a pipe: the child holds it too, and must not be waited for
        subprocess.run([sys.executable, "-c", script, str(big_pcap)], stdout=f, check=True)
    pid = int(out.read_text())
    time.sleep(0.05)  # decoding the 68 MB takes the child far longer than this
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z")  # a zombie until whoever adopted it reaps it


@pytest.mark.parametrize("delay", [0.1, 0.3])
def test_ctrl_c_is_one_line_whenever_it_comes(big_pcap, delay):
    # While the command line loads (the early child already at work) or while it reads.
    import signal
    import subprocess
    import sys
    import time

    p = subprocess.Popen([sys.executable, "-m", "flowtrace", "flows", "--zeek", str(big_pcap)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    if p.poll() is not None:
        pytest.skip("the command ended before the signal")
    p.send_signal(signal.SIGINT)
    err = p.communicate()[1]
    assert (p.returncode, err) == (130, "flowtrace: interrupted\n")


def test_windows_share_one_batch_buffer_and_a_read_to_the_end_frees_it():
    """Windows of one file read one after another reuse the batch buffer (a fresh one per
    window cost its page faults); a read that ends with the file frees it."""
    from flowtrace.capture.reader import CaptureFile

    offsets = [s for s, _ in pcap_record_offsets(NODE.read_bytes())]
    cut = offsets[len(offsets) // 2]
    with CaptureFile(CaptureSource(name="cap", path=NODE)) as reader:
        reader.window(start=offsets[0], stop=cut)
        first = [len(b) for b in reader.batches()]
        kept = reader._buffer
        assert kept is not None and sum(first) == len(offsets) // 2
        reader.window(start=cut, stop=None, frames_before=reader.frames)
        seen = []
        for batch in reader.batches():
            seen.append(batch.data is kept)
        assert seen and all(seen)
        assert reader._buffer is None
        assert reader.frames == len(offsets)


def test_record_boundary_reads_further_when_a_chain_does_not_fit_its_first_read(tmp_path):
    """Records of 9,000 bytes: sixteen in a row do not fit the first 64 KiB read, so the
    search reads its whole span and still finds the next record."""
    from flowtrace.capture.reader import CaptureFile

    data = pcap([Rec(bytes([i % 251]) * 9000, frac=i) for i in range(80)])
    path = tmp_path / "jumbo.pcap"
    path.write_bytes(data)
    offsets = [s for s, _ in pcap_record_offsets(data)]
    with CaptureFile(CaptureSource(name="cap", path=path)) as reader:
        assert isinstance(reader, PcapReader)
        for near in (offsets[3] + 7, offsets[40] - 1, offsets[60] + 100):
            assert reader.record_boundary(near) == next(o for o in offsets if o >= near)


def test_a_child_whose_parent_ended_before_it_asked_to_die_with_it_ends_at_once():
    # PR_SET_PDEATHSIG after the parent is gone sends nothing: the child checks who its
    # parent is now (the race the early child lost under load in CI once).
    import os

    from flowtrace.decode.halves import die_with_parent

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            die_with_parent(os.getppid() + 1_000_000)  # not its parent: as if it had ended
        finally:
            os._exit(3)  # reached only if die_with_parent returned
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            die_with_parent(os.getppid())  # its parent, alive: it goes on
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3
