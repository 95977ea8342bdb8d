"""The JSON document's records: pandas' text cut into rows and joined by ranges of rows."""

from __future__ import annotations

import json

import pandas as pd

from flowtrace.report.json_doc import _Records


def _rows(records: _Records, start: int, end: int) -> list:
    return json.loads("[" + records.join(start, end) + "]")


def test_ranges_of_rows_are_the_rows_pandas_writes():
    frame = pd.DataFrame({
        "hop": [0, 1, 2, 3],
        # what looks like a record boundary inside strings: quotes are escaped there
        "label": ['},{"hop":9', "plain", '{"hop": 1}', "ünïcode"],
        "flows": [[1, 2], [], [3], [4, 5, 6]],
        "iface": pd.Categorical(["eth0", "eth1", "eth0", None]),
    })
    records = _Records(frame)
    expected = json.loads(frame.to_json(orient="records"))
    assert len(records.parts) == 4
    for start in range(5):
        for end in range(start, 5):
            assert _rows(records, start, end) == expected[start:end]
    assert records.join(2, 2) == ""


def test_objects_keyed_by_the_first_column_fall_back_to_pandas_lines():
    frame = pd.DataFrame({"hop": [0, 1, 2], "nested": [[{"hop": 5}, {"hop": 6}], [], [{"hop": 7}]]})
    records = _Records(frame)
    assert len(records.parts) == 3
    assert _rows(records, 0, 3) == json.loads(frame.to_json(orient="records"))
    assert _rows(records, 2, 3) == [{"hop": 2, "nested": [{"hop": 7}]}]


def test_an_empty_table_has_no_records():
    records = _Records(pd.DataFrame({"hop": pd.Series([], dtype="int64")}))
    assert records.parts == [] and records.join(0, 0) == ""
