"""Decoding of IPv4, IPv6, TCP, UDP, SCTP, ICMP and ICMPv6 into the packets table."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from craft import NO_ICMP, NO_TCP, NO_TUNNEL, T0, Rec, check_row, ether, pcap
from scapy.all import (
    ARP,
    DNS,
    DNSQR,
    ICMP,
    IP,
    SCTP,
    TCP,
    UDP,
    Ether,
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLReport2,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPOption_RR,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    RouterAlert,
)

C4, S4, R4 = "10.0.0.1", "203.0.113.10", "10.0.0.254"
C6, S6, R6 = "fd00::1", "2001:db8::10", "fd00::fe"


@pytest.fixture
def decode(read_capture):
    """decode(*ip_packets, snaplen=...) -> packets table of Ethernet frames around them."""

    def run(*packets, snaplen: int = 262144, raw_frames: bool = False):
        frames = [bytes(p) if raw_frames else ether(bytes(p)) for p in packets]
        return read_capture(pcap([Rec(f, T0, i) for i, f in enumerate(frames)], snaplen=snaplen))

    return run


def corrupt_l4_checksum(packet: bytes, offset: int) -> bytes:
    """Flip the 16-bit transport checksum at ``offset`` (from the start of the IP packet)."""
    b = bytearray(packet)
    b[offset] ^= 0xFF
    return bytes(b)


# --------------------------------------------------------------------------- TCP


def test_tcp_syn_ack_every_field(decode):
    p = IP(src=S4, dst=C4, id=0, flags="DF", ttl=64, tos=0x10) / TCP(
        sport=80,
        dport=40000,
        seq=0xFFFFFFF0,
        ack=0x80000001,
        flags="SA",
        window=65535,
        options=[
            ("MSS", 1460),
            ("SAckOK", b""),
            ("Timestamp", (0xDEADBEEF, 0x01020304)),
            ("NOP", None),
            ("WScale", 14),
        ],
    )
    df = decode(p)
    check_row(
        df,
        0,
        ip_version=4,
        src=S4,
        dst=C4,
        proto=6,
        sport=80,
        dport=40000,
        ip_id=0,
        ttl=64,
        tos=0x10,
        ip_len=len(p),
        ip_flags=1,
        frag_offset=0,
        tcp_flags=0x12,
        seq=0xFFFFFFF0,
        ack=0x80000001,
        window=65535,
        tcp_opts=0x01 | 0x02 | 0x04 | 0x10,
        mss=1460,
        wscale=14,
        tsval=0xDEADBEEF,
        tsecr=0x01020304,
        payload_len=0,
        payload_hash=0,
        l4_checksum=1,
        dns_id=-1,
        decode_status="ok",
        **NO_TUNNEL,
        **NO_ICMP,
    )


@pytest.mark.parametrize(
    ("flags", "value"),
    [
        ("S", 0x02),
        ("SA", 0x12),
        ("A", 0x10),
        ("PA", 0x18),
        ("FA", 0x11),
        ("R", 0x04),
        ("RA", 0x14),
        ("UA", 0x30),
        ("SEC", 0xC2),
        (0x1FF, 0x1FF),
        (0, 0),
    ],
)
def test_tcp_flags(decode, flags, value):
    df = decode(IP(src=C4, dst=S4) / TCP(sport=1, dport=2, flags=flags))
    check_row(df, 0, tcp_flags=value, sport=1, dport=2)


def test_tcp_data_segment_with_timestamps(decode):
    payload = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
    p = (
        IP(src=C4, dst=S4, id=54321)
        / TCP(
            sport=40000,
            dport=80,
            seq=1001,
            ack=5001,
            flags="PA",
            window=502,
            options=[("NOP", None), ("NOP", None), ("Timestamp", (111, 222))],
        )
        / payload
    )
    df = decode(p)
    check_row(
        df,
        0,
        ip_id=54321,
        ip_len=20 + 32 + len(payload),
        tcp_flags=0x18,
        seq=1001,
        ack=5001,
        window=502,
        tcp_opts=0x10,
        mss=0,
        wscale=0,
        tsval=111,
        tsecr=222,
        payload_len=len(payload),
        l4_checksum=1,
        decode_status="ok",
    )
    assert df.payload_hash.iloc[0] != 0


def test_tcp_sack_blocks_and_fast_open(decode):
    sack = IP(src=C4, dst=S4) / TCP(
        sport=1,
        dport=2,
        flags="A",
        options=[("NOP", None), ("NOP", None), ("SAck", (1000, 2000, 3000, 4000))],
    )
    tfo = IP(src=C4, dst=S4) / TCP(
        sport=1,
        dport=2,
        flags="S",
        options=[("MSS", 1400), ("TFO", b"\x01\x02\x03\x04\x05\x06\x07\x08")],
    )
    df = decode(sack, tfo)
    check_row(df, 0, tcp_opts=0x08, mss=0)
    check_row(df, 1, tcp_opts=0x01 | 0x20, mss=1400)


def test_tcp_unknown_option_does_not_hide_the_others(decode):
    p = IP(src=C4, dst=S4) / TCP(
        sport=1,
        dport=2,
        flags="S",
        options=[("MSS", 1200), (253, b"\xab\xcd"), ("WScale", 3), ("EOL", None)],
    )
    df = decode(p)
    check_row(df, 0, tcp_opts=0x03, mss=1200, wscale=3, decode_status="ok")


def test_ethernet_padding_is_not_payload(decode):
    ip = bytes(IP(src=S4, dst=C4) / TCP(sport=80, dport=40000, flags="A", seq=5, ack=6))
    frame = ether(ip) + b"\0" * (60 - 14 - len(ip))
    df = decode(frame, raw_frames=True)
    check_row(df, 0, wirelen=60, caplen=60, ip_len=40, payload_len=0, payload_hash=0, l4_checksum=1)


def test_tcp_checksum_good_and_bad(decode):
    good = bytes(IP(src=C4, dst=S4) / TCP(sport=1, dport=2, flags="PA") / b"data")
    bad = corrupt_l4_checksum(good, 20 + 16)
    good6 = bytes(IPv6(src=C6, dst=S6) / TCP(sport=1, dport=2, flags="PA") / b"data")
    bad6 = corrupt_l4_checksum(good6, 40 + 16)
    df = decode(good, bad, good6, bad6)
    assert df.l4_checksum.tolist() == [1, 0, 1, 0]
    assert df.decode_status.astype(str).tolist() == ["ok"] * 4


def test_checksums_at_every_alignment_against_scapy(decode):
    """Segments start at every offset modulo 4 in the batch buffer (payload lengths vary
    the record sizes): verified ones stay 1, any flipped byte makes 0."""
    import random

    rng = random.Random(7)
    packets, expected = [], []
    for i in range(400):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 90)))
        kind = i % 5
        if kind == 0:
            pkt = IP(src=C4, dst=S4) / TCP(sport=1000 + i, dport=80, flags="PA") / payload
        elif kind == 1:
            pkt = IP(src=C4, dst=S4) / UDP(sport=1000 + i, dport=53) / payload
        elif kind == 2:
            pkt = IP(src=C4, dst=S4) / ICMP(type=8, id=i, seq=i) / payload
        elif kind == 3:
            pkt = IPv6(src=C6, dst=S6) / TCP(sport=1000 + i, dport=80, flags="PA") / payload
        else:
            pkt = IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(id=i, seq=i, data=payload)
        raw = bytearray(bytes(pkt))
        l4 = 20 if kind < 3 else 40
        field = l4 + {0: 16, 1: 6, 3: 16}.get(kind, 2)
        flip = rng.random() < 0.4
        if flip:  # a payload byte, or the checksum field when there is no payload
            at = rng.randrange(len(raw) - len(payload), len(raw)) if payload else field
            raw[at] ^= rng.randrange(1, 256)
        packets.append(bytes(raw))
        expected.append(0 if flip else 1)
    df = decode(*packets)
    assert df.l4_checksum.tolist() == expected


def test_an_all_zero_icmp_message_has_a_wrong_checksum(decode):
    zero = bytes(IP(src=C4, dst=S4, proto=1) / (b"\0" * 16))  # type 0, code 0, checksum 0
    good = bytes(IP(src=C4, dst=S4) / ICMP(type=0, id=0, seq=0) / (b"\0" * 8))
    df = decode(zero, good)
    assert df.l4_checksum.tolist() == [0, 1]


def test_gso_frame_with_zero_ip_length(decode):
    # TSO/GSO frames seen on the sending host carry IPv4 total length 0.
    payload = b"z" * 7240
    ip = bytearray(
        bytes(IP(src=C4, dst=S4) / TCP(sport=8080, dport=1766, seq=9, flags="A") / payload)
    )
    ip[2:4] = b"\0\0"
    frame = ether(bytes(ip))
    df = decode(frame, raw_frames=True)
    check_row(
        df,
        0,
        wirelen=len(frame),
        ip_len=len(frame) - 14,
        payload_len=7240,
        sport=8080,
        dport=1766,
        seq=9,
        decode_status="ok",
    )


# --------------------------------------------------------------------------- UDP, SCTP, DNS


def test_udp_fields_and_checksums(decode):
    good = bytes(IP(src=C4, dst=S4, id=7) / UDP(sport=5353, dport=8125) / b"metric:1|c")
    bad = corrupt_l4_checksum(good, 20 + 6)
    zero = bytearray(good)
    zero[26:28] = b"\0\0"
    good6 = bytes(IPv6(src=C6, dst=S6) / UDP(sport=1, dport=2) / b"abc")
    df = decode(good, bad, bytes(zero), good6)
    check_row(
        df,
        0,
        proto=17,
        sport=5353,
        dport=8125,
        ip_id=7,
        ip_len=len(good),
        payload_len=10,
        l4_checksum=1,
        decode_status="ok",
        **NO_TCP,
        **NO_ICMP,
    )
    assert df.l4_checksum.tolist() == [1, 0, -1, 1]


@pytest.mark.parametrize(
    ("sport", "dport", "dns_id"),
    [(40000, 53, 0xBEEF), (53, 40000, 0xBEEF), (5353, 5353, 0x1234), (40000, 5000, -1)],
)
def test_dns_transaction_id(decode, sport, dport, dns_id):
    txid = 0x1234 if sport == 5353 else 0xBEEF
    p = (
        IP(src=C4, dst="10.96.0.10")
        / UDP(sport=sport, dport=dport)
        / DNS(id=txid, qd=DNSQR(qname="kubernetes.default"))
    )
    p6 = (
        IPv6(src=C6, dst="fd00::a")
        / UDP(sport=sport, dport=dport)
        / DNS(id=txid, qd=DNSQR(qname="x", qtype="AAAA"))
    )
    df = decode(p, p6)
    assert df.dns_id.tolist() == [dns_id, dns_id]


def test_sctp_ports(decode):
    df = decode(IP(src=C4, dst=S4) / SCTP(sport=3868, dport=38412))
    check_row(df, 0, proto=132, sport=3868, dport=38412, decode_status="ok")


def test_unknown_ip_protocol_keeps_the_ip_fields(decode):
    df = decode(IP(src=C4, dst=S4, proto=253, id=99, ttl=9) / b"experimental")
    check_row(df, 0, ip_version=4, src=C4, dst=S4, proto=253, ip_id=99, ttl=9, sport=-1, dport=-1)


# --------------------------------------------------------------------------- IPv4


def test_ipv4_options_flag_and_offsets(decode):
    p = IP(src=C4, dst=S4, options=[IPOption_RR(routers=["1.2.3.4", "5.6.7.8"])]) / TCP(
        sport=40000, dport=443, seq=77, flags="S"
    )
    df = decode(p)
    raw = bytes(p)
    check_row(
        df,
        0,
        ip_flags=0x08,
        ip_len=len(raw),
        sport=40000,
        dport=443,
        seq=77,
        tcp_flags=0x02,
        l4_checksum=1,
        decode_status="ok",
    )
    assert raw[0] & 0x0F > 5


def test_ipv4_tos_ttl(decode):
    df = decode(IP(src=C4, dst=S4, tos=0xB8, ttl=1) / UDP(sport=1, dport=2))
    check_row(df, 0, tos=0xB8, ttl=1)


def ipv4_fragments():
    """Three fragments of one 2,000-byte UDP datagram (id 0x4242), as the kernel cuts it."""
    datagram = bytes(UDP(sport=12345, dport=9999) / (b"F" * 1992))
    parts = [datagram[0:1480], datagram[1480 : 1480 + 480], datagram[1960:]]
    out, offset = [], 0
    for i, part in enumerate(parts):
        mf = "MF" if i < len(parts) - 1 else 0
        out.append(IP(src=C4, dst=S4, id=0x4242, proto=17, flags=mf, frag=offset // 8) / part)
        offset += len(part)
    return out


def test_ipv4_first_middle_last_fragment(decode):
    df = decode(*ipv4_fragments())
    check_row(
        df,
        0,
        proto=17,
        sport=12345,
        dport=9999,
        ip_id=0x4242,
        ip_flags=0x02 | 0x04,
        frag_offset=0,
        l4_checksum=-1,
        encap="none",
        decode_status="ok",
    )
    check_row(
        df,
        1,
        proto=17,
        sport=-1,
        dport=-1,
        ip_id=0x4242,
        ip_flags=0x02 | 0x04,
        frag_offset=1480,
        l4_checksum=-1,
        decode_status="ok",
    )
    check_row(
        df,
        2,
        proto=17,
        sport=-1,
        dport=-1,
        ip_id=0x4242,
        ip_flags=0x04,
        frag_offset=1960,
        l4_checksum=-1,
        decode_status="ok",
    )
    assert df.ip_len.tolist() == [20 + 1480, 20 + 480, 20 + 40]


def test_ipv4_df_is_not_a_fragment(decode):
    df = decode(IP(src=C4, dst=S4, flags="DF") / UDP(sport=1, dport=2))
    check_row(df, 0, ip_flags=0x01, frag_offset=0, l4_checksum=1)


# --------------------------------------------------------------------------- IPv6


def test_ipv6_plain_fields(decode):
    p = IPv6(src=C6, dst=S6, hlim=33, tc=0x2E, fl=0xABCDE) / TCP(
        sport=40000, dport=443, flags="S", seq=3
    )
    df = decode(p)
    check_row(
        df,
        0,
        ethertype=0x86DD,
        ip_version=6,
        src="fd00::1",
        dst="2001:db8::10",
        proto=6,
        ttl=33,
        tos=0x2E,
        ip_len=40 + 20,
        ip_id=0,
        ip_flags=0,
        sport=40000,
        dport=443,
        seq=3,
        l4_checksum=1,
        decode_status="ok",
    )


def test_ipv6_addresses_in_compressed_form(decode):
    p = IPv6(src="2001:0db8:0000:0000:0000:ff00:0042:8329", dst="::ffff:10.0.0.1") / UDP(
        sport=1, dport=2
    )
    p2 = IPv6(src="fe80::1:0:0:1", dst="ff02::1") / UDP(sport=1, dport=2)
    df = decode(p, p2)
    assert df.src.astype(str).tolist() == ["2001:db8::ff00:42:8329", "fe80::1:0:0:1"]
    assert df.dst.astype(str).tolist() == [str(ipaddress.ip_address("::ffff:10.0.0.1")), "ff02::1"]


def test_ipv6_extension_headers_before_tcp(decode):
    p = (
        IPv6(src=C6, dst=S6)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting(segleft=0)
        / IPv6ExtHdrDestOpt()
        / TCP(sport=40000, dport=8080, seq=42, ack=43, flags="A", window=1000)
        / b"payload!"
    )
    raw = bytes(p)
    df = decode(p)
    check_row(
        df,
        0,
        ip_version=6,
        proto=6,
        sport=40000,
        dport=8080,
        seq=42,
        ack=43,
        window=1000,
        ip_len=len(raw),
        ip_flags=0x08,
        payload_len=8,
        l4_checksum=1,
        decode_status="ok",
    )


def test_ipv6_mld_report_with_hop_by_hop(decode):
    p = (
        IPv6(src="fe80::1", dst="ff02::16", hlim=1)
        / IPv6ExtHdrHopByHop(options=[RouterAlert()])
        / ICMPv6MLReport2()
    )
    df = decode(p)
    check_row(df, 0, proto=58, icmp_type=143, icmp_code=0, ip_flags=0x08, ttl=1, sport=-1)


def ipv6_fragments():
    datagram = bytes(UDP(sport=5000, dport=5001) / (b"6" * 1600))
    parts = [datagram[:1448], datagram[1448:]]
    return [
        IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment(nh=17, id=0x12345678, m=1, offset=0) / parts[0],
        IPv6(src=C6, dst=S6)
        / IPv6ExtHdrFragment(nh=17, id=0x12345678, m=0, offset=1448 // 8)
        / parts[1],
    ]


def test_ipv6_first_and_last_fragment(decode):
    df = decode(*ipv6_fragments())
    check_row(
        df,
        0,
        ip_version=6,
        proto=17,
        sport=5000,
        dport=5001,
        ip_id=0x12345678,
        ip_flags=0x02 | 0x04 | 0x08,
        frag_offset=0,
        l4_checksum=-1,
        decode_status="ok",
    )
    check_row(
        df,
        1,
        ip_version=6,
        proto=17,
        sport=-1,
        dport=-1,
        ip_id=0x12345678,
        ip_flags=0x04 | 0x08,
        frag_offset=1448,
        l4_checksum=-1,
        decode_status="ok",
    )


# --------------------------------------------------------------------------- ICMP


def test_icmp_echo(decode):
    req = IP(src=C4, dst=S4, id=11) / ICMP(type=8, id=0x1234, seq=7) / (b"\x00" * 56)
    rep = IP(src=S4, dst=C4, id=12) / ICMP(type=0, id=0x1234, seq=7) / (b"\x00" * 56)
    df = decode(req, rep)
    common = {
        k: v
        for k, v in NO_ICMP.items()
        if k not in ("icmp_type", "icmp_code", "icmp_id", "icmp_seq")
    }
    check_row(
        df,
        0,
        proto=1,
        icmp_type=8,
        icmp_code=0,
        icmp_id=0x1234,
        icmp_seq=7,
        decode_status="ok",
        **common,
    )
    check_row(
        df,
        1,
        proto=1,
        icmp_type=0,
        icmp_code=0,
        icmp_id=0x1234,
        icmp_seq=7,
        payload_len=56,
        **common,
    )
    assert df.payload_hash.iloc[0] == df.payload_hash.iloc[1] != 0


def test_icmpv6_echo(decode):
    req = IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(id=0xABCD, seq=1, data=b"ping")
    rep = IPv6(src=S6, dst=C6) / ICMPv6EchoReply(id=0xABCD, seq=1, data=b"ping")
    df = decode(req, rep)
    check_row(
        df, 0, proto=58, icmp_type=128, icmp_code=0, icmp_id=0xABCD, icmp_seq=1, quoted_src=None
    )
    check_row(
        df, 1, proto=58, icmp_type=129, icmp_code=0, icmp_id=0xABCD, icmp_seq=1, quoted_src=None
    )


def quoted_tcp4(length: int = 28) -> bytes:
    """The first ``length`` bytes of the client's SYN as a router quotes it."""
    syn = IP(src=C4, dst=S4, id=777, flags="DF") / TCP(
        sport=40000, dport=80, seq=123456789, flags="S"
    )
    return bytes(syn)[:length]


