"""The committed lab fixtures (fixtures/pcaps/SCENARIO/) against their truth files.

No root needed. Captures are read with struct (headers) and dpkt (packets), never with
flowtrace's own readers, so that these tests hold the fixtures to the kernel's record.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import dpkt
import pytest

from flowtrace.lab import list_scenarios
from flowtrace.lab.validate import ANOMALY_CODES, validate_truth

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "pcaps"
SCENARIOS = [name for name, _ in list_scenarios()]


def truth(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name / "truth.json").read_text())


# -- capture headers, read independently -------------------------------------------------


def capture_header(path: Path) -> dict[str, Any]:
    """Format, link types and (pcapng) interface names from the raw bytes."""
    data = path.read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        return {"format": "pcap", "link_types": [struct.unpack_from("<I", data, 20)[0] & 0x0FFFFFFF],
                "names": []}
    if magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        return {"format": "pcap", "link_types": [struct.unpack_from(">I", data, 20)[0] & 0x0FFFFFFF],
                "names": []}
    assert magic == b"\x0a\x0d\x0d\x0a", f"{path}: neither pcap nor pcapng"
    endian = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    off, links, names = 0, [], []
    while off + 12 <= len(data):
        btype, blen = struct.unpack_from(endian + "II", data, off)
        assert blen >= 12 and off + blen <= len(data), f"{path}: corrupt block at {off}"
        if btype == 1:
            links.append(struct.unpack_from(endian + "H", data, off + 8)[0])
            opt = off + 16
            name = None
            while opt < off + blen - 4:
                code, length = struct.unpack_from(endian + "HH", data, opt)
                if code == 0:
                    break
                if code == 2:
                    name = data[opt + 4:opt + 4 + length].rstrip(b"\0").decode()
                opt += 4 + ((length + 3) & ~3)
            names.append(name)
        off += blen
    return {"format": "pcapng", "link_types": links, "names": names}


def packets(path: Path) -> list[tuple[int, int | None, int | None, Any]]:
    """(ts_ns, sll2 ifindex, sll2 packet type, dpkt IP packet) of every IP frame of a pcap."""
    out = []
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        for ts, buf in reader:
            ts_ns = round(ts * 1e9)
            if reader.datalink() == 276:
                proto, _res, ifindex, _ha, pkttype = struct.unpack_from(">HHIHB", buf)
                payload = buf[20:]
            else:
                eth = dpkt.ethernet.Ethernet(buf)
                proto, ifindex, pkttype, payload = eth.type, None, None, bytes(eth.data)
            if proto == 0x0800:
                out.append((ts_ns, ifindex, pkttype, dpkt.ip.IP(payload)))
            elif proto == 0x86DD:
                out.append((ts_ns, ifindex, pkttype, dpkt.ip6.IP6(payload)))
    return out


def addr(ip: Any, which: str) -> str:
    import ipaddress

    raw = getattr(ip, which)
    return str(ipaddress.ip_address(raw))


# -- every scenario ---------------------------------------------------------------------------


def test_every_scenario_has_a_fixture_directory() -> None:
    assert len(SCENARIOS) >= 13
    for name in SCENARIOS:
        assert (FIXTURES / name / "truth.json").is_file(), name
        assert (FIXTURES / name / "k8s.json").is_file(), name
    assert "many-connections" in SCENARIOS and "cross-node-skewed" in SCENARIOS


def test_readme_names_every_scenario_with_its_command() -> None:
    text = (FIXTURES / "README.md").read_text()
    for name in SCENARIOS:
        assert f"flowtrace lab run {name} -o fixtures/pcaps" in text, name


@pytest.mark.parametrize("name", SCENARIOS)
def test_truth_validates(name: str) -> None:
    doc = truth(name)
    assert validate_truth(doc) == []
    assert doc["scenario"] == name
    assert doc["warnings"] == []


def test_validator_can_fail() -> None:
    doc = truth("cross-node")
    doc["connections"][0]["nat"][0]["orig"]["sport"] = "80"
    del doc["captures"][0]["link_types"]
    doc["anomalies"]["expected"].append("not_a_code")
    problems = validate_truth(doc)
    assert any("sport" in p for p in problems)
    assert any("link_types" in p for p in problems)
    assert any("not_a_code" in p for p in problems)


def test_anomaly_codes_match_the_catalog() -> None:
    catalog = ROOT.parent / "shared" / "design" / "ANOMALIES.md"
    if not catalog.exists():
        pytest.skip("shared/design/ANOMALIES.md is not beside the checkout")
    codes = set(re.findall(r"^\| `([a-z_]+)` \|", catalog.read_text(), re.M))
    assert codes == set(ANOMALY_CODES)


@pytest.mark.parametrize("name", SCENARIOS)
def test_size_limits(name: str) -> None:
    doc = truth(name)
    files = [FIXTURES / name / c["file"] for c in doc["captures"]]
    total = sum(p.stat().st_size for p in (FIXTURES / name).rglob("*") if p.is_file() and "logs" not in p.parts)
    limit = 8_000_000 if name == "many-connections" else 1_000_000
    assert total < limit
    assert all(p.stat().st_size >= 24 for p in files)  # a host off the path may have seen nothing
    for host in {c["client_host"] for c in doc["connections"]}:
        assert (FIXTURES / name / f"{host}.pcap").stat().st_size > 24


@pytest.mark.parametrize("name", SCENARIOS)
def test_captures_are_what_truth_says(name: str) -> None:
    doc = truth(name)
    roles = {h["name"]: h["role"] for h in doc["topology"]["hosts"]}
    assert {c["host"] for c in doc["captures"]} >= {"client", "node1", "node2"}
    for cap in doc["captures"]:
        head = capture_header(FIXTURES / name / cap["file"])
        assert head["format"] == cap["format"], cap["file"]
        assert sorted(set(head["link_types"])) == cap["link_types"], cap["file"]
        if cap["tool"] == "tcpdump" and roles[cap["host"]] == "node":
            assert head["link_types"] == [276] and cap["interfaces"] == ["any"]
            assert cap["ifindex_names"]
        elif cap["tool"] == "tcpdump":
            assert head["link_types"] == [1]
        else:
            assert head["names"] == cap["interfaces"], "one IDB per captured interface, in order"
            assert len(head["names"]) >= 2


@pytest.mark.parametrize("name", SCENARIOS)
def test_nat_bindings_are_the_kernels_new_events(name: str) -> None:
    doc = truth(name)
    lines = {node: (FIXTURES / name / f["events"]).read_text().splitlines()
             for node, f in doc["conntrack"]["files"].items()}
    seen = 0
    for conn in doc["connections"]:
        for nat in conn["nat"]:
            line = lines[nat["node"]][nat["event_line"] - 1]
            assert "[NEW]" in line
            o, r = nat["orig"], nat["reply"]
            want = (f"src={o['src']} dst={o['dst']} sport={o['sport']} dport={o['dport']} .*"
                    f"src={r['src']} dst={r['dst']} sport={r['sport']} dport={r['dport']}")
            assert re.search(want, line), line
            assert nat["dnat"] == (r["src"] != o["dst"] or r["sport"] != o["dport"])
            assert nat["snat"] == (r["dst"] != o["src"] or r["dport"] != o["sport"])
            seen += 1
        if conn["nat"]:
            first = conn["nat"][0]["orig"]
            assert {k: first[k] for k in ("src", "sport", "dst", "dport")} == \
                   {k: conn["client"][k] for k in ("src", "sport", "dst", "dport")}
    expect_nat = name not in ("no-endpoints", "hairpin", "local-policy-blackhole")
    assert (seen > 0) == expect_nat


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_new_event_belongs_to_a_connection(name: str) -> None:
    doc = truth(name)
    claimed = {(n["node"], n["event_line"]) for c in doc["connections"] for n in c["nat"]}
    other = {(o["node"], o["event_line"]): o for o in doc["other_conntrack_events"]}
    assert not claimed & set(other)
    for node, files in doc["conntrack"]["files"].items():
        for i, line in enumerate((FIXTURES / name / files["events"]).read_text().splitlines(), 1):
            if "[NEW]" in line and (" tcp " in line or " udp " in line):
                assert (node, i) in claimed or (node, i) in other, f"{node} line {i}: {line}"
                if (node, i) in other:  # only the overlay's own tunnel flow is not a client's
                    assert "VXLAN" in other[(node, i)]["note"] and "dport=8472" in line


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n != "many-connections"])
def test_path_hops_are_in_the_captures(name: str) -> None:
    """Each hop's tuple is really in that capture, on that ifindex and in that direction."""
    doc = truth(name)
    cache: dict[str, list[Any]] = {}
    for conn in doc["connections"]:
        for direction in ("request", "response"):
            for hop in conn["path"][direction]:
                assert hop["packets"] > 0, (conn["id"], direction, hop)
                if hop["icmp_error"]:
                    continue
                pkts = cache.setdefault(hop["capture"], packets(FIXTURES / name / hop["capture"]))
                found = 0
                for _ts, ifindex, pkttype, ip in pkts:
                    l4 = ip.data
                    if getattr(l4, "sport", None) is None:
                        continue
                    if hop["vxlan"]:
                        if not isinstance(l4, dpkt.udp.UDP) or l4.dport != 8472:
                            continue
                        inner = dpkt.ethernet.Ethernet(bytes(l4.data)[8:]).data
                        ip, l4 = inner, inner.data
                    if (addr(ip, "src"), l4.sport, addr(ip, "dst"), l4.dport) != \
                            (hop["src"], hop["sport"], hop["dst"], hop["dport"]):
                        continue
                    if ifindex is not None and (
                            ifindex != hop["ifindex"] or (pkttype == 4) != (hop["direction"] == "out")):
                        continue
                    found += 1
                assert found > 0, (name, conn["id"], direction, hop)


