"""The garbage collector's thresholds while flowtrace works."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import flowtrace
from flowtrace.collector import RELAXED_THRESHOLD, fewer_collections

CROSS_NODE = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps" / "cross-node"


@pytest.fixture
def default_threshold():
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_collections_are_rarer_inside_and_as_before_after(default_threshold):
    with fewer_collections():
        assert gc.get_threshold() == RELAXED_THRESHOLD
    assert gc.get_threshold() == (700, 10, 10)


def test_rarer_collections_set_by_the_caller_are_kept(default_threshold):
    gc.set_threshold(500_000, 10, 10)
    with fewer_collections():
        assert gc.get_threshold() == (500_000, 10, 10)
    assert gc.get_threshold() == (500_000, 10, 10)


def test_a_threshold_changed_inside_the_block_is_left_alone(default_threshold):
    with fewer_collections():
        gc.set_threshold(1000, 5, 5)
    assert gc.get_threshold() == (1000, 5, 5)


def test_analyze_runs_with_rarer_collections_and_restores_them(default_threshold, monkeypatch):
    import flowtrace.pipeline as pipeline

    seen = []
    real = pipeline.build_flows

    def build(*args, **kwargs):
        seen.append(gc.get_threshold())
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "build_flows", build)
    flowtrace.analyze(str(CROSS_NODE))
    assert seen and all(t == RELAXED_THRESHOLD for t in seen)
    assert gc.get_threshold() == (700, 10, 10)
