"""Tunnels CNIs use: VXLAN, Geneve, IP-in-IP, IPv6-in-IPv4, GRE; WireGuard and ESP as opaque."""

from __future__ import annotations

import struct

import pytest
from craft import (
    ETH_IPV4,
    ETH_IPV6,
    ETH_TEB,
    LINKTYPE_LINUX_SLL2,
    SLL_OUTGOING,
    T0,
    Rec,
    check_row,
    ether,
    geneve,
    gre,
    pcap,
    sll2,
    vxlan,
)
from scapy.all import ARP, ESP, IP, TCP, UDP, Ether, IPv6

NODE_A, NODE_B = "192.168.1.1", "192.168.1.2"
NODE6_A, NODE6_B = "fd00:10::1", "fd00:10::2"
POD_A, POD_B = "10.244.1.2", "10.244.2.3"

INNER = (
    IP(src=POD_A, dst=POD_B, id=0x1111, ttl=63, flags="DF")
    / TCP(sport=40000, dport=8080, seq=0x01020304, ack=0x0A0B0C0D, flags="PA", window=512)
    / b"inner payload, 32 bytes or more!"
)
INNER_BYTES = bytes(INNER)
INNER_FIELDS = {
    "ip_version": 4,
    "src": POD_A,
    "dst": POD_B,
    "proto": 6,
    "sport": 40000,
    "dport": 8080,
    "ip_id": 0x1111,
    "ttl": 63,
    "ip_len": len(INNER_BYTES),
    "ip_flags": 1,
    "tcp_flags": 0x18,
    "seq": 0x01020304,
    "ack": 0x0A0B0C0D,
    "window": 512,
    "payload_len": 32,
    "l4_checksum": 1,
    "decode_status": "ok",
}
INNER6 = (
    IPv6(src="fd00:244:1::2", dst="fd00:244:2::3", hlim=62)
    / UDP(sport=5353, dport=53)
    / (b"\x12\x34" + b"\0" * 10)
)
INNER6_FIELDS = {
    "ip_version": 6,
    "src": "fd00:244:1::2",
    "dst": "fd00:244:2::3",
    "proto": 17,
    "sport": 5353,
    "dport": 53,
    "ttl": 62,
    "dns_id": 0x1234,
    "decode_status": "ok",
}
COMPARED = [
    "ip_version",
    "src",
    "dst",
    "proto",
    "sport",
    "dport",
    "ip_id",
    "ttl",
    "tos",
    "ip_len",
    "ip_flags",
    "tcp_flags",
    "seq",
    "ack",
    "window",
    "tcp_opts",
    "payload_len",
    "payload_hash",
    "l4_checksum",
    "decode_status",
]


@pytest.fixture
def decode(read_capture):
    """decode(*frames, snaplen=..., linktype=1) -> packets table."""

    def run(*frames: bytes, snaplen: int = 262144, linktype: int = 1):
        recs = [Rec(bytes(f), T0, i) for i, f in enumerate(frames)]
        return read_capture(pcap(recs, snaplen=snaplen, linktype=linktype))

    return run


def outer_udp(dport: int, payload: bytes, *, v6: bool = False, sport: int = 54321) -> bytes:
    ip = IPv6(src=NODE6_A, dst=NODE6_B) if v6 else IP(src=NODE_A, dst=NODE_B, id=0x2222, ttl=64)
    return bytes(ip / UDP(sport=sport, dport=dport) / payload)


def outer_ip(proto: int, payload: bytes) -> bytes:
    return bytes(IP(src=NODE_A, dst=NODE_B, proto=proto, id=0x3333) / payload)


# --------------------------------------------------------------------------- VXLAN


@pytest.mark.parametrize("port", [4789, 8472])
def test_vxlan(decode, port):
    frame = ether(outer_udp(port, vxlan(42 if port == 4789 else 1, ether(INNER_BYTES))))
    df = decode(frame)
    check_row(
        df,
        0,
        caplen=len(frame),
        wirelen=len(frame),
        encap="vxlan",
        outer_src=NODE_A,
        outer_dst=NODE_B,
        vni=42 if port == 4789 else 1,
        ethertype=ETH_IPV4,
        icmp_type=-1,
        **INNER_FIELDS,
    )


def test_vxlan_inner_packet_decodes_like_a_plain_one(decode):
    plain = ether(INNER_BYTES)
    tunnelled = ether(outer_udp(8472, vxlan(1, ether(INNER_BYTES))))
    df = decode(plain, tunnelled)
    for col in COMPARED:
        assert df[col].iloc[0] == df[col].iloc[1], col
    assert df.payload_hash.iloc[1] != 0