# -- what each scenario is about --------------------------------------------------------------


def test_node_captures_show_both_nat_forms() -> None:
    doc = truth("cross-node")
    conn = doc["connections"][0]
    pre, post = conn["nat"][0]["orig"], conn["nat"][0]["reply"]
    seen = {(addr(ip, "src"), ip.data.sport, addr(ip, "dst"), ip.data.dport, pt)
            for _t, _i, pt, ip in packets(FIXTURES / "cross-node" / "node1.pcap") if hasattr(ip.data, "sport")}
    assert (pre["src"], pre["sport"], pre["dst"], pre["dport"], 0) in seen
    assert (post["dst"], post["dport"], post["src"], post["sport"], 4) in seen


def test_vxlan_node_nic_carries_udp_8472() -> None:
    doc = truth("cross-node-vxlan")
    eth0 = next(int(k) for k, v in doc["captures"][1]["ifindex_names"].items() if v == "eth0")
    vx = [ip for _t, ifindex, _p, ip in packets(FIXTURES / "cross-node-vxlan" / "node1.pcap")
          if ifindex == eth0 and isinstance(ip.data, dpkt.udp.UDP) and ip.data.dport == 8472]
    assert vx
    inner = dpkt.ethernet.Ethernet(bytes(vx[0].data.data)[8:]).data
    assert addr(inner, "src") in ("10.244.1.0", "10.244.2.7")
    assert struct.unpack(">I", bytes(vx[0].data.data)[4:8])[0] >> 8 == 1


