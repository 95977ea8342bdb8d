"""conntrack's text formats: parsing every -o variant and printing the exact -L layout."""

from __future__ import annotations

import pytest

from flowtrace.context.conntrack import ConntrackEntry, Tuple, compare, parse_line, read_dump
from flowtrace.errors import InputError

LINES = [
    "ipv4     2 tcp      6 119 TIME_WAIT src=198.51.100.10 dst=203.0.113.10 sport=57908 dport=80 "
    "src=10.244.2.7 dst=10.0.1.11 sport=8080 dport=1766 [ASSURED] mark=0 use=1",
    "tcp      6 113 SYN_SENT src=198.51.100.10 dst=203.0.113.10 sport=57928 dport=80 [UNREPLIED] "
    "src=10.244.2.7 dst=198.51.100.10 sport=8080 dport=57928 mark=0 use=1",
    "udp      17 30 src=10.11.4.5 dst=10.12.201.0 sport=48931 dport=8125 [UNREPLIED] "
    "src=10.11.4.22 dst=10.11.4.5 sport=8125 dport=48931 mark=0 use=1",
    "icmp     1 29 src=10.0.0.1 dst=10.0.0.2 type=8 code=0 id=4242 src=10.0.0.2 dst=10.0.0.1 type=0 code=0 "
    "id=4242 mark=0 use=1",
    "ipv6     10 tcp      6 431999 ESTABLISHED src=2001:db8::1 dst=2001:db8::2 sport=1 dport=2 "
    "src=2001:db8::2 dst=2001:db8::1 sport=2 dport=1 [ASSURED] mark=0 use=1",
    # IGMP, which conntrack tracks without a module of its own (from a lab node's -L)
    "ipv4     2 unknown  2 596 src=10.244.2.1 dst=224.0.0.22 [UNREPLIED] src=224.0.0.22 dst=10.244.2.1 mark=0 "
    "use=1",
    "unknown  89 599 src=10.0.0.1 dst=224.0.0.5 src=224.0.0.5 dst=10.0.0.1 mark=0 use=1",
    # the fields around use= in libnetfilter_conntrack's order: an SELinux host's security
    # context, -o id, connection labels, zones per direction, timestamps (-o ktimestamp)
    "tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 src=10.0.0.2 dst=10.0.0.1 "
    "sport=2 dport=1 [ASSURED] mark=0 secctx=system_u:object_r:unlabeled_t:s0 use=1",
    "ipv4     2 tcp      6 117 TIME_WAIT src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 src=10.0.0.2 dst=10.0.0.1 "
    "sport=2 dport=1 [ASSURED] mark=0 use=1 id=3735928559",
    "icmp     1 29 src=10.0.0.1 dst=10.0.0.2 type=8 code=0 id=4242 src=10.0.0.2 dst=10.0.0.1 type=0 code=0 "
    "id=4242 mark=0 use=1 id=2882400001",
    "udp      17 25 src=10.0.0.1 dst=10.0.0.2 sport=53000 dport=53 zone-orig=1 packets=1 bytes=72 [UNREPLIED] "
    "src=10.0.0.2 dst=10.0.0.1 sport=53 dport=53000 zone-reply=2 packets=0 bytes=0 mark=7 secmark=4 zone=3 "
    "delta-time=5 [start=Sat Nov 28 19:36:09 2026] helper=tftp use=2 id=17 labels=eth0-in,web",
    # conntrack v1.4.7 -L -o extended,ktimestamp,id in a network namespace (accounting and
    # timestamps on, a raw-table CT rule giving a zone and a helper)
    "ipv4     2 udp      17 29 src=10.99.0.1 dst=10.99.0.2 sport=46746 dport=5353 zone-orig=4 packets=1 "
    "bytes=29 [UNREPLIED] src=10.99.0.2 dst=10.99.0.1 sport=5353 dport=46746 packets=0 bytes=0 mark=0 "
    "delta-time=0 [start=Sat Nov 28 19:41:38 2026] use=1 id=410107944",
    "ipv4     2 udp      17 29 src=10.99.0.1 dst=10.99.0.2 sport=46746 dport=69 packets=1 bytes=29 "
    "[UNREPLIED] src=10.99.0.2 dst=10.99.0.1 sport=69 dport=46746 packets=0 bytes=0 mark=0 delta-time=0 "
    "[start=Sat Nov 28 19:41:38 2026] helper=tftp use=1 id=2550586880",
]


