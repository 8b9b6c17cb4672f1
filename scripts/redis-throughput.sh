#!/usr/bin/env bash
# Measures the Redis Streams consumer end to end on loopback, with 1 and 3 consumers, against a
# throw-away redis-server (tests/redis/server.sh). Usage: scripts/redis-throughput.sh [N] [REPEATS]
# Needs the bench build (or WORKERPOOL_BENCH_REDIS=<path to bench_redis>): cmake --preset bench && cmake --build --preset bench --target bench_redis
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${WORKERPOOL_BENCH_REDIS:-$root/build/bench/bench/bench_redis}"
[[ -x "$bin" ]] || { echo "build it first: cmake --preset bench && cmake --build --preset bench --target bench_redis" >&2; exit 1; }
dir=$(mktemp -d)
trap 'bash "$root/tests/redis/server.sh" stop "$dir"; rm -rf "$dir"' EXIT
bash "$root/tests/redis/server.sh" start "$dir"
port=$(cat "$dir/port")
n=${1:-200000}
repeats=${2:-3}
echo "machine: $(nproc) cores, $(uname -m); load: $(cut -d' ' -f1-3 /proc/loadavg)"
for consumers in 1 3; do
    "$bin" "$port" "$n" "$consumers" 64 "$repeats"
done
