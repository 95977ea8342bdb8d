"""docs/flows.md carries the generated column reference and every timeout key; the CLI page exists."""

from __future__ import annotations

from pathlib import Path

from flowtrace.flows import CONNTRACK_TIMEOUTS, KUBE_PROXY_TIMEOUTS
from flowtrace.schema import CONN_STATES, FLOWS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_flows_doc_has_the_generated_column_reference():
    text = (DOCS / "flows.md").read_text()
    assert FLOWS.markdown() in text, "regenerate the column reference at the end of docs/flows.md"


def test_flows_doc_lists_every_timeout_and_state():
    text = (DOCS / "flows.md").read_text()
    for key, value in CONNTRACK_TIMEOUTS.items():
        assert f"| `{key}` | {value:g} | {KUBE_PROXY_TIMEOUTS[key]:g} |" in text, key
    for state in CONN_STATES:
        assert f"| `{state}` |" in text, state


def test_cli_page_is_linked_from_the_index():
    assert (DOCS / "cli" / "flows.md").exists()
    assert "cli/flows.md" in (DOCS / "cli.md").read_text()