def quoted_udp4() -> bytes:
    return bytes(IP(src=C4, dst=S4, id=778) / UDP(sport=40001, dport=53) / (b"q" * 20))


QUOTED_TCP4 = {
    "quoted_src": C4,
    "quoted_dst": S4,
    "quoted_proto": 6,
    "quoted_sport": 40000,
    "quoted_dport": 80,
    "quoted_ip_id": 777,
    "quoted_seq": 123456789,
}
QUOTED_UDP4 = {
    "quoted_src": C4,
    "quoted_dst": S4,
    "quoted_proto": 17,
    "quoted_sport": 40001,
    "quoted_dport": 53,
    "quoted_ip_id": 778,
    "quoted_seq": 0,
}


def test_icmp_port_unreachable_quotes_udp(decode):
    p = IP(src=S4, dst=C4) / ICMP(type=3, code=3) / quoted_udp4()
    df = decode(p)
    check_row(
        df,
        0,
        src=S4,
        dst=C4,
        proto=1,
        icmp_type=3,
        icmp_code=3,
        icmp_mtu=0,
        sport=-1,
        decode_status="ok",
        **QUOTED_UDP4,
    )


def test_icmp_frag_needed_mtu(decode):
    p = IP(src=R4, dst=C4) / ICMP(type=3, code=4, nexthopmtu=1400) / quoted_tcp4()
    df = decode(p)
    check_row(
        df, 0, src=R4, icmp_type=3, icmp_code=4, icmp_mtu=1400, decode_status="ok", **QUOTED_TCP4
    )


