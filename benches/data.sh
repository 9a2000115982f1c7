#!/usr/bin/env bash
# Data layer benchmark, printed as tables (not a timed test):
#   1. demo generation and snapshot export of a ROWS-row store (export target: <= 3 s);
#   2. in one warm Python process, load_trades(days=7) and load_trades(days=None)
#      from the snapshot against pandas read_sql of the SQLite store (targets:
#      p50 <= 5 ms and <= 50 ms, at least 50x faster than read_sql).
# Usage: benches/data.sh            (ROWS=1000000 EXPORTS=5 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
EXPORTS=${EXPORTS:-5}

scripts/python-env
cargo build --release --locked --bin tradebox >&2
tb=$PWD/target/release/tradebox
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
export TRADEBOX_HOME=$home

ms() { echo $(( $(date +%s%N) / 1000000 )); }

echo "== demo store: $ROWS rows over 365 days (seed 7)"
t0=$(ms)
"$tb" -q data demo --rows "$ROWS" --days 365 --seed 7 --end 2026-11-01T00:00:00Z
echo "demo generation + first export: $(( $(ms) - t0 )) ms (whole command)"

echo
echo "== snapshot export ($EXPORTS runs of \`tradebox data snapshot\`, whole command)"
times=()
for _ in $(seq "$EXPORTS"); do
  t0=$(ms)
  "$tb" -q data snapshot >/dev/null
  times+=($(( $(ms) - t0 )))
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (EXPORTS + 1) / 2 ))p")
printf '%-22s %s\n' "runs (ms, sorted)" "$sorted"
printf '%-22s %s ms (target 3000 ms: %s)\n' "median" "$median" "$([ "$median" -le 3000 ] && echo met || echo MISSED)"
printf '%-22s %s\n' "trades.arrow size" "$(du -h "$home/snapshot/current/trades.arrow" | cut -f1)"

echo
echo "== load_trades from the snapshot vs pandas read_sql (warm process)"
.venv/bin/python benches/load_trades.py --snapshot "$home/snapshot" --db "$home/tradebox.db"
