#!/usr/bin/env bash
# Installs what building, testing and benchmarking workerpool needs on Debian/Ubuntu, and nothing
# that is already there. Safe to run again. Usage: scripts/install-deps.sh [--bench | --plot]
#   --bench  also what the benchmarks need (the peer libraries), and gnuplot
#   --plot   also gnuplot, for scripts/plot-timeline.sh
set -euo pipefail

# hiredis and redis-server: the optional Redis Streams consumer (workerpool::redis) and its tests.
packages=(cmake g++ ninja-build catch2 libhiredis-dev redis-server)
case "${1:-}" in
--bench) packages+=(libbenchmark-dev libboost-dev libtbb-dev libconcurrentqueue-dev gnuplot-nox) ;;
--plot) packages+=(gnuplot-nox) ;;
"") ;;
*)
    echo "usage: scripts/install-deps.sh [--bench | --plot]" >&2
    exit 2
    ;;
esac

missing=()
for p in "${packages[@]}"; do
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
