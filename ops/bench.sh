#!/usr/bin/env bash
# ops/bench.sh [N] — issue 8's figures side by side in one run, printed as a table (and kept in
# ops/.run/bench/table.md). Release builds (without the SQL feature, which replay and the
# daemon do not use); everything on 127.0.0.1; nothing else should run meanwhile.
#
#   1. N generated double11 records (default 2000000, seed 1), as JSON Lines and as Parquet.
#   2. Replay, JSON Lines: a bare serde_json parse of the file against `anning replay` (full
#      default pack) on 1 and 2 threads, and on 2 threads pinned to one core (`taskset`).
#   3. Replay, Parquet: `anning replay` against DuckDB (PyPI `duckdb`, installed into a venv
#      under ops/.run) computing only count(*) GROUP BY src, date_trunc('minute', ts).
#   4. Engine: a 1 h window sliding by 1 s against one sliding by 60 s; resident memory per
#      active key (ANNING_BENCH_KEYS senders, default 10000000).
#   5. Broker (skipped with ANNING_BENCH_BROKER=0, and then said so in the table): the daemon
#      against a bare rdkafka consumer on the same topic, and latency at ANNING_BENCH_RATE
#      records/s (default 100000) — ops/bench-daemon.sh.
#
# Environment: CARGO_TARGET_DIR (default target), ANNING_BENCH_KEYS, ANNING_BENCH_BROKER,
# ANNING_BENCH_RATE, ANNING_BENCH_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000000}"
nkeys="${ANNING_BENCH_KEYS:-10000000}"
broker="${ANNING_BENCH_BROKER:-1}"
run=ops/.run/bench
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$run"

duck="$run/duck"
if ! "$duck/bin/python" -c "import duckdb" 2>/dev/null; then
    echo "bench: installing duckdb into $duck" >&2
    python3 -m venv "$duck"
    "$duck/bin/pip" install --quiet "duckdb==2.0.0"
fi

cargo build --release --locked --no-default-features -p anning-pipelines -p anning-benches
bin="$target/release/anning"
bench="$target/release/anning-bench"

if [[ ! -s "$run/d-$n.parquet" ]]; then
    "$bin" gen double11 --records "$n" --seed 1 --out "$run/d-$n.jsonl" --registry "$run/ports.csv" -q
    "$bin" gen double11 --records "$n" --seed 1 --out "$run/d-$n.parquet" -q
fi
jsonl="$run/d-$n.jsonl"
parquet="$run/d-$n.parquet"

rows=()
row() { rows+=("| $1 | $2 | $3 |"); echo "  $1: $2" >&2; }
rate_of() { sed -n 's/.*(\([0-9]*\) records\/s).*/\1/p' | head -1; }
best=3 # runs of each throughput figure; the best is reported

echo "== replay, JSON Lines ($n records)" >&2
bare=0
for _ in $(seq $best); do
    r=$("$bench" bare-parse "$jsonl" | sed -n 's/.* = \([0-9]*\) records\/s/\1/p')
    (( r > bare )) && bare=$r
done
declare -A replay
for t in 1 2; do
    replay[$t]=0
    for _ in $(seq $best); do
        r=$("$bin" replay "$jsonl" --registry "$run/ports.csv" --threads "$t" --out /dev/null 2>&1 | rate_of)
        (( r > replay[$t] )) && replay[$t]=$r
    done
done
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
fmt() { python3 -c "import sys; v=float(sys.argv[1]); print(f'{v/1e6:.2f} M/s' if v >= 1e6 else f'{v/1e3:.0f} k/s')" "$1"; }
row "bare serde_json parse of the JSON Lines file (1 thread)" "$(fmt "$bare")" "floor"
row "\`anning replay\` JSON Lines, 1 thread" "$(fmt "${replay[1]}")" ""
row "\`anning replay\` JSON Lines, 2 threads" "$(fmt "${replay[2]}")" "≥ 3 M/s"
row "replay (2 threads) ÷ bare parse" "$(ratio "${replay[2]}" "$bare")" "≥ 0.6"
# `--threads` counts shard workers; the reader is a thread of its own, so `--threads 1`
# already keeps both cores busy. One core against two: the same run pinned to CPU 0.
one=0
if command -v taskset >/dev/null; then
    for _ in $(seq $best); do
        r=$(taskset -c 0 "$bin" replay "$jsonl" --registry "$run/ports.csv" --threads 2 --out /dev/null 2>&1 | rate_of)
        (( r > one )) && one=$r
    done
fi
row "2 threads ÷ 1 thread (\`--threads\`: shard workers, beside the reader)" "$(ratio "${replay[2]}" "${replay[1]}")" ""
if (( one > 0 )); then
    row "\`anning replay\` JSON Lines, 2 threads on one core (\`taskset -c 0\`)" "$(fmt "$one")" ""
    row "two cores ÷ one core" "$(ratio "${replay[2]}" "$one")" "≥ 1.7"
