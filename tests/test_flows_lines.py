"""flowtrace.flows.lines: text laid out by numpy equals the same text formatted value by value."""

from __future__ import annotations

import numpy as np
import pytest

from flowtrace.flows.lines import PARALLEL_ROWS, Lines


@pytest.mark.parametrize("seed", range(20))
def test_random_pieces_match_python_formatting(seed):
    rng = np.random.default_rng(seed)
    # few rows: one thread lays them out; many: two, half each
    n = int(rng.integers(1, 300)) if seed % 2 else int(rng.integers(PARALLEL_ROWS, 3 * PARALLEL_ROWS))
    big = rng.integers(-(2**62), 2**62, n)
    small = rng.integers(-12, 12, n)
    ints = np.where(rng.random(n) < 0.5, big // 10 ** rng.integers(0, 19, n), small)
    micro = rng.integers(0, 1_000_000, n)
    names = ["10.0.0.1", "", "fd00::1", "é-ünïcode", "S"]
    codes = rng.integers(-1, len(names) + 2, n)
    own = [["", "ShADadFf", "x", "日本", "-"][int(i)] for i in rng.integers(0, 5, n)]
    blank = rng.random(n) < 0.3

    lines = Lines(n)
    lines.integers(ints)
    lines.const("\t")
    lines.integers(ints, blank=blank)
    lines.const("?", blank=~blank)
    lines.const(".")
    lines.fixed_digits(micro, 6, blank=blank)
    lines.const("|")
    lines.codes(codes, names)
    lines.const("|")
    lines.codes(codes, names, blank=blank)
    lines.texts(own)
    lines.texts(own, empty="-")
    lines.const(" end\n")

    def name(c: int) -> str:
        return names[c] if 0 <= c < len(names) else ""

    expected = "".join(
        f"{v}\t{'?' if b else v}.{'' if b else f'{m:06d}'}|{name(c)}|{'' if b else name(c)}{t}{t or '-'} end\n"
        for v, b, m, c, t in zip(ints.tolist(), blank.tolist(), micro.tolist(), codes.tolist(), own, strict=True))
    assert lines.render() == expected


def test_no_rows_or_no_pieces_is_empty_text():
    assert Lines(0).render() == ""
    assert Lines(3).render() == ""
    empty = Lines(0)
    empty.integers(np.zeros(0, dtype=np.int64))
    empty.texts([])
    assert empty.render() == ""


def test_extremes_of_int64_and_zero():
    values = np.array([0, 9, 10, 99, 100, -1, -10, 2**63 - 1, -(2**63) + 1], dtype=np.int64)
    lines = Lines(values.size)
    lines.integers(values)
    lines.const("\n")
    assert lines.render() == "".join(f"{v}\n" for v in values.tolist())