def test_icmp_time_exceeded_quotes_tcp(decode):
    p = IP(src=R4, dst=C4, ttl=255) / ICMP(type=11, code=0) / quoted_tcp4()
    df = decode(p)
    check_row(
        df, 0, src=R4, icmp_type=11, icmp_code=0, icmp_mtu=0, decode_status="ok", **QUOTED_TCP4
    )


@pytest.mark.parametrize(("icmp_type", "code"), [(3, 1), (4, 0), (5, 1), (11, 1), (12, 0)])
def test_every_icmp_error_type_quotes(decode, icmp_type, code):
    p = IP(src=R4, dst=C4) / ICMP(type=icmp_type, code=code) / quoted_tcp4(48)
    df = decode(p)
    check_row(df, 0, icmp_type=icmp_type, icmp_code=code, icmp_mtu=0, **QUOTED_TCP4)


def test_icmp_error_quoting_a_nated_tuple(decode):
    # The quoted packet shows the tuple as the router saw it (after DNAT), not the outer one.
    quoted = bytes(
        IP(src="10.0.1.11", dst="10.244.2.7", id=5) / TCP(sport=1766, dport=8080, seq=99)
    )[:28]
    p = IP(src="10.244.2.1", dst="10.0.1.11") / ICMP(type=3, code=1) / quoted
    df = decode(p)
    check_row(
        df,
        0,
        src="10.244.2.1",
        dst="10.0.1.11",
        quoted_src="10.0.1.11",
        quoted_dst="10.244.2.7",
        quoted_proto=6,
        quoted_sport=1766,
        quoted_dport=8080,
        quoted_ip_id=5,
        quoted_seq=99,
    )


