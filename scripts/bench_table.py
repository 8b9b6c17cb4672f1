#!/usr/bin/env python3
"""Turns Google Benchmark JSON from bench_pool (and optionally its latency run) into Markdown
tables: median million requests per second with min-max per pool and workload, and for each of
our pools the ratio of its median to the best peer's and to the ceiling's (the dispatcher's queue
with no pool around it). Usage: scripts/bench_table.py pool.json [latency.json]"""
import collections
import json
import statistics
import sys

from bench_pools import CEILINGS, NAMES as POOLS, OURS, PEERS


def throughput(path):
    runs = collections.defaultdict(list)
    for b in json.load(open(path))["benchmarks"]:
        if b.get("run_type") != "iteration" or "items_per_second" not in b:
            continue
        workload, pool = b["name"].split("/process_time")[0].split("/")[:2]
        runs[(workload.removeprefix("BM_"), pool)].append(b["items_per_second"] / 1e6)
    workloads = sorted({w for w, _ in runs}, key=lambda w: (not w.startswith("many"), w))
    pools = [p for p in POOLS if any((w, p) in runs for w in workloads)]
    ours = [p for p in pools if p in OURS]
    print("| workload | " + " | ".join(f"`{p}`" for p in pools) +
          "".join(f" | `{o}`: × best peer; of ceiling" for o in ours) + " |")
    print("|---" * (len(pools) + len(ours) + 1) + "|")
    for w in workloads:
        cells, med = [], {}
        for p in pools:
            v = runs.get((w, p))
            if v:
                med[p] = statistics.median(v)
                cells.append(f"**{med[p]:.2f}** ({min(v):.2f}–{max(v):.2f})")
            else:
                cells.append("–")
        best = max(((med[p], p) for p in PEERS if p in med), default=None)
        ceiling = max(((med[p], p) for p in CEILINGS if p in med), default=None)
        for o in ours:
            parts = []
            if o in med and best:
                parts.append(f"{med[o] / best[0]:.2f}× (`{best[1]}`)")
            if o in med and ceiling:
                parts.append(f"{med[o] / ceiling[0]:.2f}")
            cells.append("; ".join(parts) or "–")
        print(f"| `{w}` | " + " | ".join(cells) + " |")


def latency(path):
    print("\n| pool | wake-up p50 (µs) | p99 (µs) | max (µs) | queue wait in bursts p50 (µs) | p99 (µs) "
          "| idle CPU (% of a core) |")
    print("|---|---|---|---|---|---|---|")
    rows = collections.defaultdict(dict)
    for b in json.load(open(path))["benchmarks"]:
        workload, pool = b["name"].split("/")[:2]
        for k in ("p50_us", "p99_us", "max_us", "idle_cpu_pct"):
            if k in b:
                rows[pool][(workload.removeprefix("BM_"), k)] = b[k]
    for p in POOLS:
        if p not in rows:
            continue  # not in this run, or the ceiling (throughput only)
        r = rows[p]
        cells = [r.get(("wakeup_1p2w", k), 0) for k in ("p50_us", "p99_us", "max_us")]
        cells += [r.get(("burst_wait_1p2w", k), 0) for k in ("p50_us", "p99_us")]
        print(f"| `{p}` | " + " | ".join(f"{c:.1f}" for c in cells) +
              f" | {r.get(('idle_cpu_2w', 'idle_cpu_pct'), 0):.3f} |")


if __name__ == "__main__":
    throughput(sys.argv[1])
    if len(sys.argv) > 2:
        latency(sys.argv[2])
