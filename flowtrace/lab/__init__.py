"""The lab: Kubernetes Service scenarios built in network namespaces and captured.

``list_scenarios()`` names them; ``run_scenarios(names, out_dir)`` builds each one
(client, VPC router, two nodes with kube-proxy's iptables rules, pods), captures it at
every vantage point with the nodes' ``conntrack -E`` as ground truth, tears it all down,
and writes ``out_dir/SCENARIO/`` (see docs/lab.md). Importing this package is cheap: the
modules that do the work load when a run starts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from flowtrace.errors import LabError

__all__ = ["REQUIRED_TOOLS", "check_environment", "list_scenarios", "run_scenarios"]

REQUIRED_TOOLS = ("ip", "bridge", "tcpdump", "dumpcap", "iptables", "iptables-restore",
                  "ip6tables-restore", "iptables-save", "conntrack")
_PACKAGES = {"ip": "iproute2", "bridge": "iproute2", "tcpdump": "tcpdump", "dumpcap": "wireshark-common",
             "iptables": "iptables", "iptables-restore": "iptables", "ip6tables-restore": "iptables",
             "iptables-save": "iptables", "conntrack": "conntrack"}


def list_scenarios() -> list[tuple[str, str]]:
    """Return (name, one-line summary) of every scenario, in a stable order."""
    from flowtrace.lab.scenarios import SCENARIOS

    return [(s.name, s.summary) for s in SCENARIOS]


def check_environment() -> None:
    """Raise LabError (one line) unless running as root with every tool the lab needs."""
    if os.geteuid() != 0:
        raise LabError("lab needs root (network namespaces, iptables, tcpdump)")
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        pkgs = " ".join(dict.fromkeys(_PACKAGES[t] for t in missing))
        raise LabError(f"lab needs {', '.join(missing)}: install them (apt-get install {pkgs})")


def run_scenarios(names: list[str], out_dir: Path, *, connections: int | None = None) -> list[Path]:
    """Run each named scenario (``all`` = every one) into ``out_dir/NAME/``.

    Returns the scenario directories written. Raises LabError for an unknown name, a
    missing privilege or tool, or a step that fails (everything created is removed).
    """
    from flowtrace.lab.netns import remove_stale_namespaces
    from flowtrace.lab.runner import run_scenario
    from flowtrace.lab.scenarios import BY_NAME, SCENARIOS

    wanted = [s.name for s in SCENARIOS] if "all" in names else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in BY_NAME]
    if unknown:
        raise LabError(f"unknown scenario {', '.join(unknown)} (see 'flowtrace lab list')")
    if connections is not None and connections < 1:
        raise LabError("--connections must be at least 1")
    check_environment()
    remove_stale_namespaces()
    out_dir.mkdir(parents=True, exist_ok=True)
    return [run_scenario(BY_NAME[n], out_dir, connections=connections) for n in wanted]