def quoted_v6(l4) -> bytes:
    return bytes(IPv6(src=C6, dst=S6) / l4)[:48]


QUOTED_TCP6 = {
    "quoted_src": C6,
    "quoted_dst": S6,
    "quoted_proto": 6,
    "quoted_sport": 40000,
    "quoted_dport": 443,
    "quoted_ip_id": 0,
    "quoted_seq": 0xCAFEBABE,
}


def test_icmpv6_packet_too_big(decode):
    p = (
        IPv6(src=R6, dst=C6)
        / ICMPv6PacketTooBig(mtu=1280)
        / quoted_v6(TCP(sport=40000, dport=443, seq=0xCAFEBABE, flags="PA") / (b"x" * 100))
    )
    df = decode(p)
    check_row(
        df, 0, src=R6, dst=C6, proto=58, icmp_type=2, icmp_code=0, icmp_mtu=1280, **QUOTED_TCP6
    )


def test_icmpv6_destination_unreachable_quotes_udp(decode):
    p = (
        IPv6(src=S6, dst=C6)
        / ICMPv6DestUnreach(code=4)
        / quoted_v6(UDP(sport=40002, dport=53) / b"q")
    )
    df = decode(p)
    check_row(
        df,
        0,
        icmp_type=1,
        icmp_code=4,
        icmp_mtu=0,
        quoted_src=C6,
        quoted_dst=S6,
        quoted_proto=17,
        quoted_sport=40002,
        quoted_dport=53,
        quoted_seq=0,
    )


