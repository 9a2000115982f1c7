#!/usr/bin/env bash
# Shared store benchmark driver, printed as tables (not a timed test):
# builds the release binary and the bench target (crates/cli/benches/
# replicas.rs), generates a ROWS-row demo home, then compares the home's
# SQLite file with a throwaway PostgreSQL cluster on loopback (started and
# removed by the bench; Debian's postgresql package must be installed, as
# scripts/test does): each store operation a command makes, the rate-limit
# check from 50 users at once, /runfunc and /listfuncs through a real
# `tradebox serve` on each (what PostgreSQL adds per command, target 1 ms),
# 1, 2 and 3 replicas sharing the PostgreSQL store (answers per second
# and CPU per answer), and the publication lag: an import through one of
# three replicas until all three answer with it (target 5 s).
# Usage: benches/replicas.sh [--n N] [--requests N] [--seconds S]
#   env: ROWS (100000), BENCH_N (2000), BENCH_REQUESTS (300), BENCH_SECONDS (8),
#        BENCH_RUNTIME (default: target/tmp/bench-runtime, reused)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-100000}

. benches/demo-home.sh replicas

BENCH_HOME=$home cargo bench --locked -p tradebox --bench replicas -- "$@"
