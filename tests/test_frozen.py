"""Frozen value objects made and pickled in bulk (flowtrace.frozen): what ``maker`` makes and
what loads back equal what the dataclass itself makes, field by field."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, fields

import pytest

from flowtrace.context.conntrack import ConntrackEntry, Tuple, make_entry, make_tuple
from flowtrace.detect.finding import Evidence, Finding
from flowtrace.frozen import by_field_values, maker


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


_TUPLE = {"src": "10.0.0.1", "dst": "10.0.0.2", "sport": 40000, "dport": 80}
_ENTRIES = [
    {"family": "ipv4", "proto": "tcp", "orig": Tuple(**_TUPLE), "reply": Tuple(src="10.0.0.2", dst="10.0.0.1")},
    {"family": "ipv6", "proto": "udp", "orig": Tuple(src="fd00::1", dst="fd00::2"), "reply": Tuple(src="a", dst="b"),
     "timeout_s": 29, "state": None, "flags": frozenset({"UNREPLIED"}), "mark": 7, "use": 2, "zone": 3,
     "event": "NEW", "ts_ns": 1_700_000_000_000_005_000, "node": "node1", "counters": ((1, 60), (0, 0)),
     "extra": {"id": "42"}, "line": 12},
]


@pytest.mark.parametrize("values", _ENTRIES, ids=["defaults", "every-field"])
def test_maker_makes_what_the_dataclass_makes(values: dict) -> None:
    made, want = make_entry(**values), ConntrackEntry(**values)
    assert type(made) is ConntrackEntry and made == want and repr(made) == repr(want)
    for f in fields(ConntrackEntry):  # extra and line are left out of ==
        assert getattr(made, f.name) == getattr(want, f.name), f.name
    assert hash(made) == hash(want)
    assert make_tuple(**_TUPLE) == Tuple(**_TUPLE) and repr(make_tuple(src="a", dst="b")) == repr(Tuple(src="a", dst="b"))


def test_maker_gives_each_object_its_own_default_container() -> None:
    a, b = (make_entry(**_ENTRIES[0]) for _ in range(2))
    assert a.extra == {} and a.extra is not b.extra


def test_maker_takes_the_dataclass_keywords_only() -> None:
    with pytest.raises(TypeError):
        make_tuple(src="a")  # dst is required
    with pytest.raises(TypeError):
        make_tuple(src="a", dst="b", port=1)
    with pytest.raises(TypeError):
        make_tuple("a", "b")
    made = make_tuple(src="a", dst="b")
    with pytest.raises(AttributeError):
        made.src = "c"  # type: ignore[misc]


def test_maker_of_a_class_with_a_required_field_after_a_defaulted_one() -> None:
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Later:
        first: int = 1
        second: str

    assert maker(Later)(second="x") == Later(second="x")