def test_vxlan_inner_ipv6_over_ipv6_outer(decode):
    frame = ether(outer_udp(4789, vxlan(0xABCDEF, ether(bytes(INNER6))), v6=True))
    df = decode(frame)
    check_row(
        df,
        0,
        encap="vxlan",
        outer_src=NODE6_A,
        outer_dst=NODE6_B,
        vni=0xABCDEF,
        ethertype=ETH_IPV6,
        **INNER6_FIELDS,
    )


def test_vxlan_with_outer_vlan_and_sll2(decode):
    inner = ether(INNER_BYTES)
    tagged = ether(outer_udp(8472, vxlan(1, inner)), vlans=[(0x8100, 10)])
    df = decode(tagged)
    check_row(df, 0, vlan=10, encap="vxlan", vni=1, outer_src=NODE_A, **INNER_FIELDS)
    cooked = sll2(outer_udp(8472, vxlan(1, inner)), ifindex=4, pkttype=SLL_OUTGOING)
    df = decode(cooked, linktype=LINKTYPE_LINUX_SLL2)
    check_row(
        df, 0, ifindex=4, direction="out", encap="vxlan", vni=1, outer_dst=NODE_B, **INNER_FIELDS
    )


def test_vxlan_inner_arp_is_unsupported(decode):
    arp = bytes(
        Ether(src="02:00:00:00:00:0a", dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=POD_A, pdst=POD_B)
    )
    df = decode(ether(outer_udp(4789, vxlan(7, arp))))
    check_row(
        df, 0, decode_status="unsupported", ethertype=0x0806, encap="vxlan", vni=7, outer_src=NODE_A
    )


def test_vxlan_cut_inside_the_inner_ip_header_is_truncated(decode):
    frame = ether(outer_udp(4789, vxlan(42, ether(INNER_BYTES))))
    snaplen = 14 + 20 + 8 + 8 + 14 + 12
    df = decode(frame, snaplen=snaplen)
    check_row(
        df, 0, caplen=snaplen, decode_status="truncated", encap="vxlan", outer_src=NODE_A, vni=42
    )


def test_udp_on_other_ports_is_not_a_tunnel(decode):
    frame = ether(outer_udp(9999, vxlan(42, ether(INNER_BYTES))))
    df = decode(frame)
    check_row(
        df,
        0,
        encap="none",
        outer_src=None,
        outer_dst=None,
        vni=-1,
        src=NODE_A,
        dst=NODE_B,
        proto=17,
        sport=54321,
        dport=9999,
        decode_status="ok",
    )


# --------------------------------------------------------------------------- Geneve


def test_geneve_with_options(decode):
    options = [(0x0108, 0x01, b"A" * 8), (0x0108, 0x02, b"B" * 4), (0x0108, 0x03, b"C" * 8)]
    frame = ether(outer_udp(6081, geneve(0x123456, ether(INNER_BYTES), options=options)))
    df = decode(frame)
    check_row(
        df, 0, encap="geneve", vni=0x123456, outer_src=NODE_A, outer_dst=NODE_B, **INNER_FIELDS
    )


def test_geneve_without_options_and_with_ip_payload(decode):
    eth = ether(outer_udp(6081, geneve(5, ether(INNER_BYTES))))
    ip4 = ether(outer_udp(6081, geneve(6, INNER_BYTES, protocol=ETH_IPV4)))
    ip6 = ether(outer_udp(6081, geneve(7, bytes(INNER6), protocol=ETH_IPV6)))
    df = decode(eth, ip4, ip6)
    check_row(df, 0, encap="geneve", vni=5, **INNER_FIELDS)
    check_row(df, 1, encap="geneve", vni=6, **INNER_FIELDS)
    check_row(df, 2, encap="geneve", vni=7, **INNER6_FIELDS)


# --------------------------------------------------------------------------- IP in IP


def test_ipip(decode):
    df = decode(ether(outer_ip(4, INNER_BYTES)))
    check_row(
        df,
        0,
        encap="ipip",
        outer_src=NODE_A,
        outer_dst=NODE_B,
        vni=-1,
        ethertype=ETH_IPV4,
        **INNER_FIELDS,
    )


def test_ipv6_in_ipv4(decode):
    df = decode(ether(outer_ip(41, bytes(INNER6))))
    check_row(df, 0, encap="ip6ip", outer_src=NODE_A, outer_dst=NODE_B, vni=-1, **INNER6_FIELDS)


