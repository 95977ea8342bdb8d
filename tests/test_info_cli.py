"""`flowtrace info`: the JSON document per capture, the human summary, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from craft import (
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
    SLL_HOST,
    SLL_OUTGOING,
    T0,
    Pcapng,
    Rec,
    ether,
    gre,
    gz,
    loop,
    null,
    pcap,
    sll,
    sll2,
    vxlan,
)
from scapy.all import ARP, ESP, ICMP, IP, SCTP, TCP, UDP, Ether, ICMPv6EchoRequest, IPv6
from typer.testing import CliRunner

from flowtrace.cli import app

NS = 1_000_000_000
REPO = Path(__file__).resolve().parents[1]

TCP4 = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2) / b"abc")
UDP4 = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=3, dport=4) / b"abc")
ICMP4 = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8, id=1, seq=1))
ICMP6 = bytes(IPv6(src="fd00::1", dst="fd00::2") / ICMPv6EchoRequest(id=1, seq=1))
SCTP4 = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / SCTP(sport=5, dport=6))
ESP4 = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ESP(spi=1, seq=1, data=b"x" * 16))
ARP_FRAME = bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.0.0.1", pdst="10.0.0.2"))


def run_info(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["info", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def info_json(*paths: str | Path) -> list[dict]:
    code, out, err = run_info("--json", *paths)
    assert code == 0, err
    doc = json.loads(out)
    assert isinstance(doc, list)
    assert len(doc) >= len(paths)
    return doc


def nonzero(d: dict) -> dict:
    return {k: v for k, v in d.items() if v}


def ns_of(iso: str) -> int:
    ts = pd.Timestamp(iso)
    assert ts.tzinfo is not None and ts.utcoffset().total_seconds() == 0, iso
    return ts.value


REQUIRED_KEYS = {
    "capture",
    "path",
    "format",
    "gzip",
    "byte_order",
    "time_resolution",
    "sections",
    "link_types",
    "interfaces",
    "sll2_ifindexes",
    "packets",
    "bytes",
    "first_ts_ns",
    "last_ts_ns",
    "first_time",
    "last_time",
    "duration_s",
    "decode_status",
    "protocols",
    "encapsulations",
    "vlan_tagged",
    "snaplen_truncated",
    "capture_drops",
    "warnings",
}


# --------------------------------------------------------------------------- pcap


def test_info_json_of_a_pcap(write_capture):
    frames = [
        Rec(ether(TCP4), T0, 250_000),
        Rec(ether(UDP4, vlans=[(0x8100, 7)]), T0 + 1, 0),
        Rec(ARP_FRAME, T0 + 2, 500_000),
    ]
    path = write_capture("client.pcap", pcap(frames))
    (doc,) = info_json(path)
    assert doc.keys() >= REQUIRED_KEYS
    assert doc["capture"] == "client"
    assert Path(doc["path"]).resolve() == path.resolve()
    assert doc["format"] == "pcap"
    assert doc["gzip"] is False
    assert doc["byte_order"] == "little"
    assert doc["time_resolution"] == "us"
    assert doc["sections"] == 1
    assert doc["link_types"] == [{"link_type": 1, "name": "ETHERNET"}]
    assert doc["sll2_ifindexes"] == []
    assert doc["packets"] == 3
    assert doc["bytes"] == len(ether(TCP4)) + len(ether(UDP4)) + 4 + len(ARP_FRAME)
    assert doc["first_ts_ns"] == T0 * NS + 250_000_000
    assert doc["last_ts_ns"] == (T0 + 2) * NS + 500_000_000
    assert abs(ns_of(doc["first_time"]) - doc["first_ts_ns"]) < 1000
    assert abs(ns_of(doc["last_time"]) - doc["last_ts_ns"]) < 1000
    assert doc["first_time"].startswith("2023-11-14T22:13:20.25")
    assert doc["duration_s"] == pytest.approx(2.25)
    assert doc["decode_status"] == {"ok": 2, "truncated": 0, "malformed": 0, "unsupported": 1}
    assert nonzero(doc["protocols"]) == {"tcp": 1, "udp": 1, "arp": 1}
    assert nonzero(doc["encapsulations"]) == {"none": 3}
    assert doc["vlan_tagged"] == 1
    assert doc["snaplen_truncated"] == 0
    assert doc["capture_drops"] is None
    assert doc["warnings"] == []


def test_info_json_big_endian_nanosecond_gzip(write_capture):
    raw = pcap([Rec(ether(TCP4), T0, 123_456_789)], big_endian=True, nanosecond=True)
    path = write_capture("node-b.pcap.gz", gz(raw))
    (doc,) = info_json(path)
    assert doc["capture"] == "node-b"
    assert doc["format"] == "pcap"
    assert doc["gzip"] is True
    assert doc["byte_order"] == "big"
    assert doc["time_resolution"] == "ns"
    assert doc["first_ts_ns"] == doc["last_ts_ns"] == T0 * NS + 123_456_789
    assert doc["duration_s"] == 0


@pytest.mark.parametrize(
    ("linktype", "name", "wrap"),
    [
        (LINKTYPE_NULL, "NULL", null),
        (LINKTYPE_ETHERNET, "ETHERNET", ether),
        (LINKTYPE_RAW, "RAW", bytes),
        (LINKTYPE_LOOP, "LOOP", loop),
        (LINKTYPE_LINUX_SLL, "LINUX_SLL", sll),
        (LINKTYPE_IPV4, "IPV4", bytes),
        (LINKTYPE_LINUX_SLL2, "LINUX_SLL2", sll2),
    ],
)
def test_info_link_type_names(write_capture, linktype, name, wrap):
    path = write_capture("l.pcap", pcap([wrap(TCP4)], linktype=linktype))
    (doc,) = info_json(path)
    assert doc["link_types"] == [{"link_type": linktype, "name": name}]
    assert doc["protocols"]["tcp"] == 1
    assert doc["decode_status"]["ok"] == 1


def test_info_link_type_ipv6(write_capture):
    (doc,) = info_json(write_capture("l.pcap", pcap([ICMP6], linktype=LINKTYPE_IPV6)))
    assert doc["link_types"] == [{"link_type": 229, "name": "IPV6"}]
    assert nonzero(doc["protocols"]) == {"icmpv6": 1}


def test_info_protocol_and_encapsulation_counts(write_capture):
    vx = bytes(
        IP(src="192.168.1.1", dst="192.168.1.2") / UDP(sport=9, dport=4789) / vxlan(1, ether(TCP4))
    )
    gre_ppp = bytes(
        IP(src="192.168.1.1", dst="192.168.1.2", proto=47)
        / gre(b"\xff\x03\x00\x21", protocol=0x880B)
    )
    gre_ip = bytes(IP(src="192.168.1.1", dst="192.168.1.2", proto=47) / gre(UDP4))
    frames = [
        ether(TCP4),
        ether(TCP4),
        ether(UDP4),
        ether(ICMP4),
        ether(ICMP6),
        ether(SCTP4),
        ether(ESP4),
        ARP_FRAME,
        ether(vx),
        ether(gre_ppp),
        ether(gre_ip),
        ether(bytes(46), ethertype=0x88B5),  # IEEE local experimental: no name
        ether(bytes(IP(src="10.0.0.1", dst="10.0.0.2", proto=253) / b"exp")),
    ]
    (doc,) = info_json(write_capture("mix.pcap", pcap(frames)))
    protocols = {k.lower(): v for k, v in nonzero(doc["protocols"]).items()}
    assert protocols == {
        "tcp": 3,
        "udp": 2,
        "icmp": 1,
        "icmpv6": 1,
        "sctp": 1,
        "esp": 1,
        "arp": 1,
        "gre": 1,
        "ethertype-0x88b5": 1,
        "ip-proto-253": 1,
    }
    encaps = nonzero(doc["encapsulations"])
    assert set(encaps) == {"none", "vxlan", "gre", "esp"}
    assert (encaps["vxlan"], encaps["esp"]) == (1, 1)
    # GRE carrying PPP has no inner IP: whether that counts as a GRE tunnel is left open.
    assert encaps["gre"] in (1, 2)
    assert encaps["none"] + encaps["gre"] == 11
    assert doc["packets"] == len(frames)
    assert sum(doc["decode_status"].values()) == len(frames)


def test_info_decode_status_and_truncation(write_capture):
    bad = bytearray(TCP4)
    bad[0] = 0x55
    frames = [
        Rec(ether(TCP4), T0, 0),
        Rec(
            ether(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2) / (b"x" * 100))),
            T0,
            1,
        ),
        Rec(ether(bytes(bad)), T0, 2),
        Rec(ARP_FRAME, T0, 3),
    ]
    raw = pcap(frames, snaplen=14 + 20 + 10)
    (doc,) = info_json(write_capture("s.pcap", raw))
    assert doc["decode_status"] == {"ok": 0, "truncated": 2, "malformed": 1, "unsupported": 1}
    assert doc["snaplen_truncated"] == 3  # the ARP frame is 42 bytes and fits


# --------------------------------------------------------------------------- pcapng


def pcapng_two_sections() -> bytes:
    ng = Pcapng(big_endian=True)
    eth0 = ng.interface(
        LINKTYPE_ETHERNET, name="eth0", description="uplink", snaplen=1500, tsresol=9
    )
    any_ = ng.interface(LINKTYPE_LINUX_SLL2, name="any", tsresol=0x80 | 20, tsoffset=10)
    ng.packet(eth0, ether(TCP4), ts=T0 * NS + 5, flags=EPB_INBOUND)
    ng.packet(any_, sll2(TCP4, ifindex=2, pkttype=SLL_HOST), ts=T0 * 2**20 + 2**19)
    ng.packet(any_, sll2(TCP4, ifindex=2, pkttype=SLL_HOST), ts=T0 * 2**20 + 2**19)
    ng.packet(any_, sll2(TCP4, ifindex=2, pkttype=SLL_OUTGOING), ts=T0 * 2**20 + 2**19)
    ng.packet(any_, sll2(UDP4, ifindex=9, pkttype=SLL_OUTGOING), ts=T0 * 2**20 + 2**19)
    ng.stats(eth0, ifrecv=10, ifdrop=1)
    ng.stats(eth0, ifrecv=100, ifdrop=3, osdrop=4)
    ng.unknown()
    ng.section(big_endian=True)
    raw = ng.interface(LINKTYPE_RAW, tsresol=7)
    ng.packet(raw, UDP4, ts=(T0 + 20) * 10**7, flags=EPB_OUTBOUND)
    ng.stats(raw, ifdrop=0, osdrop=2, filteraccept=50, usrdeliv=49)
    return ng.to_bytes()


def test_info_json_of_a_pcapng(write_capture):
    path = write_capture("node.pcapng", pcapng_two_sections())
    (doc,) = info_json(path)
    assert doc["format"] == "pcapng"
    assert doc["byte_order"] == "big"
    assert doc["gzip"] is False
    assert doc["sections"] == 2
    assert doc["time_resolution"] == "mixed"
    assert sorted(doc["link_types"], key=lambda x: x["link_type"]) == [
        {"link_type": 1, "name": "ETHERNET"},
        {"link_type": 101, "name": "RAW"},
        {"link_type": 276, "name": "LINUX_SLL2"},
    ]
    assert doc["packets"] == 6
    assert doc["first_ts_ns"] == T0 * NS + 5
    assert doc["last_ts_ns"] == (T0 + 20) * NS
    assert doc["capture_drops"] == 3 + 4 + 0 + 2
    ifaces = doc["interfaces"]
    assert len(ifaces) == 3
    assert len({i["id"] for i in ifaces}) == 3
    first, second = sorted({i["section"] for i in ifaces})
    by_name = {i["name"]: i for i in ifaces if i["section"] == first}
    assert set(by_name) == {"eth0", "any"}
    eth0 = by_name["eth0"]
    assert eth0["description"] == "uplink"
    assert eth0["link_type"] == 1
    assert eth0["snaplen"] == 1500
    assert eth0["time_resolution"] == "ns"
    assert eth0["ts_offset_s"] == 0
    assert eth0["packets"] == 1
    assert eth0["stats"] == {
        "ifrecv": 100,
        "ifdrop": 3,
        "osdrop": 4,
        "filteraccept": None,
        "usrdeliv": None,
    }
    any_ = by_name["any"]
    assert any_["link_type"] == 276
    assert any_["time_resolution"] == "2^-20 s"
    assert any_["ts_offset_s"] == 10
    assert any_["packets"] == 4
    assert any_["stats"] is None
    (raw,) = (i for i in ifaces if i["section"] == second)
    assert raw["name"] in (None, "")
    assert raw["link_type"] == 101
    assert raw["time_resolution"] == "10^-7 s"
    assert raw["packets"] == 1
    assert raw["stats"] == {
        "ifrecv": None,
        "ifdrop": 0,
        "osdrop": 2,
        "filteraccept": 50,
        "usrdeliv": 49,
    }
    assert sorted(doc["sll2_ifindexes"], key=lambda x: x["ifindex"]) == [
        {"ifindex": 2, "packets": 3, "in": 2, "out": 1},
        {"ifindex": 9, "packets": 1, "in": 0, "out": 1},
    ]


@pytest.mark.parametrize(
    ("tsresol", "label"),
    [(None, "us"), (6, "us"), (9, "ns"), (3, "ms"), (7, "10^-7 s"), (0x80 | 20, "2^-20 s")],
)
def test_info_pcapng_time_resolution(write_capture, tsresol, label):
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET, tsresol=tsresol)
    ng.interface(LINKTYPE_ETHERNET, tsresol=tsresol)
    ng.packet(0, ether(TCP4))
    (doc,) = info_json(write_capture("r.pcapng", ng.to_bytes()))
    assert doc["time_resolution"] == label
    assert [i["time_resolution"] for i in doc["interfaces"]] == [label, label]
    assert doc["capture_drops"] is None
    assert [i["stats"] for i in doc["interfaces"]] == [None, None]


def test_info_pcapng_little_endian_gzip(write_capture):
    ng = Pcapng()
    ng.interface(LINKTYPE_ETHERNET, name="eth0")
    ng.packet(0, ether(TCP4), ts=T0 * 10**6)
    (doc,) = info_json(write_capture("pod.pcapng.gz", gz(ng.to_bytes())))
    assert (doc["capture"], doc["format"], doc["gzip"], doc["byte_order"]) == (
        "pod",
        "pcapng",
        True,
        "little",
    )
    assert doc["sections"] == 1
    assert doc["interfaces"][0]["name"] == "eth0"


# --------------------------------------------------------------------------- several, cut, human


def test_info_several_captures_named_and_directories(write_capture, tmp_path):
    a = write_capture("a.pcap", pcap([ether(TCP4)]))
    write_capture("dir/x.pcap", pcap([ether(TCP4), ether(UDP4)]))
    write_capture("dir/y.pcapng", pcapng_two_sections())
    doc = info_json(f"client={a}", tmp_path / "dir")
    assert [d["capture"] for d in doc] == ["client", "x", "y"]
    assert [d["packets"] for d in doc] == [1, 2, 6]
    assert [d["format"] for d in doc] == ["pcap", "pcap", "pcapng"]


@pytest.mark.filterwarnings("ignore::flowtrace.errors.CaptureWarning")
def test_info_cut_capture_warns_and_counts_complete_records(write_capture):
    raw = pcap([Rec(ether(TCP4), T0, i) for i in range(5)])
    path = write_capture("cut.pcap", raw[:-7])
    code, out, err = run_info("--json", path)
    assert code == 0, err
    (doc,) = json.loads(out)
    assert doc["packets"] == 4
    assert len(doc["warnings"]) >= 1
    assert all(isinstance(w, str) and w for w in doc["warnings"])


def test_info_empty_capture(write_capture):
    (doc,) = info_json(write_capture("empty.pcap", pcap([])))
    assert doc["packets"] == 0
    assert doc["bytes"] == 0
    assert sum(doc["decode_status"].values()) == 0


def test_info_human_summary(write_capture):
    path = write_capture("human.pcap", pcap([Rec(ether(TCP4), T0, i) for i in range(17)]))
    code, out, err = run_info(path)
    assert code == 0, err
    assert "17" in out
    assert "Traceback" not in out + err


def test_info_help():
    result = CliRunner().invoke(app, ["info", "--help"])
    assert result.exit_code == 0
    assert "--json" in result.stdout


# --------------------------------------------------------------------------- bad input


BAD_INPUTS = {
    "text": ("notes.pcap", b"this is not a capture\n"),
    "empty": ("empty.pcap", b""),
    "linktype": ("odd.pcap", pcap([ether(TCP4)], linktype=65000)),
    "truncated-header": ("short.pcapng", b"\x0a\x0d\x0d\x0a\x1c\x00"),
}


@pytest.mark.parametrize("json_flag", [True, False], ids=["json", "human"])
@pytest.mark.parametrize("kind", [*BAD_INPUTS, "missing", "empty-dir"])
def test_info_bad_input_one_line_exit_2(write_capture, tmp_path, kind, json_flag):
    if kind == "missing":
        path = tmp_path / "missing.pcap"
    elif kind == "empty-dir":
        path = tmp_path / "nothing-here"
        path.mkdir()
    else:
        path = write_capture(*BAD_INPUTS[kind])
    good = write_capture("good.pcap", pcap([ether(TCP4)]))
    args = (["--json"] if json_flag else []) + [good, path]
    code, out, err = run_info(*args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert path.name in lines[0]
    assert "Traceback" not in out + err


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_python_dash_m_flowtrace_info(write_capture):
    path = write_capture("sub.pcap", pcap([ether(TCP4), ether(UDP4)]))
    proc = subprocess.run(
        [sys.executable, "-m", "flowtrace", "info", "--json", str(path)],
        capture_output=True,
        text=True,
        env=_subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["packets"] == 2


@pytest.mark.parametrize("kind", ["text", "missing"])
def test_python_dash_m_flowtrace_bad_input(write_capture, tmp_path, kind):
    path = tmp_path / "missing.pcap" if kind == "missing" else write_capture(*BAD_INPUTS[kind])
    proc = subprocess.run(
        [sys.executable, "-m", "flowtrace", "info", str(path)],
        capture_output=True,
        text=True,
        env=_subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert path.name in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("flowtrace") is None, reason="flowtrace script not installed")
def test_flowtrace_script(write_capture):
    path = write_capture("script.pcap", pcap([ether(TCP4)]))
    proc = subprocess.run(
        ["flowtrace", "info", "--json", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["packets"] == 1
