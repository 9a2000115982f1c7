#!/usr/bin/env bash
# HTTP API benchmark driver, printed as a table (not a timed test): builds
# the release binary and the bench target (crates/cli/benches/http.rs),
# generates a ROWS-row demo store in a temporary TRADEBOX_HOME, then
# measures POST /api/v1/run through the real console router against the
# executor alone (and the pipeline without HTTP) on one warm pool: p50/p95
# with one client, throughput with 16, for `result = 1 + 1` and
# load_trades(days=7).groupby('exchange')['amount'].sum(); then the
# pipeline's three store writes of one job alone, each timed, on the
# home's SQLite store and on a throwaway PostgreSQL cluster.
# Usage: benches/http.sh [--json] [--n N] [--jobs N] [--clients N] [--gap-ms N]
#   env: ROWS (1000000), BENCH_N (300), BENCH_JOBS (800), BENCH_CLIENTS (16), BENCH_GAP_MS (20),
#        BENCH_RUNTIME (default: target/tmp/bench-runtime, reused)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}

. benches/demo-home.sh http

BENCH_HOME=$home cargo bench --locked -p tradebox --bench http -- "$@"
