#!/usr/bin/env bash
# Everything CI checks: formatting, clippy with warnings denied, and every test, including
# the daemon's end-to-end tests against a real local broker (tansu, which the tests start
# through ops/broker.sh on ports 19092 and 19093; this script stops them at the end).
# Works on a bare machine of the project's kind (Rust toolchain, python3 with pip, apt);
# installs what it needs, idempotently: rustfmt, clippy, promtool (Debian `prometheus`),
# and the pinned broker wheel (ops/broker.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

need_component() {
    if ! cargo "$1" --version >/dev/null 2>&1; then
        echo "ops/test.sh: installing the $2 component" >&2
        rustup component add "$2"
    fi
}
need_component fmt rustfmt
need_component clippy clippy

if ! command -v promtool >/dev/null 2>&1; then
    echo "ops/test.sh: installing promtool (Debian package prometheus)" >&2
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

stop_brokers() {
    for port in 19092 19093; do
        ANNING_BROKER_PORT=$port ops/broker.sh stop >/dev/null 2>&1 || true
    done
}

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== the shipped pack: no warnings, every rule tested"
cargo run --quiet --locked -p anning-pipelines --bin anning -- rules check rules/packs/default.toml --deny-warnings
cargo run --quiet --locked -p anning-pipelines --bin anning -- rules test rules/packs/default.toml

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"; stop_brokers' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole run (cargo's last line is a crate's doc-tests, often 0).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "all tests: %d passed, %d failed\n", p, f; if (p == 0) exit 1 }' "$log"