def test_icmpv6_time_exceeded_and_parameter_problem(decode):
    l4 = TCP(sport=40000, dport=443, seq=0xCAFEBABE, flags="S")
    p1 = IPv6(src=R6, dst=C6) / ICMPv6TimeExceeded(code=0) / quoted_v6(l4)
    p2 = IPv6(src=R6, dst=C6) / ICMPv6ParamProblem(code=0, ptr=6) / quoted_v6(l4)
    df = decode(p1, p2)
    check_row(df, 0, icmp_type=3, icmp_code=0, icmp_mtu=0, **QUOTED_TCP6)
    check_row(df, 1, icmp_type=4, icmp_code=0, icmp_mtu=0, **QUOTED_TCP6)


# --------------------------------------------------------------------------- not IP, truncated, malformed


def test_arp_is_unsupported_with_link_fields(decode):
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=C4, pdst=S4))
    df = decode(frame, raw_frames=True)
    check_row(
        df,
        0,
        decode_status="unsupported",
        ethertype=0x0806,
        caplen=len(frame),
        ip_version=0,
        src=None,
        dst=None,
        proto=-1,
        sport=-1,
        dport=-1,
        ip_id=0,
        ttl=0,
        ip_len=0,
        payload_len=0,
        payload_hash=0,
        l4_checksum=-1,
        dns_id=-1,
        encap="none",
        **NO_TCP,
        **NO_ICMP,
    )


