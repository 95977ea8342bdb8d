"""Work split over forked processes: how many may run, and running them.

flowtrace uses the machine's cores in three places: several captures decoded by a pool
of workers, one large pcap decoded in two halves (flowtrace.decode.halves), and flow
building over two disjoint sets of flows (flowtrace.flows.builder). All of them fork, so a
child sees the parent's arrays without copying them; only results travel back.

``FLOWTRACE_WORKERS=1`` (or ``workers=1`` where an API takes it) keeps everything in one
process; ``FLOWTRACE_WORKERS=N`` caps the processes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def requested_workers(workers: int | None = None) -> int | None:
    """The workers asked for: ``workers``, else FLOWTRACE_WORKERS (1 when not a number),
    else None (nothing asked: the caller decides from the work and the cores)."""
    if workers is not None:
        return workers
    env = os.environ.get("FLOWTRACE_WORKERS")
    if env is not None:
        return int(env) if env.isdigit() else 1
    return None


def can_fork(workers: int | None = None) -> bool:
    """Whether work may go to a second process: Linux, more than one core, and not told
    to stay in one process."""
    requested = requested_workers(workers)
    if requested is not None and requested <= 1:
        return False
    return sys.platform == "linux" and (os.cpu_count() or 1) > 1


def forked_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(item) for item in items]``: ``items[0]`` in this process, each other item in a
    forked child at the same time.

    ``fn`` may be a closure over large arrays: the child reads them through the fork; its
    result comes back pickled through a pipe, so it must be picklable. An exception raised
    in a child is raised here; a child that dies without an answer (killed, out of memory)
    has its item computed here instead.
    """
    pending: list[tuple[tuple[int, int], T]] = []
    try:
        for item in items[1:]:
            pending.append((_spawn(fn, item), item))
        results = [fn(items[0])] if items else []
        while pending:
            (pid, fd), item = pending.pop(0)
            results.append(_collect(pid, fd, fn, item))
        return results
    finally:
        for (pid, fd), _ in pending:  # left by an exception: stop those children
            os.close(fd)
            os.kill(pid, signal.SIGKILL)
            _reap(pid)


def _spawn(fn: Callable[[T], R], item: T) -> tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns
        status = 1
        try:
            os.close(r)
            try:
                payload = pickle.dumps((True, fn(item)), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as e:
                payload = pickle.dumps((False, e), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(w, "wb") as out:
                out.write(payload)
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    return pid, r


def _collect(pid: int, fd: int, fn: Callable[[T], R], item: T) -> R:
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    _reap(pid)
    if not data:
        return fn(item)
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # already reaped
        os.waitpid(pid, 0)
