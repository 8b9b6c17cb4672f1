#!/usr/bin/env python3
"""Bulk submit against one-by-one submit (issue 18 §3) on a noisy machine.

    scripts/bench_bulk_ratio.py build/bench/bench/bench_bulk [--rounds 20] [--min-time 0.1]

Each round runs the binary twice, once per benchmark (BM_submit_noop_1p2w/one_by_one and
/bulk64), in alternating order, so that a machine that changes speed between rounds moves both.
Prints each one's median (min-max) in M requests/s, and the median of the rounds' own
bulk/one-by-one ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess

NAMES = ("one_by_one", "bulk64")


def run(binary: str, name: str, min_time: str) -> float:
    out = subprocess.run([binary, f"--benchmark_filter=BM_submit_noop_1p2w/{name}/",
                          f"--benchmark_min_time={min_time}", "--benchmark_format=json"],
                         capture_output=True, text=True, check=True).stdout
    (bm,) = [b for b in json.loads(out)["benchmarks"] if "items_per_second" in b]
    return bm["items_per_second"] / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--min-time", default="0.1")
    args = ap.parse_args()
    samples: dict[str, list[float]] = {n: [] for n in NAMES}
    ratios: list[float] = []
    for r in range(args.rounds):
        this_round = {}
        for name in (NAMES if r % 2 == 0 else reversed(NAMES)):
            this_round[name] = run(args.binary, name, args.min_time)
            samples[name].append(this_round[name])
        ratios.append(this_round["bulk64"] / this_round["one_by_one"])
    print(f"M requests/s, median (min-max) of {args.rounds} interleaved rounds")
    for name in NAMES:
        v = samples[name]
        print(f"{name:10s} {statistics.median(v):6.2f} ({min(v):.2f}-{max(v):.2f})")
    print(f"bulk64/one_by_one: median of the rounds' ratios {statistics.median(ratios):.2f} "
          f"({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
