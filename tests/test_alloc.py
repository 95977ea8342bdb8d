"""Heap temporaries: glibc's thresholds are raised once for nested blocks and put back after."""

from __future__ import annotations

import pytest

from flowtrace.flows import alloc


class _FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, option: int, value: int) -> int:
        self.calls.append((option, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        return 1


@pytest.fixture
def libc(monkeypatch):
    fake = _FakeLibc()
    monkeypatch.setattr(alloc, "glibc", lambda: fake)
    return fake


def test_nested_blocks_change_the_thresholds_once(libc):
    with alloc.heap_temporaries():
        raised = list(libc.calls)
        with alloc.heap_temporaries():
            pass
        assert libc.calls == raised  # the inner block leaves them raised
    assert len(raised) == 2
    assert libc.calls[2:] == [(alloc._M_MMAP_THRESHOLD, alloc._PINNED), (alloc._M_TRIM_THRESHOLD, alloc._PINNED)]


def test_an_error_inside_still_restores_the_thresholds_and_propagates(libc):
    with pytest.raises(ValueError), alloc.heap_temporaries():
        raise ValueError("x")
    assert libc.calls[-1] == (alloc._M_TRIM_THRESHOLD, alloc._PINNED)
    assert alloc._depth == 0