def test_asymmetric_client_sees_pod_syn_ack_and_resets() -> None:
    doc = truth("asymmetric-return")
    pod = doc["services"][0]["endpoints"][0]["ip"]
    pk = packets(FIXTURES / "asymmetric-return" / "client.pcap")
    syns = {ip.data.seq for _t, _i, _p, ip in pk if isinstance(ip.data, dpkt.tcp.TCP)
            and ip.data.flags & dpkt.tcp.TH_SYN and not ip.data.flags & dpkt.tcp.TH_ACK}
    synacks = [ip for _t, _i, _p, ip in pk if isinstance(ip.data, dpkt.tcp.TCP)
               and ip.data.flags & dpkt.tcp.TH_SYN and ip.data.flags & dpkt.tcp.TH_ACK]
    assert synacks and all(addr(ip, "src") == pod for ip in synacks)
    assert all((ip.data.ack - 1) % 2**32 in syns for ip in synacks)
    rsts = [ip for _t, _i, _p, ip in pk if isinstance(ip.data, dpkt.tcp.TCP) and ip.data.flags & dpkt.tcp.TH_RST]
    assert rsts and all(addr(ip, "dst") == pod for ip in rsts)
    for conn in doc["connections"]:
        assert conn["nat"][0]["snat"] is False and conn["nat"][0]["dnat"] is True
        assert "UNREPLIED" in conn["nat"][0]["flags"]
    table = (FIXTURES / "asymmetric-return" / "node1.conntrack.txt").read_text()
    assert "SYN_SENT" in table and "[UNREPLIED]" in table


def test_no_endpoints_answers_icmp_port_unreachable() -> None:
    doc = truth("no-endpoints")
    pk = packets(FIXTURES / "no-endpoints" / "client.pcap")
    icmp = [ip for _t, _i, _p, ip in pk if isinstance(ip.data, dpkt.icmp.ICMP) and ip.data.type == 3]
    assert icmp and all(ip.data.code == 3 for ip in icmp)
    quoted = icmp[0].data.data.data  # ICMP -> Unreach -> quoted IP
    assert addr(quoted, "dst") == "203.0.113.10"
    rules = (FIXTURES / "no-endpoints" / "node1.iptables-save.txt").read_text()
    assert re.search(r"-A KUBE-EXTERNAL-SERVICES -d 203\.0\.113\.10/32 .*has no endpoints.*"
                     r"-j REJECT --reject-with icmp-port-unreachable", rules)
    assert all(c["outcome"]["error"] == "ECONNREFUSED" for c in doc["connections"])