def test_lldp_is_unsupported(decode):
    frame = ether(b"\x02\x07\x04" + b"\0" * 40, ethertype=0x88CC, dst="01:80:c2:00:00:0e")
    df = decode(frame, raw_frames=True)
    check_row(df, 0, decode_status="unsupported", ethertype=0x88CC, ip_version=0, src=None)


def test_snaplen_inside_tcp_header_is_truncated(decode):
    p = IP(src=C4, dst=S4, id=31) / TCP(
        sport=40000, dport=80, seq=5, flags="S", options=[("MSS", 1460)]
    )
    df = decode(p, snaplen=14 + 20 + 10)
    check_row(
        df,
        0,
        decode_status="truncated",
        caplen=44,
        wirelen=14 + len(bytes(p)),
        ip_version=4,
        src=C4,
        dst=S4,
        proto=6,
        ip_id=31,
        ip_len=len(bytes(p)),
        l4_checksum=-1,
        payload_hash=0,
    )


@pytest.mark.parametrize("snaplen", [6, 14 + 12, 14 + 40 + 4])
def test_snaplen_inside_link_or_ip_header_is_truncated(decode, snaplen):
    p = IPv6(src=C6, dst=S6) / TCP(sport=1, dport=2)
    df = decode(p, snaplen=snaplen)
    check_row(df, 0, decode_status="truncated", caplen=snaplen, wirelen=14 + 60)


