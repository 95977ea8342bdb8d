"""Work split over forked processes: how many may run, and running them.

``requested_workers`` is the one reading of FLOWTRACE_WORKERS, for the decoding pool
(several captures) and the two-process decode of one large pcap (flowtrace.decode.halves)
as well. ``Forked`` runs work in a forked child: the clock offsets while bridge flows are
cut (flowtrace.correlate.assemble) and anomaly detection while conntrack tables are
rebuilt (flowtrace.pipeline). A child sees the
parent's arrays through the fork without copying them; only its result travels back.
``threaded_map`` shares numpy work between threads instead, where copy-on-write after a
fork would cost more than it saves (the halves of flow building).

``FLOWTRACE_WORKERS=1`` (or ``workers=1`` where an API takes it) keeps everything in one
process; ``FLOWTRACE_WORKERS=N`` caps the processes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

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


MIN_ROWS = 200_000
"""Below this many packets, work stays in one process: forking would cost more than it saves."""


def worth_forking(rows: int, workers: int | None = None) -> bool:
    """Whether work over ``rows`` packets should be shared with a second process."""
    return rows >= MIN_ROWS and can_fork(workers)


def threaded_map(fn: Callable[[T], R], items: Sequence[T], *, parallel: bool = True) -> list[R]:
    """``[fn(item) for item in items]``: ``items[0]`` in this thread, each other item in a
    thread of its own at the same time; all in this thread without ``parallel`` (callers
    pass ``worth_forking(rows)``: threads do not pay for small work).

    For work that spends its time in numpy over large arrays, which releases the GIL: the
    threads share memory, so nothing is copied and no page is faulted twice (after a fork
    every page either process writes is copied first, which costs flow building more than
    the second process saves). An exception in a thread is raised here.
    """
    if len(items) < 2 or not parallel:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(items) - 1) as pool:
        futures = [pool.submit(fn, item) for item in items[1:]]
        first = fn(items[0])
        return [first, *(f.result() for f in futures)]


class Forked(Generic[R]):
    """``work()`` computed in a forked child from now on; ``result()`` collects it.

    The child sees this process as it is at the start: later changes here do not reach
    it. With ``fork`` false, or without a second process (``can_fork()`` false),
    ``work()`` runs in ``result()``. An exception raised in the child is raised by
    ``result()``; a child that dies without an answer (killed, out of memory) has its work
    done in ``result()`` instead, as is one whose answer cannot be unpickled.
    """

    def __init__(self, work: Callable[[], R], *, fork: bool = True) -> None:
        self._work = work
        self._child: tuple[int, int] | None = _spawn(work) if fork and can_fork() else None

    def result(self) -> R:
        """The value of ``work()``, waiting for the child if it is still at work."""
        if self._child is None:
            return self._work()
        pid, fd = self._child
        self._child = None
        return _collect(pid, fd, self._work)

    def cancel(self) -> None:
        """Stop the child if it has not been collected (after an exception)."""
        if self._child is not None:
            pid, fd = self._child
            self._child = None
            os.close(fd)
            os.kill(pid, signal.SIGKILL)
            _reap(pid)


def _spawn(work: Callable[[], R]) -> tuple[int, int]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns
        status = 1
        try:
            os.close(read_end)
            # Warnings travel back with the result and are issued by the parent: the child
            # writes nothing (a progress bar's thread may have held the stderr lock at fork).
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    answer: tuple[bool, object] = (True, work())
                except Exception as e:
                    answer = (False, e)
            said = [(str(w.message), w.category) for w in caught]
            payload = pickle.dumps((*answer, said), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_end, "wb") as out:
                out.write(payload)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end


def _collect(pid: int, fd: int, work: Callable[[], R]) -> R:
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    _reap(pid)
    try:
        ok, value, said = pickle.loads(data)
    except Exception:
        # No answer (the child was killed, or ran out of memory), or one that cannot be
        # read back (an exception that does not unpickle): the work is done here instead.
        return work()
    for message, category in said:
        warnings.warn(message, category, stacklevel=3)
    if not ok:
        raise value
    return value


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # already reaped
        os.waitpid(pid, 0)
