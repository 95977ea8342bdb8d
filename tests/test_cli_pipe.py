"""A reader that goes away (``flowtrace ... | head``): status 141, as SIGPIPE gives, and
nothing on stderr, whichever layer (click, rich, flowtrace's own flush) noticed it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowtrace.cli import BROKEN_PIPE, _reader_gone

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "fixtures" / "pcaps" / "same-node"


@pytest.mark.parametrize("args", [
    ["info", str(SCENARIO)],  # rich draws the panels: rich turns the broken pipe into exit 1
    ["conntrack", str(SCENARIO)],  # plain writes: click turns it into exit 1
    ["flows", "--csv", str(SCENARIO)],  # the whole text in one write
])
def test_a_closed_pipe_gives_status_141_and_no_traceback(args):
    read_end, write_end = os.pipe()
    os.close(read_end)  # no reader at all: the first write fails
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run([sys.executable, "-m", "flowtrace", *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == BROKEN_PIPE == 141
    assert proc.stderr == ""


def test_only_an_exit_raised_while_handling_a_broken_pipe_is_one():
    def raised_while(context: BaseException | None) -> SystemExit:
        try:
            try:
                if context is not None:
                    raise context
            finally:
                raise SystemExit(1)
        except SystemExit as e:
            return e

    assert _reader_gone(raised_while(BrokenPipeError(32, "Broken pipe")))
    # a broken pipe further back in the chain (rich's exit inside click's handler)
    nested = raised_while(BrokenPipeError(32, "Broken pipe"))
    assert _reader_gone(raised_while(nested))
    assert not _reader_gone(raised_while(None))
    assert not _reader_gone(raised_while(ValueError("bad value")))
