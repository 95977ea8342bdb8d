"""Decode speed and memory: flowtrace vs a plain dpkt loop vs tshark, side by side in one run.

    python bench/bench_decode.py                     # makes bench/data/{eth,sll2}.pcap if missing
    python bench/bench_decode.py FILE... --repeat 5

Each contender runs in a fresh process per repetition:

- flowtrace: ``flowtrace.read_packets(FILE)`` -> the packets table (every column decoded,
  tunnels, TCP options, payload hashes, checksums verified). Memory is the peak resident
  set (VmHWM) minus the resident set after imports and a warm-up read of a tiny capture.
- dpkt: ``dpkt.pcap.Reader`` + Ethernet/SLL2 + IP + TCP/UDP, appending the 5-tuple and
  timestamp of each packet to a list (the least a flow tool needs).
- tshark: ``tshark -q -z conv,tcp -r FILE`` (conversation statistics); peak RSS of the process.

Prints a Markdown table with medians, packets/s and ratios.
"""

from __future__ import annotations

import argparse
import json
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
import json, sys, time, struct, tempfile, os
import flowtrace
def rss(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
tiny = os.path.join(tempfile.mkdtemp(), 'tiny.pcap')
with open(tiny, 'wb') as f:
    f.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    pkt = bytes(12) + b'\x08\x00' + bytes.fromhex('450000280001000040060000c0000201c0000202') + bytes(20)
    f.write(struct.pack('<IIII', 1, 0, len(pkt), len(pkt)) + pkt)
flowtrace.read_packets(tiny)
base = rss('VmRSS:')
t = time.perf_counter()
df = flowtrace.read_packets(sys.argv[1])
dt = time.perf_counter() - t
print(json.dumps({'packets': len(df), 'seconds': dt, 'peak_delta': rss('VmHWM:') - base,
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


def run_python(code: str, path: Path) -> dict:
    """Run ``code`` in a fresh interpreter with ``path``; returns its JSON result."""
    out = subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


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
            "dpkt_s": med(r["seconds"] for r in dp),
            "tshark_s": med(r["seconds"] for r in ts) if ts else None,
            "tshark_peak_bpp": med(r["peak"] for r in ts) / n if ts else None,
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print("| capture | packets | flowtrace | dpkt loop | tshark conv,tcp | flowtrace vs dpkt | flowtrace vs tshark | flowtrace peak memory | tshark peak memory |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        n = r["packets"]
        ts_col = f"{r['tshark_s']:.2f} s ({n / r['tshark_s'] / 1e3:,.0f} k/s)" if r["tshark_s"] else "-"
        ts_ratio = f"{r['tshark_s'] / r['flowtrace_s']:.1f}x" if r["tshark_s"] else "-"
        ts_mem = f"{r['tshark_peak_bpp']:.0f} B/packet" if r["tshark_peak_bpp"] else "-"
        print(f"| {r['file']} | {n:,} | {r['flowtrace_s']:.2f} s ({n / r['flowtrace_s'] / 1e3:,.0f} k/s) "
              f"| {r['dpkt_s']:.2f} s ({n / r['dpkt_s'] / 1e3:,.0f} k/s) | {ts_col} "
              f"| {r['dpkt_s'] / r['flowtrace_s']:.1f}x | {ts_ratio} "
              f"| {r['flowtrace_peak_delta_bpp']:.0f} B/packet (table {r['flowtrace_table_bpp']:.0f}) | {ts_mem} |")


if __name__ == "__main__":
    main()
