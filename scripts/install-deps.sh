#!/usr/bin/env bash
# Installs what building, testing and benchmarking workerpool needs on Debian/Ubuntu, and nothing
# that is already there. Safe to run again.
#
# Usage: scripts/install-deps.sh [--bench] [--plot] [--ci]
#   (none)   what the README's commands need: the compiler, CMake, Ninja, Catch2, and hiredis and
#            redis-server for the optional Redis Streams consumer (workerpool::redis) and its tests
#   --bench  also the benchmarks' libraries (Google Benchmark and the peer pools) and gnuplot for
#            scripts/bench_compare.py's chart
#   --plot   also gnuplot, for scripts/plot-timeline.sh
#   --ci     also what .ci/run needs beyond that: the benchmarks' libraries (CI builds them),
#            gnuplot (the README's timeline block), Clang with its fuzzing runtime (the fuzz step),
#            clang-tidy 14, Doxygen and Python 3 (the check scripts), valgrind (the instruction
#            budgets)
set -euo pipefail

usage() { sed -n '5,14s/^# \{0,1\}//p' "$0" >&2; }

bench_libraries=(libbenchmark-dev libboost-dev libtbb-dev libconcurrentqueue-dev)
packages=(cmake g++ ninja-build catch2 libhiredis-dev redis-server)
for arg in "$@"; do
    case "$arg" in
        --bench) packages+=("${bench_libraries[@]}" gnuplot-nox) ;;
        --plot) packages+=(gnuplot-nox) ;;
        --ci) packages+=("${bench_libraries[@]}" gnuplot-nox clang libclang-rt-14-dev clang-tidy-14
                         doxygen python3 valgrind) ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install-deps: unknown argument: $arg" >&2; usage; exit 2 ;;
    esac
done

missing=()
for p in $(printf '%s\n' "${packages[@]}" | sort -u); do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

as_root=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    as_root=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
