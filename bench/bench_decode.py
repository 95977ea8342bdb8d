"""Decode speed and memory: flowtrace vs a plain dpkt loop vs tshark, side by side in one run.

    python bench/bench_decode.py                     # makes bench/data/{eth,sll2}.pcap if missing
    python bench/bench_decode.py FILE... --repeat 5

Each contender runs in a fresh process per repetition:

- flowtrace: ``flowtrace.read_packets(FILE)`` -> the packets table (every column decoded,
  tunnels, TCP options, payload hashes, checksums verified), twice: as it runs by default
  (a large pcap is decoded by two processes, one from each end, see flowtrace/decode/halves.py) and with
  FLOWTRACE_WORKERS=1 (one process). Memory is the peak resident set (VmHWM) minus the
  resident set after imports and a warm-up read of a tiny capture; with two processes the
  second process's peak above that same baseline is added (its shared columns counted once,
  in the parent, which takes them over).
- dpkt: ``dpkt.pcap.Reader`` + Ethernet/SLL2 + IP + TCP/UDP, appending the 5-tuple and
  timestamp of each packet to a list (the least a flow tool needs).
- tshark: ``tshark -q -z conv,tcp -r FILE`` (conversation statistics); peak RSS of the process.

Prints a Markdown table with medians, packets/s and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

FLOWTRACE = r"""
import json, sys, time, struct, tempfile, os, resource
import flowtrace
def rss(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
def pss():
    for line in open('/proc/self/smaps_rollup'):
        if line.startswith('Pss:'):
            return int(line.split()[1]) * 1024
tiny = os.path.join(tempfile.mkdtemp(), 'tiny.pcap')
with open(tiny, 'wb') as f:
    f.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    pkt = bytes(12) + b'\x08\x00' + bytes.fromhex('450000280001000040060000c0000201c0000202') + bytes(20)
    f.write(struct.pack('<IIII', 1, 0, len(pkt), len(pkt)) + pkt)
flowtrace.read_packets(tiny)
base = rss('VmRSS:')
base_pss = pss()
t = time.perf_counter()
df = flowtrace.read_packets(sys.argv[1])
dt = time.perf_counter() - t
child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({'packets': len(df), 'seconds': dt, 'base_pss': base_pss,
                  'peak_delta': rss('VmHWM:') - base + (max(0, child - base) if child else 0),
                  'peak': rss('VmHWM:'), 'table': int(df.memory_usage(deep=True).sum())}))
"""

DPKT = r"""
import json, sys, time, dpkt
def rss(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
base = rss('VmRSS:')
t = time.perf_counter()
n = 0
out = []
with open(sys.argv[1], 'rb') as f:
    reader = dpkt.pcap.Reader(f)
    link = dpkt.ethernet.Ethernet if reader.datalink() == 1 else dpkt.sll2.SLL2
    for ts, buf in reader:
        n += 1
        try:
            ip = link(buf).data
            if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                l4 = ip.data
                if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                    out.append((ts, ip.src, ip.dst, ip.p, l4.sport, l4.dport))
        except (dpkt.UnpackError, IndexError):
            pass
dt = time.perf_counter() - t
print(json.dumps({'packets': n, 'seconds': dt, 'peak_delta': rss('VmHWM:') - base, 'peak': rss('VmHWM:')}))
"""


def run_python(code: str, path: Path, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter with ``path`` (and ``env`` added); returns its JSON result."""
    out = subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory_run(code: str, path: Path, **env: str) -> int:
    """Peak proportional set size (PSS) of the process tree running ``code`` on ``path``,
    above the interpreter's own after imports: shared pages counted once over all
    processes. Polled every 20 ms, in a run of its own (polling costs time)."""
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **env})
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sum(_pss(p) for p in _tree(proc.pid)))
        time.sleep(0.02)
    out = json.loads(proc.stdout.read().strip().splitlines()[-1])  # type: ignore[union-attr]
    return peak - out["base_pss"]


