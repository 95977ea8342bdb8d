"""The ``flowtrace`` command's entry point: reading starts before the command line loads.

Loading the command line (typer, rich, pandas and the pipeline) takes about 0.4 s. For a
command that reads captures, its capture arguments go first to
``flowtrace.decode.early.start_early``, which needs only numpy: a second process (or a
pool of workers) decodes them during those 0.4 s, and the command's own read adopts
that work.
"""

from __future__ import annotations

import os
import sys

from flowtrace import interrupts
from flowtrace.collector import relax

READING_COMMANDS = frozenset({"info", "flows", "analyze", "conntrack", "trace", "export"})
"""Subcommands whose arguments are captures."""
ONE_AT_A_TIME = frozenset({"info"})
"""Reading commands that read their captures one by one (no pool to start for several)."""

VALUE_OPTIONS = frozenset({
    "-o", "--output", "--capture", "--client", "--compare", "--conn", "--conntrack-dump", "--event-mask", "--fail-on",
    "--format", "--host", "--html", "--k8s", "--limit", "--manifest", "--node", "--port", "--proto",
    "--reference", "--svg", "--table", "--timeout",
})
"""Options of the reading commands that take a value (the next argument is not a capture);
tests/test_launch.py checks the list against the commands."""


def capture_arguments(args: list[str]) -> list[str]:
    """The positional arguments of a reading command's arguments ``args`` (after its name)."""
    out = []
    skip, options = False, True
    for arg in args:
        if skip:
            skip = False
        elif options and arg == "--":
            options = False
        elif options and arg.startswith("-"):
            skip = arg in VALUE_OPTIONS
        else:
            out.append(arg)
    return out


def main() -> None:
    """Entry point of the ``flowtrace`` script and of ``python -m flowtrace``."""
    args = sys.argv[1:]
    # numpy's OpenBLAS starts a thread per core at import, which spin while the early
    # child decodes; flowtrace does no linear algebra worth a second thread.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # A command runs once and exits: at the default threshold (700 allocations) the cyclic
    # collector runs ~180 times in a flows run (20 ms). Collections stay, a hundred times rarer.
    relax()
    interrupts.install()
    try:
        if len(args) > 1 and args[0] in READING_COMMANDS and not {"-h", "--help"} & set(args):
            from flowtrace.decode.early import start_early

            start_early(capture_arguments(args[1:]), pool=args[0] not in ONE_AT_A_TIME)
        from flowtrace.cli import main as cli_main
    except KeyboardInterrupt:  # Ctrl-C while loading: the CLI's own handler is not in place yet
        print("flowtrace: interrupted", file=sys.stderr)
        os._exit(130)  # early children die with this process
    cli_main()
