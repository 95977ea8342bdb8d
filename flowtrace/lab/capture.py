"""Capture processes of a lab run: tcpdump, dumpcap and ``conntrack -E``.

Each start function returns only when its process really listens (tcpdump prints
"listening on", dumpcap "Capturing on", conntrack has joined its netlink event groups),
so that the traffic that follows is fully recorded. Stopping sends SIGINT (tcpdump,
dumpcap) or SIGTERM (conntrack), which makes each of them flush its file and print its
counters; the counters are parsed into the truth file.

tcpdump runs with TPACKET_V3 (not ``--immediate-mode``: with a 256 KiB snaplen the
immediate ring holds only a handful of frames and drops bursts). A V3 block reaches
userspace when it fills or after the block timeout (1 s for tcpdump), so callers wait
:data:`FLUSH_WAIT_S` after the last packet before stopping a capture.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowtrace.errors import LabError
from flowtrace.lab.netns import Sandbox

FLUSH_WAIT_S = 1.3
"""Seconds to wait after the last packet so that tcpdump's last V3 block is delivered."""

TCPDUMP_BUFFER_KIB = 32768
CONNTRACK_EVENTS_ARGS = ("conntrack", "-E", "-o", "timestamp,extended", "-b", "16777216")
DUMPCAP_BUFFER_MIB = 32
CONNTRACK_LIST_ARGS = ("conntrack", "-L", "-o", "extended")


