"""Exports: Parquet and CSV tables with their schema, metadata, Kubernetes name columns, anomalies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_report_golden import asymmetric_findings, fresh
from typer.testing import CliRunner

from flowtrace.cli import app
from flowtrace.context.k8s import read_snapshot
from flowtrace.errors import InputError
from flowtrace.report.export import EXTRA_PACKET_COLUMNS, analysis_table, table_names, write_tables
from flowtrace.schema import SCHEMA_VERSION, TABLES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"
runner = CliRunner()


def test_parquet_round_trip_keeps_schema_and_metadata(tmp_path):
    import pyarrow.parquet as pq

    a = fresh("asymmetric-return", asymmetric_findings())
    files = write_tables(a, tmp_path, fmt="parquet", version="1.2.3")
    assert list(files) == table_names()
    for name, path in files.items():
        back = pd.read_parquet(path)
        declared = TABLES[name].names
        extra = [c for c, _, _ in EXTRA_PACKET_COLUMNS] if name == "packets" else []
        assert list(back.columns) == declared + extra
        meta = pq.read_schema(path).metadata
        assert meta[b"flowtrace.schema_version"] == str(SCHEMA_VERSION).encode()
        assert meta[b"flowtrace.table"] == name.encode()
    packets = pd.read_parquet(files["packets"])
    assert len(packets) == len(a.packets)
    assert packets["ts_ns"].dtype == "int64" and isinstance(packets["src"].dtype, pd.CategoricalDtype)
    assert (packets["hop_id"].to_numpy() == a.packet_hop).all()
    hops = pd.read_parquet(files["hops"])
    pd.testing.assert_frame_equal(hops, a.hops.reset_index(drop=True), check_dtype=False)
    for col in TABLES["hops"].columns:  # declared dtypes survive (text columns come back as pandas str)
        if col.dtype not in ("str", "category"):
            assert hops[col.name].dtype == a.hops[col.name].dtype, col.name
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["schema_version"] == SCHEMA_VERSION and meta["flowtrace_version"] == "1.2.3"
    assert meta["tables"]["packets"]["rows"] == len(a.packets)
    assert meta["captures"] == ["client", "node1", "node2", "web-1"]


def test_anomalies_table_from_findings(tmp_path):
    a = fresh("asymmetric-return", asymmetric_findings())
    files = write_tables(a, tmp_path, fmt="csv", tables=["anomalies"])
    t = pd.read_csv(files["anomalies"])
    assert list(t["code"]) == ["asymmetric_return", "syn_retransmission", "clock_skew"]
    assert list(t["connection"]) == [2, 2, -1]
    assert "client:5" in t["evidence"][0]
    empty = write_tables(fresh("cross-node"), tmp_path / "none", fmt="csv", tables=["anomalies"])
    assert pd.read_csv(empty["anomalies"]).empty


def test_csv_with_kubernetes_names(tmp_path):
    a = fresh("cross-node")
    names = read_snapshot(FIXTURES / "cross-node" / "k8s.json")
    files = write_tables(a, tmp_path, fmt="csv", names=names, tables=["connections", "hops", "packets", "flows"])
    conns = pd.read_csv(files["connections"])
    nat = conns[conns["dnat"]]
    assert set(nat["client_dst_name"]) == {"svc default/web:http"}
    assert set(nat["server_dst_name"]) == {"pod default/web-1"}
    assert set(nat["server_src_name"]) == {"node node1"}
    cols = list(pd.read_csv(files["hops"], nrows=1).columns)
    assert cols.index("src_name") == cols.index("src") + 1 and "dst_name" in cols
    assert {"orig_h_name", "resp_h_name"} <= set(pd.read_csv(files["flows"], nrows=1).columns)
    packets = pd.read_csv(files["packets"], low_memory=False)
    assert len(packets) == len(a.packets) and "src_name" in packets.columns


def test_bad_format_and_table(tmp_path):
    a = fresh("cross-node")
    with pytest.raises(InputError, match="format"):
        write_tables(a, tmp_path, fmt="xlsx")
    with pytest.raises(InputError, match="unknown table"):
        write_tables(a, tmp_path, tables=["nope"])
    with pytest.raises(KeyError):
        analysis_table(a, "nope")


def test_export_command(tmp_path):
    out = tmp_path / "tables"
    r = runner.invoke(app, ["export", str(FIXTURES / "same-node"), "-o", str(out), "--format", "csv",
                            "--k8s", str(FIXTURES / "same-node" / "k8s.json")])
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} == {f"{t}.csv" for t in table_names()} | {"metadata.json"}
    assert str(out / "connections.csv") in r.stdout
    r = runner.invoke(app, ["export", str(FIXTURES / "same-node"), "-o", str(out), "--format", "xml"])
    assert r.exit_code == 2 and "--format" in r.output
    r = runner.invoke(app, ["export", str(FIXTURES / "same-node"), "-o", str(out), "--table", "bogus"])
    assert r.exit_code == 2 and "bogus" in r.output


def test_parquet_without_pyarrow_is_one_line_and_status_2(tmp_path, monkeypatch):
    # a plain `pip install .` has no pyarrow (it is the [parquet] extra)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    r = runner.invoke(app, ["export", str(FIXTURES / "same-node"), "-o", str(tmp_path / "tables")])
    assert r.exit_code == 2
    assert r.output.strip() == "flowtrace: Parquet export needs pyarrow: pip install 'flowtrace[parquet]'"


def test_pyarrow_parquet_is_imported_only_to_write_parquet():
    # pandas itself may import pyarrow's core when it is installed; the Parquet writer is ours to load.
    code = ("import sys, flowtrace.cli, flowtrace.report.export, flowtrace.report.html, flowtrace.report.trace; "
            "print('pyarrow.parquet' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
