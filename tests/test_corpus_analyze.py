"""The whole pipeline (flows, correlation, conntrack, JSON and terminal report) on public
captures: strange inputs end in a result or a FlowtraceError, never another exception."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import pytest
from rich.console import Console

from flowtrace.errors import FlowtraceError
from flowtrace.pipeline import analyze
from flowtrace.report.analysis import render_analysis
from flowtrace.report.json_doc import render_json

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
pytestmark = pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").exists(), reason="shared corpus not present")


def _files() -> list[str]:
    if not (CORPUS / "MANIFEST.tsv").exists():
        return []
    with open(CORPUS / "MANIFEST.tsv") as f:
        rows = [r["file"] for r in csv.DictReader(f, delimiter="\t")]
    k8s = [f for f in rows if f.startswith("k8s/")]
    public = [f for f in rows if not f.startswith("k8s/")]
    return k8s + public[::12]


@pytest.mark.parametrize("name", _files())
def test_analyze_survives(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            a = analyze([str(CORPUS / name)])
        except FlowtraceError:
            return
    render_json(a, version="test")
    render_analysis(a, Console(file=io.StringIO(), width=100))


def test_analyze_a_directory_of_unrelated_captures():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = analyze([str(CORPUS / "k8s")])
    assert len(a.captures) > 10
    render_json(a, version="test")
