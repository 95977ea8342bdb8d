"""The anomaly detectors on the lab's large run: ``run_detectors`` alone, and per detector.

``python bench/bench_detect.py [DIR] [--repeat 5]``

DIR defaults to bench/data/lab/many-connections (make it, as root, with
``flowtrace lab run many-connections -o bench/data/lab --connections 17000``). The analysis
is built once (detectors off, timed separately); then ``run_detectors`` runs ``--repeat``
times on it and the median is printed, with each detector's own median on a fresh context
(shared views such as the vanished packets are charged to the first detector using them).
The machine is shared: read the medians, not single runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = HERE / "data" / "lab" / "many-connections"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("dir", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not args.dir.exists():
        print(f"{args.dir} is missing: flowtrace lab run many-connections -o bench/data/lab --connections 17000",
              file=sys.stderr)
        return 2
    import flowtrace.pipeline as pipeline
    from flowtrace.detect.context import Context
    from flowtrace.detect.registry import DETECTORS, run_detectors

    real = pipeline.detect_anomalies
    pipeline.detect_anomalies = lambda analysis: None  # time the analysis without the detectors
    t = time.perf_counter()
    a = pipeline.analyze([str(args.dir)])
    built = time.perf_counter() - t
    pipeline.detect_anomalies = real
    runs = []
    findings: list = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        findings, _notes = run_detectors(a)
        runs.append(time.perf_counter() - t)
    per: dict[str, list[float]] = {d.code: [] for d in DETECTORS}
    for _ in range(args.repeat):
        ctx = Context(a)
        for d in DETECTORS:
            t = time.perf_counter()
            d.detect(ctx)
            per[d.code].append(time.perf_counter() - t)
    print(f"{len(a.packets):,} packets, {len(a.connections):,} connections, {len(a.hops):,} hops; "
          f"analysis without detectors {built:.2f} s")
    print(f"run_detectors: median {statistics.median(runs):.3f} s over {args.repeat} runs, "
          f"{len(findings):,} findings\n")
    print("| detector | median ms |\n|---|---:|")
    for code, times in sorted(per.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"| {code} | {1000 * statistics.median(times):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
