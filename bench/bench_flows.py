"""`flowtrace flows` against `tshark -q -z conv,tcp` on one large capture, side by side.

``python bench/bench_flows.py [CAPTURE] [--repeat 5] [--format zeek]``

Without CAPTURE it uses bench/data/eth.pcap and makes it first if missing
(``python bench/synth.py bench/data/eth.pcap --packets 600000 --link ethernet``). Each round
runs both commands end to end (process start, reading, output to /dev/null), alternating
which goes first; the medians, packets per second and their ratio are printed as a
markdown table. In-process medians of reading and of flow building alone are printed too.
The machine is shared: repeat and read the medians, not single runs.
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
DEFAULT = HERE / "data" / "eth.pcap"


def _wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def _in_process(capture: Path, repeat: int) -> tuple[int, float, float, int]:
    """(packets, median read s, median build s, flows) measured inside this process."""
    import flowtrace
    from flowtrace.flows import build

    reads, builds = [], []
    packets = None
    for _ in range(repeat):
        t = time.perf_counter()
        packets = flowtrace.read_packets(str(capture))
        reads.append(time.perf_counter() - t)
        t = time.perf_counter()
        fs = build(packets)
        builds.append(time.perf_counter() - t)
    assert packets is not None
    return len(packets), statistics.median(reads), statistics.median(builds), len(fs.flows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--format", choices=("zeek", "csv", "json"), default="zeek",
                    help="flowtrace output format (default zeek: one line per connection, like tshark's table)")
    args = ap.parse_args()

    if not args.capture.exists():
        if args.capture != DEFAULT:
            sys.exit(f"{args.capture}: no such capture")
        args.capture.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(HERE / "synth.py"), str(args.capture), "--packets", "600000",
                        "--link", "ethernet"], check=True)
    tshark = shutil.which("tshark")
    if tshark is None:
        sys.exit("tshark is not installed")

    ours = [sys.executable, "-m", "flowtrace", "flows", f"--{args.format}", str(args.capture)]
    theirs = [tshark, "-q", "-z", "conv,tcp", "-r", str(args.capture)]
    # An installed package has its bytecode (pip compiles it); a checkout run with
    # PYTHONDONTWRITEBYTECODE set would compile every module at every run.
    compileall.compile_dir(str(HERE.parent / "flowtrace"), quiet=1)
    _wall(ours)  # warm the page cache
    t_ours, t_theirs = [], []
    for i in range(args.repeat):
        pair = [(ours, t_ours), (theirs, t_theirs)]
        for cmd, out in pair if i % 2 == 0 else pair[::-1]:
            out.append(_wall(cmd))
    packets, read_s, build_s, n_flows = _in_process(args.capture, args.repeat)
    mo, mt = statistics.median(t_ours), statistics.median(t_theirs)

    print(f"capture: {args.capture} ({packets:,} packets, {n_flows:,} flows), {args.repeat} rounds, medians\n")
    print("| command | wall s | packets/s |")
    print("|---|---:|---:|")
    print(f"| `flowtrace flows --{args.format} FILE > /dev/null` | {mo:.2f} | {packets / mo:,.0f} |")
    print(f"| `tshark -q -z conv,tcp -r FILE > /dev/null` | {mt:.2f} | {packets / mt:,.0f} |")
    print(f"\nflowtrace is {mt / mo:.1f}x faster than tshark end to end.")
    print(f"In process: reading {read_s:.3f} s ({packets / read_s:,.0f} packets/s), "
          f"flow building {build_s:.3f} s ({packets / build_s:,.0f} packets/s).")
    print(f"all rounds (s): flowtrace {[round(x, 2) for x in t_ours]}, tshark {[round(x, 2) for x in t_theirs]}")


if __name__ == "__main__":
    main()
