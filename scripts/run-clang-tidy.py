#!/usr/bin/env python3
"""Runs clang-tidy 14 (.clang-tidy) on every header of include/, with warnings as errors.

    scripts/run-clang-tidy.py [--build-dir build/dev] [--jobs 2] [--only REGEX]

Each header goes through the translation unit that includes it alone: the header
self-containment files that tests/CMakeLists.txt generates under <build-dir>/tests/header_check/
(configured here with `cmake --preset dev` when the build tree has no compile_commands.json;
every preset exports one). A header's templates are checked where those files instantiate them,
so findings in, say, dispatcher.hpp can also come from the redis header's file.

Every finding in a header fails the run (the same as WarningsAsErrors: '*', but all of them are
printed, not the first twenty), except in the headers that scripts/clang-tidy-pending.txt lists:
their findings are printed and counted, for the people rewriting them. A listed header that has
no finding any more fails the run, so the list only shrinks. A compiler error fails it always.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PENDING = ROOT / "scripts" / "clang-tidy-pending.txt"
DIAGNOSTIC = re.compile(r"^(?P<file>/[^:\n]+):(?P<line>\d+):(?P<col>\d+): "
                        r"(?P<kind>warning|error): (?P<text>.*?)(?: \[(?P<check>[\w.,-]+)\])?$")


def find_clang_tidy() -> str:
    for name in ("clang-tidy-14", "clang-tidy"):
        path = shutil.which(name)
        if path:
            version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
            if "version 14." in version:
                return path
    sys.exit("run-clang-tidy: clang-tidy 14 not found (Debian: apt-get install clang-tidy-14)")


def translation_units(build_dir: Path) -> list[str]:
    database = build_dir / "compile_commands.json"
    if not database.exists():
        print(f"run-clang-tidy: no {database}; configuring the dev preset", flush=True)
        subprocess.run(["cmake", "--preset", "dev"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    marker = str(build_dir.resolve() / "tests" / "header_check") + "/"
    units = sorted({entry["file"] for entry in json.loads(database.read_text())
                    if entry["file"].startswith(marker)})
    headers = sorted(str(p.relative_to(ROOT / "include"))
                     for p in (ROOT / "include").rglob("*.hpp"))
    checked = {u[len(marker):-len(".cpp")] for u in units}
    missing = [h for h in headers if h not in checked and not h.startswith("workerpool/redis/")]
    if missing:
        sys.exit(f"run-clang-tidy: {build_dir} has no header_check file for {', '.join(missing)}: "
                 "reconfigure it")
    for h in headers:
        if h not in checked:
            print(f"run-clang-tidy: {h} is not checked here (no workerpool::redis: hiredis "
                  "missing)", flush=True)
    return units


def run_one(clang_tidy: str, build_dir: Path, unit: str) -> tuple[str, str, int, float]:
    start = time.monotonic()
    # --warnings-as-errors is appended to .clang-tidy's '*': '-*' turns it off, so that clang
    # reports every finding rather than stopping after twenty errors; this script fails instead.
    proc = subprocess.run([clang_tidy, "-p", str(build_dir), "--quiet",
                           "--warnings-as-errors=-*", unit],
                          cwd=ROOT, capture_output=True, text=True)
    return unit, proc.stdout + proc.stderr, proc.returncode, time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", type=Path, default=ROOT / "build" / "dev")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", help="check only the headers whose path matches this regex (the "
                    "pending list is then not checked for stale entries)")
    args = ap.parse_args()
    build_dir = args.build_dir.resolve()
    clang_tidy = find_clang_tidy()
    pending = [l.strip() for l in PENDING.read_text().splitlines()
               if l.strip() and not l.startswith("#")] if PENDING.exists() else []
    units = translation_units(build_dir)
    if args.only:
        units = [u for u in units if re.search(args.only, u)]
    print(f"run-clang-tidy: {Path(clang_tidy).name} on {len(units)} headers, {args.jobs} at a "
          "time", flush=True)

    findings: dict[tuple[str, int, int, str], str] = {}
    broken = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for unit, output, code, seconds in pool.map(
                lambda u: run_one(clang_tidy, build_dir, u), units):
            print(f"  {Path(unit).relative_to(build_dir / 'tests' / 'header_check')}: "
                  f"{seconds:.1f} s", flush=True)
            for line in output.splitlines():
                m = DIAGNOSTIC.match(line)
                if not m:
                    continue
                if m["check"] is None or m["check"].startswith("clang-diagnostic"):
                    broken.append(line)  # the compiler's own error or warning
                    continue
                path = Path(m["file"]).resolve()
                try:
                    rel = str(path.relative_to(ROOT))
                except ValueError:
                    rel = str(path)
                findings[(rel, int(m["line"]), int(m["col"]), m["check"])] = m["text"]
            if code != 0 and not broken:
                broken.append(f"{unit}: clang-tidy exited with {code}:\n{output}")

    failing = pending_count = 0
    for (path, line, col, check), text in sorted(findings.items()):
        listed = path.removeprefix("include/") in pending or path in pending
        print(f"{'pending: ' if listed else ''}{path}:{line}:{col}: {text} [{check}]")
        pending_count += listed
        failing += not listed
    for line in broken:
        print(line)
    stale = [] if args.only else [p for p in pending
                                  if not any(f[0] in (p, "include/" + p) for f in findings)]
    for p in stale:
        print(f"{PENDING.relative_to(ROOT)}: {p} has no finding any more: remove it from the list")
    print(f"run-clang-tidy: {failing} findings failing, {pending_count} in headers being rewritten "
          f"({PENDING.relative_to(ROOT)}), {len(broken)} compiler errors")
    return 1 if failing or broken or stale else 0


if __name__ == "__main__":
    sys.exit(main())
