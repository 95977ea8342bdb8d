"""`flowtrace analyze` on the lab's large many-connections scenario against tshark's
`-z conv,tcp` over the same capture files, side by side in one run.

    flowtrace lab run many-connections -o bench/data/lab --connections 17000   # once, as root (~1 min)
    python bench/bench_analyze.py [DIR] [--repeat 3]

DIR (default bench/data/lab/many-connections) holds the captures of every vantage point
(client, nodes, pods) and the nodes' conntrack dumps, as the lab writes them. Each round
runs, end to end (process start, reading, output to /dev/null), alternating which goes
first:

- ``flowtrace analyze DIR``: decoding, flows, correlation across captures, clock offsets,
  conntrack rebuilt and compared with the dumps, anomaly detection, the terminal report;
- ``tshark -q -z conv,tcp -r FILE`` for each capture file of DIR, one after the other
  (tshark reads one file per run): the summed time.

Prints the medians, packets per second and their ratio as a markdown table, then the
in-process time of each analysis stage (from ``analyze``'s progress callback). The machine
may be shared: repeat and read the medians.
"""

from __future__ import annotations

import argparse
import compileall
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = HERE / "data" / "lab" / "many-connections"


def _wall(cmds: list[list[str]]) -> float:
    t = time.perf_counter()
    for cmd in cmds:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def _stages(directory: Path) -> tuple[int, list[tuple[str, float]]]:
    """(packets, [(stage, seconds)]) of one in-process analysis."""
    import flowtrace

    marks: list[tuple[str, float]] = []

    def progress(stage: str, done: int, total: int) -> None:
        if not marks or marks[-1][0] != stage:
            marks.append((stage, time.perf_counter()))

    t0 = time.perf_counter()
    analysis = flowtrace.analyze(str(directory), progress=progress)
    end = time.perf_counter()
    marks.insert(0, ("start", t0))
    marks.append(("end", end))
    out = [(name, marks[i + 1][1] - at) for i, (name, at) in enumerate(marks[:-1]) if name != "start"]
    if marks[1][1] - t0 > 0.001:
        out.insert(0, ("setup", marks[1][1] - t0))
    return len(analysis.packets), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("directory", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--other-commands", action="store_true",
                    help="also time analyze --json and --html, conntrack, trace and export on DIR "
                         "(medians of the same rounds)")
    args = ap.parse_args()
    if not args.directory.is_dir():
        sys.exit(f"{args.directory}: no such directory; make it with "
                 "`flowtrace lab run many-connections -o bench/data/lab --connections 17000` (as root)")
    tshark = shutil.which("tshark")
    if tshark is None:
        sys.exit("tshark is not installed")
    captures = sorted(p for p in args.directory.iterdir() if p.suffix in (".pcap", ".pcapng"))
    ours = [[sys.executable, "-m", "flowtrace", "analyze", str(args.directory)]]
    theirs = [[tshark, "-q", "-z", "conv,tcp", "-r", str(p)] for p in captures]
    # An installed package has its bytecode (pip compiles it); a checkout run with
    # PYTHONDONTWRITEBYTECODE set would compile every module at every run.
    compileall.compile_dir(str(HERE.parent / "flowtrace"), quiet=1)
    _wall(ours)  # warm the page cache
    t_ours: list[float] = []
    t_theirs: list[float] = []
    for i in range(args.repeat):
        pair = [(ours, t_ours), (theirs, t_theirs)]
        for cmds, out in pair if i % 2 == 0 else pair[::-1]:
            out.append(_wall(cmds))
    packets, stages = _stages(args.directory)
    mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
    size = sum(p.stat().st_size for p in captures)
    print(f"{args.directory}: {len(captures)} captures, {size / 1e6:,.0f} MB, {packets:,} packets; "
          f"{args.repeat} rounds, medians\n")
    print("| command | wall s | packets/s |")
    print("|---|---:|---:|")
    print(f"| `flowtrace analyze DIR > /dev/null` | {mo:.2f} | {packets / mo:,.0f} |")
    print(f"| `tshark -q -z conv,tcp -r FILE > /dev/null`, each file | {mt:.2f} | {packets / mt:,.0f} |")
    print(f"\nflowtrace analyze takes {mo / mt:.2f}x tshark's time ({mt / mo:.2f}x as fast).\n")
    print("| stage (in process) | s |")
    print("|---|---:|")
    for name, seconds in stages:
        print(f"| {name} | {seconds:.2f} |")
    print(f"\nall rounds (s): flowtrace {[round(x, 2) for x in t_ours]}, tshark {[round(x, 2) for x in t_theirs]}")
    if args.other_commands:
        _other_commands(args.directory, args.repeat, mt)


def _other_commands(directory: Path, repeat: int, tshark_s: float) -> None:
    """Wall time of the other commands that analyze the captures, each ``repeat`` times."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        flowtrace = [sys.executable, "-m", "flowtrace"]
        commands = {
            "analyze --json DIR": [*flowtrace, "analyze", "--json", str(directory)],
            "analyze --html FILE DIR": [*flowtrace, "analyze", "--html", f"{tmp}/report.html", str(directory)],
            "conntrack DIR": [*flowtrace, "conntrack", str(directory)],
            "conntrack --compare DUMP DIR": [*flowtrace, "conntrack", "--compare",
                                             str(directory / "node1.conntrack-events.txt"), str(directory)],
            "trace DIR --conn 0": [*flowtrace, "trace", str(directory), "--conn", "0"],
            "export DIR -o TMP": [*flowtrace, "export", str(directory), "-o", f"{tmp}/tables"],
        }
        print("\n| command (stdout to /dev/null) | wall s | vs tshark |")
        print("|---|---:|---:|")
        for name, cmd in commands.items():
            seconds = statistics.median(_wall_any([cmd]) for _ in range(repeat))
            print(f"| `flowtrace {name}` | {seconds:.2f} | {tshark_s / seconds:.2f}x |")


def _wall_any(cmds: list[list[str]]) -> float:
    """``_wall`` for commands whose exit status says something (conntrack --compare: 1 when
    the tables differ)."""
    t = time.perf_counter()
    for cmd in cmds:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
