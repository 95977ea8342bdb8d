"""Lab pieces that need no root: kube-proxy rendering, conntrack parsing, clock skew, traffic wire formats, CLI."""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt
import pytest
from typer.testing import CliRunner

from flowtrace.cli import app
from flowtrace.errors import LabError
from flowtrace.lab import check_environment, kubeproxy, list_scenarios, skew, traffic, truth
from flowtrace.lab.conntrack import parse_line
from flowtrace.lab.kubeproxy import Endpoint, ProxyOptions, Service, ServicePort
from flowtrace.lab.pcapread import read_packets

# -- kube-proxy ---------------------------------------------------------------------------


def test_chain_hashes_are_kube_proxys() -> None:
    # Chain names every cluster has; they are fixed by kube-proxy's algorithm.
    assert kubeproxy.port_proto_hash("kube-system/kube-dns:dns", "udp") == "TCOU7JCQXEZGVUNU"
    assert kubeproxy.port_proto_hash("default/kubernetes:https", "tcp") == "NPX46M4PTMTKRN6Y"
    assert kubeproxy.endpoint_chain("a/b:c", "tcp", "10.0.0.1:80").startswith("KUBE-SEP-")
    assert kubeproxy.endpoint_string("fd00::7", 8080) == "[fd00::7]:8080"


def _svc(n: int, **kw: object) -> Service:
    eps = tuple(Endpoint(ip=f"10.244.1.{i + 2}", pod=f"p{i}", node="node1") for i in range(n))
    return Service(name="web", namespace="default", type="LoadBalancer", family=4, cluster_ip="10.96.0.5",
                   ports=(ServicePort(name="http", protocol="TCP", port=80, target_port=8080, node_port=30080),),
                   endpoints=eps, load_balancer_ips=("203.0.113.10",), selector_app="web", **kw)  # type: ignore[arg-type]


def test_render_three_endpoints_cascade_probabilities() -> None:
    text = kubeproxy.render([_svc(3)], family=4, options=ProxyOptions(cluster_cidr="10.244.0.0/16"))
    probs = [line.split("--probability ")[1].split()[0] for line in text.splitlines() if "--probability" in line]
    assert probs == ["0.3333333333", "0.5000000000"]
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000" in text
    assert "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000" in text
    assert "MASQUERADE --random-fully" in text
    assert text.count("-j DNAT --to-destination") == 3
    assert "masquerade traffic for default/web:http external destinations" in text
    assert "REJECT" not in text


def test_render_no_endpoints_rejects_in_filter() -> None:
    text = kubeproxy.render([_svc(0)], family=4, options=ProxyOptions(cluster_cidr="10.244.0.0/16"))
    filt = text.split("*nat")[0]
    assert '-A KUBE-SERVICES -m comment --comment "default/web:http has no endpoints" -m tcp -p tcp -d 10.96.0.5 --dport 80 -j REJECT' in filt
    assert "-A KUBE-EXTERNAL-SERVICES" in filt and "--dst-type LOCAL -m tcp -p tcp --dport 30080 -j REJECT" in filt
    assert "KUBE-SVC-" not in text and "-j DNAT" not in text


def test_render_deviation_and_family_filter() -> None:
    text = kubeproxy.render([_svc(1)], family=4,
                            options=ProxyOptions(cluster_cidr="10.244.0.0/16", masquerade_external=False))
    assert "masquerade traffic for" not in text
    assert "KUBE-SVC-" not in kubeproxy.render([_svc(1)], family=6, options=ProxyOptions(cluster_cidr="fd00::/56"))


# -- conntrack -------------------------------------------------------------------------


