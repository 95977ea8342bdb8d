"""The conn.log writer: Zeek's exact layout, read back; and Zeek's own expected conn.log lines
for Zeek's test traces in the corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
from flowpkts import Tcp, table, udp

import flowtrace
from flowtrace.flows import KUBE_PROXY_TIMEOUTS, build
from flowtrace.flows.zeek import FIELDS, conn_log, parse_conn_log

CORPUS = Path("/work/shared/corpus/public")
TRACE = "zeek__zeek__testing__btest__Traces__"


def test_header_lines_exactly_as_zeek_writes_them():
    text = conn_log(build(Tcp().handshake().table()).flows, open_time=0, close_time=0)
    lines = text.split("\n")
    assert lines[0] == "#separator \\x09"
    assert lines[1] == "#set_separator\t,"
    assert lines[2] == "#empty_field\t(empty)"
    assert lines[3] == "#unset_field\t-"
    assert lines[4] == "#path\tconn"
    assert lines[5].startswith("#open\t") and len(lines[5].split("\t")[1]) == len("1970-01-01-00-00-00")
    assert lines[6] == "#fields\t" + "\t".join(n for n, _ in FIELDS)
    assert lines[7] == "#types\t" + "\t".join(t for _, t in FIELDS)
    assert lines[-2].startswith("#close\t") and lines[-1] == ""
    assert lines[6].split("\t")[1:22] == [
        "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "duration",
        "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp", "missed_bytes", "history",
        "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "tunnel_parents"]


def test_rows_parse_back_to_the_table():
    c = Tcp(step_ns=1_234_567).handshake().a("PA", 100).b("PA", 300).a("FA").b("FA").a("A")
    rows = [*c.rows, udp("10.0.0.7", 5353, "224.0.0.251", 5353)]
    flows = build(table(rows)).flows
    meta, log = parse_conn_log(conn_log(flows))
    assert meta["path"] == "conn"
    assert len(log) == len(flows)
    assert all(len(r) == len(FIELDS) for r in log.itertuples(index=False))
    tcp = log[log.proto == "tcp"].iloc[0]
    row = flows[flows.proto == 6].iloc[0]
    assert tcp.uid == row.uid and tcp.uid.startswith("C") and len(tcp.uid) == 18
    assert tcp.ts == f"{row.ts_ns // 10**9}.{row.ts_ns % 10**9 // 1000:06d}"
    assert (tcp["id.orig_h"], tcp["id.orig_p"], tcp["id.resp_h"], tcp["id.resp_p"]) == ("10.0.0.1", "40000", "10.0.0.2", "80")
    assert (tcp.duration, tcp.orig_bytes, tcp.resp_bytes) == ("0.007407", "100", "300")
    assert (tcp.conn_state, tcp.history, tcp.service, tcp.local_orig, tcp.tunnel_parents) == ("SF", "ShADdFf", "-", "-", "-")
    assert (tcp.ip_proto, tcp.community_id) == ("6", row.community_id)
    udp_row = log[log.proto == "udp"].iloc[0]
    # zero duration: duration and byte counts are unset, as Zeek leaves them
    assert (udp_row.duration, udp_row.orig_bytes, udp_row.resp_bytes, udp_row.orig_pkts) == ("-", "-", "-", "1")


def test_empty_table_gives_header_and_close_only():
    text = conn_log(flowtrace.FLOWS.empty())
    assert [ln for ln in text.splitlines() if not ln.startswith("#")] == []
    assert text.splitlines()[-1].startswith("#close")


def test_parse_rejects_non_logs():
    with pytest.raises(ValueError):
        parse_conn_log("hello\n")


# Zeek's own expected conn.log lines (zeek/zeek testing/btest/Baseline/<test>/conn.log) for the
# Zeek test traces in the corpus: ts, orig_h, orig_p, resp_h, resp_p, proto, duration,
# orig_bytes, resp_bytes, conn_state, missed_bytes, history, orig_pkts, orig_ip_bytes,
# resp_pkts, resp_ip_bytes.
BASELINES = [
    # core.tcp.missing-syn: the SYN is missing, Zeek flips on the SYN-ACK
    ("tcp__missing-syn.pcap", {}, [
        "1128727435.633408 141.42.64.125 56730 125.190.109.199 80 tcp 1.550793 98 9417 SF 0 ^hADdFaf 11 670 10 9945"]),
    # core.tcp-padding (zeek -C)
    ("tcp-http-with-padding.pcap", {"ignore_checksums": True}, [
        "- 167.221.30.181 59406 217.207.159.63 27272 tcp 10.914549 16 191 SF 0 ShADadfF 13 704 12 823"]),
    # core.q-in-q
    ("q-in-q.pcap", {}, [
        "1363900699.548138 172.19.51.37 47808 172.19.51.63 47808 udp 0.000100 36 0 S0 0 D 2 92 0 0",
        "1363900699.549647 193.1.186.60 9875 224.2.127.254 9875 udp 0.000139 552 0 S0 0 D 2 608 0 0"]),
    # core.pppoe-over-qinq: Zeek keeps the connection through a 235 s pause after a FIN,
    # which conntrack's CLOSE_WAIT (60 s) ends; kube-proxy's 3600 s keeps it as Zeek does.
    ("pppoe-over-qinq.pcap", {"timeouts": KUBE_PROXY_TIMEOUTS}, [
        "- 1.1.1.1 20394 2.2.2.2 443 tcp 273.626833 11352 4984 SF 0 ShADdtaTTtFf 44 25283 42 13001"]),
    # analyzers.conn-size (older log layout, same values)
    ("conn-size.pcap", {"ignore_checksums": True}, [
        "1128727430.350788 141.42.64.125 56729 125.190.109.199 12345 tcp - - - S0 0 S 1 60 0 0",
        "1144876538.705610 169.229.147.203 49370 239.255.255.253 427 udp 5.921003 147 0 S0 0 D 3 231 0 0",
        "1144876599.397603 192.150.186.169 53063 194.64.249.244 80 tcp 0.815763 377 445 SF 0 ShADadfF 6 697 5 713",
        "1144876697.068273 192.150.186.169 3 192.150.186.15 3 icmp 0.000650 56 0 OTH 0 - 2 112 0 0",
        "1144876709.032670 169.229.147.43 49370 239.255.255.253 427 udp 9.000191 196 0 S0 0 D 4 308 0 0"]),
]


@pytest.mark.parametrize(("trace", "options", "expected"), BASELINES, ids=[b[0] for b in BASELINES])
def test_matches_zeek_baselines(trace, options, expected):
    path = CORPUS / (TRACE + trace)
    if not path.exists():
        pytest.skip(f"corpus trace {path.name} not available")
    flows = flowtrace.flows(str(path), **options)
    _, log = parse_conn_log(conn_log(flows))
    cols = ["ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "duration", "orig_bytes",
            "resp_bytes", "conn_state", "missed_bytes", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts",
            "resp_ip_bytes"]
    got = [" ".join(r) for r in log[cols].itertuples(index=False)]
    for want in expected:
        if want.startswith("- "):  # timestamp masked in the baseline
            assert any(g.split(" ", 1)[1] == want[2:] for g in got), (want, got)
        else:
            assert want in got, (want, got)


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "pcaps"


def _oracle_rows(flows) -> list[str]:
    """conn.log data lines formatted row by row with Python's % (the writer's reference)."""
    def text(v) -> str:
        return str(v) if isinstance(v, str) and v else "-"

    def seconds(ns: int) -> str:
        us = ns // 1000
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    names = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}
    out = []
    for r in flows.itertuples(index=False):
        timed = r.duration_ns > 0
        fields = [seconds(r.ts_ns), text(r.uid), text(r.orig_h), str(max(r.orig_p, 0)), text(r.resp_h),
                  str(max(r.resp_p, 0)), names.get(r.proto & 255, "unknown_transport"), "-",
                  seconds(r.duration_ns) if timed else "-", str(r.orig_bytes) if timed else "-",
                  str(r.resp_bytes) if timed else "-", text(r.conn_state), "-", "-", str(r.missed_bytes),
                  text(r.history), str(r.orig_pkts), str(r.orig_ip_bytes), str(r.resp_pkts), str(r.resp_ip_bytes),
                  "-", str(r.proto), text(r.community_id)]
        out.append("\t".join(fields))
    return out


def test_writer_matches_a_row_by_row_oracle_from_the_table_and_from_its_arrays():
    from flowtrace.flows import zeek
    from flowtrace.pipeline import flow_set

    scenarios = ["many-connections", "dns", "mtu-blackhole", "no-endpoints", "cross-node-vxlan", "ipv6"]
    captures = [f"{s}-{p.stem}={p}" for s in scenarios for p in sorted((FIXTURES / s).glob("*.pcap*"))]
    _, built = flow_set(captures)
    flows = built.flows
    assert (flows["duration_ns"] == 0).any() and (flows["duration_ns"] > 0).any()
    assert set(flows["proto"]) >= {6, 17, 58}
    expected = _oracle_rows(flows)
    from_frame, from_arrays = zeek._rows(flows).splitlines(), zeek._rows(built.table).splitlines()
    assert len(from_frame) == len(flows)
    assert [i for i, (a, b) in enumerate(zip(from_frame, expected, strict=True)) if a != b] == []
    assert from_arrays == from_frame


def test_writer_writes_unset_fields_and_odd_texts_as_they_are():
    from flowtrace.flows import zeek

    flows = build(Tcp().handshake().table()).flows.copy()
    flows["history"] = ["S\th"] * len(flows)
    flows["community_id"] = [""] * len(flows)
    flows["duration_ns"] = 0
    flows["orig_p"] = -1
    rows = zeek._rows(flows)
    assert rows.splitlines() == _oracle_rows(flows)
    assert "S\th" in rows and rows.endswith("\t-\n")


def test_conn_log_from_the_command_loads_neither_pandas_nor_pyarrow():
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "flowtrace", "flows", "--zeek",
                          str(FIXTURES / "many-connections")], capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "numpy" in imported and "flowtrace.flows.lines" in imported
    assert not imported & {"pandas", "pyarrow"}
    assert run.stdout.startswith("#separator") and run.stdout.count("\n") > 100
