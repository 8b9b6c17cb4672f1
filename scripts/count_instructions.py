#!/usr/bin/env python3
"""Instructions one no-op request costs the producer's submit and the worker, under callgrind.

    scripts/count_instructions.py                         # build/bench's bench/instructions
    scripts/count_instructions.py --binary OTHER/bench/instructions --mode try --no-timeout

Runs `bench/instructions` (see its header) under `valgrind --tool=callgrind` four times: with
REQUESTS and with 2 x REQUESTS requests, counting once inside the submit (`submit_blocking` or
`submit_trying`) and once inside the worker threads (their whole run, the handler included). Each figure is the difference of
the two counts divided by REQUESTS, so the pool's set-up and shutdown cancel out. Instruction
counts do not depend on the machine's load, which makes them the figure to compare two builds
by when the wall clock is too noisy; they say nothing about cache misses or contention.

Needs valgrind (Debian: `apt-get install valgrind`) and the bench build
(`cmake --workflow --preset bench`).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Function-name globs for callgrind's --toggle-collect. A worker thread's whole run is counted
# (where its loop is inlined, no function of its own is left to name).
SUBMIT = {"block": "*submit_blocking*", "wake": "*submit_blocking*", "try": "*submit_trying*"}
WORKER = "*spawn_or_throw_locked*"


def counted(binary: str, requests: int, args: list[str], toggle: str) -> int:
    """Instructions callgrind counted inside `toggle` over one run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", "--separate-threads=no",
               f"--toggle-collect={toggle}", f"--callgrind-out-file={out}",
               binary, str(requests)] + args
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"count_instructions: {' '.join(cmd)} failed:\n{run.stderr[-2000:]}")
        with open(out, encoding="utf-8") as f:
            for line in f:
                m = re.match(r"(?:summary|totals):\s+(\d+)", line)
                if m:
                    return int(m.group(1))
    sys.exit("count_instructions: no total in callgrind's output")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="build/bench/bench/instructions")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--mode", choices=["block", "try", "wake"], default="block")
    ap.add_argument("--shards", type=int, default=0, help="queue_shards (0: the pool's choice)")
    ap.add_argument("--no-timeout", action="store_true",
                    help="no default_timeout, and a handler without a stop_token")
    a = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("count_instructions: valgrind not found (apt-get install valgrind)")
    if not os.access(a.binary, os.X_OK):
        sys.exit(f"count_instructions: {a.binary} not found (cmake --workflow --preset bench)")
    if a.requests <= 0:
        sys.exit("count_instructions: --requests must be > 0")
    args = [a.mode, str(a.shards), "no-timeout" if a.no_timeout else "timeout"]
    figures = {}
    for name, toggle in (("submit", SUBMIT[a.mode]), ("worker", WORKER)):
        once = counted(a.binary, a.requests, args, toggle)
        twice = counted(a.binary, 2 * a.requests, args, toggle)
        figures[name] = (twice - once) / a.requests
    print(f"{a.binary} mode={a.mode} shards={a.shards} "
          f"timeout={'off' if a.no_timeout else 'on'}: instructions per request: "
          f"submit {figures['submit']:.2f}, worker {figures['worker']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
