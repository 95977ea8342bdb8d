"""Flow building split over two threads, and rebuilt with more cuts from a previous build,
must give exactly what one plain build gives."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import flowtrace
from flowtrace import fork
from flowtrace.correlate.assemble import flow_starts
from flowtrace.errors import CaptureFormatError, InputError
from flowtrace.flows import FlowSet, build, builder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "pcaps"
SCENARIOS = ["many-connections", "snat-timewait-collision", "cross-node-vxlan", "mtu-blackhole", "dns"]

needs_fork = pytest.mark.skipif(not fork.can_fork(), reason="needs Linux, two cores and FLOWTRACE_WORKERS unset")


@pytest.fixture(scope="module", params=SCENARIOS)
def packets(request: pytest.FixtureRequest) -> pd.DataFrame:
    return flowtrace.read_packets(str(FIXTURES / request.param))


def _same(a: FlowSet, b: FlowSet) -> None:
    pd.testing.assert_frame_equal(a.flows, b.flows)
    np.testing.assert_array_equal(a.flow_id, b.flow_id)
    np.testing.assert_array_equal(a.from_orig, b.from_orig)
    np.testing.assert_array_equal(a.related, b.related)


def _serial(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fork, "MIN_ROWS", 1 << 62)


def _forked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fork, "MIN_ROWS", 0)


def _cuts(packets: pd.DataFrame, seed: int, k: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(packets), size=min(k, len(packets)), replace=False))


@needs_fork
def test_two_threads_build_what_one_builds(packets: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    _serial(monkeypatch)
    one = build(packets)
    _forked(monkeypatch)
    two = build(packets)
    assert len(one.flows) > 1
    _same(one, two)


@pytest.mark.parametrize("seed", [1, 2])
def test_rebuild_from_previous_equals_a_fresh_build(packets: pd.DataFrame, seed: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _serial(monkeypatch)
    first = build(packets)
    cuts = _cuts(packets, seed)
    fresh = build(packets, split_before=cuts)
    again = build(packets, split_before=cuts, previous=first)
    _same(fresh, again)
    # Back to no cuts from the cut build: the groups that had cuts are rebuilt.
    _same(first, build(packets, previous=again))


def test_rebuild_keeping_every_start_reuses_the_groups_without_new_cuts(
        packets: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    """What analyze does (flowtrace.correlate.assemble): all starts kept, a few cuts added."""
    _serial(monkeypatch)
    first = build(packets)
    keep = flow_starts(first.flow_id, packets["ts_ns"].to_numpy())
    rows = np.union1d(keep, _cuts(packets, 3, k=5))
    built: list[int] = []
    real_core = builder._Core

    class Counting(real_core):  # type: ignore[misc, valid-type]
        __slots__ = ()

        def __init__(self, p, rows, *args, **kwargs):  # type: ignore[no-untyped-def]
            built.append(rows.size)
            super().__init__(p, rows, *args, **kwargs)

    fresh = build(packets, split_before=rows)
    monkeypatch.setattr(builder, "_Core", Counting)
    again = build(packets, split_before=rows, previous=first)
    _same(fresh, again)
    eligible = int((first.flow_id >= 0).sum())
    assert sum(built) < eligible  # not everything was built again


def test_previous_with_other_settings_is_not_reused(packets: pd.DataFrame) -> None:
    first = build(packets, timeouts={"tcp_established": 1})
    cuts = _cuts(packets, 4)
    _same(build(packets, split_before=cuts), build(packets, split_before=cuts, previous=first))
    other = packets.copy()
    _same(build(other, split_before=cuts), build(other, split_before=cuts, previous=build(packets)))


@needs_fork
def test_rebuild_of_a_build_in_two_parts(packets: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    _forked(monkeypatch)
    first = build(packets)
    cuts = _cuts(packets, 5)
    _serial(monkeypatch)
    _same(build(packets, split_before=cuts), build(packets, split_before=cuts, previous=first))


# threaded_map and Forked themselves


def test_threaded_map_returns_results_in_item_order_from_other_threads() -> None:
    import threading

    out = fork.threaded_map(lambda k: (k * 10, threading.get_ident()), [1, 2, 3])
    assert [v for v, _ in out] == [10, 20, 30]
    assert out[0][1] == threading.get_ident() and {t for _, t in out[1:]} != {threading.get_ident()}


def test_threaded_map_raises_a_threads_exception() -> None:
    def fn(k: int) -> int:
        if k == 2:
            raise ValueError("bad item 2")
        return k

    with pytest.raises(ValueError, match="bad item 2"):
        fork.threaded_map(fn, [1, 2])


@needs_fork
def test_forked_raises_a_childs_exception() -> None:
    def work() -> int:
        raise ValueError("bad in the child")

    with pytest.raises(ValueError, match="bad in the child"):
        fork.Forked(work).result()


@needs_fork
def test_forked_computes_here_what_a_dead_child_did_not_send() -> None:
    parent = os.getpid()

    def work() -> int:
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return 10

    assert fork.Forked(work).result() == 10


class _TwoArguments(Exception):
    """Pickles (as its message) but does not unpickle: __init__ wants two arguments."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a} and {b}")


@needs_fork
def test_forked_computes_here_what_does_not_unpickle() -> None:
    parent = os.getpid()

    def work() -> int:
        if os.getpid() != parent:
            raise _TwoArguments(1, 2)
        return 10

    assert fork.Forked(work).result() == 10


@needs_fork
@pytest.mark.parametrize("error", [InputError(Path("node1.conntrack.txt"), "not a conntrack line", line=7),
                                   InputError("", "bad --timeout"),
                                   CaptureFormatError("a.pcap", "bad magic", offset=24)],
                         ids=["input-line", "input-no-path", "capture-offset"])
def test_forked_raises_flowtraces_own_errors_as_raised(error: Exception) -> None:
    parent = os.getpid()

    def work() -> int:
        if os.getpid() != parent:
            raise error
        return 0  # what the parent would compute if the child's error did not load back

    with pytest.raises(type(error)) as raised:
        fork.Forked(work).result()
    assert str(raised.value) == str(error) and vars(raised.value) == vars(error)


def test_one_worker_means_no_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWTRACE_WORKERS", "1")
    assert not fork.can_fork()
    assert fork.requested_workers() == 1
    monkeypatch.setenv("FLOWTRACE_WORKERS", "many")
    assert fork.requested_workers() == 1
    assert fork.requested_workers(3) == 3


def test_threaded_map_without_parallel_stays_in_this_thread() -> None:
    import threading

    here = threading.get_ident()
    out = fork.threaded_map(lambda k: (k * 10, threading.get_ident()), [1, 2, 3], parallel=False)
    assert [v for v, _ in out] == [10, 20, 30]
    assert {t for _, t in out} == {here}
