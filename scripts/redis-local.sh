#!/usr/bin/env bash
# A throw-away redis-server on 127.0.0.1, for trying the Redis consumer and for its tests.
#   scripts/redis-local.sh start DIR [PORT]   starts one on PORT (default: a free port), its files
#                                             in DIR; writes DIR/port and DIR/pid
#   scripts/redis-local.sh stop DIR           stops it (nothing is saved: it runs with --save "")
# It runs `redis-server --bind 127.0.0.1 --port PORT --dir DIR --daemonize yes ...` and then checks
# that the server answering on PORT is the one it started: a second redis-server on a taken port
# exits with status 0 all the same and dies silently, leaving the other server (e.g. Debian's
# redis-server service on 6379) to answer. ctest runs `start`/`stop` around the Redis tests.
set -euo pipefail

action=${1:?usage: redis-local.sh start DIR [PORT] | stop DIR}
dir=${2:?usage: redis-local.sh start DIR [PORT] | stop DIR}
wanted=${3:-}

stop() {
    if [[ -f "$dir/pid" ]]; then
        local pid
        pid=$(cat "$dir/pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.05
            done
        fi
        rm -f "$dir/pid"
    fi
    rm -f "$dir/port"
}

# start_on PORT: 0 when our server answers on PORT, 1 when it did not come up.
start_on() {
    local port=$1
    rm -f "$dir/pid"
    : >"$dir/redis.log"
    redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --pidfile "$dir/pid" \
        --dir "$dir" --logfile "$dir/redis.log" --save "" --appendonly no >/dev/null || return 1
    # It daemonises before binding: wait until *our* process answers on that port.
    for _ in $(seq 1 50); do
        if [[ -f "$dir/pid" ]] &&
            redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null |
            grep -q "^process_id:$(cat "$dir/pid")"; then
            echo "$port" >"$dir/port"
            echo "redis-server $(redis-server --version | grep -o 'v=[0-9.]*') on 127.0.0.1:$port (pid $(cat "$dir/pid"), files in $dir)"
            return 0
        fi
        grep -q "Could not create server TCP listening socket" "$dir/redis.log" && break
        sleep 0.1
    done
    stop
    return 1
}

case "$action" in
start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    stop  # a server left over from an interrupted run
    if [[ -n "$wanted" ]]; then
        start_on "$wanted" && exit 0
        holder=$(redis-cli -h 127.0.0.1 -p "$wanted" info server 2>/dev/null | grep -o '^process_id:[0-9]*' || true)
        echo "redis-local.sh: port $wanted is taken${holder:+ by another redis-server ($holder)}; pick another port, or see $dir/redis.log" >&2
        exit 1
    fi
    for _ in $(seq 1 20); do
        start_on $((20000 + RANDOM % 30000)) && exit 0
    done
    echo "redis-local.sh: could not start redis-server; see $dir/redis.log" >&2
    exit 1
    ;;
stop)
    stop
    ;;
*)
    echo "usage: redis-local.sh start DIR [PORT] | stop DIR" >&2
    exit 2
    ;;
esac
