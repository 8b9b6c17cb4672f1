#!/usr/bin/env bash
# A throw-away redis-server for the Redis tests, on 127.0.0.1 and a free port.
#   server.sh start DIR   starts one, writes its port to DIR/port, its pid to DIR/pid
#   server.sh stop DIR    stops it (no snapshot is written)
# ctest runs these as the setup and cleanup of the `redis` fixture.
set -euo pipefail

action=${1:?usage: server.sh start|stop DIR}
dir=${2:?usage: server.sh start|stop DIR}

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

case "$action" in
start)
    mkdir -p "$dir"
    stop  # a server left over from an interrupted run
    for _ in $(seq 1 20); do
        port=$((20000 + RANDOM % 30000))
        redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --pidfile "$dir/pid" \
            --dir "$dir" --logfile "$dir/redis.log" --save "" --appendonly no >/dev/null || continue
        # It daemonises before binding: wait until *our* process answers on that port (a busy
        # port may hold another server, whose pid differs).
        for _ in $(seq 1 50); do
            if [[ -f "$dir/pid" ]] &&
                redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null |
                grep -q "^process_id:$(cat "$dir/pid")"; then
                echo "$port" >"$dir/port"
                echo "redis-server $(redis-server --version | grep -o 'v=[0-9.]*') on 127.0.0.1:$port (pid $(cat "$dir/pid"))"
                exit 0
            fi
            sleep 0.1
        done
        stop
    done
    echo "server.sh: could not start redis-server; see $dir/redis.log" >&2
    exit 1
    ;;
stop)
    stop
    ;;
*)
    echo "usage: server.sh start|stop DIR" >&2
    exit 2
    ;;
esac
