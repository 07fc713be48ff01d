#!/usr/bin/env bash
# ops/up.sh — a local NOC in one command: starts the broker (ops/broker.sh), builds and
# starts `anning daemon` in the background, streams a generated double11 day into the input
# topic at a set rate, and prints actions as they arrive. Leaves everything running; stop it
# with ops/down.sh. Ctrl-C stops only the printing.
#
# Environment: ANNING_UP_RECORDS (default 1000000), ANNING_UP_RATE (records/s, default
# 20000), ANNING_UP_SEED (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
run=ops/.run
mkdir -p "$run"
records="${ANNING_UP_RECORDS:-1000000}"
rate="${ANNING_UP_RATE:-20000}"
seed="${ANNING_UP_SEED:-1}"

ops/broker.sh start
cargo build --release --locked -p anning-pipelines --bin anning
bin=./target/release/anning

if [[ -f "$run/daemon.pid" ]] && kill -0 "$(cat "$run/daemon.pid")" 2>/dev/null; then
    echo "daemon: already running (pid $(cat "$run/daemon.pid"))"
else
    "$bin" gen double11 --records "$records" --seed "$seed" --out "$run/double11.jsonl" --registry "$run/ports.csv" --truth "$run/truth.jsonl" -q
    setsid nohup "$bin" daemon --config ops/anning.toml --registry "$run/ports.csv" >>"$run/daemon.log" 2>&1 </dev/null &
    echo $! >"$run/daemon.pid"
    for _ in $(seq 1 100); do
        curl -sf http://127.0.0.1:9898/readyz >/dev/null 2>&1 && break
        sleep 0.3
    done
    echo "daemon: running (pid $(cat "$run/daemon.pid"), log $run/daemon.log)"
    setsid nohup "$bin" produce "$run/double11.jsonl" --topic signaling --rate "$rate" >>"$run/produce.log" 2>&1 </dev/null &
    echo $! >"$run/produce.pid"
    echo "streaming $records records of double11 (seed $seed) at $rate/s into topic signaling"
fi
echo "metrics: http://127.0.0.1:9898/metrics   health: /healthz /readyz"
echo "actions as they arrive (Ctrl-C stops printing; ops/down.sh stops everything):"
exec "$bin" tail --topic actions --from-beginning
