"""The analyze and conntrack commands end to end on lab fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowtrace.cli import app
from flowtrace.context.manifest import read_manifest
from flowtrace.errors import InputError
from flowtrace.pipeline import analyze
from flowtrace.report.json_doc import analysis_document

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_analyze_json_document():
    r = run("analyze", str(FIXTURES / "cross-node"), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1 and doc["reference"] == "client"
    assert {c["capture"]: c["role"] for c in doc["captures"]} == {
        "client": "client", "node1": "node", "node2": "node", "web-1": "pod"}
    nat = [c for c in doc["connections"] if c["dnat"]]
    assert len(nat) == 3
    first = nat[0]
    assert [h["capture"] for h in first["request"] if h["on_path"]] == [
        "client", "node1", "node1", "node2", "node2", "node2", "web-1"]
    assert first["request"][2]["change_labels"].startswith("DNAT, SNAT")
    assert len(doc["conntrack"]["node1"]) == 3
    assert all(c["precision"] == 1.0 and c["recall"] == 1.0 for c in doc["comparisons"].values())


def test_analyze_writes_the_document_to_a_file(tmp_path):
    out = tmp_path / "a.json"
    r = run("analyze", str(FIXTURES / "same-node"), "-o", str(out))
    assert r.exit_code == 0
    assert json.loads(out.read_text())["schema_version"] == 1
    assert "connection" in r.stdout  # the terminal report still prints


def test_analyze_terminal_report_names_the_nat():
    r = run("analyze", str(FIXTURES / "cross-node"))
    assert r.exit_code == 0
    assert "DNAT 203.0.113.10:80 -> 10.244.2.7:8080 at node1" in r.stdout
    assert "reference" in r.stdout


def test_analyze_bad_input_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "x.pcap"
    bad.write_text("not a capture")
    r = run("analyze", str(bad))
    assert r.exit_code == 2
    assert "Traceback" not in r.output and "x.pcap" in r.output


@pytest.mark.parametrize("args, said", [
    (["--reference", "nosuch"], "the reference 'nosuch' is not a capture (captures: client, node1, node2, web-0)"),
    (["--manifest", str(FIXTURES / "same-node" / "client.pcap")], "client.pcap: not a text file"),
    (["--json", "-o", "/nonexistent/dir/doc.json"], "/nonexistent/dir/doc.json: cannot write"),
])
def test_analyze_bad_options_are_one_line_exit_2(args, said):
    r = run("analyze", str(FIXTURES / "same-node"), *args)
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowtrace: ") and said in lines[0]


def test_conntrack_table_is_the_kernel_layout():
    r = run("conntrack", str(FIXTURES / "cross-node"), "--node", "node1", "--extended")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    kernel = [line for line in (FIXTURES / "cross-node" / "node1.conntrack.txt").read_text().splitlines()
              if line.startswith("ipv4")]

    def without_timeout(line: str) -> str:
        parts = line.split()
        return " ".join(parts[:4] + parts[5:])

    assert sorted(map(without_timeout, lines)) == sorted(map(without_timeout, kernel))


@pytest.mark.parametrize("scenario", ["cross-node", "nodeport", "dns", "ipv6", "same-node", "cross-node-vxlan"])
def test_conntrack_events_are_the_kernels_lines_byte_for_byte(scenario):
    """Both nodes' NEW, UPDATE (and DESTROY) events, as conntrack -E -o timestamp,extended
    printed them in the lab (the timestamp cut off), in the same order, and nothing else;
    with VXLAN, the entries of the tunnel's own UDP datagrams among them."""
    for node in ("node1", "node2"):
        r = run("conntrack", str(FIXTURES / scenario), "--node", node, "--extended", "--events")
        assert r.exit_code == 0
        events = (FIXTURES / scenario / f"{node}.conntrack-events.txt").read_text().splitlines()
        kernel = [line.split("\t", 1)[1] for line in events]
        assert r.stdout.splitlines() == kernel


