#!/usr/bin/env bash
# ops/bench-recovery.sh [N] — what a `kill -9` costs, with checkpoints and without.
# Release build (without the SQL feature: the daemon does not use it); a broker of its own on
# 127.0.0.1:19095 (stopped at the end).
#
#   1. N generated double11 records (default 1000000) are produced to a fresh 1-partition topic.
#   2. For each mode (checkpoints every ANNING_BENCH_CHECKPOINT_MS, default 1000, into a fresh
#      directory; none: rebuild from the partition's beginning) a daemon reads the stream; at
#      half of it, `kill -9`; a new daemon starts on the same group and topic. Printed:
#      seconds from the restart to the partition's assignment (the group waits out the dead
#      member's session, 6 s), to /readyz (state rebuilt up to the committed offset) and to
#      the end of the stream; records read again; keys restored, snapshot size and bytes per
#      key; the shards' pause per checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
ckpt_ms="${ANNING_BENCH_CHECKPOINT_MS:-1000}"
port=19095
brokers="127.0.0.1:$port"
run=ops/.run/recovery
rm -rf "$run"
mkdir -p "$run"
export ANNING_BROKER_PORT=$port
target="${CARGO_TARGET_DIR:-target}"
trap 'kill -9 $(jobs -p) 2>/dev/null || true; ops/broker.sh stop >/dev/null || true' EXIT
ops/broker.sh start
cargo build --release --locked -p anning-pipelines --no-default-features
bin="$target/release/anning"
tag="$(date +%s)"
admin=127.0.0.1:9896

metric() { # sum of a metric family on the daemon's admin port
    curl -s "http://$admin/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" { s += $2 } END { printf "%.3f", s }'
}
wait_until() { # wait_until EXPR: until the awk expression over $v holds for metric $1
    local name=$1 cond=$2
    until awk -v v="$(metric "$name")" "BEGIN { exit !($cond) }"; do sleep 0.05; done
}

"$bin" gen double11 --records "$n" --seed 3 --out "$run/d.jsonl" --registry "$run/ports.csv" -q
"$bin" produce "$run/d.jsonl" --brokers "$brokers" --topic "in-$tag" --partitions 1 -X linger.ms=20

for mode in checkpoints rebuild; do
    group="g-$mode-$tag"
    args=(daemon --brokers "$brokers" --group "$group" --input-topic "in-$tag" --actions-topic "a-$mode-$tag"
          --dlq-topic "d-$mode-$tag" --shadow-topic "s-$mode-$tag" --registry "$run/ports.csv" --admin "$admin" --threads 2)
    [[ $mode == checkpoints ]] && args+=(--checkpoint-dir "$run/ckpt" --checkpoint-interval "$ckpt_ms")
    "$bin" "${args[@]}" 2>"$run/$mode-1.log" &
    pid=$!
    until curl -sf "http://$admin/readyz" >/dev/null; do sleep 0.1; done
    wait_until anning_records_in_total "v >= $n / 2"
    [[ $mode == checkpoints ]] && wait_until anning_checkpoints_total "v >= 1"
    read_at_kill=$(metric anning_records_in_total)
    snap_bytes=$(metric anning_checkpoint_bytes); snap_keys=$(metric anning_checkpoint_keys)
    pause=$(metric anning_checkpoint_pause_seconds)
    kill -9 $pid; wait $pid 2>/dev/null || true
    start=$(date +%s.%N)
    "$bin" "${args[@]}" 2>"$run/$mode-2.log" &
    pid=$!
    until awk -v a="$(metric anning_assigned_partitions)" 'BEGIN { exit !(a >= 1) }'; do sleep 0.05; done
    assigned=$(date +%s.%N)
    until curl -sf "http://$admin/readyz" >/dev/null; do sleep 0.05; done
    ready=$(date +%s.%N)
    until awk -v l="$(metric anning_consumer_lag)" -v b="$(metric anning_batches_total)" 'BEGIN { exit !(l == 0 && b >= 1) }'; do sleep 0.05; done
    done_at=$(date +%s.%N)
    echo "== $mode: kill -9 after $read_at_kill of $n records"
    python3 -c "
import sys
s, a, r, d = map(float, sys.argv[1:5])
print(f'   restart → partition assigned: {a - s:.2f} s; → ready (state up to the committed offset): {r - s:.2f} s ({r - a:.2f} s after assignment); → end of stream: {d - s:.2f} s')
" "$start" "$assigned" "$ready" "$done_at"
    echo "   records read by the new daemon: $(metric anning_records_in_total); actions not produced again: $(metric anning_actions_suppressed_total)"
    if [[ $mode == checkpoints ]]; then
        echo "   restored keys: $(metric anning_restored_keys) in $(metric anning_restore_seconds) s"
        python3 -c "
import sys
b, k, p = map(float, sys.argv[1:4])
print(f'   last snapshot before the kill: {b/1e6:.1f} MB for {k:.0f} keys = {b/max(k,1):.0f} B/key; shards paused {p*1000:.0f} ms')
" "$snap_bytes" "$snap_keys" "$pause"
    fi
    kill -TERM $pid; wait $pid 2>/dev/null || true
done