def test_mtu_blackhole_large_df_segments_never_arrive() -> None:
    doc = truth("mtu-blackhole")
    ifnames = next(c for c in doc["captures"] if c["file"] == "node2.pcap")["ifindex_names"]
    eth0 = next(int(k) for k, v in ifnames.items() if v == "eth0")
    big = [ip for _t, ifindex, pt, ip in packets(FIXTURES / "mtu-blackhole" / "node2.pcap")
           if ifindex == eth0 and pt == 4 and isinstance(ip.data, dpkt.udp.UDP) and ip.len > 1400]
    assert big and all(ip.df for ip in big)
    for name in ("node1.pcap", "node2.pcap", "web-1.pcap", "client.pcap"):
        assert not [ip for _t, _i, _p, ip in packets(FIXTURES / "mtu-blackhole" / name)
                    if isinstance(ip.data, dpkt.icmp.ICMP) and ip.data.type == 3 and ip.data.code == 4]
    assert all(c["outcome"]["error"] == "read-timeout" for c in doc["connections"])


def test_hairpin_truth_says_what_happened() -> None:
    doc = truth("hairpin")
    conn = doc["connections"][0]
    assert conn["client_host"] == "web-0" and conn["nat"] == []
    assert conn["path"]["request"][-1]["packets"] >= 2  # the SYN and its retransmissions
    assert "hairpin" in doc["story"] and doc["topology"]["network_spec"]["hairpin"] is False
    assert doc["anomalies"]["expected"] == ["hairpin_failure", "syn_retransmission"]


def test_dns_uses_both_endpoints_and_one_socket_per_lookup() -> None:
    doc = truth("dns")
    assert {c["endpoint"] for c in doc["connections"]} <= {"coredns-0", "coredns-1"}
    for conn in doc["connections"]:
        assert [q["qtype"] for q in conn["queries"]] == ["A", "AAAA"]
        assert conn["outcome"]["reply_from"] == ["10.96.0.10"]
        assert conn["nat"][0]["dnat"] and not conn["nat"][0]["snat"]


def test_ipv6_nat_is_ip6tables() -> None:
    doc = truth("ipv6")
    nat = doc["connections"][0]["nat"][0]
    assert ":" in nat["orig"]["dst"] and nat["reply"]["dst"] == "fd00:10:0:1::11"
    rules = (FIXTURES / "ipv6" / "node1.ip6tables-save.txt").read_text()
    assert "-j DNAT --to-destination [fd00:10:244:2::7]:8080" in rules
    assert "MASQUERADE --random-fully" in rules


def test_many_connections_reuse_client_ports() -> None:
    doc = truth("many-connections")
    conns = doc["connections"]
    assert len(conns) >= 500 and doc["client_summary"]["ok"] == len(conns)
    tuples = [(c["client"]["sport"]) for c in conns]
    assert len(set(tuples)) <= 100 < len(tuples)
    assert {c["endpoint"] for c in conns} == {"web-0", "web-1"}
    rules = (FIXTURES / "many-connections" / "node1.iptables-save.txt").read_text()
    assert "-m statistic --mode random --probability 0.50000000000" in rules
    news = (FIXTURES / "many-connections" / "node1.conntrack-events.txt").read_text().count("[NEW]")
    assert news == len(conns)


def test_skewed_captures_are_shifted_by_the_recorded_offsets() -> None:
    doc = truth("cross-node-skewed")
    shifts = {c["file"]: c["clock_shift_ns"] for c in doc["captures"]}
    assert shifts["node2.pcap"] == 2_500_000_000 and shifts["web-1.pcap"] == -750_000_000

    def first_syn(file: str) -> tuple[int, int]:
        for ts, _i, _p, ip in packets(FIXTURES / "cross-node-skewed" / file):
            if isinstance(ip.data, dpkt.tcp.TCP) and ip.data.flags == dpkt.tcp.TH_SYN:
                return ts, ip.data.seq
        raise AssertionError(file)

    t_client, isn = first_syn("client.pcap")
    for file, shift in (("node2.pcap", 2_500_000_000), ("web-1.pcap", -750_000_000), ("node1.pcap", 0)):
        ts, seq = first_syn(file)
        assert seq == isn
        assert abs(ts - t_client - shift) < 20_000_000, file


