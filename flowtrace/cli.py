"""The ``flowtrace`` command line: parses arguments, calls the library, picks a renderer.

This is the only module that imports typer. Every command turns a FlowtraceError into
one line on stderr and exit status 2.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from flowtrace.errors import FlowtraceError, InputError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from flowtrace.analysis import Analysis
    from flowtrace.context.k8s import KubeNames
    from flowtrace.report.progress import ProgressBar

app = typer.Typer(
    name="flowtrace",
    help="Follow a connection through kube-proxy's NAT across packet captures taken at the "
    "client, on the nodes and in the pods.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_LEFT_FOR_EXIT: list[object] = []
"""Large tables a command is done with, kept so that ``_leave`` ends the process before
Python frees them array by array (the system frees them at once)."""

lab_app = typer.Typer(
    help="Build Kubernetes Service scenarios in network namespaces and capture them.",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"flowtrace: {error}", err=True)
    return typer.Exit(2)


@app.command()
def info(
    captures: Annotated[list[Path], typer.Argument(help="Capture files or directories of captures.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per capture.")] = False,
) -> None:
    """Describe captures: format, link types, interfaces, packets, time span, decode results."""
    from flowtrace.pipeline import inspect_captures
    from flowtrace.report.info import render_info, render_info_json

    try:
        summaries = inspect_captures([str(p) for p in captures])
    except FlowtraceError as e:
        raise _fail(e) from None
    if json_out:
        sys.stdout.write(render_info_json(summaries) + "\n")
    else:
        render_info(summaries)


TimeoutOption = Annotated[list[str] | None, typer.Option(
    "--timeout", help="Override a conntrack idle timeout, KEY=SECONDS (repeatable; keys in docs/flows.md).")]
KubeProxyOption = Annotated[bool, typer.Option(
    "--kube-proxy-timeouts", help="Use the conntrack timeouts kube-proxy sets (established 86400 s, close_wait 3600 s).")]


def _timeouts(items: list[str] | None, kube_proxy: bool) -> dict[str, float]:
    """``--timeout KEY=SECONDS`` options (over kube-proxy's values with ``--kube-proxy-timeouts``);
    the library validates keys and values."""
    from flowtrace.flows import KUBE_PROXY_TIMEOUTS

    timeouts: dict[str, float] = dict(KUBE_PROXY_TIMEOUTS) if kube_proxy else {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError("", f"--timeout {item!r} is not KEY=SECONDS")
        timeouts[key.strip()] = value.strip()  # type: ignore[assignment]  # validated by the library
    return timeouts


@app.command()
def flows(
    captures: Annotated[list[Path], typer.Argument(help="Capture files or directories of captures (NAME=PATH names one).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON document (schema_version, flows).")] = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV, one line per flow.")] = False,
    zeek_out: Annotated[bool, typer.Option("--zeek", help="Print a Zeek conn.log (TSV with Zeek's header lines).")] = False,
    host: Annotated[list[str] | None, typer.Option("--host", help="Keep flows with an endpoint in this address or network (repeatable).")] = None,
    port: Annotated[list[str] | None, typer.Option("--port", help="Keep flows with an endpoint on this port (repeatable; ICMP: the type).")] = None,
    proto: Annotated[list[str] | None, typer.Option("--proto", help="Keep flows of this protocol: tcp, udp, icmp, icmp6, sctp or a number (repeatable).")] = None,
    capture: Annotated[list[str] | None, typer.Option("--capture", help="Keep flows of this capture name (repeatable).")] = None,
    timeout: TimeoutOption = None,
    kube_proxy_timeouts: KubeProxyOption = False,
    ignore_checksums: Annotated[bool, typer.Option("-C", "--ignore-checksums", help="Leave bad-checksum letters (c) out of histories, like zeek -C (captures with checksum offload).")] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Table only: show at most N flows (0: all; a terminal table of many thousands is slow to draw).")] = 1000,
) -> None:
    """List connections per observation point (capture, interface, direction) with Zeek's conn_state and history."""
    from flowtrace.capture.memory import heap_temporaries
    from flowtrace.flows import build
    from flowtrace.flows.select import FlowFilter
    from flowtrace.flows.zeek import conn_log
    from flowtrace.pipeline import packets_of
    from flowtrace.report.flows import flows_csv

    try:
        if json_out + csv_out + zeek_out > 1:
            raise InputError("", "choose one of --json, --csv, --zeek")
        timeouts = _timeouts(timeout, kube_proxy_timeouts)
        selection = FlowFilter.parse(hosts=host or [], ports=port or [], protos=proto or [], captures=capture or [])
        packets = packets_of([str(p) for p in captures])
        # A conn.log or CSV of all flows is laid out in the heap the flows were built in
        # (fresh pages would fault); from the arrays, without pandas.
        with heap_temporaries():
            built = build(packets, timeouts=timeouts, ignore_checksums=ignore_checksums)
            text = None
            if selection.keeps_all and zeek_out:
                text = conn_log(built.table)
            elif selection.keeps_all and csv_out:
                text = flows_csv(built.table)
        _LEFT_FOR_EXIT.append((packets, built))
    except FlowtraceError as e:
        raise _fail(e) from None
    if text is not None:
        sys.stdout.write(text)
        return
    from flowtrace.report.flows import flows_json, render_flows

    table = selection.apply(built.flows)
    if json_out:
        sys.stdout.write(flows_json(table) + "\n")
    elif csv_out:
        sys.stdout.write(flows_csv(table))
    elif zeek_out:
        sys.stdout.write(conn_log(table))
    else:
        render_flows(table, limit=limit or None)


@app.command()
def analyze(
    captures: Annotated[list[str], typer.Argument(help="Capture files, NAME=PATH, or directories of captures "
                                                 "(conntrack dumps in a directory are compared too).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the analysis as a JSON document.")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the JSON document to FILE.")] = None,
    manifest: Annotated[Path | None, typer.Option(help="YAML file naming capture roles, hosts, the reference.")] = None,
    conntrack_dump: Annotated[list[str] | None, typer.Option(
        "--conntrack-dump", help="[NODE=]FILE of conntrack -L / -E output to compare with (repeatable).")] = None,
    reference: Annotated[str | None, typer.Option(help="Capture whose clock is the reference.")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Draw every connection, healthy ones too "
                                           "(link housekeeping one line each).")] = False,
    k8s: Annotated[Path | None, typer.Option("--k8s", help="kubectl get pods,services,endpointslices,nodes -o json "
                                             "snapshot: names on addresses.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Also write a self-contained HTML report with "
                                              "ladder diagrams to FILE.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="Connections drawn in full (terminal: 20, "
                                              "HTML: 100; 0: all).")] = None,
    fail_on: Annotated[str | None, typer.Option(
        "--fail-on", metavar="SEVERITY", help="Exit with status 1 when a finding of SEVERITY or above exists "
        "(info, low, medium, high, critical): for CI pipelines and scripts.")] = None,
    timeout: TimeoutOption = None,
    kube_proxy_timeouts: KubeProxyOption = False,
) -> None:
    """Follow every connection across the captures: path, NAT, latencies, clock offsets, findings."""
    from flowtrace import __version__
    from flowtrace.detect.finding import SEVERITIES, severity_rank
    from flowtrace.pipeline import analyze as run_analysis
    from flowtrace.report.analysis import DEFAULT_LIMIT, render_analysis
    from flowtrace.report.json_doc import render_json

    try:
        if fail_on is not None and fail_on not in SEVERITIES:
            raise InputError("", f"--fail-on {fail_on!r} is not a severity ({', '.join(SEVERITIES)})")
        names = _read_k8s(k8s)
        timeouts = _timeouts(timeout, kube_proxy_timeouts)
        with _progress(captures) as progress:
            result = run_analysis(captures, manifest=manifest, conntrack_dumps=conntrack_dump or [],
                                  reference=reference, timeouts=timeouts, progress=progress)
        if html is not None:
            _write_html(html, result, names=names, limit=limit)
    except FlowtraceError as e:
        raise _fail(e) from None
    if output is not None:
        try:
            _write_text(output, render_json(result, version=__version__, names=names) + "\n")
        except FlowtraceError as e:
            raise _fail(e) from None
    if json_out and output is None:
        sys.stdout.write(render_json(result, version=__version__, names=names) + "\n")
    elif not json_out:
        render_analysis(result, show_all=show_all, names=names,
                        limit=DEFAULT_LIMIT if limit is None else (limit or None))
    if fail_on is not None and any(severity_rank(f.severity) >= severity_rank(fail_on) for f in result.findings):
        raise typer.Exit(1)


@app.command()
def conntrack(
    captures: Annotated[list[str], typer.Argument(help="Capture files, NAME=PATH, or directories of captures.")],
    node: Annotated[list[str] | None, typer.Option("--node", help="Print only this capture's table (repeatable).")] = None,
    compare_with: Annotated[list[str] | None, typer.Option(
        "--compare", help="[NODE=]DUMP: compare with conntrack -L or -E output (any -o variant); "
        "exit 1 when they differ.")] = None,
    extended: Annotated[bool, typer.Option("--extended", help="Layer-3 prefix as conntrack -o extended prints it.")] = False,
    events: Annotated[bool, typer.Option("--events", help="The entries' events as conntrack -E prints them "
                                         "(NEW, UPDATE, DESTROY), in time order.")] = False,
    event_mask: Annotated[str | None, typer.Option("--event-mask", help="With --events: only these kinds, "
                                                   "comma-separated (NEW,UPDATE,DESTROY), as conntrack -e.")] = None,
    timestamp: Annotated[bool, typer.Option("--timestamp", help="With --events: each event's time on the "
                                            "node's clock first, as conntrack -o timestamp.")] = False,
    manifest: Annotated[Path | None, typer.Option(help="YAML file naming capture roles, hosts, the reference.")] = None,
    timeout: TimeoutOption = None,
    kube_proxy_timeouts: KubeProxyOption = False,
) -> None:
    """Print the conntrack table each node held, rebuilt from its capture, in conntrack -L layout."""
    from flowtrace.pipeline import DUMP_NOTE
    from flowtrace.pipeline import analyze as run_analysis
    from flowtrace.report.conntrack import render_comparison, render_tables

    dumps = list(compare_with or [])
    try:
        kinds = _event_kinds(event_mask)
        # Neither findings nor the dumps beside the captures are printed here.
        result = run_analysis(captures, manifest=manifest, conntrack_dumps=dumps,
                              timeouts=_timeouts(timeout, kube_proxy_timeouts), detect=False,
                              directory_dumps=False)
    except FlowtraceError as e:
        raise _fail(e) from None
    known = result.conntrack_nodes()
    nodes = list(node) if node else known
    unknown = [n for n in nodes if n not in {c.capture for c in result.captures}]
    if unknown:
        raise _fail(FlowtraceError(f"no capture named {', '.join(unknown)} (captures: "
                                   f"{', '.join(c.capture for c in result.captures)})"))
    if not dumps:
        render_tables(result, nodes=nodes, extended=extended, events=events, kinds=kinds, timestamp=timestamp)
        return
    differ = False
    wanted = {str(Path(d.split("=", 1)[-1]).name) for d in dumps}
    for name, comparison in result.comparisons.items():
        dump_name = name.split(" (", 1)[1].rstrip(")")
        if dump_name not in wanted or (node and name.split(" ", 1)[0] not in nodes):
            continue
        render_comparison(name.split(" ", 1)[0], dump_name, comparison)
        differ |= not comparison.agrees
    for note in result.notes:
        if DUMP_NOTE in note:
            typer.echo(f"note: {note}")
    if differ:
        raise typer.Exit(1)


@app.command()
def trace(
    captures: Annotated[list[str], typer.Argument(help="Capture files, NAME=PATH, or directories of captures.")],
    conn: Annotated[int | None, typer.Option("--conn", help="Connection number (as analyze prints it: #N).")] = None,
    client: Annotated[str | None, typer.Option("--client", help="The client's ADDRESS[:PORT] as it sent the "
                                               "request, e.g. 198.51.100.10:45300.")] = None,
    host: Annotated[list[str] | None, typer.Option("--host", help="An address seen at any hop (repeatable: all "
                                                   "must match).")] = None,
    port: Annotated[list[int] | None, typer.Option("--port", help="A port seen at any hop (repeatable).")] = None,
    k8s: Annotated[Path | None, typer.Option("--k8s", help="kubectl get pods,services,endpointslices,nodes -o json "
                                             "snapshot: names on addresses.")] = None,
    manifest: Annotated[Path | None, typer.Option(help="YAML file naming capture roles, hosts, the reference.")] = None,
    reference: Annotated[str | None, typer.Option(help="Capture whose clock is the reference.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Packets drawn (0: all).")] = 400,
    svg: Annotated[Path | None, typer.Option("--svg", help="Also write the ladder as an SVG file.")] = None,
) -> None:
    """Draw one connection as a ladder: vantage points as columns, every packet an arrow in corrected time."""
    from flowtrace.pipeline import analyze as run_analysis
    from flowtrace.report.select import ConnectionFilter
    from flowtrace.report.svg import standalone_svg
    from flowtrace.report.trace import NoConnection, TraceReport, render_trace

    try:
        try:
            selection = ConnectionFilter.parse(connection=conn, client=client, hosts=host or [], ports=port or [])
        except ValueError as e:
            raise InputError("", str(e)) from None
        names = _read_k8s(k8s)
        with _progress(captures) as progress:
            # The dumps beside the captures are not drawn or exported: not read.
            result = run_analysis(captures, manifest=manifest, reference=reference, progress=progress,
                                  directory_dumps=False)
        try:
            report = TraceReport.build(result, selection, names=names, limit=limit or None)
        except NoConnection as e:
            raise InputError("", str(e)) from None
        if svg is not None:
            _write_text(svg, standalone_svg(report.ladder))
    except FlowtraceError as e:
        raise _fail(e) from None
    render_trace(report)


@app.command()
def export(
    captures: Annotated[list[str], typer.Argument(help="Capture files, NAME=PATH, or directories of captures.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write TABLE.parquet / TABLE.csv "
                                         "and metadata.json into.")],
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    table: Annotated[list[str] | None, typer.Option("--table", help="Write only this table (repeatable): packets, "
                                                    "flows, connections, hops, anomalies.")] = None,
    k8s: Annotated[Path | None, typer.Option("--k8s", help="kubectl get pods,services,endpointslices,nodes -o json "
                                             "snapshot: adds <address>_name columns.")] = None,
    manifest: Annotated[Path | None, typer.Option(help="YAML file naming capture roles, hosts, the reference.")] = None,
    reference: Annotated[str | None, typer.Option(help="Capture whose clock is the reference.")] = None,
) -> None:
    """Write the packets, flows, connections, hops and anomalies tables as Parquet or CSV files."""
    from flowtrace import __version__
    from flowtrace.pipeline import analyze as run_analysis
    from flowtrace.report.export import FORMATS, table_names, write_tables

    try:
        if fmt not in FORMATS:
            raise InputError("", f"--format {fmt!r}: choose {' or '.join(FORMATS)}")
        unknown = [t for t in table or [] if t not in table_names()]
        if unknown:
            raise InputError("", f"--table {', '.join(unknown)}: choose from {', '.join(table_names())}")
        names = _read_k8s(k8s)
        with _progress(captures) as progress:
            # The dumps beside the captures are not drawn or exported: not read.
            result = run_analysis(captures, manifest=manifest, reference=reference, progress=progress,
                                  directory_dumps=False)
        files = write_tables(result, output, fmt=fmt, names=names, tables=table, version=__version__)
    except (FlowtraceError, ImportError) as e:  # ImportError: Parquet without pyarrow, with what to install
        raise _fail(e) from None
    for name, path in files.items():
        typer.echo(f"{path}  {name}")
    typer.echo(str(output / "metadata.json"))


def _read_k8s(path: Path | None) -> KubeNames | None:
    """The snapshot given with --k8s, or None; InputError when it cannot be used."""
    if path is None:
        return None
    from flowtrace.context.k8s import read_snapshot

    return read_snapshot(path)


def _progress(captures: list[str]) -> AbstractContextManager[ProgressBar | None]:
    """A progress bar on stderr for large inputs when stderr is a terminal."""
    from flowtrace.report.progress import progress_bar

    total = 0
    for c in captures:
        p = Path(c.split("=", 1)[1] if "=" in c and not Path(c).exists() else c)
        try:
            total += sum(f.stat().st_size for f in p.iterdir() if f.is_file()) if p.is_dir() else p.stat().st_size
        except OSError:
            continue
    return progress_bar(total_bytes=total)


def _event_kinds(mask: str | None) -> list[str]:
    """The event kinds of ``--event-mask`` (conntrack -e's names, any case; ALL for every kind)."""
    from flowtrace.correlate.conntrack import EVENT_KINDS

    if mask is None or mask.strip().upper() == "ALL":
        return list(EVENT_KINDS)
    kinds = [k.strip().upper() for k in mask.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in EVENT_KINDS]
    if unknown or not kinds:
        raise InputError("", f"--event-mask {mask!r}: choose among {', '.join(EVENT_KINDS)} (comma-separated) or ALL")
    return [k for k in EVENT_KINDS if k in kinds]


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise InputError(path, f"cannot write: {e.strerror or e}") from None


def _write_html(path: Path, result: Analysis, *, names: KubeNames | None, limit: int | None) -> None:
    from flowtrace import __version__
    from flowtrace.report.html import DEFAULT_LIMIT, html_report

    cap = DEFAULT_LIMIT if limit is None else (limit or None)
    _write_text(path, html_report(result, names=names, limit=cap, version=__version__))


@lab_app.command("list")
def lab_list() -> None:
    """List the lab's scenarios, one line each."""
    from flowtrace.lab import list_scenarios

    for name, summary in list_scenarios():
        typer.echo(f"{name:<24} {summary}")


@lab_app.command("run")
def lab_run(
    scenarios: Annotated[list[str], typer.Argument(help="Scenario names (see 'flowtrace lab list'), or 'all'.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write DIR/SCENARIO/ into.")],
    connections: Annotated[int | None, typer.Option(help="Connection count for scenarios that take one.")] = None,
) -> None:
    """Build SCENARIO in network namespaces, run its traffic, capture it, tear it down."""
    from flowtrace.lab import run_scenarios

    try:
        for path in run_scenarios(scenarios, output, connections=connections):
            typer.echo(str(path))
    except FlowtraceError as e:
        raise _fail(e) from None


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """Print library warnings as one plain line, like errors, instead of Python's format."""
    typer.echo(f"flowtrace: warning: {message}", err=True)


def main() -> None:
    """Entry point of the ``flowtrace`` script."""
    warnings.showwarning = _show_warning
    try:
        app()
        code = 0
    except SystemExit as e:
        code = _status(e.code)
        if code == 130:  # typer turns Ctrl-C into a silent exit 130
            typer.echo("flowtrace: interrupted", err=True)
        elif code == 1 and _reader_gone(e):
            code = BROKEN_PIPE
    except FlowtraceError as e:  # pragma: no cover - commands catch their own
        typer.echo(f"flowtrace: {e}", err=True)
        code = 2
    except KeyboardInterrupt:
        typer.echo("flowtrace: interrupted", err=True)
        code = 130
    _leave(code)


BROKEN_PIPE = 141
"""Exit status when the reader of the output went away (``| head``): the shell's status of a
process that SIGPIPE ended (128 + 13), whichever write noticed it."""


def _reader_gone(exit: SystemExit) -> bool:
    """Whether ``exit`` ends the command because stdout's reader went away: click and rich
    both turn a broken pipe into ``SystemExit(1)`` raised while handling it."""
    seen: BaseException | None = exit.__context__
    while seen is not None:
        if isinstance(seen, BrokenPipeError):
            return True
        seen = seen.__context__
    return False


def _status(code: object) -> int:
    """The exit status of ``SystemExit(code)``, printing a message code as Python would."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _leave(code: int) -> NoReturn:
    """Flush the output and end the process without tearing down its heap.

    Everything a command owns is closed by then (lab namespaces are torn down in the
    commands' own ``finally``); what is left is freeing the packets table and the other
    large arrays one by one, which the system does at once: a tenth of a second or more
    after a large analysis.
    """
    from flowtrace.decode.early import abandon_early
    from flowtrace.interrupts import interrupted

    if interrupted() and code != 130:  # a Ctrl-C that a finalizer swallowed
        typer.echo("flowtrace: interrupted", err=True)
        code = 130
    abandon_early()
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (``| head``): say nothing more
        code = code or BROKEN_PIPE
    with contextlib.suppress(BrokenPipeError):
        sys.stderr.flush()
    os._exit(code)
