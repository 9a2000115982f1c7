#!/usr/bin/env bash
# Soak under hostile load, printed as a table (not a timed test): builds the
# release binary and the bench target (crates/cli/benches/soak.rs),
# generates a ROWS-row demo store in a temporary TRADEBOX_HOME, then runs
# the real `tradebox serve` (default pool, validator off) with the in-repo
# fake Slack over Socket Mode: capacity measured first, then normal traffic
# at 70% of it over HTTP and Slack, clean and then beside a hostile user.
# Prints success rate, p50/p99 against the clean run, zygotes replaced, the
# supervisor's memory and descriptors, audit rows, leftover processes, and
# pauses of a probe thread in the load generator (a host pause, not tradebox).
# Usage: benches/soak.sh [--quick] [--minutes M] [--rate N] [--hostile NAME,...] [--json]
#   --quick: 60 s in all (default: 10 minutes); --hostile "output flood": only those
#   hostile jobs (by the names the report prints), to see what one of them costs
#   env: ROWS (1000000), SOAK_MINUTES (10), BENCH_RUNTIME (default:
#        target/tmp/bench-runtime, provisioned on first use, then reused)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}

. benches/demo-home.sh soak

BENCH_HOME=$home cargo bench --locked -p tradebox --bench soak -- "$@"
