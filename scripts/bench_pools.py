#!/usr/bin/env python3
"""The pools the benchmarks compare, read from bench/pools.txt (the one list of them).

    scripts/bench_pools.py                       # print the list
    scripts/bench_pools.py check BENCH_POOL      # fail unless BENCH_POOL registers exactly the
                                                 # pools of the list that it was built with

The other bench scripts import it: `from bench_pools import POOLS, OURS, PEERS, CEILINGS`.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LIST = Path(__file__).resolve().parent.parent / "bench" / "pools.txt"


SIDES = ("ours", "peer", "ceiling")


@dataclass(frozen=True)
class Pool:
    name: str
    side: str     # ours (our dispatcher), peer (what a user would pick instead), or ceiling (the
                  # dispatcher's queue with no pool around it)
    needs: str    # "-", or the library bench/CMakeLists.txt must find: asio, tbb, moodycamel
    what: str     # one sentence

    @property
    def ours(self) -> bool:
        return self.side == "ours"


def load(path: Path = LIST) -> list[Pool]:
    pools = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(None, 3)
        if len(fields) != 4 or fields[1] not in SIDES:
            sys.exit(f"{path}:{number}: expected `name {'|'.join(SIDES)} needs what`, "
                     f"got: {line}")
        pools.append(Pool(*fields))
    return pools


POOLS: list[Pool] = load()
NAMES: list[str] = [p.name for p in POOLS]
OURS: list[str] = [p.name for p in POOLS if p.side == "ours"]
PEERS: list[str] = [p.name for p in POOLS if p.side == "peer"]
CEILINGS: list[str] = [p.name for p in POOLS if p.side == "ceiling"]


def registered(bench_pool: str) -> list[str]:
    """The pools a bench_pool binary registers (BM_<workload>/<pool>), in registration order."""
    out = subprocess.run([bench_pool, "--benchmark_list_tests=true"], check=True,
                         capture_output=True, text=True).stdout
    seen: list[str] = []
    for line in out.splitlines():
        parts = line.split("/")
        if line.startswith("BM_") and len(parts) > 1 and parts[1] not in seen:
            seen.append(parts[1])
    return seen


def check(bench_pool: str) -> int:
    """Every pool bench_pool registers is on the list, and every pool of the list that needs
    nothing is registered (the others depend on what the build found)."""
    got = registered(bench_pool)
    unknown = [p for p in got if p not in NAMES]
    missing = [p.name for p in POOLS if p.needs == "-" and p.name not in got]
    for p in unknown:
        print(f"bench_pools: {bench_pool} registers `{p}`, which {LIST} does not list",
              file=sys.stderr)
    for p in missing:
        print(f"bench_pools: {LIST} lists `{p}`, which {bench_pool} does not register",
              file=sys.stderr)
    if unknown or missing:
        return 1
    print(f"bench_pools: {bench_pool} registers {', '.join(got)}: all on the list")
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        return check(sys.argv[2])
    if len(sys.argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    for p in POOLS:
        print(f"{p.name:22s} {p.side:8s} {p.needs:10s} {p.what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