def test_parse_conntrack_lines_from_formats_md() -> None:
    e = parse_line("ipv4     2 tcp      6 119 TIME_WAIT src=198.51.100.10 dst=203.0.113.10 sport=57908 "
                   "dport=80 src=10.244.2.7 dst=10.0.1.11 sport=8080 dport=1766 [ASSURED] mark=0 use=1")
    assert e is not None and e.state == "TIME_WAIT" and e.dnat and e.snat
    assert e.orig_tuple() == ("tcp", "198.51.100.10", 57908, "203.0.113.10", 80)
    assert e.reply_tuple() == ("tcp", "10.244.2.7", 8080, "10.0.1.11", 1766)
    ev = parse_line("[1700000000.5     ]\t    [NEW] ipv4     2 udp      17 30 src=10.11.4.5 dst=10.12.201.0 "
                    "sport=48931 dport=8125 [UNREPLIED] src=10.11.4.22 dst=10.11.4.5 sport=8125 dport=48931")
    assert ev is not None and ev.event == "NEW" and ev.ts_ns == 1_700_000_000_000_005_000
    assert ev.state is None and ev.flags == ["UNREPLIED"] and ev.dnat and not ev.snat
    assert parse_line("conntrack v1.4.7 (conntrack-tools): 3 flow events have been shown.") is None


def _news(lines: list[tuple[str, str]]) -> dict:
    """truth._chain's index of NEW events by original tuple, from (node, line) pairs; each
    line's number is its place in ``lines`` among its node's."""
    news: dict = {}
    seen: dict[str, int] = {}
    for node, line in lines:
        seen[node] = seen.get(node, 0) + 1
        e = parse_line(line, seen[node])
        assert e is not None
        news.setdefault(e.orig_tuple(), []).append((node, e))
    return news


def test_truth_follows_an_entry_recreated_with_another_snat_port() -> None:
    """node1 re-created a connection's entry with a new SNAT port after a RST killed the first
    (a SNAT port landing on a pod's TIME_WAIT socket): node2's entry for the new port is the
    connection's too, not traffic outside the captured connections."""
    node1 = [
        "[1795888358.186200]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=198.51.100.10 dst=203.0.113.10 "
        "sport=40086 dport=80 [UNREPLIED] src=10.244.2.7 dst=10.0.1.11 sport=8080 dport=42879",
        "[1795888358.197367]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=198.51.100.10 dst=203.0.113.10 "
        "sport=40086 dport=80 [UNREPLIED] src=10.244.2.7 dst=10.0.1.11 sport=8080 dport=56381",
    ]
    node2 = [
        "[1795888358.112141]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.0.1.11 dst=10.244.2.7 "
        "sport=42879 dport=8080 [UNREPLIED] src=10.244.2.7 dst=10.0.1.11 sport=8080 dport=42879",
        "[1795888358.186183]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.0.1.11 dst=10.244.2.7 "
        "sport=42879 dport=8080 [UNREPLIED] src=10.244.2.7 dst=10.0.1.11 sport=8080 dport=42879",
        "[1795888358.197345]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.0.1.11 dst=10.244.2.7 "
        "sport=56381 dport=8080 [UNREPLIED] src=10.244.2.7 dst=10.0.1.11 sport=8080 dport=56381",
    ]
    news = _news([("node1", line) for line in node1] + [("node2", line) for line in node2])
    client = ("tcp", "198.51.100.10", 40086, "203.0.113.10", 80)
    start = 1795888358186079481
    chain = truth._chain(client, news, start, 1795888358212716708 + 1_000_000_000)
    assert [(n, e.line_no) for n, e in chain] == [("node1", 1), ("node1", 2), ("node2", 2), ("node2", 3)]
    # The path's translations are the first entry's on each node.
    assert truth._stages(client, chain)[1:] == [("tcp", "10.0.1.11", 42879, "10.244.2.7", 8080)] * 2


def _new_event(ts: str, client_port: int, dst: str, dst_port: int, *, at_node2: bool = False) -> str:
    """A [NEW] line of the lab's Service (203.0.113.10:80 -> a pod's 8080): node1's for a client
    port, DNATed to ``dst`` and SNATed to ``dst_port``; with ``at_node2`` node2's for that
    SNAT port."""
    if at_node2:
        return (f"[{ts}]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.0.1.11 dst={dst} sport={dst_port} "
                f"dport=8080 [UNREPLIED] src={dst} dst=10.0.1.11 sport=8080 dport={dst_port}")
    snat = "10.0.1.11" if dst == "10.244.2.7" else "10.244.1.1"
    return (f"[{ts}]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=198.51.100.10 dst=203.0.113.10 "
            f"sport={client_port} dport=80 [UNREPLIED] src={dst} dst={snat} sport=8080 dport={dst_port}")


