"""Capture containers and link layers: pcap, pcapng, gzip, and every supported link type."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from craft import (
    AF_INET,
    AF_INET6_BSD,
    AF_INET6_DARWIN,
    AF_INET6_FREEBSD,
    EPB_INBOUND,
    EPB_OUTBOUND,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    SLL_BROADCAST,
    SLL_HOST,
    SLL_MULTICAST,
    SLL_OTHERHOST,
    SLL_OUTGOING,
    T0,
    Pcapng,
    Rec,
    assert_packets_schema,
    check_row,
    ether,
    gz,
    loop,
    null,
    pcap,
    sll,
    sll2,
)
from scapy.all import IP, TCP, UDP, IPv6

import flowtrace
from flowtrace.schema import PACKETS

NS = 1_000_000_000


def tcp4(sport: int = 40000, dport: int = 80, payload: bytes = b"hello") -> bytes:
    return bytes(
        IP(src="10.0.0.1", dst="10.0.0.2", id=4321, ttl=63)
        / TCP(sport=sport, dport=dport, seq=1000, ack=2000, flags="PA", window=501)
        / payload
    )


def udp6() -> bytes:
    return bytes(
        IPv6(src="fd00::1", dst="fd00:0:0:1::2", hlim=64)
        / UDP(sport=5000, dport=6000)
        / (b"x" * 10)
    )


TCP4 = {
    "ip_version": 4,
    "src": "10.0.0.1",
    "dst": "10.0.0.2",
    "proto": 6,
    "sport": 40000,
    "dport": 80,
    "ip_id": 4321,
    "ttl": 63,
    "seq": 1000,
    "ack": 2000,
    "payload_len": 5,
    "decode_status": "ok",
}
UDP6 = {
    "ip_version": 6,
    "src": "fd00::1",
    "dst": "fd00:0:0:1::2",
    "proto": 17,
    "sport": 5000,
    "dport": 6000,
    "ttl": 64,
    "payload_len": 10,
    "decode_status": "ok",
}


# --------------------------------------------------------------------------- pcap


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("nanosecond", [False, True], ids=["us", "ns"])
def test_pcap_byte_orders_and_resolutions(read_capture, big_endian, nanosecond):
    frac = 123456789 if nanosecond else 123456
    frame = ether(tcp4())
    data = pcap(
        [Rec(frame, T0, frac), Rec(frame, T0 + 1, 0), Rec(ether(udp6()), T0 + 2, 999)],
        big_endian=big_endian,
        nanosecond=nanosecond,
    )
    df = read_capture(data, "client.pcap")
    assert len(df) == 3
    unit = 1 if nanosecond else 1000
    assert df.ts_ns.tolist() == [T0 * NS + frac * unit, (T0 + 1) * NS, (T0 + 2) * NS + 999 * unit]
    assert df.frame.tolist() == [1, 2, 3]
    assert df.capture.astype(str).tolist() == ["client"] * 3
    check_row(
        df,
        0,
        interface="",
        ifindex=-1,
        direction="unknown",
        caplen=len(frame),
        wirelen=len(frame),
        vlan=-1,
        ethertype=0x0800,
        encap="none",
        **TCP4,
    )
    check_row(df, 2, ethertype=0x86DD, **UDP6)


def test_pcap_snaplen_cuts_frames(read_capture):
    frame = ether(tcp4(payload=b"p" * 200))
    df = read_capture(pcap([frame], snaplen=96))
    check_row(df, 0, caplen=96, wirelen=len(frame), payload_len=200, src="10.0.0.1", dport=80)


def test_pcap_wirelen_from_record_header(read_capture):
    frame = ether(tcp4())
    df = read_capture(pcap([Rec(frame, T0, 0, wirelen=len(frame) + 1000)]))
    check_row(df, 0, caplen=len(frame), wirelen=len(frame) + 1000)


def test_pcap_without_records_is_an_empty_table(read_capture):
    df = read_capture(pcap([]))
    assert len(df) == 0
    assert list(df.columns) == PACKETS.names


@pytest.mark.parametrize("suffix", [".pcap.gz", ".pcapng.gz", ".gz"])
def test_gzip_captures_read_like_plain_ones(read_capture, suffix):
    frames = [ether(tcp4()), ether(udp6())]
    if "pcapng" in suffix:
        ng = Pcapng()
        ng.interface(LINKTYPE_ETHERNET, name="eth0")
        for i, f in enumerate(frames):
            ng.packet(0, f, ts=T0 * 10**6 + i)
        raw = ng.to_bytes()
    else:
        raw = pcap([Rec(f, T0, i) for i, f in enumerate(frames)])
    plain = read_capture(raw, "node-a" + suffix.removesuffix(".gz"))
    zipped = read_capture(gz(raw), "node-a" + suffix)
    assert zipped.capture.astype(str).tolist() == ["node-a", "node-a"]
    assert len(zipped) == 2
    for col in PACKETS.names:
        if col == "capture":
            continue
        assert (
            zipped[col].astype(object).fillna("NA").tolist()
            == plain[col].astype(object).fillna("NA").tolist()
        ), col
    check_row(zipped, 0, ts_ns=T0 * NS, **TCP4)
    check_row(zipped, 1, ts_ns=T0 * NS + 1000, **UDP6)


def test_gzip_is_detected_by_content_not_name(read_capture):
    df = read_capture(gz(pcap([ether(tcp4())])), "sneaky.pcap")
    assert len(df) == 1
    check_row(df, 0, **TCP4)


# --------------------------------------------------------------------------- pcapng


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_pcapng_epb_byte_orders(read_capture, big_endian):
    ng = Pcapng(big_endian=big_endian)
    ng.interface(LINKTYPE_ETHERNET, name="eth0", description="uplink")
    frame = ether(tcp4())
    ng.packet(0, frame, ts=T0 * 10**6 + 5)
    ng.packet(0, ether(udp6()), ts=T0 * 10**6 + 6, wirelen=500)
    df = read_capture(ng.to_bytes(), "node.pcapng")
    assert len(df) == 2
    check_row(
        df,
        0,
        capture="node",
        frame=1,
        ts_ns=T0 * NS + 5000,
        interface="eth0",
        ifindex=-1,
        direction="unknown",
        caplen=len(frame),
        wirelen=len(frame),
        **TCP4,
    )
    check_row(df, 1, frame=2, ts_ns=T0 * NS + 6000, wirelen=500, **UDP6)


@pytest.mark.parametrize(
    ("tsresol", "ts", "expected_ns"),
    [
        (None, T0 * 10**6 + 123456, T0 * NS + 123_456_000),
        (6, T0 * 10**6 + 123456, T0 * NS + 123_456_000),
        (9, T0 * 10**9 + 123456789, T0 * NS + 123_456_789),
        (3, T0 * 10**3 + 123, T0 * NS + 123_000_000),
        (7, T0 * 10**7 + 1234567, T0 * NS + 123_456_700),
        (0, T0, T0 * NS),
        (0x80 | 20, T0 * 2**20 + 2**18, T0 * NS + 250_000_000),
        (0x80 | 10, T0 * 2**10 + 2**9, T0 * NS + 500_000_000),
        (0x80 | 30, T0 * 2**30 + 2**27, T0 * NS + 125_000_000),
    ],
    ids=["default", "us", "ns", "ms", "1e-7", "s", "2^-20", "2^-10", "2^-30"],
)
def test_pcapng_time_resolutions(read_capture, tsresol, ts, expected_ns):
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET, tsresol=tsresol)
    ng.packet(0, ether(tcp4()), ts=ts)
    df = read_capture(ng.to_bytes(), "t.pcapng")
    assert df.ts_ns.tolist() == [expected_ns]


@pytest.mark.parametrize("offset", [3600, -7200])
def test_pcapng_ts_offset_is_added(read_capture, offset):
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET, tsresol=9, tsoffset=offset)
    ng.interface(LINKTYPE_ETHERNET, tsresol=9)
    ng.packet(0, ether(tcp4()), ts=123)
    ng.packet(1, ether(tcp4()), ts=T0 * 10**9 + 123)
    df = read_capture(ng.to_bytes(), "t.pcapng")
    assert df.ts_ns.tolist() == [offset * NS + 123, T0 * NS + 123]


def test_pcapng_interfaces_with_their_own_resolution(read_capture):
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET, name="eth0", tsresol=9)
    ng.interface(LINKTYPE_ETHERNET, name="eth1")
    ng.interface(LINKTYPE_ETHERNET, name="eth2", tsresol=0x80 | 20, tsoffset=10)
    ng.packet(1, ether(tcp4()), ts=T0 * 10**6 + 1)
    ng.packet(0, ether(tcp4()), ts=T0 * 10**9 + 1)
    ng.packet(2, ether(tcp4()), ts=T0 * 2**20 + 2**19)
    df = read_capture(ng.to_bytes(), "t.pcapng")
    assert df.interface.astype(str).tolist() == ["eth1", "eth0", "eth2"]
    assert df.ts_ns.tolist() == [T0 * NS + 1000, T0 * NS + 1, (T0 + 10) * NS + 500_000_000]


def test_pcapng_unnamed_interfaces_are_numbered(read_capture):
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET, name="eth0")
    ng.interface(LINKTYPE_ETHERNET, description="no name here")
    ng.interface(LINKTYPE_ETHERNET)
    ng.packet(2, ether(tcp4()))
    ng.packet(1, ether(tcp4()))
    ng.packet(0, ether(tcp4()))
    df = read_capture(ng.to_bytes(), "t.pcapng")
    assert df.interface.astype(str).tolist() == ["#2", "#1", "eth0"]


@pytest.mark.parametrize(
    ("flags", "direction"),
    [
        (None, "unknown"),
        (0, "unknown"),
        (EPB_INBOUND, "in"),
        (EPB_OUTBOUND, "out"),
        (EPB_INBOUND | (1 << 2), "in"),  # reception type unicast in bits 2-4
        (EPB_OUTBOUND | (3 << 2) | (4 << 5), "out"),  # + broadcast, FCS length 4
        (3, "unknown"),  # both bits: invalid per the spec
    ],
)
def test_pcapng_epb_flags_direction(read_capture, flags, direction):
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET)
    ng.packet(0, ether(tcp4()), flags=flags)
    df = read_capture(ng.to_bytes(), "t.pcapng")
    check_row(df, 0, direction=direction, **TCP4)


def test_pcapng_skips_isb_nrb_dsb_custom_and_unknown_blocks(read_capture):
    ng = Pcapng()
    ng.name_resolution()
    ng.interface(LINKTYPE_ETHERNET, name="eth0")
    ng.unknown()
    ng.packet(0, ether(tcp4()), ts=1)
    ng.block(0x0000000A, b"\x00\x00\x00\x00secret-key-log")
    ng.stats(0, ts=2, ifrecv=10, ifdrop=1)
    ng.block(0x00000BAD, b"\x00\x00\x7e\xe1custom")
    ng.unknown(0x40000BAD, b"")
    ng.packet(0, ether(udp6()), ts=3)
    df = read_capture(ng.to_bytes(), "t.pcapng")
    assert df.frame.tolist() == [1, 2]
    assert df.ts_ns.tolist() == [1000, 3000]
    check_row(df, 0, **TCP4)
    check_row(df, 1, **UDP6)


def test_pcapng_unknown_options_are_skipped(read_capture):
    ng = Pcapng()
    ng.interface(
        LINKTYPE_ETHERNET,
        name="eth0",
        options=[(4, b"\x0a\x00\x00\x01\xff\xff\xff\x00"), (0x2BAC, b"opaque option")],
        tsresol=9,
    )
    ng.packet(
        0, ether(tcp4()), ts=7, flags=EPB_OUTBOUND, options=[(3, b"\x01" * 9), (4, b"\0" * 8)]
    )
    df = read_capture(ng.to_bytes(), "t.pcapng")
    check_row(df, 0, interface="eth0", ts_ns=7, direction="out", **TCP4)


def test_pcapng_simple_packet_block(read_capture):
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET, name="eth0", snaplen=64)
    frame = ether(tcp4(payload=b"q" * 100))
    ng.simple(frame)
    ng.packet(0, ether(udp6()), ts=T0 * 10**6)
    df = read_capture(ng.to_bytes(), "t.pcapng")
    assert df.frame.tolist() == [1, 2]
    check_row(df, 0, interface="eth0", caplen=64, wirelen=len(frame), src="10.0.0.1", sport=40000)
    check_row(df, 1, interface="eth0", ts_ns=T0 * NS, **UDP6)


def test_pcapng_obsolete_packet_block(read_capture):
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET, name="eth0")
    ng.obsolete(0, ether(tcp4()), ts=T0 * 10**6 + 42)
    df = read_capture(ng.to_bytes(), "t.pcapng")
    check_row(df, 0, frame=1, interface="eth0", ts_ns=T0 * NS + 42_000, **TCP4)


def test_pcapng_sections_continue_frame_numbers(read_capture):
    ng = Pcapng(big_endian=False)
    ng.interface(LINKTYPE_ETHERNET, name="s1-eth0", tsresol=9)
    ng.packet(0, ether(tcp4(sport=1)), ts=1)
    ng.packet(0, ether(tcp4(sport=2)), ts=2)
    ng.section(big_endian=True)
    ng.interface(LINKTYPE_LINUX_SLL2, name="s2-any")
    ng.interface(LINKTYPE_ETHERNET, name="s2-eth0", tsresol=3)
    ng.packet(1, ether(tcp4(sport=3)), ts=3)
    ng.packet(0, sll2(tcp4(sport=4), ifindex=7, pkttype=SLL_OUTGOING), ts=4)
    ng.section(big_endian=False)
    ng.interface(LINKTYPE_RAW, name="s3-tun0")
    ng.packet(0, tcp4(sport=5), ts=5)
    df = read_capture(ng.to_bytes(), "multi.pcapng")
    assert df.frame.tolist() == [1, 2, 3, 4, 5]
    assert df.sport.tolist() == [1, 2, 3, 4, 5]
    assert df.interface.astype(str).tolist() == [
        "s1-eth0",
        "s1-eth0",
        "s2-eth0",
        "s2-any",
        "s3-tun0",
    ]
    assert df.ts_ns.tolist() == [1, 2, 3_000_000, 4000, 5000]
    assert df.ifindex.tolist() == [-1, -1, -1, 7, -1]
    assert df.direction.astype(str).tolist() == ["unknown", "unknown", "unknown", "out", "unknown"]
    assert (df.decode_status == "ok").all()


def test_pcapng_interfaces_restart_per_section(read_capture):
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET, name="a")
    ng.packet(0, ether(tcp4()))
    ng.section()
    ng.interface(LINKTYPE_RAW, name="b")
    ng.packet(0, tcp4())
    df = read_capture(ng.to_bytes(), "t.pcapng")
    assert df.interface.astype(str).tolist() == ["a", "b"]
    check_row(df, 1, caplen=len(tcp4()), **TCP4)


def test_pcapng_mixed_link_types_per_interface(read_capture):
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET, name="eth0")
    ng.interface(LINKTYPE_NULL, name="lo0")
    ng.interface(LINKTYPE_LINUX_SLL2, name="any")
    ng.interface(LINKTYPE_RAW, name="tun0")
    ng.packet(0, ether(tcp4()))
    ng.packet(1, null(tcp4()))
    ng.packet(2, sll2(tcp4(), ifindex=3, pkttype=SLL_HOST))
    ng.packet(3, udp6())
    df = read_capture(ng.to_bytes(), "t.pcapng")
    for i in range(3):
        check_row(df, i, **TCP4)
    check_row(df, 3, **UDP6)
    assert df.ifindex.tolist() == [-1, -1, 3, -1]
    assert df.direction.astype(str).tolist() == ["unknown", "unknown", "in", "unknown"]


# --------------------------------------------------------------------------- link layers


@pytest.mark.parametrize(
    ("pkttype", "direction"),
    [
        (SLL_HOST, "in"),
        (SLL_BROADCAST, "in"),
        (SLL_MULTICAST, "in"),
        (SLL_OTHERHOST, "in"),
        (SLL_OUTGOING, "out"),
    ],
)
def test_sll_direction_and_protocol(read_capture, pkttype, direction):
    data = pcap(
        [sll(tcp4(), pkttype=pkttype), sll(udp6(), pkttype=pkttype)], linktype=LINKTYPE_LINUX_SLL
    )
    df = read_capture(data)
    check_row(df, 0, direction=direction, ifindex=-1, interface="", ethertype=0x0800, **TCP4)
    check_row(df, 1, direction=direction, ethertype=0x86DD, **UDP6)


def test_sll2_interface_index_and_direction(read_capture):
    frames = [
        sll2(tcp4(), ifindex=2, pkttype=SLL_HOST),
        sll2(tcp4(), ifindex=5, pkttype=SLL_OUTGOING),
        sll2(udp6(), ifindex=70000, pkttype=SLL_MULTICAST),
    ]
    df = read_capture(pcap(frames, linktype=LINKTYPE_LINUX_SLL2))
    assert df.ifindex.tolist() == [2, 5, 70000]
    assert df.direction.astype(str).tolist() == ["in", "out", "in"]
    assert df.ethertype.tolist() == [0x0800, 0x0800, 0x86DD]
    check_row(df, 0, caplen=20 + len(tcp4()), **TCP4)
    check_row(df, 1, **TCP4)
    check_row(df, 2, **UDP6)


def test_sll2_loopback_hatype(read_capture):
    # lo has ARPHRD_LOOPBACK (772) and a zero-length address: still plain IP after the header.
    frame = sll2(tcp4(), ifindex=1, pkttype=SLL_HOST, hatype=772, addr=b"")
    df = read_capture(pcap([frame], linktype=LINKTYPE_LINUX_SLL2))
    check_row(df, 0, ifindex=1, direction="in", **TCP4)


@pytest.mark.parametrize("linktype", [LINKTYPE_RAW, 12, 14])
def test_raw_ip_both_versions(read_capture, linktype):
    df = read_capture(pcap([tcp4(), udp6()], linktype=linktype))
    check_row(df, 0, caplen=len(tcp4()), ethertype=0x0800, vlan=-1, direction="unknown", **TCP4)
    check_row(df, 1, ethertype=0x86DD, **UDP6)


def test_raw_ipv4_link_type(read_capture):
    df = read_capture(pcap([tcp4()], linktype=LINKTYPE_IPV4))
    check_row(df, 0, ethertype=0x0800, **TCP4)


def test_raw_ipv6_link_type(read_capture):
    df = read_capture(pcap([udp6()], linktype=LINKTYPE_IPV6))
    check_row(df, 0, ethertype=0x86DD, **UDP6)


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("family6", [AF_INET6_BSD, AF_INET6_FREEBSD, AF_INET6_DARWIN])
def test_null_loopback_host_order(read_capture, big_endian, family6):
    # DLT_NULL's family is in the capturing host's byte order, which is the file's order.
    frames = [
        null(tcp4(), family=AF_INET, big_endian=big_endian),
        null(udp6(), family=family6, big_endian=big_endian),
    ]
    df = read_capture(pcap(frames, linktype=LINKTYPE_NULL, big_endian=big_endian))
    check_row(df, 0, caplen=4 + len(tcp4()), **TCP4)
    check_row(df, 1, **UDP6)


def test_null_loopback_family_in_other_order(read_capture):
    # A little-endian file whose NULL headers were written big-endian: readers swap.
    frames = [null(tcp4(), big_endian=True), null(udp6(), big_endian=True)]
    df = read_capture(pcap(frames, linktype=LINKTYPE_NULL))
    check_row(df, 0, **TCP4)
    check_row(df, 1, **UDP6)


@pytest.mark.parametrize("family6", [AF_INET6_BSD, AF_INET6_FREEBSD, AF_INET6_DARWIN])
def test_loop_network_order(read_capture, family6):
    frames = [loop(tcp4(), family=AF_INET), loop(udp6(), family=family6)]
    df = read_capture(pcap(frames, linktype=LINKTYPE_LOOP))
    check_row(df, 0, **TCP4)
    check_row(df, 1, **UDP6)


def test_ethernet_vlan(read_capture):
    df = read_capture(pcap([ether(tcp4(), vlans=[(0x8100, 100)])]))
    check_row(df, 0, vlan=100, ethertype=0x0800, **TCP4)


def test_ethernet_qinq(read_capture):
    frames = [
        ether(tcp4(), vlans=[(0x88A8, 200), (0x8100, 100)]),
        ether(udp6(), vlans=[(0x8100, 300), (0x8100, 4000)]),
    ]
    df = read_capture(pcap(frames))
    check_row(df, 0, vlan=200, ethertype=0x0800, **TCP4)
    check_row(df, 1, vlan=300, ethertype=0x86DD, **UDP6)


def test_untagged_ethernet_has_no_vlan(read_capture):
    df = read_capture(pcap([ether(tcp4())]))
    check_row(df, 0, vlan=-1, **TCP4)


# --------------------------------------------------------------------------- several inputs


def test_several_files_in_one_call(write_capture):
    a = write_capture("client.pcap", pcap([ether(tcp4(sport=1)), ether(tcp4(sport=2))]))
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET, name="eth0")
    for sport in (3, 4, 5):
        ng.packet(0, ether(tcp4(sport=sport)))
    b = write_capture("node.pcapng", ng.to_bytes())
    df = flowtrace.read_packets([str(a), b])
    assert_packets_schema(df)
    assert df.capture.astype(str).tolist() == ["client"] * 2 + ["node"] * 3
    assert df.frame.tolist() == [1, 2, 1, 2, 3]
    assert df.sport.tolist() == [1, 2, 3, 4, 5]
    assert df.interface.astype(str).tolist() == ["", "", "eth0", "eth0", "eth0"]


def test_name_equals_path(write_capture):
    a = write_capture("x.pcap", pcap([ether(tcp4())]))
    b = write_capture("y.pcap.gz", gz(pcap([ether(tcp4()), ether(tcp4())])))
    df = flowtrace.read_packets([f"client={a}", f"node-1={b}"])
    assert_packets_schema(df)
    assert df.capture.astype(str).tolist() == ["client", "node-1", "node-1"]
    df = flowtrace.read_packets(f"pod={a}")
    assert df.capture.astype(str).tolist() == ["pod"]


def test_single_path_object(write_capture):
    a = write_capture("only.pcap", pcap([ether(tcp4())]))
    df = flowtrace.read_packets(a)
    assert_packets_schema(df)
    assert df.capture.astype(str).tolist() == ["only"]


def test_capture_name_is_the_stem(write_capture):
    paths = [
        write_capture("a.b.pcap", pcap([ether(tcp4())])),
        write_capture("node.pcap.gz", gz(pcap([ether(tcp4())]))),
        write_capture("pod.pcapng.gz", gz(one_packet_pcapng())),
        write_capture("trace.cap", pcap([ether(tcp4())])),
    ]
    df = flowtrace.read_packets([str(p) for p in paths])
    assert df.capture.astype(str).tolist() == ["a.b", "node", "pod", "trace"]


def one_packet_pcapng() -> bytes:
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET)
    ng.packet(0, ether(tcp4()))
    return ng.to_bytes()


def test_directory_means_every_capture_in_it(write_capture, tmp_path):
    write_capture("caps/b-node.pcapng", one_packet_pcapng())
    write_capture("caps/a-client.pcap", pcap([ether(tcp4(sport=1)), ether(tcp4(sport=2))]))
    write_capture("caps/c-pod.pcap.gz", gz(pcap([ether(tcp4(sport=9))])))
    write_capture("caps/README.txt", b"these captures were taken on 2024-05-01\n")
    df = flowtrace.read_packets(str(tmp_path / "caps"))
    assert_packets_schema(df)
    assert df.capture.astype(str).tolist() == ["a-client", "a-client", "b-node", "c-pod"]
    assert df.frame.tolist() == [1, 2, 1, 1]


def test_directory_and_file_together(write_capture, tmp_path):
    write_capture("d/one.pcap", pcap([ether(tcp4())]))
    f = write_capture("two.pcap", pcap([ether(tcp4()), ether(tcp4())]))
    df = flowtrace.read_packets([tmp_path / "d", f"client={f}"])
    assert df.capture.astype(str).tolist() == ["one", "client", "client"]


def test_frames_stay_in_file_order_with_timestamps_going_back(read_capture):
    recs = [Rec(ether(tcp4(sport=s)), T0 + t, 0) for s, t in ((1, 5), (2, 3), (3, 9), (4, 3))]
    df = read_capture(pcap(recs))
    assert df.sport.tolist() == [1, 2, 3, 4]
    assert df.frame.tolist() == [1, 2, 3, 4]
    assert df.ts_ns.tolist() == [(T0 + t) * NS for t in (5, 3, 9, 3)]


def _many_frames(n: int) -> list[bytes]:
    bases = [bytearray(ether(tcp4(payload=b"x" * (900 - k * 100)))) for k in range(7)]
    out = []
    for i in range(n):
        base = bases[i % 7]
        struct.pack_into(">H", base, 14 + 4, i & 0xFFFF)  # IP id
        struct.pack_into(">H", base, 14 + 20, 1024 + i % 60000)  # TCP source port
        out.append(bytes(base))
    return out


@pytest.mark.parametrize("kind", ["pcap", "pcapng", "pcap.gz", "pcapng.gz"])
def test_large_capture_crosses_read_chunks(read_capture, kind):
    frames = _many_frames(12_000)  # about 10 MB: several read chunks, records straddling them
    if kind.startswith("pcapng"):
        ng = Pcapng()
        ng.interface(LINKTYPE_ETHERNET, name="eth0", tsresol=9)
        for i, f in enumerate(frames):
            ng.packet(0, f, ts=T0 * NS + i, flags=EPB_INBOUND if i % 2 else EPB_OUTBOUND)
        raw = ng.to_bytes()
    else:
        raw = pcap([Rec(f, T0, i) for i, f in enumerate(frames)], nanosecond=True)
    data = gz(raw) if kind.endswith(".gz") else raw
    df = read_capture(data, "big." + kind)
    n = len(frames)
    assert len(df) == n
    assert (df.frame.to_numpy() == np.arange(1, n + 1)).all()
    assert (df.ts_ns.to_numpy() == T0 * NS + np.arange(n)).all()
    assert (df.ip_id.to_numpy() == np.arange(n) & 0xFFFF).all()
    assert (df.sport.to_numpy() == 1024 + np.arange(n) % 60000).all()
    assert (df.caplen.to_numpy() == np.array([len(f) for f in frames])).all()
    assert (df.decode_status == "ok").all()
    if kind.startswith("pcapng"):
        expected = np.where(np.arange(n) % 2 == 1, "in", "out")
        assert (df.direction.astype(str).to_numpy() == expected).all()
