"""docs/api.md's Python blocks run, in order, in one namespace, from the repository root:
the page cannot drift from the API."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "api.md"


def test_every_python_block_of_the_api_page_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) >= 5
    here = os.getcwd()
    os.chdir(ROOT)
    try:
        namespace: dict[str, object] = {}
        for block in blocks:
            exec(compile(block, str(PAGE), "exec"), namespace)  # the page's own code
    finally:
        os.chdir(here)
    out = capsys.readouterr().out
    # what the page shows as output is what the blocks print
    assert "DNAT 203.0.113.10:80 -> 10.244.2.7:8080 at node1" in out
    assert "DNAT, SNAT, routed" in out
    assert "[ASSURED] mark=0 use=1" in out and "connections.parquet" in out