def test_kube_proxy_chain_shapes() -> None:
    rules = (FIXTURES / "cross-node" / "node1.iptables-save.txt").read_text()
    for pattern in (
        r"-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        r"-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        r"-A KUBE-SERVICES -d 203\.0\.113\.10/32 -p tcp .*loadbalancer IP.* -j KUBE-EXT-CDGGSHYLG3RE2FKL",
        r"-A KUBE-EXT-CDGGSHYLG3RE2FKL .*masquerade traffic for default/web:http external destinations.* -j KUBE-MARK-MASQ",
        r"-A KUBE-SEP-\w{16} -s 10\.244\.2\.7/32 .* -j KUBE-MARK-MASQ",
        r"-A KUBE-SEP-\w{16} -p tcp .* -j DNAT --to-destination 10\.244\.2\.7:8080",
        r"-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        r"-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        r"-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        r"-A KUBE-POSTROUTING .* -j MASQUERADE --random-fully",
        r"-A KUBE-NODEPORTS -p tcp .* --dport 30080 -j KUBE-EXT-CDGGSHYLG3RE2FKL",
    ):
        assert re.search(pattern, rules), pattern
    asym = (FIXTURES / "asymmetric-return" / "node1.iptables-save.txt").read_text()
    assert "masquerade traffic for" not in asym


def test_k8s_snapshot_matches_truth() -> None:
    for name in ("cross-node", "dns", "ipv6"):
        doc, snap = truth(name), json.loads((FIXTURES / name / "k8s.json").read_text())
        assert snap["kind"] == "List"
        kinds = [i["kind"] for i in snap["items"]]
        assert {"Pod", "Service", "EndpointSlice", "Node"} <= set(kinds)
        svc = next(i for i in snap["items"] if i["kind"] == "Service")
        assert svc["spec"]["clusterIP"] == doc["services"][0]["cluster_ip"]
        eps = next(i for i in snap["items"] if i["kind"] == "EndpointSlice")
        assert eps["metadata"]["labels"]["kubernetes.io/service-name"] == svc["metadata"]["name"]
        assert [e["addresses"][0] for e in eps["endpoints"]] == [e["ip"] for e in doc["services"][0]["endpoints"]]
        for pod in (i for i in snap["items"] if i["kind"] == "Pod"):
            assert pod["spec"]["nodeName"] in ("node1", "node2")
            assert pod["status"]["podIP"] == pod["status"]["podIPs"][0]["ip"]
        nodes = [i for i in snap["items"] if i["kind"] == "Node"]
        assert {a["address"] for n in nodes for a in n["status"]["addresses"]} >= {"10.0.1.11", "10.0.1.12"}


def test_local_policy_blackhole_drops_silently_on_node1() -> None:
    doc = truth("local-policy-blackhole")
    assert doc["services"][0]["external_traffic_policy"] == "Local"
    rules = (FIXTURES / "local-policy-blackhole" / "node1.iptables-save.txt").read_text()
    assert re.search(r"-A KUBE-EXTERNAL-SERVICES -d 203\.0\.113\.10/32 .*has no local endpoints.* -j DROP", rules)
    assert "KUBE-SVL-" not in rules
    assert "-j KUBE-SVL-CDGGSHYLG3RE2FKL" in (FIXTURES / "local-policy-blackhole" / "node2.iptables-save.txt").read_text()
    out_of_node1 = [ip for _t, _i, pt, ip in packets(FIXTURES / "local-policy-blackhole" / "node1.pcap")
                    if pt == 4 and isinstance(ip.data, (dpkt.tcp.TCP, dpkt.icmp.ICMP))]
    assert out_of_node1 == []
    assert all(c["outcome"]["error"] == "connect-timeout" and c["nat"] == [] for c in doc["connections"])
    snap = json.loads((FIXTURES / "local-policy-blackhole" / "k8s.json").read_text())
    svc = next(i for i in snap["items"] if i["kind"] == "Service")
    assert svc["spec"]["externalTrafficPolicy"] == "Local" and svc["spec"]["healthCheckNodePort"] == 32000


def test_snaplen_scenario_cuts_only_the_node_captures() -> None:
    for cap in truth("cross-node-snaplen")["captures"]:
        data = (FIXTURES / "cross-node-snaplen" / cap["file"]).read_bytes()
        if cap["format"] == "pcap":
            snaplen = struct.unpack_from("<I", data, 16)[0]
            assert snaplen == (96 if cap["role"] == "node" else 262144), cap["file"]
            off, cut = 24, 0
            while off + 16 <= len(data):
                _s, _f, caplen, wirelen = struct.unpack_from("<IIII", data, off)
                cut += caplen < wirelen
                off += 16 + caplen
            assert (cut > 0) == (cap["role"] == "node"), cap["file"]
