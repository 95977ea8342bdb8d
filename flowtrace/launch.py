"""The ``flowtrace`` command's entry point: a large capture starts decoding before the CLI loads.

Loading the command line (typer, rich, pandas and the pipeline) takes about 0.4 s. For a
command that reads captures, the one large pcap among its arguments is handed first to
``flowtrace.decode.halves.start_early``, which needs only numpy: a second process decodes
the file from its end during those 0.4 s, and the command's own read meets it there.
"""

from __future__ import annotations

import sys

READING_COMMANDS = frozenset({"info", "flows", "analyze", "conntrack", "trace", "export"})
"""Subcommands whose arguments are captures."""


def main() -> None:
    """Entry point of the ``flowtrace`` script and of ``python -m flowtrace``."""
    args = sys.argv[1:]
    if len(args) > 1 and args[0] in READING_COMMANDS and not {"-h", "--help"} & set(args):
        from flowtrace.decode.halves import start_early

        start_early(args[1:])
    from flowtrace.cli import main as cli_main

    cli_main()