else
    row "two cores ÷ one core" "skipped (no taskset)" "≥ 1.7"
fi

echo "== replay, Parquet" >&2
pq=0
for _ in $(seq $best); do
    r=$("$bin" replay "$parquet" --registry "$run/ports.csv" --threads 2 --out /dev/null 2>&1 | rate_of)
    (( r > pq )) && pq=$r
done
dk=$("$duck/bin/python" - "$parquet" "$best" <<'PY'
import sys, time, duckdb
path, runs = sys.argv[1], int(sys.argv[2])
con = duckdb.connect()
n = con.execute(f"select count(*) from read_parquet('{path}')").fetchone()[0]
best = 0.0
for _ in range(runs):
    t = time.perf_counter()
    groups = con.execute(
        f"select src, date_trunc('minute', epoch_ms(ts)) as m, count(*) from read_parquet('{path}') group by all"
    ).fetchall()
    best = max(best, n / (time.perf_counter() - t))
print(f"{best:.0f} {len(groups)}")
PY
)
row "\`anning replay\` Parquet, 2 threads (full pack)" "$(fmt "$pq")" "≥ 10 M/s"
row "DuckDB count(*) GROUP BY src, minute on the same file (${dk#* } groups)" "$(fmt "${dk%% *}")" ""
row "replay Parquet ÷ DuckDB" "$(ratio "$pq" "${dk%% *}")" "> 1"

echo "== engine" >&2
sl=$("$bench" sliding 4000000 200000 3 | tee /dev/stderr)
row "1 h window sliding by 1 s ÷ by 60 s (4 M records, 200 k keys, 3 h)" "$(echo "$sl" | sed -n 's/.*: \([0-9.]*\)$/\1/p')" "≥ 0.8"
ks=$("$bench" keys "$nkeys" | tee /dev/stderr)
row "resident memory per active sender, full pack ($nkeys senders)" "$(echo "$ks" | sed -n 's/.*: \([0-9]*\) B per sender.*/\1 B/p')" "≤ 150 B"
row "10 M active senders" "$(echo "$ks" | sed -n 's/.*≈ \([0-9.]*\) GiB.*/\1 GiB/p')" "≤ 2 GiB"

if [[ "$broker" != 0 ]]; then
    echo "== broker" >&2
    out=$(ANNING_BENCH_RATE="${ANNING_BENCH_RATE:-100000}" ops/bench-daemon.sh "$n" | tee /dev/stderr)
    bc=$(echo "$out" | sed -n 's/^bare-consume:.*: \([0-9]*\) messages\/s/\1/p')
    dm=$(echo "$out" | sed -n 's/^daemon:.*: \([0-9]*\) records\/s/\1/p')
    p99=$(echo "$out" | sed -n 's/^anning_ingest_to_action_seconds{quantile="0.99"} \(.*\)/\1/p')
    p50=$(echo "$out" | sed -n 's/^anning_ingest_to_action_seconds{quantile="0.5"} \(.*\)/\1/p')
    own50=$(echo "$out" | sed -n 's/^anning_poll_to_action_seconds{quantile="0.5"} \(.*\)/\1/p')
    own99=$(echo "$out" | sed -n 's/^anning_poll_to_action_seconds{quantile="0.99"} \(.*\)/\1/p')
    acts=$(echo "$out" | sed -n 's/^anning_ingest_to_action_seconds_count \(.*\)/\1/p')
    bare99=$(echo "$out" | sed -n 's/^bare-latency:.* p99 \([0-9]*\) .*/\1/p')
    row "bare rdkafka consumer, same topic" "$(fmt "$bc")" "floor"
    row "\`anning daemon\`, 2 threads" "$(fmt "$dm")" "≥ 1 M/s"
    row "daemon ÷ bare consumer" "$(ratio "$dm" "$bc")" "≥ 0.9"
    row "p99 produce-to-consume, the broker alone, at ${ANNING_BENCH_RATE:-100000} records/s" "${bare99} ms" "floor"
    row "p50 produce-to-action at ${ANNING_BENCH_RATE:-100000} records/s" "$(python3 -c "print(f'{float(\"$p50\")*1000:.0f} ms')")" ""
    row "p99 produce-to-action at ${ANNING_BENCH_RATE:-100000} records/s ($acts actions)" "$(python3 -c "print(f'{float(\"$p99\")*1000:.0f} ms')")" "≤ 10 ms"
    row "the daemon's own part (poll to acknowledged action), p50 / p99" "$(python3 -c "print(f'{float(\"$own50\")*1000:.1f} / {float(\"$own99\")*1000:.1f} ms')")" ""
else
    row "broker rows" "skipped (ANNING_BENCH_BROKER=0)" ""
fi

{
    echo "$(date -u +%F), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $n double11 records (seed 1), best of $best"
    echo
    echo "| measure | figure | target |"
    echo "|---|---|---|"
    printf '%s\n' "${rows[@]}"
} | tee "$run/table.md"
