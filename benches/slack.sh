#!/usr/bin/env bash
# Slack acknowledgement benchmark driver, printed as a table (not a timed
# test): builds the release binary and the bench target
# (crates/cli/benches/slack_ack.rs), generates a ROWS-row demo store in a
# temporary TRADEBOX_HOME, then runs `tradebox serve` against the in-repo
# fake Slack server, over Socket Mode and then HTTP: two long jobs occupy
# both sandbox workers while ROUNDS bursts of COMMANDS concurrent slash
# commands are sent; prints ack latency p50/p99 (target: p99 <= 100 ms)
# and checks that every command was acknowledged while the long jobs still
# ran, and answered afterwards.
# Usage: benches/slack.sh [--json] [--commands N] [--rounds N] [--long-loop N]
#   env: ROWS (100000), BENCH_COMMANDS (50), BENCH_ROUNDS (3),
#        BENCH_LONG_LOOP (60000000), BENCH_RUNTIME (default:
#        target/tmp/bench-runtime, provisioned on first use, then reused)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-100000}

cargo build --release --locked --bin tradebox >&2
cargo bench --locked -p tradebox --bench slack_ack --no-run >&2
tb=$PWD/target/release/tradebox

home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
export TRADEBOX_HOME=$home

echo "== demo store: $ROWS rows over 365 days (seed 7)" >&2
"$tb" -q data demo --rows "$ROWS" --days 365 --seed 7 --end 2026-11-01T00:00:00Z >&2

BENCH_HOME=$home cargo bench --locked -p tradebox --bench slack_ack -- "$@"
