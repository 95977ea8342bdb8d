"""Ctrl-C that Python swallows: raised inside a finalizer, it still ends the command as
interrupted (one line, status 130), and Python's "Exception ignored" is not printed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SWALLOWED = textwrap.dedent("""
    import gc, os, signal, time
    from flowtrace import interrupts
    from flowtrace.cli import _leave

    interrupts.install()

    class Releases:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while a finalizer runs
            time.sleep(0.2)

    Releases()
    gc.collect()
    print("the command went on", flush=True)
    _leave(0)
""")


def test_an_interrupt_a_finalizer_swallowed_ends_the_command_as_interrupted():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", SWALLOWED], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout == "the command went on\n"  # Python could not stop it there
    assert (proc.returncode, proc.stderr) == (130, "flowtrace: interrupted\n")


def test_without_an_interrupt_nothing_changes():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = "from flowtrace import interrupts\nfrom flowtrace.cli import _leave\ninterrupts.install()\n_leave(0)\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")
