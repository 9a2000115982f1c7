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

. benches/demo-home.sh slack_ack

BENCH_HOME=$home cargo bench --locked -p tradebox --bench slack_ack -- "$@"
