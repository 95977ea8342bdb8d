"""Shared fixtures: write crafted captures to a temporary folder and read them back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from craft import assert_packets_schema


@pytest.fixture
def write_capture(tmp_path: Path) -> Callable[[str, bytes], Path]:
    """write_capture(name, data) -> path of a file ``name`` in a fresh temporary folder."""

    def write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    return write


@pytest.fixture
def read_capture(write_capture: Callable[[str, bytes], Path]) -> Callable[..., pd.DataFrame]:
    """read_capture(data, name="c.pcap") -> the packets table of that one capture.

    The table is checked against the declared schema before it is handed back.
    """
    import flowtrace

    def read(data: bytes, name: str = "c.pcap") -> pd.DataFrame:
        df = flowtrace.read_packets(str(write_capture(name, data)))
        assert_packets_schema(df)
        return df

    return read
