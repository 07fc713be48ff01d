#!/usr/bin/env bash
# ops/bench-daemon.sh [N] — (part of ops/bench.sh) the daemon through a local broker, beside a bare rdkafka consumer
# reading the same topic, and latency at a fixed rate. Release builds; a broker of its own on
# 127.0.0.1:19094 (stopped at the end).
#
#   1. N generated double11 records (default 2000000) are produced to a fresh 1-partition topic.
#   2. anning-bench bare-consume reads them all: messages/s.
#   3. anning daemon (fresh group, default pack, 2 threads) reads them all: records/s from its
#      first batch to its last, from its own metrics.
#   4. The broker's own latency: a fresh topic fed at ANNING_BENCH_RATE records/s (default
#      50000) for ANNING_BENCH_SECONDS (default 40), read as it arrives by anning-bench
#      bare-latency: produce-to-consume quantiles, the floor for the next step.
#   5. Latency: a fresh topic fed the same way while the daemon runs; ingest-to-action
#      quantiles (from each tipping record's Kafka timestamp), and poll-to-action (from the
#      daemon polling it: its own part).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000000}"
rate="${ANNING_BENCH_RATE:-50000}"
secs="${ANNING_BENCH_SECONDS:-40}"
port=19094
brokers="127.0.0.1:$port"
run=ops/.run/bench
mkdir -p "$run"
export ANNING_BROKER_PORT=$port
trap 'kill $(jobs -p) 2>/dev/null || true; ops/broker.sh stop >/dev/null || true' EXIT
ops/broker.sh start
cargo build --release --locked --no-default-features -p anning-pipelines -p anning-benches
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/anning"
bench="$target/release/anning-bench"
tag="$(date +%s)"

metric() { # sum of a metric family on the daemon's admin port (0 until it listens)
    { curl -s "http://127.0.0.1:9897/metrics" || true; } | awk -v m="$1" '$1 ~ "^"m"({|$)" { s += $2 } END { printf "%.0f", s }'
}

"$bin" gen double11 --records "$n" --seed 1 --out "$run/d.jsonl" --registry "$run/ports.csv" -q
"$bin" produce "$run/d.jsonl" --brokers "$brokers" --topic "tp-$tag" --partitions 1 -X linger.ms=20

echo "== bare rdkafka consumer"
"$bench" bare-consume "$brokers" "tp-$tag" "$n"

echo "== anning daemon"
"$bin" daemon --brokers "$brokers" --group "g-$tag" --input-topic "tp-$tag" --actions-topic "ta-$tag" --dlq-topic "td-$tag" \
    --registry "$run/ports.csv" --admin 127.0.0.1:9897 --threads 2 2>"$run/daemon.log" &
daemon=$!
first="" 
while :; do
    got=$(( $(metric anning_records_in_total) + $(metric anning_rejects_total) ))
    now=$(date +%s.%N)
    if [[ -z "$first" && "$got" -gt 0 ]]; then first=$now; first_n=$got; fi
    if [[ "$got" -ge "$n" ]]; then break; fi
    sleep 0.05
done
python3 -c "import sys; f,l,n0,n=map(float,sys.argv[1:]); print(f'daemon: {int(n)} records; {int(n-n0)} after its first batch in {l-f:.2f} s: {(n-n0)/(l-f):.0f} records/s')" "$first" "$now" "$first_n" "$got"
echo "actions: $(metric anning_actions_total)"
kill -TERM $daemon; wait $daemon || true

echo "== the broker alone at $rate records/s for $secs s (bare consumer, daemon's fetch settings)"
head -n $(( rate * secs )) "$run/d.jsonl" > "$run/latency.jsonl"
"$bin" produce --brokers "$brokers" --topic "tb-$tag" --partitions 1 /dev/null 2>/dev/null || true
"$bench" bare-latency "$brokers" "tb-$tag" "$(wc -l < "$run/latency.jsonl")" &
bare=$!
sleep 2
"$bin" produce "$run/latency.jsonl" --brokers "$brokers" --topic "tb-$tag" --rate "$rate"
wait $bare

echo "== latency at $rate records/s for $secs s"
"$bin" produce --brokers "$brokers" --topic "tl-$tag" --partitions 1 /dev/null 2>/dev/null || true
"$bin" daemon --brokers "$brokers" --group "gl-$tag" --input-topic "tl-$tag" --actions-topic "tla-$tag" --dlq-topic "tld-$tag" \
    --registry "$run/ports.csv" --admin 127.0.0.1:9897 --threads 2 2>"$run/daemon-latency.log" &
daemon=$!
until curl -sf http://127.0.0.1:9897/readyz >/dev/null; do sleep 0.2; done
"$bin" produce "$run/latency.jsonl" --brokers "$brokers" --topic "tl-$tag" --rate "$rate"
want=$(wc -l < "$run/latency.jsonl")
until [[ $(( $(metric anning_records_in_total) + $(metric anning_rejects_total) )) -ge $want ]]; do sleep 0.2; done
sleep 1
curl -s http://127.0.0.1:9897/metrics | grep -E '^anning_ingest_to_action_seconds|^anning_poll_to_action_seconds|^anning_actions_total'
kill -TERM $daemon; wait $daemon || true