def test_conntrack_event_mask_and_timestamps():
    scenario = FIXTURES / "asymmetric-return"
    r = run("conntrack", str(scenario), "--node", "node2", "--events", "--event-mask", "destroy,NEW", "--timestamp",
            "--extended")
    assert r.exit_code == 0
    kernel = [line for line in (scenario / "node2.conntrack-events.txt").read_text().splitlines()
              if "[UPDATE]" not in line]
    lines = r.stdout.splitlines()
    assert [line.split("\t", 1)[1] for line in lines] == [line.split("\t", 1)[1] for line in kernel]
    for ours, theirs in zip(lines, kernel, strict=True):
        # [SEC.USEC] as conntrack -o timestamp prints it; the kernel stamps an event when it
        # delivers it, up to a millisecond after the packet
        stamp = ours.split("\t", 1)[0]
        assert stamp.startswith("[") and stamp.endswith("]") and len(stamp) == len("[1795847238.056143]")
        assert 0 <= float(theirs.split("]")[0][1:]) - float(stamp[1:-1]) < 0.002
    bad = run("conntrack", str(scenario), "--events", "--event-mask", "NEW,CREATED")
    assert bad.exit_code == 2 and "--event-mask 'NEW,CREATED'" in bad.output


def test_conntrack_compare_lists_event_differences(tmp_path):
    dump = (FIXTURES / "cross-node" / "node1.conntrack-events.txt").read_text()
    # one of the kernel's UPDATE lines made to say CLOSE_WAIT where it said LAST_ACK
    changed = dump.replace(" 30 LAST_ACK ", " 60 CLOSE_WAIT ", 1)
    (tmp_path / "node1.conntrack-events.txt").write_text(changed)
    r = run("conntrack", str(FIXTURES / "cross-node"), "--compare", str(tmp_path / "node1.conntrack-events.txt"))
    assert r.exit_code == 1
    assert "UPDATE and DESTROY events: 14 matched, 1 differing" in r.stdout
    assert "differs: state LAST_ACK != CLOSE_WAIT" in r.stdout and " [UPDATE] tcp      6 30 LAST_ACK" in r.stdout
    doc = analyze(str(FIXTURES / "cross-node"), conntrack_dumps=[str(tmp_path / "node1.conntrack-events.txt")],
                  directory_dumps=False)
    c = doc.comparisons["node1 (node1.conntrack-events.txt)"]
    assert not c.agrees and len(c.matched) == 3 and c.events is not None and len(c.events.differing) == 1
    events = analysis_document(doc, version="test")["comparisons"]["node1 (node1.conntrack-events.txt)"]["events"]
    assert events["matched"] == 14 and events["differing"][0]["dump"].startswith(" [UPDATE] tcp      6 60 CLOSE_WAIT")


def test_events_of_entries_older_than_the_capture_are_left_out_and_said():
    # node1's -E dump begins with the DESTROY of an entry made before the capture; the
    # port's later users are SYN retransmissions a TIME_WAIT or CLOSE entry killed
    a = analyze(str(FIXTURES / "snat-timewait-collision"), detect=False)
    c = a.comparisons["node1 (node1.conntrack-events.txt)"]
    assert c.agrees and len(c.matched) == 6
    assert c.events is not None and len(c.events.matched) == 5
    assert any(note.startswith("1 conntrack dump entries (UPDATE and DESTROY events) belong to entries made before")
               for note in a.notes)


def test_conntrack_compare_exit_status():
    same = run("conntrack", str(FIXTURES / "asymmetric-return"), "--compare",
               str(FIXTURES / "asymmetric-return" / "node2.conntrack-events.txt"))
    assert same.exit_code == 0 and "8 matched" in same.stdout
    other = run("conntrack", str(FIXTURES / "cross-node"), "--compare",
                f"node1={FIXTURES / 'same-node' / 'node1.conntrack-events.txt'}")
    assert other.exit_code == 1 and "only in the dump" in other.stdout


IGMP_JOIN = ("ipv4     2 unknown  2 596 src=10.244.2.1 dst=224.0.0.22 [UNREPLIED] src=224.0.0.22 dst=10.244.2.1 "
             "mark=0 use=1\n")
"""node2's bridge joining a multicast group, as a lab node's conntrack -L lists it."""


