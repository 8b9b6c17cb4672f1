#!/usr/bin/env python3
"""Compares two bench_pool binaries (say, before and after a change) on a noisy machine.

    scripts/bench_ab.py OLD/bench_pool NEW/bench_pool [--rounds 30]
        [--pools workerpool,workerpool_no_timeout] [--workloads noop_1p1w,...] [--filter REGEX]

Each round runs both binaries once, in alternating order, with the same filter; every figure
is the median (min-max) of the rounds, and new/old is the ratio of the medians. `paired` is the
median of each round's own new/old (the two runs of a round are seconds apart, so a machine that
switches speed between rounds moves both), and `top` the ratio of the two best rounds (what each
binary does when the machine is at its fastest). By default it
runs the no-op workloads (1P/1W, 1P/2W, 2P/2W) and the 64-slot queue (full64_noop_1p2w) on
`workerpool` and `workerpool_no_timeout`; pool names come from bench/pools.txt. Build the old
one from a worktree, e.g.:

    git worktree add /tmp/old <commit>
    (cd /tmp/old && cmake --preset bench && cmake --build build/bench --target bench_pool)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys

from bench_pools import NAMES


def run(binary: str, pattern: str, min_time: str, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run([binary, f"--benchmark_filter={pattern}",
                          f"--benchmark_min_time={min_time}", "--benchmark_format=json"],
                         env=env, capture_output=True, text=True, check=True).stdout
    return {bm["name"].split("/process_time")[0]: bm["items_per_second"] / 1e6
            for bm in json.loads(out)["benchmarks"] if "items_per_second" in bm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--pools", default="workerpool,workerpool_no_timeout",
                    help="comma-separated pools of bench/pools.txt")
    ap.add_argument("--workloads", default="noop_1p1w,noop_1p2w,noop_2p2w,full64_noop_1p2w",
                    help="comma-separated workloads (benchmark names without BM_ and the pool)")
    ap.add_argument("--filter", help="a --benchmark_filter regex instead of --pools/--workloads")
    ap.add_argument("--min-time", default="0.05")
    ap.add_argument("--requests", type=int, default=200_000)
    args = ap.parse_args()
    if args.filter is None:
        pools = args.pools.split(",")
        unknown = [p for p in pools if p not in NAMES]
        if unknown:
            sys.exit(f"bench_ab: {', '.join(unknown)}: not in bench/pools.txt ({', '.join(NAMES)})")
        args.filter = (f"BM_({'|'.join(map(re.escape, args.workloads.split(',')))})/"
                       f"({'|'.join(map(re.escape, pools))})/")

    env = dict(os.environ, WORKERPOOL_BENCH_REQUESTS=str(args.requests))
    samples: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    paired: dict[str, list[float]] = collections.defaultdict(list)
    for r in range(args.rounds):
        this_round: dict[tuple[str, str], float] = {}
        for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
            binary = args.old if side == "old" else args.new
            for name, value in run(binary, args.filter, args.min_time, env).items():
                samples[(name, side)].append(value)
                this_round[(name, side)] = value
        for (name, side), value in this_round.items():
            if side == "new" and (name, "old") in this_round:
                paired[name].append(value / this_round[(name, "old")])

    print(f"M requests/s, median (min-max) of {args.rounds} interleaved rounds")
    for name in sorted({n for (n, _) in samples}):
        old, new = samples[(name, "old")], samples[(name, "new")]
        if not old or not new:
            print(f"{name}: only in {'new' if new else 'old'}")
            continue
        mo, mn = statistics.median(old), statistics.median(new)
        pr = f"{statistics.median(paired[name]):.2f}" if paired[name] else "-"
        print(f"{name:42s} old {mo:6.2f} ({min(old):.2f}-{max(old):.2f})  "
              f"new {mn:6.2f} ({min(new):.2f}-{max(new):.2f})  new/old {mn / mo:.2f}  "
              f"paired {pr}  top {max(new) / max(old):.2f}")


if __name__ == "__main__":
    main()
