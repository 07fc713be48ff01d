#!/usr/bin/env bash
# For now: builds anning and replays the bundled samples with the default pack, printing the
# actions (JSON Lines on stdout) and the summary (stderr). The daemon issue makes this start
# a local broker and the daemon instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p anning-pipelines --bin anning
samples=fixtures/samples
exec ./target/release/anning replay "$samples/dodger.jsonl" "$samples/burst.jsonl" --registry "$samples/registry.csv" "$@"
