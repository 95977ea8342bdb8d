"""The lab's sandbox: network namespaces, devices and processes with guaranteed teardown.

Everything the lab creates goes through one :class:`Sandbox`. Namespaces are named
``<prefix><host>`` with a per-run prefix (``ft<pid>-``); every device is created directly
inside a namespace (``ip -n NS link add ... peer ... netns OTHER``), so nothing ever
exists in the host's own network namespace, and deleting the namespaces removes every
device, address, route and iptables rule with them. Processes (captures, conntrack,
traffic programs) are started in their own session so that a Ctrl-C in the terminal
reaches only flowtrace, which then stops them in order (captures flush their files)
before the namespaces go. Teardown runs from ``__exit__`` (also on error), from SIGINT
and SIGTERM handlers (turned into exceptions, so the ``finally`` runs) and from atexit.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from flowtrace.errors import LabError

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

_STALE_RE = re.compile(r"^ft(\d+)-")


class Interrupted(LabError):
    """SIGTERM (or a second signal) arrived while a scenario ran; teardown follows."""


def netns_names() -> list[str]:
    """Return the names of the host's named network namespaces (``ip netns list``)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def remove_stale_namespaces() -> list[str]:
    """Delete ``ft<pid>-*`` namespaces whose run (process ``pid``) no longer exists.

    A run killed with SIGKILL cannot clean up after itself; the next run does. Returns
    the names removed.
    """
    removed = []
    for name in netns_names():
        m = _STALE_RE.match(name)
        if not m or Path(f"/proc/{m.group(1)}").exists():
            continue
        _kill_namespace_pids(name)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        removed.append(name)
    return removed


def _kill_namespace_pids(name: str) -> None:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False)
    for pid in out.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


class Sandbox:
    """Creates namespaces, runs commands and processes in them, and removes it all.

    Use as a context manager. ``prefix`` defaults to ``ft<pid>-``.
    """

    def __init__(self, *, prefix: str | None = None) -> None:
        self.prefix = prefix or f"ft{os.getpid()}-"
        self.namespaces: list[str] = []
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._open_files: list[IO[Any]] = []
        self._closed = False
        self._old_handlers: dict[int, Any] = {}

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: keep the old handler
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        atexit.register(self.close)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Interrupted(f"lab interrupted by signal {signum}")

    def close(self) -> None:
        """Stop every process (captures first, with SIGINT), then delete every namespace."""
        if self._closed:
            return
        self._closed = True
        # While tearing down, further signals must not cut the teardown short.
        for sig in self._old_handlers:
            with contextlib.suppress(ValueError):
                signal.signal(sig, signal.SIG_IGN)
        try:
            for _name, proc in reversed(self.processes):
                self._terminate(proc, signal.SIGINT, grace=3.0)
            for f in self._open_files:
                with contextlib.suppress(OSError):
                    f.close()
            for ns in reversed(self.namespaces):
                _kill_namespace_pids(ns)
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        finally:
            for sig, handler in self._old_handlers.items():
                with contextlib.suppress(ValueError, TypeError):
                    signal.signal(sig, handler)
            with contextlib.suppress(Exception):
                atexit.unregister(self.close)

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes], first: int, *, grace: float) -> int | None:
        if proc.poll() is not None:
            return proc.returncode
        for sig, wait in ((first, grace), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                return proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        return None

    # -- namespaces and commands -----------------------------------------------------

    def ns(self, host: str) -> str:
        """Return the namespace name of ``host`` in this run."""
        return f"{self.prefix}{host}"

    def add_namespace(self, host: str) -> str:
        """Create the namespace of ``host`` with its loopback up; return its name."""
        name = self.ns(host)
        self.run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def run(
        self,
        argv: Sequence[str],
        *,
        host: str | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` (inside ``host``'s namespace when given) and return its result.

        Raises LabError naming the command when it fails and ``check`` is true.
        """
        full = list(argv) if host is None else ["ip", "netns", "exec", self.ns(host), *argv]
        try:
            res = subprocess.run(
                full, input=input, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"command timed out after {timeout:g} s: {' '.join(full)}") from None
        except FileNotFoundError:
            raise LabError(f"command not found: {full[0]}") from None
        if check and res.returncode != 0:
            err = (res.stderr or res.stdout).strip().splitlines()
            detail = err[-1] if err else f"exit status {res.returncode}"
            raise LabError(f"command failed: {' '.join(full)}: {detail}")
        return res

    def ip(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``ip -n <ns of host> ARGS``."""
        return self.run(["ip", "-n", self.ns(host), *args], check=check)

    def sysctl(self, host: str, key: str, value: str | int, *, required: bool = True) -> bool:
        """Set sysctl ``key`` inside ``host``'s namespace through its own /proc/sys.

        Returns False when the key does not exist there and ``required`` is false (a
        sysctl that is not namespaced is never written: that would change the host).
        """
        path = "/proc/sys/" + key.replace(".", "/")
        res = self.run(
            ["sh", "-c", f'test -e {path} && echo {value} > {path}'], host=host, check=False
        )
        if res.returncode != 0:
            if required:
                raise LabError(f"sysctl {key} is not available in a network namespace")
            return False
        return True

    def read_sysctl(self, host: str, key: str) -> str | None:
        """Read sysctl ``key`` inside ``host``'s namespace; None when it does not exist."""
        path = "/proc/sys/" + key.replace(".", "/")
        res = self.run(["cat", path], host=host, check=False)
        return res.stdout.strip() if res.returncode == 0 else None

    # -- processes ---------------------------------------------------------------

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        host: str,
        stdout: Path | None = None,
        stderr: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host``'s namespace in its own session; keep track of it.

        stdout/stderr go to the given files (or are discarded). The process is stopped by
        :meth:`stop` or at teardown.
        """
        out = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115
        err = open(stderr, "wb") if stderr else subprocess.DEVNULL  # noqa: SIM115
        for f in (out, err):
            if not isinstance(f, int):
                self._open_files.append(f)
        full = ["ip", "netns", "exec", self.ns(host), *argv]
        try:
            proc = subprocess.Popen(
                full, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env,
            )
        except FileNotFoundError:
            raise LabError(f"command not found: {argv[0]}") from None
        self.processes.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, *, grace: float = 5.0) -> int | None:
        """Stop ``proc`` with ``sig`` (then SIGTERM, SIGKILL); return its exit status."""
        return self._terminate(proc, sig, grace=grace)

    @staticmethod
    def wait_for(predicate: Any, *, timeout: float, what: str, interval: float = 0.02) -> None:
        """Poll ``predicate()`` until it is true; raise LabError naming ``what`` on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(interval)
        raise LabError(f"timed out after {timeout:g} s waiting for {what}")
