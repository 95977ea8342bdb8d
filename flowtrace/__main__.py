"""``python -m flowtrace``: the same as the ``flowtrace`` command."""

from flowtrace.launch import main

main()
