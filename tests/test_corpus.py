"""Every capture of ../shared/corpus goes through `flowtrace info --json` without a traceback.

MANIFEST.tsv gives, per file, its link type and container as capinfos saw them
(``ether [pcap]``, ``linux-sll [nsecpcap]``, ``unreadable [?]``…) and its packet count
(``?`` when capinfos could not read it). What is expected:

* a pcap/pcapng file whose link type flowtrace supports: exit 0 and exactly
  MANIFEST's packet count (complete records); a warning when capinfos says it is cut;
* a file capinfos cannot read at all (``?``): exit 2 and one line naming the file, or
  (a lenient reader) exit 0 with a warning that says what is off;
* another container (snoop, Kuznetsov's pcap), a link type outside the supported set, or
  a header capinfos rejects: either of the two above, nothing else.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowtrace.cli import app

pytestmark = pytest.mark.filterwarnings("ignore::flowtrace.errors.CaptureWarning")

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
MANIFEST = CORPUS / "MANIFEST.tsv"

if not MANIFEST.is_file():
    pytest.skip(f"no corpus at {CORPUS}", allow_module_level=True)

SUPPORTED_LINKS = {
    "ether",
    "EN10MB (tcpdump)",
    "linux-sll",
    "linux-sll2",
    "rawip",
    "rawip4",
    "rawip6",
    "null",
    "per-packet: Ethernet,NULL/Loopback",
    "per-packet: Ethernet,Linux cooked-mode capture v1",
    "per-packet (no packets)",
    "none (no IDB)",
}
"""capinfos' names of the link types flowtrace must read (Ethernet, SLL, SLL2, raw, loopback)."""

CONTAINERS = {"pcap": ("pcap", "us"), "nsecpcap": ("pcap", "ns"), "pcapng": ("pcapng", None)}


def _rows() -> list[dict[str, str]]:
    with MANIFEST.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


ROWS = _rows()


def _split_link_type(field: str) -> tuple[str, str]:
    m = re.fullmatch(r"(.*) \[([^\]]*)\]", field.strip())
    assert m, f"unexpected link_type field {field!r}"
    return m.group(1), m.group(2)


def _expectation(row: dict[str, str]) -> str:
    """How flowtrace must treat the file.

    'read': exit 0 with exactly the packet count; 'reject': exit 2, or exit 0 with a
    warning; 'either': exit 2 or 'read'; 'more': capinfos stopped at an error after reading packet_count packets (e.g. a
    later pcapng section of an unknown version, which readers may skip): exit 2, or exit 0
    with at least that many packets and a warning.
    """
    link, container = _split_link_type(row["link_type"])
    if row["packet_count"] == "?" or container == "?":
        return "reject"
    if link == "unreadable" or container not in CONTAINERS or link not in SUPPORTED_LINKS:
        return "either"
    if "capinfos: (" in row["note"]:
        return "more"
    return "read"


def test_manifest_lists_existing_files():
    assert len(ROWS) > 100
    missing = [r["file"] for r in ROWS if not (CORPUS / r["file"]).is_file()]
    assert not missing, missing[:10]
    assert {_expectation(r) for r in ROWS} == {"read", "reject", "either", "more"}


_RUNNER = CliRunner()


@pytest.mark.parametrize("row", ROWS, ids=[Path(r["file"]).name[-60:] for r in ROWS])
def test_corpus_file_through_info(row):
    path = CORPUS / row["file"]
    result = _RUNNER.invoke(app, ["info", "--json", str(path)])
    out, err = result.stdout, result.stderr
    assert "Traceback" not in out + err, err
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{type(result.exception).__name__}: {result.exception}")
    expect = _expectation(row)
    assert result.exit_code in (0, 2), (result.exit_code, err)
    if result.exit_code == 2:
        assert expect != "read", f"rejected a readable capture: {err.strip()}"
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert path.name in lines[0]
        return
    (doc,) = json.loads(out)
    assert sum(doc["decode_status"].values()) == doc["packets"]
    if expect == "reject":
        assert doc["warnings"], "read a file capinfos rejects without saying what is off"
        return
    if expect == "more":
        assert doc["packets"] >= int(row["packet_count"])
        assert doc["warnings"], "a capture read only in part must say so"
        return
    assert doc["packets"] == int(row["packet_count"])
    if expect != "read":
        return
    link, container = _split_link_type(row["link_type"])
    fmt, resolution = CONTAINERS[container]
    assert doc["format"] == fmt
    if resolution:
        assert doc["time_resolution"] == resolution
    assert doc["gzip"] is path.name.endswith(".gz")
    if "cut short mid-packet" in row["note"]:
        assert doc["warnings"], "a capture cut mid-record must say so"
    if link in ("ether", "EN10MB (tcpdump)") and doc["packets"]:
        assert {"link_type": 1, "name": "ETHERNET"} in doc["link_types"]
