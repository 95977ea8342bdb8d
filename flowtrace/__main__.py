"""``python -m flowtrace``: the same as the ``flowtrace`` command."""

from flowtrace.cli import main

main()
