"""The command's entry point: which arguments it hands to the early start."""

from __future__ import annotations

import typer.main

from flowtrace.cli import app
from flowtrace.launch import READING_COMMANDS, VALUE_OPTIONS, capture_arguments


def test_value_options_are_those_of_the_reading_commands():
    group = typer.main.get_command(app)
    assert set(group.commands) >= READING_COMMANDS
    taking_values = set()
    for name in READING_COMMANDS:
        for p in group.commands[name].params:
            if getattr(p, "param_type_name", "") == "option" and not p.is_flag:
                taking_values.update(p.opts, p.secondary_opts)
    assert taking_values == VALUE_OPTIONS


def test_capture_arguments_skip_options_and_their_values():
    args = ["dir/", "--json", "-o", "out.json", "--manifest", "m.yaml", "web=web.pcap", "--timeout=udp=5",
            "--conntrack-dump", "node1=dump.txt", "-C", "--", "last.pcap", "-odd.pcap"]
    assert capture_arguments(args) == ["dir/", "web=web.pcap", "last.pcap", "-odd.pcap"]