def test_dump_entries_of_protocols_not_rebuilt_are_left_out_and_said(tmp_path):
    import shutil

    d = tmp_path / "cross-node"
    shutil.copytree(FIXTURES / "cross-node", d, ignore=shutil.ignore_patterns("pcapng"))
    listing = d / "node2.conntrack.txt"
    listing.write_text(listing.read_text() + IGMP_JOIN)
    a = analyze(str(d))
    c = a.comparisons["node2 (node2.conntrack.txt)"]
    assert (c.precision, c.recall) == (1.0, 1.0) and not c.missing_in_reconstruction
    assert any(e.proto == "unknown" and e.proto_number == 2 for e in a.dumps["node2"])  # still read
    note = next(n for n in a.notes if "not rebuild" in n)
    assert note.endswith("are not compared: unknown 2 (1)")
    r = run("conntrack", str(d), "--compare", str(listing))
    assert r.exit_code == 0 and "0 only in the dump" in r.stdout and f"note: {note}" in r.stdout
    # Found in the directory and named again: read once.
    again = analyze(str(d), conntrack_dumps=[str(listing)])
    assert [e.line for e in again.dumps["node2"]] == [e.line for e in a.dumps["node2"]]


def test_conntrack_unknown_node_is_an_error():
    r = run("conntrack", str(FIXTURES / "cross-node"), "--node", "nope")
    assert r.exit_code == 2 and "nope" in r.output


def test_manifest_sets_roles_and_reference(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("reference: node1\ncaptures:\n  web-1: {role: pod, host: node2}\n  node2: {role: node, host: node2}\n")
    a = analyze([str(FIXTURES / "cross-node")], manifest=m)
    assert a.reference == "node1"
    assert a.offsets["node2"].offset_ns == a.offsets["web-1"].offset_ns  # one host, one clock


@pytest.mark.parametrize("text", ["[1, 2]", "captures: {a: {role: wizard}}", "captures: {a: {colour: red}}",
                                  "foo: 1", "captures: [",
                                  # shapes YAML reads fine that are not a manifest's
                                  "captures: [client, node1]", "captures: x", "same_clock: 1", "same_clock: [a, b]",
                                  "same_clock: true", "reference: [client]", "captures: {a: {host: {x: 1}}}",
                                  "same_clock: [[a, {b: 1}]]"])
def test_bad_manifests_are_input_errors(tmp_path, text):
    m = tmp_path / "m.yaml"
    m.write_text(text)
    with pytest.raises(InputError) as e:
        read_manifest(m)
    assert "m.yaml" in str(e.value)


def test_manifest_names_may_be_numbers_and_empty_entries_are_skipped(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("reference: 1\ncaptures:\n  web-1: {host: 2}\n  node2: {host: 2}\nsame_clock: [[client, ~]]\n")
    man = read_manifest(m)
    assert man.reference == "1" and man.captures["web-1"].host == "2"
    assert man.same_clock == [{"client"}, {"web-1", "node2"}]


def test_conntrack_timeouts_set_the_seconds_left():
    def seconds_left(*options: str) -> set[str]:
        r = run("conntrack", str(FIXTURES / "cross-node"), "--node", "node1", *options)
        assert r.exit_code == 0, r.output
        return {line.split()[2] for line in r.stdout.splitlines()}

    assert seconds_left() == {"120"}  # TIME_WAIT, Linux's 120 s, read as the capture ends
    assert seconds_left("--timeout", "tcp_time_wait=60") == {"60"}
    assert seconds_left("--kube-proxy-timeouts") == {"120"}  # kube-proxy leaves TIME_WAIT alone
    bad = run("analyze", str(FIXTURES / "cross-node"), "--timeout", "tcp_time_wait")
    assert bad.exit_code == 2 and "KEY=SECONDS" in bad.output


def test_analysis_without_detection_or_the_directorys_dumps():
    scenario = FIXTURES / "cross-node"
    full = analyze(scenario)
    assert full.findings and len(full.comparisons) == 4
    bare = analyze(scenario, detect=False, directory_dumps=False,
                   conntrack_dumps=[str(scenario / "node1.conntrack.txt")])
    assert bare.findings == [] and (bare.connections["findings"] == 0).all()
    assert list(bare.comparisons) == ["node1 (node1.conntrack.txt)"]
    assert list(bare.dumps) == ["node1"]
    assert bare.comparisons["node1 (node1.conntrack.txt)"] == full.comparisons["node1 (node1.conntrack.txt)"]
    for node in full.conntrack_nodes():
        assert [e.entry for e in bare.conntrack_table(node)] == [e.entry for e in full.conntrack_table(node)]
