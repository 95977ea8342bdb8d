"""The table declarations, their generated docs, and the public API surface."""

from pathlib import Path

import numpy as np
import pandas as pd

import flowtrace
from flowtrace.schema import PACKETS, TABLES, render_tables_doc

ROOT = Path(__file__).resolve().parents[1]


def test_tables_doc_is_generated_from_schema():
    text = (ROOT / "docs" / "tables.md").read_text()
    assert text == render_tables_doc(), "regenerate docs/tables.md (command at its top)"


def test_every_table_is_documented_column_by_column():
    text = (ROOT / "docs" / "tables.md").read_text()
    for table in TABLES.values():
        assert f"## {table.name}" in text
        for col in table.columns:
            assert f"| `{col.name}` |" in text


def test_public_api_is_pinned_and_sorted():
    expected = {
        "PACKETS", "SCHEMA_VERSION", "CaptureError", "CaptureFormatError", "CaptureOpenError",
        "CaptureWarning", "FlowtraceError", "InputError", "LabError", "__version__",
        "inspect_captures", "read_packets",
    }
    assert expected <= set(flowtrace.__all__)
    assert len(set(flowtrace.__all__)) == len(flowtrace.__all__)  # ruff (RUF022) keeps it sorted
    for name in flowtrace.__all__:
        assert hasattr(flowtrace, name)


def test_empty_table_has_every_column_with_its_dtype():
    empty = PACKETS.empty()
    assert list(empty.columns) == PACKETS.names
    for col in PACKETS.columns:
        if col.dtype == "category":
            assert isinstance(empty[col.name].dtype, pd.CategoricalDtype)
        else:
            assert empty[col.name].dtype == np.dtype(col.dtype), col.name


def test_read_packets_conforms_to_declared_dtypes(tmp_path):
    from scapy.all import IP, TCP, Ether, wrpcap

    path = tmp_path / "one.pcap"
    wrpcap(str(path), [Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1234, dport=80)])
    df = flowtrace.read_packets(path)
    assert list(df.columns) == PACKETS.names
    for col in PACKETS.columns:
        if col.dtype == "category":
            assert isinstance(df[col.name].dtype, pd.CategoricalDtype), col.name
            if col.categories:
                assert list(df[col.name].cat.categories) == list(col.categories)
        else:
            assert df[col.name].dtype == np.dtype(col.dtype), col.name
    assert PACKETS.conform(df).equals(df)