def test_tcp_checksum_not_verified_when_payload_cut(decode):
    p = IP(src=C4, dst=S4) / TCP(sport=1, dport=2, flags="PA") / (b"x" * 500)
    df = decode(p, snaplen=14 + 40 + 100)
    check_row(df, 0, decode_status="ok", l4_checksum=-1, payload_len=500, sport=1, dport=2)


def with_version(packet: bytes, version: int) -> bytes:
    b = bytearray(packet)
    b[0] = (version << 4) | (b[0] & 0x0F)
    return bytes(b)


@pytest.mark.parametrize(
    ("ethertype", "packet"),
    [
        (0x0800, with_version(bytes(IP(src=C4, dst=S4) / TCP()), 5)),
        (0x0800, with_version(bytes(IP(src=C4, dst=S4) / TCP()), 0)),
        (0x0800, bytes(IPv6(src=C6, dst=S6) / TCP())),
        (0x86DD, bytes(IP(src=C4, dst=S4) / TCP())),
        (0x86DD, with_version(bytes(IPv6(src=C6, dst=S6) / TCP()), 7)),
    ],
    ids=["v5", "v0", "v6-in-0800", "v4-in-86dd", "v7-in-86dd"],
)
def test_bad_ip_version_is_malformed(decode, ethertype, packet):
    df = decode(ether(packet, ethertype=ethertype), raw_frames=True)
    check_row(df, 0, decode_status="malformed", ethertype=ethertype)


def test_bad_ipv4_header_lengths_are_malformed(decode):
    ok = bytearray(bytes(IP(src=C4, dst=S4) / TCP(sport=1, dport=2)))
    short_ihl = bytearray(ok)
    short_ihl[0] = 0x44
    too_long = bytearray(ok)
    too_long[2:4] = struct.pack(">H", 1500)
    below_ihl = bytearray(ok)
    below_ihl[2:4] = struct.pack(">H", 12)
    df = decode(*[ether(bytes(b)) for b in (ok, short_ihl, too_long, below_ihl)], raw_frames=True)
    assert df.decode_status.astype(str).tolist() == ["ok", "malformed", "malformed", "malformed"]


def test_bad_tcp_data_offset_is_malformed(decode):
    b = bytearray(bytes(IP(src=C4, dst=S4) / TCP(sport=1, dport=2)))
    b[20 + 12] = 0x30  # data offset 3 words < 5
    df = decode(b)
    check_row(df, 0, decode_status="malformed", src=C4, dst=S4, proto=6)


def test_malformed_packet_does_not_stop_the_rest(decode):
    bad = with_version(bytes(IP(src=C4, dst=S4) / TCP()), 9)
    good = IP(src=C4, dst=S4) / TCP(sport=7, dport=8)
    df = decode(ether(bad, ethertype=0x0800), ether(b"\x45"), ether(bytes(good)), raw_frames=True)
    assert len(df) == 3
    assert df.frame.tolist() == [1, 2, 3]
    check_row(df, 2, decode_status="ok", sport=7, dport=8)


# --------------------------------------------------------------------------- payload hash


def test_payload_hash_invariants(decode):
    head = bytes(range(32))
    a = IP(src=C4, dst=S4) / TCP(sport=40000, dport=80, seq=1, flags="PA") / (head + b"A" * 68)
    # Same first 32 bytes and length, after DNAT+SNAT, different tail: same hash.
    b = (
        IP(src="10.0.1.11", dst="10.244.2.7")
        / TCP(sport=1766, dport=8080, seq=1, flags="PA")
        / (head + b"B" * 68)
    )
    # Shorter than 32 bytes, one byte apart in length: other hash.
    c = IP(src=C4, dst=S4) / TCP(sport=40000, dport=80, seq=1, flags="PA") / head[:20]
    c2 = IP(src=C4, dst=S4) / TCP(sport=40000, dport=80, seq=1, flags="PA") / (head[:20] + b"\0")
    # Other first 32 bytes, same length: other hash.
    d = (
        IP(src=C4, dst=S4)
        / TCP(sport=40000, dport=80, seq=1, flags="PA")
        / (b"\xff" + head[1:] + b"A" * 68)
    )
    # Same payload over IPv6 and UDP: the hash only sees the payload.
    e = IPv6(src=C6, dst=S6) / TCP(sport=1, dport=2, flags="PA") / (head + b"A" * 68)
    f = IP(src=C4, dst=S4) / UDP(sport=1, dport=2) / (head + b"C" * 68)
    df = decode(a, b, c, d, e, f, c2)
    h = df.payload_hash.tolist()
    assert all(x != 0 for x in h)
    assert h[0] == h[1] == h[4] == h[5]
    assert len({h[0], h[2], h[3], h[6]}) == 4