def test_ipip_carrying_vxlan_reports_the_outermost_tunnel(decode):
    vx = outer_udp(4789, vxlan(42, ether(INNER_BYTES)))
    frame = ether(bytes(IP(src="172.16.0.1", dst="172.16.0.2", proto=4) / vx))
    df = decode(frame)
    check_row(df, 0, encap="ipip", outer_src="172.16.0.1", outer_dst="172.16.0.2", **INNER_FIELDS)


# --------------------------------------------------------------------------- GRE


@pytest.mark.parametrize(
    "header",
    [
        {},
        {"key": 0xDEADBEEF},
        {"key": 7, "seq": 99},
        {"seq": 1},
        {"checksum": True, "key": 1, "seq": 2},
    ],
    ids=["plain", "key", "key-seq", "seq", "csum-key-seq"],
)
def test_gre_ipv4(decode, header):
    df = decode(ether(outer_ip(47, gre(INNER_BYTES, **header))))
    check_row(df, 0, encap="gre", outer_src=NODE_A, outer_dst=NODE_B, vni=-1, **INNER_FIELDS)


def test_gre_ipv6_payload(decode):
    df = decode(ether(outer_ip(47, gre(bytes(INNER6)))))
    check_row(df, 0, encap="gre", outer_src=NODE_A, **INNER6_FIELDS)


def test_gre_transparent_ethernet(decode):
    df = decode(ether(outer_ip(47, gre(ether(INNER_BYTES), protocol=ETH_TEB, key=100))))
    check_row(
        df, 0, encap="gre", outer_src=NODE_A, outer_dst=NODE_B, ethertype=ETH_IPV4, **INNER_FIELDS
    )


def test_gre_with_a_payload_that_is_not_ip(decode):
    # PPP over GRE (PPTP-style, 0x880B): nothing inside to decode, and nothing was cut.
    lcp = b"\xff\x03\xc0\x21" + bytes([1, 1, 0, 14, 1, 4, 5, 220, 5, 6, 0x12, 0x34, 0x56, 0x78])
    frame = ether(outer_ip(47, gre(lcp, protocol=0x880B, key=1)))
    df = decode(frame)
    check_row(df, 0, src=NODE_A, dst=NODE_B, proto=47, ip_id=0x3333, caplen=len(frame))
    assert df.decode_status.iloc[0] in ("ok", "unsupported")


# --------------------------------------------------------------------------- opaque


def wireguard_data(counter: int = 1) -> bytes:
    """A WireGuard transport-data message: type 4, 3 reserved zero bytes, index, counter, data."""
    return struct.pack("<B3xIQ", 4, 0x11223344, counter) + bytes(range(48))


def wireguard_init() -> bytes:
    return struct.pack("<B3xI", 1, 0x55667788) + bytes(140)


@pytest.mark.parametrize("port", [51820, 51821, 51871])
def test_wireguard_is_labelled_not_decoded(decode, port):
    df = decode(
        ether(outer_udp(port, wireguard_data(), sport=port)),
        ether(outer_udp(port, wireguard_init())),
    )
    for i, sport in ((0, port), (1, 54321)):
        check_row(
            df,
            i,
            encap="wireguard",
            src=NODE_A,
            dst=NODE_B,
            proto=17,
            sport=sport,
            dport=port,
            ip_id=0x2222,
            vni=-1,
            decode_status="ok",
        )


def test_esp_is_labelled_not_decoded(decode):
    p = IP(src=NODE_A, dst=NODE_B, id=0x4444) / ESP(spi=0x1000, seq=5, data=b"\x8f" * 64)
    p6 = IPv6(src=NODE6_A, dst=NODE6_B) / ESP(spi=0x1001, seq=6, data=b"\x8f" * 64)
    df = decode(ether(bytes(p)), ether(bytes(p6)))
    check_row(
        df,
        0,
        encap="esp",
        src=NODE_A,
        dst=NODE_B,
        proto=50,
        ip_id=0x4444,
        sport=-1,
        dport=-1,
        vni=-1,
    )
    check_row(df, 1, encap="esp", src=NODE6_A, dst=NODE6_B, proto=50, sport=-1, dport=-1)


def test_plain_rows_have_no_tunnel_fields(decode):
    df = decode(ether(INNER_BYTES), ether(bytes(INNER6)))
    for i in range(2):
        check_row(df, i, encap="none", outer_src=None, outer_dst=None, vni=-1)
