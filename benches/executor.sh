#!/usr/bin/env bash
# Executor benchmark driver, printed as tables (not a timed test): builds the
# release binary and the bench target (crates/cli/benches/executor.rs),
# generates a ROWS-row demo store in a temporary TRADEBOX_HOME, makes sure
# bubblewrap is installed (for the "cold run under bwrap" row; skipped, and
# said so, if it cannot be), then runs the bench: the query
# load_trades(days=7).groupby('exchange')['amount'].sum() through the warm
# pool vs a cold `python -c` vs that cold run under bwrap, throughput of
# `result = 1 + 1` on the default pool, zygote RSS and memory per job, and
# this host's speed (fork + exit of Python with the zygote's imports and
# memory, copy-on-write faults, a Python loop, a short piece of Python
# back to back and after idling) to compare runs of other days beside.
# Usage: benches/executor.sh [--json] [--warm N] [--cold N] [--jobs N] [--gap-ms N]
#   env: ROWS (1000000), BENCH_WARM (200), BENCH_COLD (20), BENCH_JOBS (1000),
#        BENCH_GAP_MS (20), BENCH_RUNTIME (default: target/tmp/bench-runtime,
#        provisioned on first use, ~20 s, then reused)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}

. benches/demo-home.sh executor

if ! command -v bwrap >/dev/null 2>&1; then
  echo "== installing bubblewrap (for the cold-under-bwrap row)" >&2
  if ! { apt-get update -qq && apt-get install -y -qq bubblewrap; } >&2; then
    echo "!! bubblewrap could not be installed: the bwrap row will be SKIPPED" >&2
  fi
fi

BENCH_HOME=$home cargo bench --locked -p tradebox --bench executor -- "$@"
