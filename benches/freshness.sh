#!/usr/bin/env bash
# Freshness benchmark (a table with targets, not a timed test): a ROWS-row
# cex-reporter database (the demo history in the original table) followed
# by the real `tradebox serve` (source poll 2 s, the default), a writer
# appending trades to it at 10/s for 60 s while 5 queries/s run through the
# HTTP API. Prints the lag from a trade's commit to its visibility in
# load_trades (p50/p95), the publication time per delta and per compaction,
# the zygotes' move to each version, the timed query's p50 while publishing
# against the same traffic once the writing has stopped (settled: the same
# data and probe answers, nothing published; the idle phase before the
# writing has probes that find nothing, so it is lighter), and, after that,
# a rebuild of the whole base (what a rebase compaction costs) with the
# queries around it. Needs python3 (standard
# library only).
# Usage: benches/freshness.sh [--quick]     (--quick: 20 s of writing)
#   env: ROWS (1000000), SECONDS_WRITING (60), BENCH_RUNTIME (reused runtime),
#        CONTROL=1 (the writer's trades go to a database nobody follows)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
SECONDS_WRITING=${SECONDS_WRITING:-60}
[ "${1:-}" = "--quick" ] && SECONDS_WRITING=20

cargo build --release --locked --bin tradebox >&2
tb=$PWD/target/release/tradebox
work=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "== source: $ROWS demo trades in an original trade_cache.db" >&2
TRADEBOX_HOME=$work/demo "$tb" -q data demo --rows "$ROWS" --days 365 --seed 7 --end 2026-11-01T00:00:00Z >&2
mkdir -p "$work/collector" "$work/home"
python3 - "$work/demo/tradebox.db" "$work/collector/trade_cache.db" <<'PY'
import sqlite3, sys
src = sqlite3.connect(sys.argv[1])
src.execute("VACUUM INTO ?", (sys.argv[2],))
out = sqlite3.connect(sys.argv[2])
for (name,) in out.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('trades', 'sqlite_sequence')").fetchall():
    out.execute(f'DROP TABLE "{name}"')
out.commit()
PY
rm -rf "$work/demo"
cat > "$work/home/tradebox.toml" <<TOML
[[data.sources]]
id = "cex"
kind = "cex-reporter"
path = "$work/collector/trade_cache.db"

[rate_limit]
executions = 100000
window_seconds = 1
TOML

echo "== serve: first sync of the source, then the pool" >&2
runtime=${BENCH_RUNTIME:-$PWD/target/tmp/bench-runtime}
token=freshness-bench-token-0123456789
TRADEBOX_HOME=$work/home TRADEBOX_RUNTIME=$runtime TRADEBOX_TOKEN=$token \
  "$tb" -v --log-format json serve --listen 127.0.0.1:0 --workers 2 \
  >"$work/serve.out" 2>"$work/serve.log" &
server=$!
for _ in $(seq 1 600); do
  grep -q "Console ready" "$work/serve.out" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  sleep 0.5
done
base=$(sed -n 's|^Console ready: \(http://[^/]*\)/.*|\1|p' "$work/serve.out")
[ -n "$base" ] || { echo "serve did not become ready" >&2; cat "$work/serve.log" >&2; exit 1; }

# CONTROL=1: the writer writes to a copy nobody follows (the same load on
# the machine, no publication): tells the cost of publishing from the
# cost of the writing itself.
db=$work/collector/trade_cache.db
if [ "${CONTROL:-0}" = 1 ]; then
  cp "$db" "$work/collector/unfollowed.db"
  db=$work/collector/unfollowed.db
  echo "== CONTROL: the writer writes to a database nobody follows" >&2
fi
echo "== 20 s idle queries, then $SECONDS_WRITING s of writing at 10 trades/s with 5 queries/s" >&2
python3 benches/freshness.py --base "$base" --token "$token" --db "$db" \
  --log "$work/serve.log" --seconds "$SECONDS_WRITING" \
  --rebase "TRADEBOX_HOME=$work/home TRADEBOX_RUNTIME=$runtime $tb -q data snapshot"