@pytest.mark.parametrize(("events", "port", "start", "end", "expected"), [
    # Client port 40006 reused within milliseconds: node1's entry created 3 ms before this
    # connection started (DNAT to web-0) is the previous connection's, destroyed by this SYN;
    # this connection's is the one created after its start (DNAT to web-1, through node2).
    ([("node1", "1795890581.749327", "10.244.1.5", 20183, False),
      ("node1", "1795890581.754784", "10.244.2.7", 20916, False),
      ("node2", "1795890581.752745", "10.244.2.7", 20916, True)],
     40006, 1795890581752671986, 1795890581766521820, [("node1", 2), ("node2", 1)]),
    # conntrack -E stamps events as it reads them, milliseconds late: the previous user of
    # client port 40098 shows at node2 at .352924 but at node1 only at .357393, 0.8 ms before
    # this connection started (.358182). This connection's entry is node1's at .358280.
    ([("node1", "1795890813.357393", "10.244.2.7", 18086, False),
      ("node1", "1795890813.358280", "10.244.1.5", 49904, False),
      ("node2", "1795890813.352924", "10.244.2.7", 18086, True)],
     40098, 1795890813358182409, 1795890813367770580, [("node1", 2)]),
], ids=["created-before-the-start", "stamped-late"])
def test_truth_leaves_the_entry_of_the_tuples_previous_use_to_that_connection(events, port, start, end, expected):
    news = _news([(node, _new_event(ts, port, dst, dport, at_node2=node2)) for node, ts, dst, dport, node2 in events])
    client = ("tcp", "198.51.100.10", port, "203.0.113.10", 80)
    chain = truth._chain(client, news, start, end + 1_000_000_000)
    assert [(n, e.line_no) for n, e in chain] == expected
    # The previous connection (started 20 ms before, ended when this one started) keeps its own.
    before = truth._chain(client, news, start - 20_000_000, start)
    assert [(n, e.line_no) for n, e in before][:1] == [("node1", 1)]


# -- clock skew ----------------------------------------------------------------------------


def _pcap(endian: str, magic: int, records: list[tuple[int, int]]) -> bytes:
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    frame = bytes(14)
    for sec, frac in records:
        out += struct.pack(endian + "IIII", sec, frac, len(frame), len(frame)) + frame
    return out


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize(("magic", "unit"), [(0xA1B2C3D4, 1000), (0xA1B23C4D, 1)])
def test_shift_pcap(tmp_path: Path, endian: str, magic: int, unit: int) -> None:
    src, dst = tmp_path / "a.pcap", tmp_path / "b.pcap"
    per_sec = 1_000_000_000 // unit
    src.write_bytes(_pcap(endian, magic, [(100, per_sec - 1), (200, 0)]))
    skew.shift_capture(src, dst, 2_500_000_000)
    _, pkts = read_packets(dst)
    first = 100 * 10**9 + (per_sec - 1) * unit + 2_500_000_000
    assert [p.ts_ns for p in pkts] == [first, 202_500_000_000]
    skew.shift_capture(dst, dst, -2_500_000_000)
    assert dst.read_bytes() == src.read_bytes()


def _pcapng(tsresol: int | None, ts_units: list[int]) -> bytes:
    shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    out = struct.pack("<II", 0x0A0D0D0A, 12 + len(shb_body)) + shb_body + struct.pack("<I", 12 + len(shb_body))
    opts = b""
    if tsresol is not None:
        opts = struct.pack("<HH", 9, 1) + bytes([tsresol, 0, 0, 0]) + struct.pack("<HH", 0, 0)
    idb = struct.pack("<HHI", 1, 0, 65535) + opts
    out += struct.pack("<II", 1, 12 + len(idb)) + idb + struct.pack("<I", 12 + len(idb))
    for ts in ts_units:
        frame = bytes(16)
        epb = struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)) + frame
        out += struct.pack("<II", 6, 12 + len(epb)) + epb + struct.pack("<I", 12 + len(epb))
    return out


