"""Every command has help text and is documented: an entry in docs/cli.md, a page, each option on it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from flowtrace.cli import app

DOCS = Path(__file__).resolve().parents[1] / "docs"


def commands() -> list[tuple[str, Any]]:
    """(full name, command) for every command of the app, sub-apps included (``lab run``).

    Typer builds click-style command objects (its own vendored click in recent versions),
    so groups are recognised by their ``commands`` mapping rather than by class.
    """
    root = typer.main.get_command(app)
    out: list[tuple[str, Any]] = []

    def walk(prefix: str, group: Any) -> None:
        for name, cmd in sorted(group.commands.items()):
            full = f"{prefix} {name}".strip()
            out.append((full, cmd))
            if hasattr(cmd, "commands"):
                walk(full, cmd)

    assert hasattr(root, "commands")
    walk("", root)
    return out


def is_option(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "option"


def page_of(full: str) -> Path:
    """docs/cli/COMMAND.md for a top-level command or a sub-app's command."""
    top = full.split()[0]
    page = DOCS / "cli" / f"{top}.md"
    return page


ALL = commands()


def test_walk_finds_every_command():
    names = {n for n, _ in ALL}
    assert {"info", "flows", "analyze", "trace", "conntrack", "export", "lab", "lab list", "lab run"} <= names


@pytest.mark.parametrize(("full", "cmd"), ALL, ids=[n for n, _ in ALL])
def test_command_has_help(full: str, cmd: Any) -> None:
    assert (cmd.help or "").strip(), f"{full} has no help text"
    for p in cmd.params:
        if p.name == "help":
            continue
        assert (getattr(p, "help", None) or "").strip(), f"{full}: {p.name} has no help text"


@pytest.mark.parametrize(("full", "cmd"), ALL, ids=[n for n, _ in ALL])
def test_command_is_documented(full: str, cmd: Any) -> None:
    index = (DOCS / "cli.md").read_text()
    assert re.search(rf"`{re.escape(full)}[` ]", index), f"docs/cli.md does not list `{full}`"
    page = page_of(full)
    assert page.exists(), f"{page} is missing"
    text = page.read_text()
    assert f"flowtrace {full}" in text, f"{page} does not show `flowtrace {full}`"
    for p in cmd.params:
        if is_option(p) and p.name != "help":
            longest = max(p.opts, key=len)
            assert longest in text, f"{page} does not document {longest} of {full}"


def test_index_links_exist():
    index = (DOCS / "cli.md").read_text()
    for link in re.findall(r"\]\(([^)#]+\.md)\)", index):
        assert (DOCS / link).exists(), link


# --------------------------------------------------------------------------- examples

EXAMPLE_PAGES = ["tutorial.md", "cli/analyze.md", "cli/trace.md", "cli/conntrack.md", "cli/export.md"]
"""Pages whose ``$ flowtrace …`` examples are run by the tests and must print what the page shows.
Regenerate them after a deliberate change: FLOWTRACE_UPDATE_GOLDEN=1 pytest tests/test_cli_docs.py"""

FENCE = re.compile(r"^```[a-z]*\n(\$ flowtrace [^\n]*)\n(.*?)^```$", re.M | re.S)


def run_example(command: str) -> str:
    """What ``$ flowtrace ARGS [| head -N | tail -N]`` prints (stdout, 100 columns, no colour)."""
    import os
    import shlex

    from typer.testing import CliRunner

    line = command.removeprefix("$ ").strip()
    pipe = None
    if " | " in line:
        line, pipe = line.split(" | ", 1)
    args = shlex.split(line)[1:]
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR")}
    result = CliRunner().invoke(app, args, env={**env, "COLUMNS": "100"})
    out = result.stdout
    if pipe:
        kind, n = pipe.split()[0], int(pipe.split()[-1].lstrip("-"))
        lines = out.splitlines(keepends=True)
        out = "".join(lines[:n] if kind == "head" else lines[-n:])
    return "\n".join(s.rstrip() for s in out.splitlines()) + "\n"


@pytest.mark.parametrize("page", EXAMPLE_PAGES)
def test_examples_print_what_the_docs_show(page: str) -> None:
    import os

    path = DOCS / page
    text = path.read_text()
    blocks = FENCE.findall(text)
    assert blocks, f"{page} has no $ flowtrace examples"
    cwd = os.getcwd()
    os.chdir(DOCS.parent)  # the examples use paths relative to the repository
    try:
        new = FENCE.sub(lambda m: f"```\n{m.group(1)}\n{run_example(m.group(1))}```", text)
    finally:
        os.chdir(cwd)
    if os.environ.get("FLOWTRACE_UPDATE_GOLDEN") == "1":
        path.write_text(new)
        return
    assert new == text, (f"the examples in docs/{page} no longer match the commands' output: "
                         "FLOWTRACE_UPDATE_GOLDEN=1 pytest tests/test_cli_docs.py, then review the diff")
