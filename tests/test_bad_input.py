"""Files that are not captures, cut captures, and what read_packets does with them."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import pytest
from craft import (
    LINKTYPE_ETHERNET,
    T0,
    Pcapng,
    Rec,
    assert_packets_schema,
    ether,
    gz,
    pcap,
    pcap_record_offsets,
)
from scapy.all import IP, TCP

import flowtrace
from flowtrace.errors import (
    CaptureError,
    CaptureFormatError,
    CaptureOpenError,
    CaptureWarning,
    FlowtraceError,
)


def frame(i: int) -> bytes:
    return ether(
        bytes(
            IP(src="10.0.0.1", dst="10.0.0.2", id=i) / TCP(sport=1000 + i, dport=80) / (b"d" * 40)
        )
    )


def three_records(**kw) -> bytes:
    return pcap([Rec(frame(i), T0, i) for i in range(3)], **kw)


def read_quietly(path: Path):
    """read_packets with CaptureWarning turned into an error: the file must be whole."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaptureWarning)
        return flowtrace.read_packets(str(path))


def assert_names(error: CaptureError, path: Path) -> None:
    assert str(path) in str(error), str(error)
    assert Path(error.path).resolve() == path.resolve()
    assert "\n" not in str(error)


# --------------------------------------------------------------------------- not a capture


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello, this is a README and not a capture at all\n" * 3,
        b"\xd4\xc3\xb2",  # three bytes of a pcap magic
        b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00",  # pcap header cut after 8 bytes
        b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00",  # pcapng SHB cut after 8 bytes
        b"\x00" * 64,
        b"%PDF-1.7\n" + bytes(200),
    ],
    ids=["empty", "text", "3-bytes", "short-pcap-header", "short-shb", "zeros", "pdf"],
)
def test_not_a_capture(write_capture, content):
    path = write_capture("bad.pcap", content)
    with pytest.raises(CaptureFormatError) as e:
        flowtrace.read_packets(str(path))
    assert_names(e.value, path)


def test_gzip_of_something_else(write_capture):
    path = write_capture("notes.pcap.gz", gz(b"just some text, compressed\n" * 10))
    with pytest.raises(CaptureFormatError) as e:
        flowtrace.read_packets(str(path))
    assert_names(e.value, path)


def test_empty_gzip(write_capture):
    path = write_capture("empty.pcap.gz", gz(b""))
    with pytest.raises(CaptureFormatError) as e:
        flowtrace.read_packets(str(path))
    assert_names(e.value, path)


@pytest.mark.parametrize("linktype", [65000, 0xFFFF, 3333])
def test_unknown_link_type_in_pcap_header(write_capture, linktype):
    path = write_capture("odd.pcap", three_records(linktype=linktype))
    with pytest.raises(CaptureFormatError) as e:
        flowtrace.read_packets(str(path))
    assert_names(e.value, path)


def test_pcapng_with_bad_byte_order_magic(write_capture):
    data = bytearray(Pcapng().to_bytes())
    data[8:12] = b"\x01\x02\x03\x04"
    path = write_capture("bad.pcapng", bytes(data))
    with pytest.raises(CaptureFormatError) as e:
        flowtrace.read_packets(str(path))
    assert_names(e.value, path)


def test_pcapng_with_unsupported_major_version(write_capture):
    ng = Pcapng(shb=False)
    ng.section(version=(2, 0))
    ng.interface(LINKTYPE_ETHERNET)
    ng.packet(0, frame(1))
    path = write_capture("v2.pcapng", ng.to_bytes())
    with pytest.raises(CaptureFormatError) as e:
        flowtrace.read_packets(str(path))
    assert_names(e.value, path)


def test_pcapng_section_of_unknown_version_after_a_good_one(write_capture):
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET)
    ng.packet(0, frame(1))
    ng.section(version=(2, 0))
    ng.interface(LINKTYPE_ETHERNET)
    ng.packet(0, frame(2))
    path = write_capture("v1v2.pcapng", ng.to_bytes())
    with pytest.warns(CaptureWarning):
        df = flowtrace.read_packets(str(path))
    assert df.sport.tolist()[:1] == [1001]


def test_pcapng_without_section_header(write_capture):
    ng = Pcapng(shb=False)
    ng.interface(LINKTYPE_ETHERNET)
    ng.packet(0, frame(1))
    path = write_capture("headless.pcapng", ng.to_bytes())
    with pytest.raises(CaptureFormatError) as e:
        flowtrace.read_packets(str(path))
    assert_names(e.value, path)


# --------------------------------------------------------------------------- cannot open


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.pcap"
    with pytest.raises(CaptureOpenError) as e:
        flowtrace.read_packets(str(path))
    assert_names(e.value, path)


def test_missing_file_named(tmp_path):
    path = tmp_path / "nowhere.pcap"
    with pytest.raises(CaptureOpenError) as e:
        flowtrace.read_packets(f"client={path}")
    assert str(path) in str(e.value)


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_directory_without_captures(tmp_path, content):
    d = tmp_path / "caps"
    d.mkdir()
    if content:
        (d / content).write_text("nothing to see\n")
    with pytest.raises(CaptureOpenError) as e:
        flowtrace.read_packets(str(d))
    assert str(d) in str(e.value)