def run_tshark(path: Path) -> dict:
    """Time ``tshark -q -z conv,tcp`` on ``path``; peak RSS from the child's rusage."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    subprocess.run(["tshark", "-q", "-z", "conv,tcp", "-r", str(path)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the maximum over all children so far; tshark is the
    # largest child we run, so this is its own peak once it has run.
    return {"seconds": dt, "peak": max(peak, before) * 1024}


def ensure_inputs(packets: int) -> list[Path]:
    """The default inputs, made with bench/synth.py when missing."""
    DATA.mkdir(exist_ok=True)
    files = []
    for link in ("ethernet", "sll2"):
        path = DATA / f"{'eth' if link == 'ethernet' else 'sll2'}-{packets}.pcap"
        if not path.exists():
            subprocess.run([sys.executable, str(HERE / "synth.py"), str(path), "--packets", str(packets),
                            "--link", link], check=True)
        files.append(path)
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--packets", type=int, default=1_000_000, help="size of the generated inputs")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-tshark", action="store_true")
    args = ap.parse_args()
    files = args.files or ensure_inputs(args.packets)
    has_tshark = shutil.which("tshark") is not None and not args.no_tshark
    rows = []
    for path in files:
        ft = [run_python(FLOWTRACE, path) for _ in range(args.repeat)]
        f1 = [run_python(FLOWTRACE, path, FLOWTRACE_WORKERS="1") for _ in range(args.repeat)]
        tree_pss = memory_run(FLOWTRACE, path)
        tree_pss1 = memory_run(FLOWTRACE, path, FLOWTRACE_WORKERS="1")
        dp = [run_python(DPKT, path) for _ in range(args.repeat)]
        ts = [run_tshark(path) for _ in range(args.repeat)] if has_tshark else []
        n = ft[0]["packets"]
        med = statistics.median
        row = {
            "file": path.name,
            "packets": n,
            "flowtrace_s": med(r["seconds"] for r in ft),
            "flowtrace_peak_delta_bpp": med(r["peak_delta"] for r in ft) / n,
            "flowtrace_table_bpp": ft[0]["table"] / n,
            "flowtrace1_s": med(r["seconds"] for r in f1),
            "flowtrace1_peak_delta_bpp": med(r["peak_delta"] for r in f1) / n,
            "flowtrace_tree_pss_bpp": tree_pss / n,
            "flowtrace1_tree_pss_bpp": tree_pss1 / n,
            "dpkt_s": med(r["seconds"] for r in dp),
            "tshark_s": med(r["seconds"] for r in ts) if ts else None,
            "tshark_peak_bpp": med(r["peak"] for r in ts) / n if ts else None,
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print("| capture | packets | flowtrace | flowtrace, one process | dpkt loop | tshark conv,tcp "
          "| flowtrace vs dpkt (one process) | flowtrace vs tshark | flowtrace peak memory (one process) "
          "| flowtrace peak PSS of all processes (one process) | tshark peak memory |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        n = r["packets"]
        ts_col = f"{r['tshark_s']:.2f} s ({n / r['tshark_s'] / 1e3:,.0f} k/s)" if r["tshark_s"] else "-"
        ts_ratio = f"{r['tshark_s'] / r['flowtrace_s']:.1f}x" if r["tshark_s"] else "-"
        ts_mem = f"{r['tshark_peak_bpp']:.0f} B/packet" if r["tshark_peak_bpp"] else "-"
        print(f"| {r['file']} | {n:,} | {r['flowtrace_s']:.2f} s ({n / r['flowtrace_s'] / 1e3:,.0f} k/s) "
              f"| {r['flowtrace1_s']:.2f} s ({n / r['flowtrace1_s'] / 1e3:,.0f} k/s) "
              f"| {r['dpkt_s']:.2f} s ({n / r['dpkt_s'] / 1e3:,.0f} k/s) | {ts_col} "
              f"| {r['dpkt_s'] / r['flowtrace_s']:.1f}x ({r['dpkt_s'] / r['flowtrace1_s']:.1f}x) | {ts_ratio} "
              f"| {r['flowtrace_peak_delta_bpp']:.0f} B/packet ({r['flowtrace1_peak_delta_bpp']:.0f}); "
              f"table {r['flowtrace_table_bpp']:.0f} "
              f"| {r['flowtrace_tree_pss_bpp']:.0f} B/packet ({r['flowtrace1_tree_pss_bpp']:.0f}) | {ts_mem} |")


if __name__ == "__main__":
    main()
