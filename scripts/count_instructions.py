#!/usr/bin/env python3
"""Instructions one no-op request costs the producer's submit and the worker, under callgrind.

    scripts/count_instructions.py                  # build/bench's bench/instructions, submit
    scripts/count_instructions.py --mode try --no-timeout --binary OTHER/bench/instructions

Runs `bench/instructions` (see its header) under `valgrind --tool=callgrind`, with REQUESTS and
with 2 x REQUESTS requests, counting once inside the submit (`submit_blocking` or
`submit_trying`) and once inside the worker threads (their whole run, the handler included).
Each figure is the difference of the two counts divided by REQUESTS, so the pool's set-up and
shutdown cancel out; each is the median of --runs such pairs, with their range. The submit's
count is the same run after run; the worker's moves by a fraction of an instruction (how long
it sleeps before the gate opens). Instruction counts hardly depend on the machine's load, so
they compare two builds where the wall clock is too noisy; they say nothing of cache misses,
contention, or the supervisor's work for timed attempts (another thread).

With --max-submit / --max-worker it is a check (CI's `instructions` step): it exits 1 when a
median is above its budget. The budgets guard GCC's inlining of the hot path, which moved three
times without a change in behaviour (a `push` called out of line cost the submit 26 instructions;
a `bump` called out of line and a local `exception_ptr`, the worker 6.6): see docs/design.md,
"The hot path".

Needs valgrind (Debian: `apt-get install valgrind`) and the bench build
(`cmake --workflow --preset bench`).
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPACITY = 65536  # bench/instructions.cpp's queue: 2 x REQUESTS must fit

# Function-name globs for callgrind's --toggle-collect. A worker thread's whole run is counted
# (where its loop is inlined no function of its own is left to name); callgrind toggles at each
# frame that matches, so the script checks that the worker's count grows with the requests.
SUBMIT = {"block": "*submit_blocking*", "try": "*submit_trying*"}
WORKER = "*spawn_or_throw_locked*"


def counted(binary: str, requests: int, args: list[str], toggle: str) -> int:
    """Instructions callgrind counted inside `toggle` over one run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", "--separate-threads=no",
               f"--toggle-collect={toggle}", f"--callgrind-out-file={out}",
               binary, str(requests)] + args
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            sys.exit(f"count_instructions: {' '.join(cmd)} ran past 10 minutes")
        if run.returncode != 0:
            sys.exit(f"count_instructions: {' '.join(cmd)} failed:\n{run.stderr[-2000:]}")
        with open(out, encoding="utf-8") as f:
            for line in f:
                m = re.match(r"(?:summary|totals):\s+(\d+)", line)
                if m:
                    return int(m.group(1))
    sys.exit("count_instructions: no total in callgrind's output")


def per_request(binary: str, requests: int, args: list[str], toggle: str, name: str) -> float:
    once = counted(binary, requests, args, toggle)
    twice = counted(binary, 2 * requests, args, toggle)
    if not 0 < once < twice:
        sys.exit(f"count_instructions: the {name} count does not grow with the requests "
                 f"({once} at {requests}, {twice} at {2 * requests}): does `{toggle}` still "
                 "name its function in this build?")
    return (twice - once) / requests


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(ROOT / "build/bench/bench/instructions"))
    ap.add_argument("--requests", type=int, default=20000,
                    help=f"requests of the first run; the second has twice as many "
                         f"(1 to {CAPACITY // 2}, default 20000)")
    ap.add_argument("--mode", choices=["block", "try"], default="block",
                    help="submit with `submit` (block, default) or `try_submit` (try)")
    ap.add_argument("--shards", type=int, default=0,
                    help="queue_shards (0, the default: the pool's choice)")
    ap.add_argument("--no-timeout", action="store_true",
                    help="no default_timeout, and a handler without a stop_token")
    ap.add_argument("--runs", type=int, default=3, help="pairs of runs per figure (default 3)")
    ap.add_argument("--max-submit", type=float, default=None,
                    help="fail (exit 1) when the submit's median is above this")
    ap.add_argument("--max-worker", type=float, default=None,
                    help="fail (exit 1) when the worker's median is above this")
    a = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("count_instructions: valgrind not found (apt-get install valgrind)")
    if not os.access(a.binary, os.X_OK):
        sys.exit(f"count_instructions: {a.binary} not found (cmake --workflow --preset bench)")
    if not 0 < a.requests <= CAPACITY // 2:
        sys.exit(f"count_instructions: --requests must be in [1, {CAPACITY // 2}]")
    if not 0 <= a.shards <= CAPACITY:
        sys.exit(f"count_instructions: --shards must be in [0, {CAPACITY}]")
    if a.runs <= 0:
        sys.exit("count_instructions: --runs must be > 0")
    args = [a.mode, str(a.shards), "no-timeout" if a.no_timeout else "timeout"]
    parts = []
    over = []
    for name, toggle, budget in (("submit", SUBMIT[a.mode], a.max_submit),
                                 ("worker", WORKER, a.max_worker)):
        figures = [per_request(a.binary, a.requests, args, toggle, name) for _ in range(a.runs)]
        median = statistics.median(figures)
        parts.append(f"{name} {median:.2f} ({min(figures):.2f}-{max(figures):.2f})")
        if budget is not None and median > budget:
            over.append(f"the {name}'s {median:.2f} instructions per request are over its budget "
                        f"of {budget:g}")
    print(f"{a.binary} mode={a.mode} shards={a.shards} "
          f"timeout={'off' if a.no_timeout else 'on'}: instructions per request, median (range) "
          f"of {a.runs}: {', '.join(parts)}")
    for line in over:
        print(f"count_instructions: {line} (an inlining decision may have moved: compare "
              "`callgrind_annotate` of this build and the last one that passed)", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