@pytest.mark.parametrize("line", LINES)
def test_lines_round_trip_byte_for_byte(line):
    e = parse_line(line)
    assert e is not None
    assert e.format(extended=line.startswith("ipv")) == line


def test_event_lines_with_timestamps_and_counters():
    line = ("[1700000000.5     ]\t [UPDATE] tcp      6 60 SYN_RECV src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 "
            "packets=1 bytes=60 src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 packets=1 bytes=60 mark=0 id=99 use=1")
    e = parse_line(line)
    assert e.event == "UPDATE"
    assert e.ts_ns == 1_700_000_000_000_005_000  # "5     " is 5 microseconds, not 500000
    assert e.counters == ((1, 60), (1, 60))
    assert e.extra["id"] == "99"
    assert "packets=1 bytes=60 src=2.2.2.2" in e.format()


def test_fields_around_use_keep_their_values_and_do_not_change_the_tuples():
    icmp = parse_line(LINES[9])
    assert icmp is not None
    assert icmp.reply == Tuple(src="10.0.0.2", dst="10.0.0.1", icmp_type=0, icmp_code=0, icmp_id=4242)
    assert icmp.extra == {"id": "2882400001"}
    many = parse_line(LINES[10])
    assert many is not None and many.zone == 3 and many.mark == 7 and many.use == 2
    assert many.extra == {"start": "Sat Nov 28 19:36:09 2026", "zone-orig": "1", "zone-reply": "2",
                          "secmark": "4", "delta-time": "5", "helper": "tftp", "id": "17", "labels": "eth0-in,web"}
    assert many.counters == ((1, 72), (0, 0))
    destroyed = parse_line("[1764358569.123456] [DESTROY] tcp      6 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 "
                           "src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 [ASSURED] mark=0 delta-time=3 "
                           "[start=Sat Nov 28 19:36:06 2026] [stop=Sat Nov 28 19:36:09 2026] use=1")
    assert destroyed is not None and destroyed.event == "DESTROY"
    assert destroyed.format().endswith("delta-time=3 [start=Sat Nov 28 19:36:06 2026] "
                                       "[stop=Sat Nov 28 19:36:09 2026] use=1")


def test_destroy_events_have_no_timeout():
    e = parse_line("[DESTROY] tcp      6 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 src=2.2.2.2 dst=1.1.1.1 sport=2 "
                   "dport=1 [ASSURED] mark=0 use=1")
    assert e.event == "DESTROY" and e.timeout_s is None and "ASSURED" in e.flags


def test_nat_direction_properties():
    e = parse_line(LINES[0])
    assert e.dnat and e.snat
    e = parse_line(LINES[1])
    assert e.dnat and not e.snat


def test_summary_and_blank_lines_are_skipped(tmp_path):
    p = tmp_path / "dump.txt"
    p.write_text(LINES[1] + "\n\nconntrack v1.4.7 (conntrack-tools): 1 flow entries have been shown.\n")
    assert len(read_dump(p)) == 1


def test_xml_output_is_read(tmp_path):
    p = tmp_path / "dump.xml"
    p.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<conntrack>\n<flow type="new"><meta direction="original">'
        '<layer3 protonum="2" protoname="ipv4"><src>1.1.1.1</src><dst>2.2.2.2</dst></layer3>'
        '<layer4 protonum="6" protoname="tcp"><sport>1</sport><dport>2</dport></layer4></meta>'
        '<meta direction="reply"><layer3 protonum="2" protoname="ipv4"><src>3.3.3.3</src><dst>1.1.1.1</dst>'
        '</layer3><layer4 protonum="6" protoname="tcp"><sport>8080</sport><dport>1</dport></layer4></meta>'
        '<meta direction="independent"><state>SYN_SENT</state><timeout>120</timeout><unreplied/></meta>'
        "</flow>\n</conntrack>\n")
    (e,) = read_dump(p)
    assert e.event == "NEW" and e.state == "SYN_SENT" and "UNREPLIED" in e.flags
    assert e.reply == Tuple(src="3.3.3.3", dst="1.1.1.1", sport=8080, dport=1)


