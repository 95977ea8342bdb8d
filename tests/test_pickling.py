"""Frozen value objects pickled by their field values (flowtrace.pickling): what loads back
is equal to what went in, field by field, without running __init__ again."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, fields

import pytest

from flowtrace.detect.finding import Evidence, Finding
from flowtrace.pickling import by_field_values


@by_field_values
@dataclass(frozen=True, slots=True)
class _One:
    value: int


def _findings() -> list[Finding]:
    shared = ("a cause", "another")
    return [
        Finding(code="source_ip_masqueraded", severity="info", message="node1 masqueraded 10.0.0.1:5 as 10.0.1.11:6",
                connection=3, direction="request", hop=2, segment="node1",
                evidence=(Evidence(capture="node1", frames=(1, 2), note="before SNAT"),
                          Evidence(capture="node1", frames=(3,))),
                causes=shared, details={"before": "10.0.0.1:5", "after": "10.0.1.11:6", "n": [1, 2]}),
        Finding(code="clock_skew", severity="low", message="node2 is 2.5 s ahead", capture="node2", causes=shared),
        Finding(code="capture_gap", severity="info", message="é ü — not ASCII"),
    ]


def test_findings_load_back_equal_field_by_field() -> None:
    before = _findings()
    after = pickle.loads(pickle.dumps(before, protocol=pickle.HIGHEST_PROTOCOL))
    assert after == before
    for a, b in zip(after, before, strict=True):
        assert type(a) is Finding
        for f in fields(Finding):
            assert getattr(a, f.name) == getattr(b, f.name), f.name
        assert all(type(e) is Evidence for e in a.evidence)
    # Shared values stay shared, as pickle keeps them.
    assert after[0].causes is after[1].causes
    assert b"_unpickled" in pickle.dumps(before[0])


def test_loaded_objects_stay_frozen_and_hashable() -> None:
    e = pickle.loads(pickle.dumps(Evidence(capture="c", frames=(1,))))
    with pytest.raises(AttributeError):
        e.capture = "d"  # type: ignore[misc]
    assert hash(e) == hash(Evidence(capture="c", frames=(1,)))


def test_a_class_of_one_field() -> None:
    assert pickle.loads(pickle.dumps(_One(5))) == _One(5)


def test_loading_does_not_run_init_again() -> None:
    made: list[int] = []

    @dataclass(frozen=True, slots=True)
    class Counted:
        value: int

        def __post_init__(self) -> None:
            made.append(self.value)

    globals()["Counted"] = Counted  # pickle finds classes by module and name
    Counted.__qualname__ = "Counted"
    by_field_values(Counted)
    data = pickle.dumps([Counted(1), Counted(2)])
    assert b"_unpickled" in data
    assert pickle.loads(data) == [Counted(1), Counted(2)] and made == [1, 2, 1, 2]  # the two compared here
    made.clear()
    pickle.loads(data)
    assert made == []