def test_one_file_given_twice_is_read_once_and_two_files_need_two_names(write_capture, tmp_path):
    good = write_capture("good.pcap", three_records())
    once = flowtrace.read_packets(str(good))
    # a file and the directory holding it, by another spelling of its path
    again = flowtrace.read_packets([str(good), str(good.parent), str(good.parent / "." / good.name)])
    assert again.equals(once)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "good.pcap").write_bytes(good.read_bytes())
    with pytest.raises(CaptureOpenError) as e:
        flowtrace.read_packets([str(good), str(other / "good.pcap")])
    assert "capture name 'good' is also used by" in str(e.value)
    both = flowtrace.read_packets([str(good), f"copy={other / 'good.pcap'}"])
    assert list(both["capture"].cat.categories) == ["good", "copy"]


def test_one_bad_file_among_good_ones_names_the_bad_one(write_capture):
    good = write_capture("good.pcap", three_records())
    bad = write_capture("bad.pcap", b"garbage" * 10)
    with pytest.raises(CaptureFormatError) as e:
        flowtrace.read_packets([str(good), str(bad)])
    assert_names(e.value, bad)


def test_errors_are_flowtrace_errors():
    assert issubclass(CaptureFormatError, FlowtraceError)
    assert issubclass(CaptureOpenError, FlowtraceError)
    assert issubclass(CaptureWarning, UserWarning)


# --------------------------------------------------------------------------- cut captures


def test_whole_capture_gives_no_warning(write_capture):
    df = read_quietly(write_capture("whole.pcap", three_records()))
    assert len(df) == 3


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize(
    "cut",
    ["inside-last-data", "inside-last-header", "after-last-header", "one-byte-short"],
)
def test_pcap_cut_mid_record(write_capture, big_endian, cut):
    data = three_records(big_endian=big_endian)
    start, end = pcap_record_offsets(data, big_endian=big_endian)[-1]
    keep = {
        "inside-last-data": start + 16 + 10,
        "inside-last-header": start + 7,
        "after-last-header": start + 16,
        "one-byte-short": end - 1,
    }[cut]
    path = write_capture("cut.pcap", data[:keep])
    with pytest.warns(CaptureWarning):
        df = flowtrace.read_packets(str(path))
    assert_packets_schema(df)
    assert df.frame.tolist() == [1, 2]
    assert df.sport.tolist() == [1000, 1001]
    assert (df.decode_status == "ok").all()


def test_pcap_trailing_garbage_shorter_than_a_record_header(write_capture):
    path = write_capture("tail.pcap", three_records() + b"\x01\x02\x03\x04\x05\x06\x07")
    with pytest.warns(CaptureWarning):
        df = flowtrace.read_packets(str(path))
    assert len(df) == 3


def test_pcapng_cut_mid_block(write_capture):
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET, name="eth0")
    for i in range(3):
        ng.packet(0, frame(i), ts=i)
    data = ng.to_bytes()
    path = write_capture("cut.pcapng", data[: len(data) - 30])
    with pytest.warns(CaptureWarning):
        df = flowtrace.read_packets(str(path))
    assert_packets_schema(df)
    assert df.sport.tolist() == [1000, 1001]


def test_pcapng_cut_in_block_header(write_capture):
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET, name="eth0")
    for i in range(2):
        ng.packet(0, frame(i), ts=i)
    data = ng.to_bytes() + struct.pack("<II", 6, 200)[:6]
    path = write_capture("cut.pcapng", data)
    with pytest.warns(CaptureWarning):
        df = flowtrace.read_packets(str(path))
    assert df.sport.tolist() == [1000, 1001]


def complete_records_in(pcap_prefix: bytes) -> int:
    return len(pcap_record_offsets(pcap_prefix))


def test_gzip_cut_mid_stream(write_capture):
    raw = pcap([Rec(frame(i) + bytes(range(256)) * 4, T0, i) for i in range(40)])
    packed = gz(raw)
    cut = packed[: len(packed) // 2]
    d = zlib.decompressobj(wbits=31)
    recoverable = d.decompress(cut)
    expected = complete_records_in(recoverable)
    assert 0 < expected < 40
    path = write_capture("cut.pcap.gz", cut)
    with pytest.warns(CaptureWarning):
        df = flowtrace.read_packets(str(path))
    assert_packets_schema(df)
    assert len(df) == expected


def test_gzip_missing_trailer(write_capture):
    packed = gz(three_records())
    path = write_capture("notrailer.pcap.gz", packed[:-8])
    with pytest.warns(CaptureWarning):
        df = flowtrace.read_packets(str(path))
    assert len(df) == 3


# --------------------------------------------------------------------------- packets are data


def test_bad_packets_never_raise(read_capture):
    junk = [
        b"",
        b"\x00",
        b"\xff" * 13,
        b"\x00" * 14,
        ether(b"\x45" + b"\x00" * 3),
        ether(b"\x60\x00"),
        bytes(range(256)),
    ]
    df = read_capture(pcap([*junk, frame(9)]))
    assert df.frame.tolist() == list(range(1, len(junk) + 2))
    assert df.caplen.tolist() == [len(j) for j in junk] + [len(frame(9))]
    assert df.decode_status.iloc[-1] == "ok"
    assert set(df.decode_status.iloc[:-1].astype(str)) <= {"truncated", "malformed", "unsupported"}