@pytest.mark.parametrize(("tsresol", "per_sec"), [(None, 10**6), (9, 10**9), (0x8A, 1024)])
def test_shift_pcapng_honours_if_tsresol(tmp_path: Path, tsresol: int | None, per_sec: int) -> None:
    src, dst = tmp_path / "a.pcapng", tmp_path / "b.pcapng"
    base = 1_700_000_000 * per_sec
    src.write_bytes(_pcapng(tsresol, [base, base + per_sec]))
    skew.shift_capture(src, dst, -750_000_000)
    _, pkts = read_packets(dst)
    assert [p.ts_ns for p in pkts] == [1_699_999_999_250_000_000, 1_700_000_000_250_000_000]
    assert len(dst.read_bytes()) == len(src.read_bytes())


def test_shift_conntrack_events(tmp_path: Path) -> None:
    src, dst = tmp_path / "e.txt", tmp_path / "f.txt"
    src.write_text("[1700000000.999999]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=1.1.1.1\n")
    skew.shift_conntrack_events(src, dst, 2_500_000_000)
    line = dst.read_text()
    assert line.startswith("[1700000003.499999]") and line.endswith("src=1.1.1.1\n")
    e = parse_line(line)
    assert e is not None and e.ts_ns == 1_700_000_003_499_999_000


def test_shift_rejects_a_non_capture(tmp_path: Path) -> None:
    bad = tmp_path / "x.pcap"
    bad.write_bytes(b"not a capture at all, not at all")
    with pytest.raises(LabError):
        skew.shift_capture(bad, tmp_path / "y.pcap", 1)


# -- traffic wire formats -------------------------------------------------------------------


def test_http_shaped_request_and_response_have_the_asked_sizes() -> None:
    for n in (120, 200, 1000):
        assert len(traffic.build_request(7, n, 3000)) == n
    for m in (400, 3000, 60000):
        resp = traffic.build_response(7, m, "web-1")
        assert len(resp) == m and resp.startswith(b"HTTP/1.1 200 OK\r\n")
    assert traffic.build_response(7, 3000, "a")[-100:] != traffic.build_response(8, 3000, "a")[-100:]


def test_dns_query_and_answer_are_real_dns() -> None:
    q = traffic.dns_query(0x1234, "web.default.svc.cluster.local.", 28)
    msg = dpkt.dns.DNS(q)
    assert msg.id == 0x1234 and msg.qd[0].name == "web.default.svc.cluster.local" and msg.qd[0].type == 28
    ans = dpkt.dns.DNS(traffic.dns_answer(q, "10.96.45.10", "fd00:10:96::2d0a"))
    assert ans.id == 0x1234 and ans.qr == 1 and ans.an[0].type == 28
    assert ans.an[0].ip6 == bytes.fromhex("fd000010009600000000000000002d0a")
    a = dpkt.dns.DNS(traffic.dns_answer(traffic.dns_query(1, "x.", 1), "10.96.45.10", "::1"))
    assert a.an[0].ip == bytes([10, 96, 45, 10])


# -- CLI and environment --------------------------------------------------------------------


def test_lab_list_names_every_scenario() -> None:
    res = CliRunner().invoke(app, ["lab", "list"])
    assert res.exit_code == 0
    names = [n for n, _ in list_scenarios()]
    assert [line.split()[0] for line in res.output.splitlines()] == names
    assert len(names) == len(set(names)) >= 13


def test_lab_run_without_root_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    res = CliRunner().invoke(app, ["lab", "run", "same-node", "-o", str(tmp_path)])
    assert res.exit_code == 2
    assert "lab needs root" in res.output
    assert not list(tmp_path.iterdir())


def test_lab_run_unknown_scenario_exits_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["lab", "run", "no-such-scenario", "-o", str(tmp_path)])
    assert res.exit_code == 2 and "unknown scenario no-such-scenario" in res.output


def test_missing_tools_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("shutil.which", lambda tool: None if tool in ("conntrack", "tcpdump") else "/x")
    with pytest.raises(LabError, match=r"lab needs tcpdump, conntrack: install them \(apt-get install tcpdump conntrack\)"):
        check_environment()