def test_malformed_lines_name_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text(LINES[1] + "\nthis is not conntrack output\n")
    with pytest.raises(InputError) as err:
        read_dump(p)
    assert "bad.txt" in str(err.value) and "line 2" in str(err.value)


def test_compare_reports_each_kind_of_difference():
    def entry(sport: int, reply_dport: int, state: str = "SYN_SENT") -> ConntrackEntry:
        return ConntrackEntry(family="ipv4", proto="tcp", state=state,
                              orig=Tuple(src="1.1.1.1", dst="2.2.2.2", sport=sport, dport=80),
                              reply=Tuple(src="3.3.3.3", dst="4.4.4.4", sport=8080, dport=reply_dport))
    rebuilt = [entry(1, 10), entry(2, 20), entry(3, 30)]
    dumped = [entry(1, 10), entry(2, 21), entry(4, 40)]
    c = compare(rebuilt, dumped)
    assert len(c.matched) == 1
    assert [r.orig.sport for r, _, _ in c.differing] == [2]
    assert [e.orig.sport for e in c.missing_in_dump] == [3]
    assert [e.orig.sport for e in c.missing_in_reconstruction] == [4]
    assert c.precision == pytest.approx(1 / 3) and c.recall == pytest.approx(1 / 3)


def test_common_lines_parse_in_one_match_exactly_as_token_by_token():
    from pathlib import Path

    from flowtrace.context.conntrack import _Interned, _parse_common, _parse_general

    root = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"
    lines = [
        *LINES,
        "[1700000000.5     ]\t [UPDATE] tcp      6 60 SYN_RECV src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 "
        "packets=1 bytes=60 src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 packets=1 bytes=60 [ASSURED] mark=0 zone=3 use=1",
        "[DESTROY] tcp      6 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 "
        "[ASSURED] [OFFLOAD] mark=7 use=2",
        "tcp      6 431999 ESTABLISHED src=2001:db8::1 dst=2001:db8::2 sport=1 dport=2 "
        "src=2001:db8::2 dst=2001:db8::1 sport=2 dport=1 [ASSURED] use=1",
    ]
    for path in sorted(root.glob("*/*conntrack*.txt")):
        lines += path.read_text().splitlines()
    fast = 0
    seen = _Interned()  # shared over all lines, as within one dump
    for i, text in enumerate(lines):
        general = _parse_general(text, i, "n")
        common = _parse_common(text, i, "n", seen)
        if common is not None:
            fast += 1
            assert common == general, text
            assert common.extra == general.extra == {}, text
        assert parse_line(text, line=i, node="n") == general
    assert fast > 0.9 * len([t for t in lines if t.strip() and not t.startswith("conntrack v")])


def test_unknown_protocols_keep_their_number_and_differ_by_it(tmp_path):
    igmp = parse_line("ipv4     2 unknown  2 596 src=10.244.2.1 dst=224.0.0.22 [UNREPLIED] src=224.0.0.22 "
                      "dst=10.244.2.1 mark=0 use=1")
    assert igmp is not None and igmp.proto == "unknown" and igmp.proto_number == 2
    ospf = parse_line("ipv4     2 unknown  89 596 src=10.244.2.1 dst=224.0.0.22 [UNREPLIED] src=224.0.0.22 "
                      "dst=10.244.2.1 mark=0 use=1")
    assert ospf is not None and ospf.proto_number == 89
    c = compare([igmp], [ospf])
    assert not c.matched and c.missing_in_dump == [igmp] and c.missing_in_reconstruction == [ospf]
    tcp = parse_line(LINES[0])
    assert tcp is not None and tcp.protonum is None and tcp.proto_number == 6  # the name gives it
    p = tmp_path / "dump.xml"
    p.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<conntrack>\n<flow><meta direction="original">'
        '<layer3 protonum="2" protoname="ipv4"><src>10.244.2.1</src><dst>224.0.0.22</dst></layer3>'
        '<layer4 protonum="2" protoname="unknown"></layer4></meta>'
        '<meta direction="reply"><layer3 protonum="2" protoname="ipv4"><src>224.0.0.22</src><dst>10.244.2.1</dst>'
        '</layer3><layer4 protonum="2" protoname="unknown"></layer4></meta>'
        '<meta direction="independent"><timeout>596</timeout><unreplied/></meta>'
        "</flow>\n</conntrack>\n")
    (x,) = read_dump(p)
    assert x.proto_number == 2 and x.key() == igmp.key()


