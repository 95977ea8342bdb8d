"""``flows --csv``: the numpy-laid-out CSV equals what Python's csv module writes, from the flows
table and from its arrays."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from flowpkts import Tcp

from flowtrace.flows import build
from flowtrace.pipeline import flow_set
from flowtrace.report.flows import flows_csv

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "pcaps"


def _oracle(flows: pd.DataFrame) -> str:
    """The CSV as the csv module writes it, value by value."""
    columns = []
    for name in flows.columns:
        col = flows[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            cats = np.array([str(c) for c in col.cat.categories] + [""], dtype=object)
            columns.append(cats[col.cat.codes.to_numpy().astype(np.int64)].tolist())
        else:
            columns.append(col.tolist())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(flows.columns))
    writer.writerows(zip(*columns, strict=True))
    return buf.getvalue()


def test_csv_of_fixtures_from_the_table_and_from_its_arrays():
    scenarios = ["many-connections", "dns", "no-endpoints", "mtu-blackhole", "cross-node-vxlan", "ipv6"]
    captures = [f"{s}-{p.stem}={p}" for s in scenarios for p in sorted((FIXTURES / s).glob("*.pcap*"))]
    _, built = flow_set(captures)
    flows = built.flows
    assert flows["midstream"].any() and (flows["icmp_error_count"] > 0).any()  # bools, and "3/3,3/3" texts
    expected = _oracle(flows)
    assert flows_csv(flows) == expected
    assert flows_csv(built.table) == expected


def test_texts_that_need_quotes_and_odd_values():
    flows = build(Tcp().handshake().table()).flows
    flows = pd.concat([flows] * 6, ignore_index=True)
    flows["history"] = ["a,b", 'say "hi"', "two\nlines", "cr\rhere", "", "é,ü"]
    flows["community_id"] = [None, "x", "y", "", "z", "1:abc="]
    flows["interface"] = pd.Categorical(["eth0,1", "lo", None, "eth0,1", 'q"', "lo"])
    flows["missed_bytes"] = [-3, 0, 10**15, 7, -(2**40), 1]
    assert flows_csv(flows) == _oracle(flows)
    assert flows_csv(flows.iloc[:0]) == _oracle(flows.iloc[:0])


def test_csv_of_all_flows_loads_no_pandas():
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "flowtrace", "flows", "--csv",
                          str(FIXTURES / "many-connections")], capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "flowtrace.flows.lines" in imported and "pandas" not in imported
    assert run.stdout.startswith("flow_id,uid,capture,") and run.stdout.count("\n") > 100
