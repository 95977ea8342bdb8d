"""analyze shares its work with a second process (clock offsets, anomaly detection) and a
second thread (flows) on large inputs: forced on small fixtures, the result must be exactly
the one-process one."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import flowtrace
from flowtrace import fork
from flowtrace.flows import builder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "pcaps"

needs_fork = pytest.mark.skipif(not fork.can_fork(), reason="needs Linux, two cores and FLOWTRACE_WORKERS unset")


@needs_fork
@pytest.mark.parametrize("scenario", ["many-connections", "snat-timewait-collision", "cross-node-skewed",
                                      "asymmetric-return"])
def test_forked_analysis_equals_one_process(scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[int] = []
    real_spawn = fork._spawn

    def counting_spawn(work):  # type: ignore[no-untyped-def]
        spawned.append(1)
        return real_spawn(work)

    threaded: list[int] = []

    def counting_threads(fn, items, *, parallel=True):  # type: ignore[no-untyped-def]
        if parallel:
            threaded.append(len(items))
        return fork.threaded_map(fn, items, parallel=parallel)

    monkeypatch.setattr(fork, "MIN_ROWS", 0)
    monkeypatch.setattr(fork, "_spawn", counting_spawn)
    monkeypatch.setattr(builder, "threaded_map", counting_threads)
    two = flowtrace.analyze(str(FIXTURES / scenario))
    assert len(spawned) >= 2  # clock offsets, detection
    assert 2 in threaded  # flows
    monkeypatch.setenv("FLOWTRACE_WORKERS", "1")
    spawned.clear()
    threaded.clear()
    one = flowtrace.analyze(str(FIXTURES / scenario))
    assert not spawned and not threaded
    for table in ("flows", "connections", "hops"):
        pd.testing.assert_frame_equal(getattr(one, table), getattr(two, table))
    assert one.offsets == two.offsets
    assert [repr(f) for f in one.findings] == [repr(f) for f in two.findings]
    assert [f.details for f in one.findings] == [f.details for f in two.findings]
    assert one.notes == two.notes
    assert [repr(e) for e in one.conntrack] == [repr(e) for e in two.conntrack]
    assert {k: repr(v) for k, v in one.comparisons.items()} == {k: repr(v) for k, v in two.comparisons.items()}


@needs_fork
def test_forked_runs_elsewhere_and_sees_the_state_at_the_fork() -> None:
    box = {"value": 1}
    job = fork.Forked(lambda: (os.getpid(), box["value"]))
    box["value"] = 2
    pid, value = job.result()
    assert pid != os.getpid() and value == 1


def test_forked_without_fork_runs_at_result() -> None:
    box = {"value": 1}
    job = fork.Forked(lambda: (os.getpid(), box["value"]), fork=False)
    box["value"] = 2
    assert job.result() == (os.getpid(), 2)


@needs_fork
def test_cancel_stops_an_uncollected_child() -> None:
    import time

    job = fork.Forked(lambda: time.sleep(30))
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 5
    job.cancel()  # twice is harmless


def test_worth_forking_needs_enough_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fork, "can_fork", lambda workers=None: True)
    assert not fork.worth_forking(fork.MIN_ROWS - 1)
    assert fork.worth_forking(fork.MIN_ROWS)


@needs_fork
def test_a_childs_warnings_are_issued_here_and_it_writes_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    import warnings

    def work() -> int:
        warnings.warn("from the child", UserWarning, stacklevel=1)
        return 7

    with pytest.warns(UserWarning, match="from the child"):
        assert fork.Forked(work).result() == 7
    out, err = capfd.readouterr()
    assert out == "" and "from the child" not in err
