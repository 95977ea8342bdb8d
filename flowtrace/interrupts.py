"""Ctrl-C for the command: a KeyboardInterrupt as Python raises it, and a record that it came.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives. Inside a
finalizer (a shared-memory block or a pool being released, say) the exception cannot
propagate: Python prints it as "Exception ignored" and the command goes on. With
``install()``, SIGINT is remembered as well as raised, such a swallowed interrupt prints
nothing, and the command's exit (``flowtrace.cli._leave``) asks ``interrupted()`` to end
with the one line and status 130 that an interrupt gets everywhere else.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any

_state = {"interrupted": False}


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _state["interrupted"] = True
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGINT as above (in this process and the children it forks later)."""
    signal.signal(signal.SIGINT, _on_sigint)
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            return  # remembered: the command ends as interrupted
        previous(unraisable)

    sys.unraisablehook = hook


def interrupted() -> bool:
    """Whether SIGINT came since ``install()``."""
    return _state["interrupted"]
