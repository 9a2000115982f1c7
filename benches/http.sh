#!/usr/bin/env bash
# HTTP API benchmark driver, printed as a table (not a timed test): builds
# the release binary and the bench target (crates/cli/benches/http.rs),
# generates a ROWS-row demo store in a temporary TRADEBOX_HOME, then
# measures POST /api/v1/run through the real console router against the
# executor alone (and the pipeline without HTTP) on one warm pool: p50/p95
# with one client, throughput with 16, for `result = 1 + 1` and
# load_trades(days=7).groupby('exchange')['amount'].sum().
# Usage: benches/http.sh [--json] [--n N] [--jobs N] [--clients N] [--gap-ms N]
#   env: ROWS (1000000), BENCH_N (300), BENCH_JOBS (800), BENCH_CLIENTS (16), BENCH_GAP_MS (20),
#        BENCH_RUNTIME (default: target/tmp/bench-runtime, reused)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}

cargo build --release --locked --bin tradebox >&2
cargo bench --locked -p tradebox --bench http --no-run >&2
tb=$PWD/target/release/tradebox

home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
export TRADEBOX_HOME=$home

echo "== demo store: $ROWS rows over 365 days (seed 7)" >&2
"$tb" -q data demo --rows "$ROWS" --days 365 --seed 7 --end 2026-11-01T00:00:00Z >&2

BENCH_HOME=$home cargo bench --locked -p tradebox --bench http -- "$@"
