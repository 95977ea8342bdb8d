"""A progress bar on stderr for long reads, as a callback for ``flowtrace.analyze(progress=…)``.

The library only calls ``progress(stage, done, total)``; this module turns the calls into a
rich progress bar, and only when stderr is a terminal (a pipe or a file gets nothing).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

STAGES = {"read": "reading captures", "flows": "building flows", "correlate": "following connections",
          "conntrack": "rebuilding conntrack tables", "detect": "looking for anomalies", "report": "rendering"}
"""What each stage is called on the bar."""

MIN_BYTES = 32 << 20
"""Inputs smaller than this finish too fast for a bar to help; none is drawn."""


class ProgressBar:
    """Callable ``(stage, done, total)`` that drives one rich progress bar."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None
        self._stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        detail = f"{done / 1e6:,.0f}/{total / 1e6:,.0f} MB" if total else ""
        if stage != self._stage or self._task is None:
            # A new stage gets a task of its own: a byte count, or a pulsing bar when the
            # stage cannot say how far it is.
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._stage = stage
            self._task = self._progress.add_task(STAGES.get(stage, stage), total=total or None,
                                                 completed=done, detail=detail)
        else:
            self._progress.update(self._task, completed=done, detail=detail)


@contextmanager
def progress_bar(*, total_bytes: int = 0, stream: TextIO | None = None, force: bool = False
                 ) -> Iterator[ProgressBar | None]:
    """A ProgressBar while the block runs, or None when ``stream`` (stderr) is not a terminal
    or the input (``total_bytes``) is small; ``force`` draws it anyway (tests)."""
    out = stream or sys.stderr
    if not force and (not out.isatty() or total_bytes < MIN_BYTES):
        yield None
        return
    console = Console(file=out, force_terminal=True if force else None)
    columns = (TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.fields[detail]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        yield ProgressBar(progress)