def test_payload_hash_of_short_payload(decode):
    a = IP(src=C4, dst=S4) / TCP(sport=1, dport=2, flags="PA") / b"hi"
    b = IP(src="10.9.9.9", dst=S4) / TCP(sport=3, dport=4, flags="PA") / b"hi"
    c = IP(src=C4, dst=S4) / TCP(sport=1, dport=2, flags="PA") / b"ho"
    df = decode(a, b, c)
    h = df.payload_hash.tolist()
    assert h[0] == h[1] != 0
    assert h[2] not in (0, h[0])
    assert df.payload_len.tolist() == [2, 2, 2]


def test_payload_hash_needs_the_captured_prefix(decode):
    payload = bytes(range(200))
    p = IP(src=C4, dst=S4) / TCP(sport=1, dport=2, flags="PA") / payload
    full = decode(p)
    enough = decode(p, snaplen=14 + 40 + 32)  # exactly 32 payload bytes captured
    too_little = decode(p, snaplen=14 + 40 + 31)
    assert full.payload_hash.iloc[0] != 0
    assert enough.payload_hash.iloc[0] == full.payload_hash.iloc[0]
    assert too_little.payload_hash.iloc[0] == 0
    assert too_little.payload_len.iloc[0] == 200
    short = IP(src=C4, dst=S4) / TCP(sport=1, dport=2, flags="PA") / b"0123456789"
    assert decode(short, snaplen=14 + 40 + 9).payload_hash.iloc[0] == 0
    assert decode(short, snaplen=14 + 40 + 10).payload_hash.iloc[0] != 0


def test_empty_payload_hash_is_zero(decode):
    df = decode(
        IP(src=C4, dst=S4) / TCP(sport=1, dport=2, flags="A"),
        IP(src=C4, dst=S4) / UDP(sport=1, dport=2),
    )
    assert df.payload_hash.tolist() == [0, 0]
    assert df.payload_len.tolist() == [0, 0]


def test_checksum_offload_placeholder_is_not_an_error(decode):
    """A sender leaving the checksum to the NIC writes only the pseudo-header sum
    (CHECKSUM_PARTIAL); captured on that host or across a veth it reads as 2, not 0."""
    import socket

    pkt = bytearray(bytes(IP(src=C4, dst=S4) / TCP(sport=1234, dport=80, flags="S") / (b"x" * 10)))
    tcp_len = len(pkt) - 20
    pseudo = socket.inet_aton(C4) + socket.inet_aton(S4) + struct.pack(">BBH", 0, 6, tcp_len)
    total = sum(struct.unpack(">6H", pseudo))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into(">H", pkt, 20 + 16, total)
    wrong = bytearray(pkt)
    struct.pack_into(">H", wrong, 20 + 16, (total + 1) & 0xFFFF)
    df = decode(ether(bytes(pkt)), ether(bytes(wrong)), raw_frames=True)
    assert df.l4_checksum.tolist() == [2, 0]


def test_first_fragment_ending_inside_the_tcp_options_is_not_malformed(decode):
    syn = bytes(IP(src=C4, dst=S4, id=7, flags="MF") / TCP(sport=12345, dport=80, flags="S", seq=1000,
                                                          options=[("MSS", 1460), ("SAckOK", b""), ("NOP", None),
                                                                   ("WScale", 7), ("Timestamp", (1, 0))]))
    head = bytearray(syn[:20 + 24])
    struct.pack_into(">H", head, 2, len(head))
    head[10:12] = b"\0\0"
    df = decode(ether(bytes(head)), raw_frames=True)
    check_row(df, 0, decode_status="ok", sport=12345, dport=80, seq=1000, tcp_flags=0x02, payload_len=0)
