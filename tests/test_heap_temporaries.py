"""Heap temporaries: glibc's thresholds are raised once for nested blocks and put back after."""

from __future__ import annotations

import pytest

from flowtrace.capture import memory


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
    monkeypatch.setattr(memory, "glibc", lambda: fake)
    return fake


def test_nested_blocks_change_the_thresholds_once(libc):
    with memory.heap_temporaries():
        raised = list(libc.calls)
        with memory.heap_temporaries():
            pass
        assert libc.calls == raised  # the inner block leaves them raised
    assert len(raised) == 2
    assert libc.calls[2:] == [(memory._M_MMAP_THRESHOLD, memory.PINNED_BYTES),
                              (memory._M_TRIM_THRESHOLD, memory.PINNED_BYTES)]


def test_an_error_inside_still_restores_the_thresholds_and_propagates(libc):
    with pytest.raises(ValueError), memory.heap_temporaries():
        raise ValueError("x")
    assert libc.calls[-1] == (memory._M_TRIM_THRESHOLD, memory.PINNED_BYTES)
    assert memory._depth == 0
