#!/usr/bin/env bash
# ops/down.sh — stops what ops/up.sh started: the producer, the daemon (SIGTERM: it drains,
# commits and exits), the broker.
set -uo pipefail
cd "$(dirname "$0")/.."
run=ops/.run
for name in produce daemon; do
    pidfile="$run/$name.pid"
    if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        pid=$(cat "$pidfile")
        kill -TERM "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "$name: stopped"
    fi
    rm -f "$pidfile"
done
ops/broker.sh stop