@dataclass(slots=True)
class CaptureProc:
    """A running (then stopped) capture and what the truth file says about it."""

    host: str
    """Lab host whose namespace it runs in."""
    path: Path
    """Output file."""
    tool: str
    """``tcpdump`` or ``dumpcap``."""
    interfaces: list[str]
    """Interfaces captured (``any`` for tcpdump -i any)."""
    command: list[str]
    """The command line inside the namespace."""
    proc: subprocess.Popen[bytes] | None = None
    stderr_path: Path | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def _stderr_text(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    return path.read_text(errors="replace")


def _wait_ready(sb: Sandbox, cap: CaptureProc, marker: str, timeout: float = 10.0) -> None:
    def ready() -> bool:
        if cap.proc is not None and cap.proc.poll() is not None:
            err = _stderr_text(cap.stderr_path).strip().splitlines()
            raise LabError(f"{cap.tool} on {cap.host} exited: {err[-1] if err else cap.proc.returncode}")
        return marker in _stderr_text(cap.stderr_path)

    sb.wait_for(ready, timeout=timeout, what=f"{cap.tool} on {cap.host} to listen")


def start_tcpdump(sb: Sandbox, host: str, iface: str, path: Path, log_dir: Path, *, snaplen: int = 0) -> CaptureProc:
    """Start ``tcpdump -i IFACE -w PATH`` in ``host``'s namespace; return once it listens."""
    cmd = ["tcpdump", "-i", iface, "-s", str(snaplen), "-B", str(TCPDUMP_BUFFER_KIB), "-n", "-U", "-Z", "root",
           "-w", str(path)]
    cap = CaptureProc(host=host, path=path, tool="tcpdump", interfaces=[iface], command=cmd,
                      stderr_path=log_dir / f"{path.name}.stderr")
    cap.proc = sb.spawn(f"tcpdump:{host}", cmd, host=host, stderr=cap.stderr_path)
    _wait_ready(sb, cap, "listening on")
    return cap


def start_dumpcap(sb: Sandbox, host: str, ifaces: list[str], path: Path, log_dir: Path, *,
                  snaplen: int = 0) -> CaptureProc:
    """Start ``dumpcap -i A -i B ... -w PATH`` (pcapng, one IDB per interface) in ``host``."""
    cmd = ["dumpcap", "-q", "-n"]
    for iface in ifaces:
        cmd += ["-i", iface, "-B", str(DUMPCAP_BUFFER_MIB)]
        if snaplen:
            cmd += ["-s", str(snaplen)]
    cmd += ["-w", str(path)]
    cap = CaptureProc(host=host, path=path, tool="dumpcap", interfaces=list(ifaces), command=cmd,
                      stderr_path=log_dir / f"{path.name}.stderr")
    cap.proc = sb.spawn(f"dumpcap:{host}", cmd, host=host, stderr=cap.stderr_path)
    _wait_ready(sb, cap, "Capturing on")
    return cap


def stop_capture(sb: Sandbox, cap: CaptureProc) -> None:
    """Stop a capture with SIGINT so that it writes its last records; parse its counters."""
    if cap.proc is None:
        return
    sb.stop(cap.proc, signal.SIGINT, grace=10.0)
    text = _stderr_text(cap.stderr_path)
    if cap.tool == "tcpdump":
        for key, label in (("captured", "captured"), ("received", "received by filter"),
                           ("dropped", "dropped by kernel")):
            m = re.search(rf"(\d+) packets? {label}", text)
            if m:
                cap.stats[key] = int(m.group(1))
    else:
        for m in re.finditer(r"Packets received/dropped on interface '([^']+)': (\d+)/(\d+)", text):
            cap.stats.setdefault("interfaces", {})[m.group(1)] = {
                "received": int(m.group(2)), "dropped": int(m.group(3))}
        m = re.search(r"Packets(?: captured)?: (\d+)", text)
        if m:
            cap.stats["captured"] = int(m.group(1))


@dataclass(slots=True)
class ConntrackEvents:
    """A running ``conntrack -E`` on one node."""

    host: str
    path: Path
    command: list[str]
    proc: subprocess.Popen[bytes] | None = None
    stderr_path: Path | None = None
    summary: str = ""


def _subscribed(pid: int) -> bool:
    """Whether process ``pid`` owns a NETLINK_NETFILTER socket joined to event groups."""
    try:
        lines = Path(f"/proc/{pid}/net/netlink").read_text().splitlines()[1:]
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    inodes = set()
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in lines:
        cols = line.split()
        if len(cols) >= 10 and cols[1] == "12" and int(cols[3], 16) != 0 and cols[9] in inodes:
            return True
    return False


def events_command(event_mask: str) -> list[str]:
    """The ``conntrack -E`` command line recording ``event_mask`` (e.g. NEW,UPDATE,DESTROY)."""
    return [*CONNTRACK_EVENTS_ARGS, "-e", event_mask]


def start_conntrack_events(sb: Sandbox, host: str, path: Path, log_dir: Path, *,
                           event_mask: str = "NEW,UPDATE,DESTROY") -> ConntrackEvents:
    """Start ``conntrack -E -o timestamp,extended -e MASK`` in ``host``; return once subscribed."""
    cmd = events_command(event_mask)
    ev = ConntrackEvents(host=host, path=path, command=cmd, stderr_path=log_dir / f"{path.name}.stderr")
    ev.proc = sb.spawn(f"conntrack:{host}", cmd, host=host, stdout=path, stderr=ev.stderr_path)
    proc = ev.proc

    def ready() -> bool:
        if proc.poll() is not None:
            raise LabError(f"conntrack -E on {host} exited: {_stderr_text(ev.stderr_path).strip()}")
        return _subscribed(proc.pid)

    sb.wait_for(ready, timeout=10.0, what=f"conntrack -E on {host}")
    return ev


def stop_conntrack_events(sb: Sandbox, ev: ConntrackEvents) -> None:
    """Stop ``conntrack -E`` with SIGTERM (it flushes stdout and prints its count)."""
    if ev.proc is not None:
        sb.stop(ev.proc, signal.SIGTERM, grace=5.0)
    ev.summary = _stderr_text(ev.stderr_path).strip()


def dump_conntrack(sb: Sandbox, host: str, path: Path) -> list[str]:
    """Write ``conntrack -L -o extended`` of both families in ``host`` to ``path``.

    Returns the commands run (for the truth file).
    """
    cmds, chunks = [], []
    for fam in ("ipv4", "ipv6"):
        cmd = [*CONNTRACK_LIST_ARGS, "-f", fam]
        res = sb.run(cmd, host=host, check=False)
        if res.returncode != 0 and "0 flow entries" not in res.stderr:
            raise LabError(f"conntrack -L on {host} failed: {res.stderr.strip()}")
        chunks.append(res.stdout)
        cmds.append(" ".join(cmd))
    path.write_text("".join(chunks))
    return cmds
