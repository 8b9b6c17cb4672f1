#!/usr/bin/env python3
"""Builds the benchmarks, runs them interleaved, and writes docs/performance.md + .svg.

    scripts/bench_compare.py                     # full comparison: 5 rounds x 2 repetitions
    scripts/bench_compare.py --rounds 2 --repetitions 1 --requests 50000   # a quick look
    scripts/bench_compare.py --busy-core both --skip-queue --redis-entries 0 \
        --pools workerpool,workerpool_by_value,moodycamel_typed,ceiling --out /tmp/busy.md
                                                 # quiet and one-core-busy rows side by side

On a noisy machine one long run per pool measures the neighbours as much as the pool, so this
runs many short processes instead: in every round each pool gets its own processes (bench_pool
with a filter ending in /<pool>/: one process for the idle benchmarks, one for throughput), the
order of the pools rotates from round to round, and each
figure in the report is the median of all rounds x repetitions with the min-max beside it.

--busy-core keeps one core busy with another process (`sh -c 'while :; do :; done'`, started by
this script and killed when it is done), as on any shared host: `on` for the whole run, `both` to
run every pool's throughput benchmarks once quiet and once with the busy process in each round
(the report then has a row for each condition). --busy-processes N starts N such processes
instead of one (2 on a 2-core machine: every core shared, as on a loaded host).

Needs only the Python 3 standard library, CMake, and gnuplot for the chart (skipped if absent).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_pools import CEILINGS, NAMES, OURS, PEERS, POOLS

ROOT = Path(__file__).resolve().parent.parent

# Workloads of bench_pool, in report order, with a short description.
POOL_WORKLOADS = [
    ("noop_1p1w", "no-op, 1 producer / 1 worker"),
    ("noop_1p2w", "no-op, 1 producer / 2 workers"),
    ("noop_2p2w", "no-op, 2 producers / 2 workers"),
    ("work1us_1p2w", "~1 µs of work, 1P / 2W"),
    ("full64_noop_1p2w", "capacity 64, blocking submit, no-op, 1P / 2W"),
    ("full64_work1us_1p2w", "capacity 64, blocking submit, ~1 µs work, 1P / 2W"),
]


def log(msg: str) -> None:
    print(f"[bench_compare] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], env: dict | None = None, capture: bool = False) -> str:
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    res = subprocess.run(cmd, cwd=ROOT, env=env, check=True, text=True,
                         stdout=subprocess.PIPE if capture else None)
    return res.stdout if capture else ""


def quiet(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, check=True, text=True, capture_output=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


# The command that keeps one core busy (--busy-core), as the report quotes it.
BUSY_COMMAND = ["sh", "-c", "while :; do :; done"]
# How many of them run at once (--busy-processes).
BUSY_PROCESSES = 1
# Workload keys of the rows measured with one core busy, in --busy-core both mode.
BUSY_SUFFIX = "@busy"


@contextlib.contextmanager
def busy_core(active: bool = True):
    """Keeps BUSY_PROCESSES cores busy, each with another process (BUSY_COMMAND), while the block
    runs; kills them at the end, even on an error. With `active` false, does nothing."""
    if not active:
        yield
        return
    children = []
    try:
        for _ in range(BUSY_PROCESSES):
            children.append(subprocess.Popen(BUSY_COMMAND, stdin=subprocess.DEVNULL))
        yield
    finally:
        for child in children:
            child.kill()
            child.wait()


def busy_words() -> str:
    """What the busy processes do, for the report: 'one core busy', 'two cores busy', ..."""
    counts = {1: "one core", 2: "two cores", 3: "three cores", 4: "four cores"}
    return counts.get(BUSY_PROCESSES, f"{BUSY_PROCESSES} cores") + " busy"


# ----------------------------------------------------------------------------------------------
# Build


def build(args) -> Path:
    """Configures (the bench preset, into build/bench, unless --build-dir names a configured tree)
    and always builds, so the binaries match the sources that source_state() recorded."""
    jobs = str(os.cpu_count() or 2)
    if args.build_dir is not None:
        build_dir = args.build_dir.resolve()
        if not (build_dir / "CMakeCache.txt").exists():
            sys.exit(f"bench_compare: {build_dir} is not a configured CMake build directory")
    else:
        run(["cmake", "--preset", "bench"])
        build_dir = ROOT / "build" / "bench"  # the preset's binaryDir
    run(["cmake", "--build", str(build_dir), "--target", "bench_queue", "bench_pool",
         "--parallel", jobs])
    # bench_redis exists only where hiredis was found (workerpool::redis).
    if "bench_redis" in quiet(["cmake", "--build", str(build_dir), "--target", "help"]):
        run(["cmake", "--build", str(build_dir), "--target", "bench_redis", "--parallel", jobs])
    return build_dir


def redis_section(build_dir: Path, entries: int, rounds: int = 7) -> str:
    """Runs scripts/redis-throughput.sh (1 and 3 consumers side by side with as many raw hiredis
    loops, against a throw-away server) and returns the report's Redis section; empty when
    bench_redis or redis-server is missing."""
    binary = build_dir / "bench" / "bench_redis"
    if not binary.exists() or shutil.which("redis-server") is None:
        log("no bench_redis or no redis-server: the report has no Redis section")
        return ""
    env = dict(os.environ, WORKERPOOL_BENCH_REDIS=str(binary))
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = run(["bash", str(ROOT / "scripts" / "redis-throughput.sh"), str(entries), str(rounds)],
               env=env, capture=True)
    medians = re.findall(
        r"median: stream_consumer (\d+) entries/s \(min (\d+), max (\d+)\), raw hiredis loop "
        r"(\d+) entries/s \(min (\d+), max (\d+)\); ratio per round: median ([\d.]+) "
        r"\(min ([\d.]+), max ([\d.]+)\); cpu per entry \(here \+ server\): stream_consumer "
        r"([\d.]+) us, raw ([\d.]+) us", text)
    server = re.search(r"redis-server v=([0-9.]+)", text)
    load = re.search(r"load: ([\d. ]+)\n", text)
    load_after = re.search(r"load after: ([\d. ]+)", text)
    if len(medians) != 2:
        sys.exit("bench_compare: could not parse scripts/redis-throughput.sh's output:\n" + text)
    rows = "\n".join(
        f"| {n} | **{int(c):,}** ({int(clo):,}–{int(chi):,}) | {int(w):,} ({int(wlo):,}–{int(whi):,}) "
        f"| **{float(r):.2f}** ({float(rlo):.2f}–{float(rhi):.2f}) | {float(ccpu):.2f} / {float(wcpu):.2f} |"
        for n, (c, clo, chi, w, wlo, whi, r, rlo, rhi, ccpu, wcpu) in zip((1, 3), medians))
    return (
        "\n## Redis Streams consumer, end to end on loopback\n\n"
        f"`scripts/redis-throughput.sh {entries} {rounds}` (`bench/bench_redis.cpp`, "
        f"`bench/redis_raw_loop.hpp`), run {when}, load average "
        f"{load.group(1).strip() if load else '?'} before and "
        f"{load_after.group(1).strip() if load_after else '?'} after. Each round appends "
        f"{entries:,} entries to a fresh stream twice and times until every entry is acknowledged: "
        "once by N `workerpool::redis::stream_consumer`s (each its own connection, reader thread "
        "and pool; default options but `batch` 100; a handler that does nothing), once by N raw "
        "hiredis loops (one thread each: `XREADGROUP COUNT 100`, the no-op on each entry where it "
        "lies in the reply, `XACK` pipelined with the next read: the ceiling). Rounds alternate "
        "which goes first; the ratio is taken per round. "
        f"redis-server {server.group(1) if server else '(version unknown)'} runs on the same "
        "machine, so on 2 cores it competes with the consumers for the CPU, as do the "
        "neighbours: the rates swing with their load, the CPU time per entry (this process, all "
        "threads, plus the server's) much less.\n\n"
        f"| consumers | stream_consumer entries/s, median of {rounds} (min–max) | raw hiredis "
        "loop | consumer / raw per round | CPU µs per entry, consumer / raw |\n"
        "|---|---|---|---|---|\n" + rows + "\n\n"
        "On the 2-core VM the raw loop's rate is bimodal from round to round (about 330–420k or "
        "560–600k entries/s with one loop, its server-side CPU per entry moving with it, as if "
        "it depended on whether the scheduler puts the loop and the server on one core), while "
        "the consumer's threads never share one core with the server that way; so the ratio "
        "depends on which mode the raw rounds landed in, and a second run of the same command "
        "can differ a lot. The CPU time per entry is the steadier comparison.\n")


def find_binary(build_dir: Path, name: str) -> Path:
    for candidate in (build_dir / "bench" / name, build_dir / name):
        if candidate.exists():
            return candidate
    found = list(build_dir.rglob(name))
    if not found:
        sys.exit(f"bench_compare: {name} not found under {build_dir}")
    return found[0]


# ----------------------------------------------------------------------------------------------
# Running


def parse_name(name: str) -> tuple[str, str]:
    """'BM_noop_1p2w/asio/process_time/manual_time' -> ('noop_1p2w', 'asio');
    'BM_queue_mpmc/moodycamel/real_time/threads:2' -> ('queue_mpmc_t2', 'moodycamel')."""
    parts = name.split("/")
    workload = parts[0][3:] if parts[0].startswith("BM_") else parts[0]
    pool = parts[1]
    threads = [p for p in parts if p.startswith("threads:")]
    if threads:
        workload += "_t" + threads[0].split(":")[1]
    return workload, pool


def list_pools(binary: Path) -> list[str]:
    out = quiet([str(binary), "--benchmark_list_tests=true"])
    pools = []
    for line in out.splitlines():
        if line.startswith("BM_"):
            pool = parse_name(line)[1]
            if pool not in pools:
                pools.append(pool)
    return pools


# bench_pool's idle benchmarks (wake-up, bursts, idle CPU) run in a process of their own, before
# the throughput ones: after seconds of saturating the cores, the same process measures much
# longer wake-ups (docs/performance.md, "Measurements behind the code").
IDLE_FILTER = "BM_(wakeup|burst_wait|idle_cpu)_[^/]*/{pool}/"
POOL_FILTERS = (IDLE_FILTER, "BM_(noop|work1us|full64|many)_[^/]*/{pool}/")


def filters_for(binary: Path) -> tuple[str, ...]:
    return POOL_FILTERS if binary.name == "bench_pool" else ("/{pool}/",)


def run_one(binary: Path, pool: str, args, env: dict,
            pattern: str = "/{pool}/") -> tuple[list[dict], dict]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out_path = tmp.name
    cmd = [str(binary), "--benchmark_filter=" + pattern.format(pool=re.escape(pool)),
           f"--benchmark_min_time={args.min_time}",
           f"--benchmark_repetitions={args.repetitions}",
           "--benchmark_out_format=json", f"--benchmark_out={out_path}",
           "--benchmark_format=console"]
    try:
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        data = json.loads(Path(out_path).read_text())
    except subprocess.CalledProcessError as e:
        sys.exit(f"bench_compare: {' '.join(cmd)} failed with {e.returncode}")
    finally:
        Path(out_path).unlink(missing_ok=True)
    return [b for b in data["benchmarks"] if b.get("run_type") == "iteration"], data["context"]


def collect(binary: Path, args, env: dict) -> tuple[dict, list[str], dict]:
    """Returns samples[(workload, pool)][metric] -> [values], the pools, and one context. With
    `--busy-core both`, each round also runs each pool's throughput benchmarks with one core busy,
    right after its quiet run (before it in odd rounds); their workload keys end in BUSY_SUFFIX."""
    pools = list_pools(binary)
    unknown = [p for p in pools if p not in NAMES]
    if binary.name == "bench_pool" and unknown:
        sys.exit(f"bench_compare: {binary} runs {', '.join(unknown)}, not in bench/pools.txt")
    if args.pools:
        wanted = args.pools.split(",")
        pools = [p for p in pools if p in wanted] or pools
    samples: dict = {}
    context: dict = {}
    for r in range(args.rounds):
        order = pools[r % len(pools):] + pools[:r % len(pools)]
        if r % 2 == 1:
            order.reverse()
        log(f"{binary.name} round {r + 1}/{args.rounds}: {', '.join(order)}")
        for pool in order:
            conditions = [""]
            if args.busy_core == "both":
                conditions = ["", BUSY_SUFFIX] if r % 2 == 0 else [BUSY_SUFFIX, ""]
            for condition in conditions:
                benches = []
                for pattern in filters_for(binary):
                    # The ceiling has throughput benchmarks only; the busy rows are throughput.
                    if (condition or pool in CEILINGS) and not is_throughput_filter(pattern):
                        continue
                    with busy_core(bool(condition)):
                        part, context = run_one(binary, pool, args, env, pattern)
                    benches += part
                for b in benches:
                    workload, name = parse_name(b["run_name"])
                    slot = samples.setdefault((workload + condition, name), {})
                    for metric, value in b.items():
                        if isinstance(value, (int, float)) and not isinstance(value, bool):
                            slot.setdefault(metric, []).append(float(value))
    return samples, pools, context


def is_throughput_filter(pattern: str) -> bool:
    """Whether a filter of filters_for() selects throughput benchmarks (not the idle ones)."""
    return pattern != IDLE_FILTER


# ----------------------------------------------------------------------------------------------
# Reporting


def stat(samples: dict, key, metric: str, scale: float = 1.0):
    values = samples.get(key, {}).get(metric)
    if not values:
        return None
    return (statistics.median(values) * scale, min(values) * scale, max(values) * scale,
            len(values))


def fmt(s, digits: int = 2) -> str:
    if s is None:
        return "—"
    med, lo, hi, _ = s
    return f"**{med:.{digits}f}** ({lo:.{digits}f}–{hi:.{digits}f})"


def display_path(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def source_state() -> str:
    """The commit and what under include/ and bench/ differs from it, taken before the build."""
    head = quiet(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) or "no commit"
    try:
        lines = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "include",
                                "bench"], check=True, text=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        lines = ""
    changes = []
    for line in lines.splitlines():
        state, path = line[:2], line[3:]
        changes.append(f"`{path}` ({'not committed yet' if state == '??' else 'modified'})")
    if not changes:
        return f"git {head}; include/ and bench/ as committed"
    more = f" and {len(changes) - 6} more" if len(changes) > 6 else ""
    return f"git {head}, with uncommitted changes: {', '.join(changes[:6])}{more}"


def machine_info(build_dir: Path) -> list[str]:
    lscpu = quiet(["lscpu"])
    model = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines()
                  if l.startswith("Model name")), platform.processor() or "unknown")
    cxx = "unknown"
    cache = build_dir / "CMakeCache.txt"
    if cache.exists():
        m = re.search(r"^CMAKE_CXX_COMPILER:[A-Z]+=(.*)$", cache.read_text(), re.M)
        if m:
            cxx = quiet([m.group(1), "--version"]).splitlines()[0] if m.group(1) else cxx
    pkgs = []
    for pkg in ("libbenchmark-dev", "libboost1.74-dev", "libboost-dev", "libtbb-dev",
                "libconcurrentqueue-dev"):
        v = quiet(["dpkg-query", "-W", "-f=${Version}", pkg])
        if v:
            pkgs.append(f"{pkg} {v}")
    return [
        f"- CPU: {model}; {os.cpu_count()} logical CPUs "
        f"(`lscpu`: {quiet(['nproc'])} online); kernel {platform.release()}",
        f"- Compiler: {cxx}; {quiet(['cmake', '--version']).splitlines()[0] if shutil.which('cmake') else ''}",
        f"- Libraries (dpkg): {', '.join(pkgs) if pkgs else 'unknown'}",
    ]


def busy_neighbours() -> str:
    """Other processes using more than 20 % of a core right now (ps's lifetime average)."""
    out = quiet(["ps", "-eo", "pid=,pcpu=,comm=", "--sort=-pcpu"])
    busy = []
    for line in out.splitlines()[:10]:
        parts = line.split(None, 2)
        if len(parts) == 3 and int(parts[0]) != os.getpid() and float(parts[1]) > 20:
            busy.append(f"`{parts[2]}` {parts[1]} %")
    return ", ".join(busy) if busy else "none"


def chart(samples: dict, pools: list[str], svg: Path, terminal: str = "svg") -> bool:
    if shutil.which("gnuplot") is None:
        log("gnuplot not found; no chart")
        return False
    rows = [w for w, _ in POOL_WORKLOADS if any((w, p) in samples for p in pools)]
    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as dat:
        dat.write("# workload " + " ".join(f"{p} {p}_lo {p}_hi" for p in pools) + "\n")
        for w in rows:
            cells = []
            for p in pools:
                s = stat(samples, (w, p), "items_per_second", 1e-6)
                cells += ["NaN"] * 3 if s is None else [f"{s[0]:.4f}", f"{s[1]:.4f}", f"{s[2]:.4f}"]
            dat.write(w + " " + " ".join(cells) + "\n")
        dat_path = dat.name
    plots = []
    for i, p in enumerate(pools):
        c = 2 + 3 * i
        plots.append(f"'{dat_path}' using {c}:{c + 1}:{c + 2}:xtic(1) title '{p}'")
    script = f"""
set terminal {terminal} size 1100,520 font 'Helvetica,12' background rgb 'white'
set output '{svg}'
set title 'Throughput: median of all runs, bars = min–max (higher is better)'
set ylabel 'million requests per second'
set logscale y
set yrange [0.05:*]
set grid ytics
set key outside right top
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set xtics rotate by -20 noenhanced
set key noenhanced
plot {', '.join(plots)}
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    finally:
        Path(dat_path).unlink(missing_ok=True)
    return True


def workload_rows(samples: dict, pools: list[str]) -> list[tuple[str, str, str]]:
    """The throughput rows that have samples, as (key, workload, description): POOL_WORKLOADS in
    order, each quiet and then with one core busy (--busy-core both)."""
    rows = []
    for w, desc in POOL_WORKLOADS:
        for key in (w, w + BUSY_SUFFIX):
            if any((key, p) in samples for p in pools):
                rows.append((key, w, desc + busy_label(key, "; ")))
    return rows


def busy_label(key: str, separator: str = ", ") -> str:
    """What a row's label adds when its key was measured with the busy processes running."""
    return f"{separator}**{busy_words()}**" if key.endswith(BUSY_SUFFIX) else ""


def busy_note(args) -> str:
    return {"off": "",
            "on": f" {busy_who()} kept {busy_words()} for the whole run.",
            "both": f" Rows marked **{busy_words()}** ran with {busy_who().lower()} keeping "
                    f"{busy_words()}."}[args.busy_core]


def busy_who() -> str:
    """Who keeps the cores busy, for the report."""
    return "Another process" if BUSY_PROCESSES == 1 else f"{BUSY_PROCESSES} other processes"


def best_median(samples: dict, key: str, names: list[str]):
    """(pool, median throughput in M/s) of the best of `names` in row `key`, or None."""
    best = None
    for p in names:
        s = stat(samples, (key, p), "items_per_second", 1e-6)
        if s and (best is None or s[0] > best[1]):
            best = (p, s[0])
    return best


def ratio_section(samples: dict, pools: list[str], rows) -> list[str]:
    """The dispatcher's medians against the best peer's and against the ceiling's, per row."""
    ours = [p for p in pools if p in OURS]
    peers = [p for p in pools if p in PEERS]
    ceilings = [p for p in pools if p in CEILINGS]
    if not ours or not (peers or ceilings):
        return []
    out = ["## The dispatcher against the best peer and against the ceiling\n"]
    out.append("Ratios of the medians above. *× best peer*: ours ÷ the fastest peer of that row "
               "(named). *of ceiling*: ours ÷ `ceiling`, the dispatcher's own queue moving the "
               "same requests with no pool around it (producers pushing, consumers popping and "
               "calling the handler inline, spinning (64 pauses, then yields), never sleeping): "
               "the fraction of that limit "
               "the pool reaches. With more spinning threads than free cores the ceiling's "
               "spinners take turns with the threads they wait for, so it can fall below a pool "
               "whose idle threads sleep; the fraction then exceeds 1.\n")
    out.append("| workload | " + " | ".join(f"`{o}`" for o in ours) + " |")
    out.append("|" + "---|" * (1 + len(ours)))
    for key, w, _ in rows:
        best_peer = best_median(samples, key, peers)
        ceiling = best_median(samples, key, ceilings)
        cells = []
        for o in ours:
            s = stat(samples, (key, o), "items_per_second", 1e-6)
            parts = []
            if s and best_peer:
                parts.append(f"**{s[0] / best_peer[1]:.2f}×** best peer (`{best_peer[0]}`)")
            if s and ceiling:
                parts.append(f"**{s[0] / ceiling[1]:.2f}** of ceiling")
            cells.append("; ".join(parts) or "—")
        out.append(f"| `{w}`{busy_label(key)} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def report(args, build_dir: Path, pool_samples, pools, queue_samples, queues, context,
           started: str, source: str, load_before: str, load_after: str, neighbours: str,
           elapsed_s: float) -> str:
    out = []
    out.append("# Performance\n")
    out.append("<!-- Generated by scripts/bench_compare.py, except for its last section; edit the "
               "script, not this file. -->\n")
    out.append("Every figure below, up to \"Measurements behind the code\", comes from the run "
               "described here; rerun the command to refresh them (it rewrites this file, but for "
               "that last section, and `docs/performance.svg`).\n")
    out.append("## The run\n")
    out.append(f"- Date: {started}; total time {elapsed_s / 60:.1f} min")
    out.append(f"- Source, when the binaries were built: {source}")
    out.extend(machine_info(build_dir))
    out.append(f"- Load average before / after: {load_before} / {load_after}; other processes "
               f"busy at the start (ps %CPU > 20): {neighbours}. A shared machine: the "
               "neighbours' load is part of every number")
    out.append(f"- Google Benchmark's own context: {context.get('num_cpus')} CPUs at "
               f"{context.get('mhz_per_cpu')} MHz, library build type "
               f"`{context.get('library_build_type')}` (Debian's package; it does not affect "
               "our code, which is built Release)")
    out.append(f"- {busy_who()} keeping {busy_words()} (`" + " ".join(BUSY_COMMAND[:2]) +
               " '" + BUSY_COMMAND[2] + "'`, started and killed by the script): " +
               {"off": "none",
                "on": "for the whole run",
                "both": f"in the rows marked *{busy_words()}*: each round runs each pool's "
                        "throughput benchmarks once without it and once with it (one process "
                        "each, the order alternating from round to round)"}[args.busy_core])
    out.append(f"- Requests per iteration: {args.requests}; {args.rounds} rounds × "
               f"{args.repetitions} repetitions = up to {args.rounds * args.repetitions} samples per "
               "cell; pools interleaved (each round runs every pool in its own process, in a "
               "rotated order)")
    out.append("\nCommand:\n")
    out.append("```sh\n" + " ".join(shlex.quote(a) for a in [sys.argv[0]] + sys.argv[1:]) + "\n```\n")
    out.append("which runs, per round and pool, two processes (the idle benchmarks first, in a "
               "process of their own: after the throughput runs, the same process measured every "
               "pool's wake-up at 70–85 µs instead of 5):\n")
    out.append("```sh\nWORKERPOOL_BENCH_REQUESTS=%d WORKERPOOL_BENCH_CAPACITY=%d "
               "WORKERPOOL_BENCH_IDLE_MS=%d WORKERPOOL_BENCH_WAKEUP_SAMPLES=%d \\\n  %s/bench_pool "
               "--benchmark_filter='<filter>' --benchmark_min_time=%s --benchmark_repetitions=%d\n```\n"
               % (args.requests, args.capacity, args.idle_ms, args.wakeup_samples,
                  display_path(find_binary(build_dir, 'bench_pool').parent),
                  args.min_time, args.repetitions))
    out.append("with `<filter>` = " + " and then ".join(
        f"`{f.format(pool='<pool>')}`" for f in POOL_FILTERS) + ".\n")

    rows = workload_rows(pool_samples, pools)
    out.append("## Throughput (million requests per second)\n")
    out.append("Time from the first submit to the return of the last handler, "
               f"{args.requests} requests per iteration. Cells: **median** (min–max). "
               f"Bounded pools (`mutex_cv`, `workerpool*`, `ceiling`) have {args.capacity} slots "
               "and block the producer when full (`ceiling`'s producer spins); `asio`, `onetbb*` "
               "and `moodycamel*` are unbounded, except in the `full64` rows where every pool is "
               "bounded to 64 (the unbounded ones through a counting semaphore, as a user would "
               "do it)." + busy_note(args) + "\n")
    out.append("| workload | " + " | ".join(f"`{p}`" for p in pools) + " |")
    out.append("|" + "---|" * (1 + len(pools)))
    for key, w, desc in rows:
        cells = [fmt(stat(pool_samples, (key, p), "items_per_second", 1e-6)) for p in pools]
        out.append(f"| `{w}`<br>{desc} | " + " | ".join(cells) + " |")
    out.append("\n![throughput chart](performance.svg)\n")
    out.extend(ratio_section(pool_samples, pools, rows))

    out.append("## Efficiency with ~1 µs of work per request\n")
    out.append("efficiency = (requests × measured cost of the work unit / workers) ÷ elapsed "
               "time; 1.0 would be two workers doing nothing but the work. The producer shares "
               "the two cores with the workers, so even a perfect pool stays below 1.\n")
    out.append("| workload | " + " | ".join(f"`{p}`" for p in pools) + " |")
    out.append("|" + "---|" * (1 + len(pools)))
    for key, w, desc in rows:
        if w in ("work1us_1p2w", "full64_work1us_1p2w"):
            out.append(f"| `{w}`{busy_label(key)} | " + " | ".join(
                fmt(stat(pool_samples, (key, p), "efficiency")) for p in pools) + " |")
    out.append("\n## CPU time per request (ns, all threads of the process)\n")
    out.append("Process CPU time (getrusage) over the timed loop divided by the requests. "
               "Higher than the wall time per request means threads burnt CPU spinning or "
               "switching.\n")
    out.append("| workload | " + " | ".join(f"`{p}`" for p in pools) + " |")
    out.append("|" + "---|" * (1 + len(pools)))
    for key, w, _ in rows:
        out.append(f"| `{w}`{busy_label(key)} | " + " | ".join(
            fmt(stat(pool_samples, (key, p), "cpu_ns_per_req"), 0) for p in pools) + " |")

    out.append("\n## Wake-up latency, queue wait under load, and idle CPU\n")
    out.append(f"Wake-up: one request into an idle pool of 2 workers, {args.wakeup_samples} "
               "samples per repetition, 200 µs of idleness before each; time from just before "
               "`submit` to the first instruction of the handler. Idle CPU: process CPU time "
               f"over {args.idle_ms} ms during which the pool (2 workers, after a 1000-request "
               "burst) has nothing to do, as a percentage of one core. Queue wait under load "
               "(`burst_wait_1p2w`): 200 bursts of 64 requests of ~1 µs work, one every ~200 µs, "
               "into 2 workers; time from just before each `submit` to the start of its "
               "handler, p50 and p99 over the 12,800 requests. Cells: **median** of the "
               "per-repetition values (min–max).\n")
    out.append("| pool | wake-up p50 (µs) | wake-up p99 (µs) | queue wait in bursts p50 (µs) "
               "| queue wait in bursts p99 (µs) | idle CPU (% of a core) |")
    out.append("|---|---|---|---|---|---|")
    for p in pools:
        if not any((w, p) in pool_samples for w in ("wakeup_1p2w", "idle_cpu_2w")):
            continue  # the ceiling: throughput only
        out.append(f"| `{p}` | {fmt(stat(pool_samples, ('wakeup_1p2w', p), 'p50_us'), 1)} | "
                   f"{fmt(stat(pool_samples, ('wakeup_1p2w', p), 'p99_us'), 1)} | "
                   f"{fmt(stat(pool_samples, ('burst_wait_1p2w', p), 'p50_us'), 1)} | "
                   f"{fmt(stat(pool_samples, ('burst_wait_1p2w', p), 'p99_us'), 1)} | "
                   f"{fmt(stat(pool_samples, ('idle_cpu_2w', p), 'idle_cpu_pct'), 3)} |")

    if queue_samples:
        out.append("\n## The bounded queue alone (million elements per second)\n")
        out.append("`bench_queue`: `spsc_t2` = one pushing and one popping thread, both "
                   "spinning; `mpmc_tN` = N threads each pushing one element then popping one. "
                   "moodycamel is the reference (unbounded `enqueue` / `try_dequeue`, no "
                   "tokens). Same interleaving as above. Both sides spin, so these rows measure "
                   "the scheduler as much as the queue once the machine has fewer free cores "
                   "than spinning threads: when the consumer is descheduled, our bounded "
                   "producer fills its 1024 slots and spins out its time slice, while the "
                   "unbounded reference keeps enqueuing. The pools never spin on a full "
                   "queue; they block. `sharded_queue` is the same capacity split into 8 rings "
                   "(what `options.queue_shards = 8` builds): each thread pushes to its own ring "
                   "and pops from it first, so two threads rarely touch the same line; it keeps "
                   "no order across rings, hence no `spsc_t2` figure (that benchmark checks the "
                   "order).\n")
        qworkloads = sorted({w for (w, _) in queue_samples})
        out.append("| workload | " + " | ".join(f"`{q}`" for q in queues) + " |")
        out.append("|" + "---|" * (1 + len(queues)))
        for w in qworkloads:
            out.append(f"| `{w.removesuffix(BUSY_SUFFIX)}`{busy_label(w)} | " + " | ".join(
                fmt(stat(queue_samples, (w, q), "items_per_second", 1e-6)) for q in queues) + " |")

    out.append("\n## How the benchmarks work\n")
    out.append(
        "- Sources: `bench/bench_pool.cpp`, `bench/bench_queue.cpp`, the adapters in "
        "`bench/peers/*.hpp` (one interface: construct with workers + capacity + handler, "
        "`submit(job)` blocking when bounded and full, destructor drains and joins).\n"
        "- Every handler counts its request on its own thread's cache line; the producer polls "
        "the sum every ~20 µs (so it does not steal a core from the workers) and the iteration "
        "ends when the sum reaches the number submitted. That polling adds at most ~0.1 ms to "
        "an iteration of tens of milliseconds. A pool that loses or duplicates a request "
        "aborts the run; the dispatcher's own stats are checked after `shutdown()` too.\n"
        "- The ~1 µs unit is a calibrated multiply-add chain (best of several timings), not a "
        "sleep, so it costs CPU like real work.\n"
        "- The pools, as `bench/pools.txt` lists them: " + "; ".join(
            f"`{p.name}` = {p.what}" for p in POOLS if p.name in pools) +
        ". Ours all run with `min_workers == max_workers`.\n"
        "- Smoke run (CI): `bench_queue --benchmark_min_time=0.01` and `bench_pool "
        "--benchmark_min_time=0.01`, or `cmake --build <dir> --target bench_smoke`.\n")
    return "\n".join(out) + "\n"


# The hand-written end of the page (the measurements behind choices in the code) starts at this
# marker; a rewrite keeps it.
HAND_WRITTEN = "<!-- Measurements behind the code:"


def kept_by_hand(out: Path) -> str:
    """The hand-written end of the page that `out` holds now, from HAND_WRITTEN on; "" if none."""
    if not out.exists():
        return ""
    old = out.read_text()
    at = old.find("\n" + HAND_WRITTEN)
    return old[at:] if at != -1 else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--repetitions", type=int, default=2,
                    help="--benchmark_repetitions within each process (default 2)")
    ap.add_argument("--requests", type=int, default=200_000,
                    help="requests per iteration (WORKERPOOL_BENCH_REQUESTS, default 200000)")
    ap.add_argument("--min-time", default="0.05",
                    help="--benchmark_min_time per benchmark, seconds (default 0.05)")
    ap.add_argument("--capacity", type=int, default=1024,
                    help="queue capacity of the bounded pools in the natural-mode rows "
                         "(WORKERPOOL_BENCH_CAPACITY, default 1024)")
    ap.add_argument("--idle-ms", type=int, default=2000, help="idle-CPU window (default 2000)")
    ap.add_argument("--wakeup-samples", type=int, default=300,
                    help="wake-up samples per repetition (default 300)")
    ap.add_argument("--build-dir", type=Path,
                    help="an already configured build tree to (re)build and use, instead of "
                         "configuring the bench preset or build/bench")
    ap.add_argument("--pools", default="",
                    help="comma-separated subset of pools (and queues) to run; default all")
    ap.add_argument("--skip-queue", action="store_true", help="do not run bench_queue")
    ap.add_argument("--busy-core", choices=("off", "on", "both"), default="off",
                    help="keep one core busy with another process: off (default), on (the whole "
                         "run), or both (each pool's throughput benchmarks quiet and busy in every "
                         "round, reported as separate rows)")
    ap.add_argument("--busy-processes", type=int, default=1,
                    help="how many busy processes --busy-core starts (default 1; 2 on a 2-core "
                         "machine shares every core)")
    ap.add_argument("--redis-entries", type=int, default=200_000,
                    help="entries per Redis throughput run (default 200000; 0 skips it)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    args = ap.parse_args()
    if args.busy_processes < 1:
        ap.error("--busy-processes must be at least 1")
    if args.busy_processes != 1 and args.busy_core == "off":
        ap.error("--busy-processes needs --busy-core on or both")
    global BUSY_PROCESSES
    BUSY_PROCESSES = args.busy_processes

    start = datetime.datetime.now()
    source = source_state()
    build_dir = build(args).resolve()

    env = dict(os.environ)
    env["WORKERPOOL_BENCH_REQUESTS"] = str(args.requests)
    env["WORKERPOOL_BENCH_IDLE_MS"] = str(args.idle_ms)
    env["WORKERPOOL_BENCH_CAPACITY"] = str(args.capacity)
    env["WORKERPOOL_BENCH_WAKEUP_SAMPLES"] = str(args.wakeup_samples)

    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    neighbours = busy_neighbours()
    with busy_core(args.busy_core == "on"):
        pool_samples, pools, context = collect(find_binary(build_dir, "bench_pool"), args, env)
        queue_samples, queues = {}, []
        if not args.skip_queue:
            queue_samples, queues, _ = collect(find_binary(build_dir, "bench_queue"), args, env)
        redis_text = (redis_section(build_dir, args.redis_entries) if args.redis_entries > 0
                      else "")
    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    elapsed = (datetime.datetime.now() - start).total_seconds()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    svg = args.out.with_suffix(".svg")
    chart(pool_samples, pools, svg)
    text = report(args, build_dir, pool_samples, pools, queue_samples, queues, context,
                  start.strftime("%Y-%m-%d %H:%M"), source, load_before, load_after, neighbours,
                  elapsed)
    if redis_text:
        text = text.replace("\n## How the benchmarks work\n", redis_text + "\n## How the benchmarks work\n", 1)
    args.out.write_text(text + kept_by_hand(args.out))
    raw = build_dir / "bench_compare_samples.json"
    raw.write_text(json.dumps({
        "pools": {f"{w}/{p}": m for (w, p), m in sorted(pool_samples.items())},
        "queues": {f"{w}/{q}": m for (w, q), m in sorted(queue_samples.items())},
    }, indent=1))
    log(f"wrote {args.out}, {svg} and the raw samples in {raw}")


if __name__ == "__main__":
    main()
