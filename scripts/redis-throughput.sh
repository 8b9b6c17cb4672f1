#!/usr/bin/env bash
# The Redis Streams consumer end to end on loopback, side by side with a raw hiredis loop (the
# ceiling: XREADGROUP COUNT <batch>, XACK pipelined with the next read), with 1 and then 3
# consumers, against a throw-away redis-server (scripts/redis-local.sh). Prints per-round rates,
# CPU time per entry and the consumer/raw ratio, then the medians.
# Usage: scripts/redis-throughput.sh [N=200000] [REPEATS=5] [BATCH=100]
# Needs the bench build (or WORKERPOOL_BENCH_REDIS=<path to bench_redis>):
#   cmake --preset bench && cmake --build --preset bench --target bench_redis
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${WORKERPOOL_BENCH_REDIS:-$root/build/bench/bench/bench_redis}"
[[ -x "$bin" ]] || { echo "build it first: cmake --preset bench && cmake --build --preset bench --target bench_redis" >&2; exit 1; }
dir=$(mktemp -d)
trap 'bash "$root/scripts/redis-local.sh" stop "$dir"; rm -rf "$dir"' EXIT
bash "$root/scripts/redis-local.sh" start "$dir"
echo "machine: $(nproc) cores, $(uname -m); load: $(cut -d' ' -f1-3 /proc/loadavg)"
for consumers in 1 3; do
    "$bin" "$(cat "$dir/port")" "${1:-200000}" "$consumers" "${3:-100}" "${2:-5}"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