@pytest.mark.parametrize("line, what", [
    ("tcp      6 118 TIME_WAIT src=1.1.1.1 dst=2.2.2.2 sport=39566 dport=8080 src=2.2.2.2 dst=1.1.1.1 "
     "sport=808ASSURED] mark=0 use=1", "sport=808ASSURED] is not a number"),
    ("tcp      6 118 TIME_WAIT src=1.1.1.1 dst=2.2.2.2 sport=70000 dport=80 src=2.2.2.2 dst=1.1.1.1 "
     "sport=80 dport=70000 mark=0 use=1", "sport=70000 is out of range"),
    ("tcp      6 118 TIME_WAIT src=1.1.1.1 dst=2.2.2.2 sport=-5 dport=80 src=2.2.2.2 dst=1.1.1.1 "
     "sport=80 dport=5 mark=0 use=1", "sport=-5 is not a number"),
    ("icmp     1 29 src=10.0.0.1 dst=10.0.0.2 type=300 code=0 id=1 src=10.0.0.2 dst=10.0.0.1 type=0 code=0 id=1 "
     "mark=0 use=1", "type=300 is out of range"),
    ("tcp      6 118 TIME_WAIT src=1.1.1.1 dst=sport=1 sport=1 dport=80 src=2.2.2.2 dst=1.1.1.1 "
     "sport=80 dport=1 mark=0 use=1", "is not an address"),
    ("tcp      6 118 TIME_WAIT src=1.1.1.1 dst=2.2.2.2 sport=1 dport=80 src=2.2.2.2 dst=1.1.1.1 "
     "sport=80 dport=1 mark=x use=1", "not a conntrack entry"),
    ("udp      17 25 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=53 packets=1 bytes=7e1 src=2.2.2.2 dst=1.1.1.1 "
     "sport=53 dport=1 packets=0 bytes=0 mark=0 use=1", "not a conntrack entry"),
])
def test_malformed_numbers_and_addresses_are_input_errors(tmp_path, line, what):
    p = tmp_path / "node1.conntrack.txt"
    p.write_text(LINES[0] + "\n" + line + "\n")
    with pytest.raises(InputError) as err:
        read_dump(p)
    assert what in str(err.value) and "line 2" in str(err.value)


def test_malformed_xml_numbers_are_input_errors(tmp_path):
    p = tmp_path / "dump.xml"
    p.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<conntrack>\n<flow type="new"><meta direction="original">'
        '<layer3 protonum="2" protoname="ipv4"><src>1.1.1.1</src><dst>2.2.2.2</dst></layer3>'
        '<layer4 protonum="6" protoname="tcp"><sport>x1</sport><dport>2</dport></layer4></meta>'
        '<meta direction="reply"><layer3 protonum="2" protoname="ipv4"><src>3.3.3.3</src><dst>1.1.1.1</dst>'
        '</layer3><layer4 protonum="6" protoname="tcp"><sport>8080</sport><dport>1</dport></layer4></meta>'
        '<meta direction="independent"><timeout>12x</timeout></meta></flow>\n</conntrack>\n')
    with pytest.raises(InputError) as err:
        read_dump(p)
    assert "dump.xml" in str(err.value) and "sport=x1 is not a number" in str(err.value)
    p.write_text(p.read_text().replace("x1", "1"))
    with pytest.raises(InputError) as err:
        read_dump(p)
    assert "not a conntrack XML dump" in str(err.value)
