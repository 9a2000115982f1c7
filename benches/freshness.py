"""Freshness benchmark client (run by benches/freshness.sh against a live
`tradebox serve` that follows a cex-reporter source): a writer appends
trades to the source database at a steady rate, committing each, while a
prober counts the writer's trades load_trades sees, through POST
/api/v1/run, while a typical query (whose answer does not change) is timed
beside it, idle and busy. Prints lag (commit to
visible in load_trades), query latency while publishing vs idle, and the
publication times the server logged. Standard library only."""

import argparse
import json
import sqlite3
import statistics
import subprocess
import threading
import time
import urllib.request
from datetime import datetime, timezone

# The probe: how many of the writer's trades load_trades sees.
PROBE = "result = len(load_trades(days=2, exchange='benchx'))"
# The query timed idle and busy: a week of history whose answer does not
# change while the writer writes (the probe's answer grows with each trade,
# so its own time is no measure of the publishing's cost).
QUERY = ("result = len(load_trades(since='2026-10-25', until='2026-11-01')"
         ".groupby('exchange')['amount'].sum())")


def run(base, token, code):
    req = urllib.request.Request(
        base + "/api/v1/run", data=json.dumps({"code": code}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def probe_loop(base, token, rate, seconds, out, code=PROBE):
    """Runs `code` `rate` times a second for `seconds`; out: (start, end, result)."""
    gap = 1 / rate
    end = time.monotonic() + seconds
    nxt = time.monotonic()
    while time.monotonic() < end:
        start = time.monotonic()
        v = run(base, token, code)
        if not v.get("success"):
            raise SystemExit(f"query failed: {v}")
        out.append((start, time.monotonic(), int(v["result"])))
        nxt += gap
        time.sleep(max(0.0, nxt - time.monotonic()))


def probes_and_queries(a, seconds, probes, queries):
    """The probe at 3/5 of the query rate and the timed query at 2/5, together."""
    t = threading.Thread(target=probe_loop,
                         args=(a.base, a.token, a.query_rate * 0.6, seconds, probes))
    t.start()
    probe_loop(a.base, a.token, a.query_rate * 0.4, seconds, queries, QUERY)
    t.join()


def writer_loop(db, rate, seconds, commits):
    conn = sqlite3.connect(db, timeout=10)
    gap = 1 / rate
    end = time.monotonic() + seconds
    nxt = time.monotonic()
    i = 0
    while time.monotonic() < end:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
        conn.execute(
            "INSERT INTO trades (trade_id, exchange, account_name, timestamp, symbol, side,"
            " amount, price, fee, fee_currency, cached_at)"
            " VALUES (?, 'benchx', 'MM1', ?, 'ALKIMI', 'buy', 1.0, 0.05, 0.0, 'USD', ?)",
            (f"fresh-{i}", now, now))
        conn.commit()
        commits.append(time.monotonic())
        i += 1
        nxt += gap
        time.sleep(max(0.0, nxt - time.monotonic()))
    conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--log", required=True, help="the server's stderr (JSON log lines)")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--write-rate", type=float, default=10)
    ap.add_argument("--query-rate", type=float, default=5)
    ap.add_argument("--idle-seconds", type=float, default=20)
    ap.add_argument("--rebase", help="a shell command that rebuilds the base (a full export) "
                    "while queries go on, run after the writing")
    a = ap.parse_args()

    run(a.base, a.token, QUERY)  # warm
    idle = []
    probes_and_queries(a, a.idle_seconds, [], idle)
    busy, busy_queries, commits = [], [], []
    w = threading.Thread(target=writer_loop, args=(a.db, a.write_rate, a.seconds, commits))
    w.start()
    probes_and_queries(a, a.seconds + 8, busy, busy_queries)
    w.join()
    # Settled: the same data and the same queries as at the end of the
    # writing, with nothing published any more.
    settled = []
    probes_and_queries(a, a.idle_seconds, [], settled)
    rebase_ms, during = None, []
    if a.rebase:
        t = threading.Thread(target=probes_and_queries, args=(a, 8, [], during))
        t.start()
        time.sleep(1)
        started = time.monotonic()
        subprocess.run(a.rebase, shell=True, check=True, stdout=subprocess.DEVNULL)
        rebase_ms = (time.monotonic() - started) * 1000
        t.join()

    # Lag of trade k: from its commit to the end of the first probe that saw it.
    lags, missing = [], 0
    for k, committed in enumerate(commits):
        seen = next((end for start, end, n in busy if n >= k + 1 and end > committed), None)
        if seen is None:
            missing += 1
        else:
            lags.append(seen - committed)
    deltas, fulls, merges, compactions, moves = [], [], [], [], []
    with open(a.log) as f:
        for line in f:
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                continue
            message = fields.get("message", "")
            if message == "snapshot published" and "publish_ms" in fields:
                kind = fields.get("written", "")
                bucket = deltas if kind.startswith("delta") else (
                    merges if kind.startswith("deltas merged") else fulls)
                bucket.append(int(fields["publish_ms"]))
            elif message == "snapshot compacted":
                compactions.append(int(fields["ms"]))
            elif message == "zygote moved to the new snapshot":
                moves.append(int(fields["ms"]))
    idle_ms = [(e - s) * 1000 for s, e, _ in idle]
    busy_ms = [(e - s) * 1000 for s, e, _ in busy_queries]
    settled_ms = [(e - s) * 1000 for s, e, _ in settled]
    idle_p50, busy_p50 = statistics.median(idle_ms), statistics.median(busy_ms)
    settled_p50 = statistics.median(settled_ms)
    p95 = pct(lags, 95)
    rows = [
        ("trades committed / seen in load_trades", f"{len(commits)} / {len(commits) - missing}",
         "all", "met" if missing == 0 else "MISSED"),
        ("lag commit -> visible, p50", f"{pct(lags, 50):.2f} s", "-", ""),
        ("lag commit -> visible, p95", f"{p95:.2f} s", "<= 5 s",
         "met" if p95 <= 5 else "MISSED"),
        ("lag commit -> visible, max", f"{max(lags, default=float('nan')):.2f} s", "-", ""),
        ("publications: deltas / merged / full", f"{len(deltas)} / {len(merges)} / {len(fulls)}",
         "-", ""),
        ("publication time per delta, p50", f"{pct(deltas, 50):.0f} ms", "<= 200 ms",
         "met" if deltas and pct(deltas, 50) <= 200 else "MISSED"),
        ("publication time per delta, max", f"{max(deltas, default=0)} ms", "-", ""),
        ("compactions in the background, p50",
         f"{len(compactions)}, {pct(compactions, 50):.0f} ms" if compactions else "none", "-", ""),
        ("zygote moving to a new version, p50 / max",
         f"{pct(moves, 50):.0f} / {max(moves, default=0)} ms", "-", ""),
        ("query p50, idle (before the writing)", f"{idle_p50:.1f} ms", "-", ""),
        ("query p50, while writing and publishing", f"{busy_p50:.1f} ms",
         "within 10% of settled", "met" if busy_p50 <= settled_p50 * 1.1 else "MISSED"),
        ("query p50, settled (after: same data and probes)", f"{settled_p50:.1f} ms", "-", ""),
        ("query p95, idle / busy / settled",
         f"{pct(idle_ms, 95):.1f} / {pct(busy_ms, 95):.1f} / {pct(settled_ms, 95):.1f} ms", "-", ""),
    ]
    if rebase_ms is not None:
        during_ms = [(e - s) * 1000 for s, e, _ in during]
        rows += [
            ("rebase: the base rebuilt whole (off the query path)", f"{rebase_ms:.0f} ms", "-", ""),
            ("query p50 / max around the rebase and the roll",
             f"{pct(during_ms, 50):.1f} / {max(during_ms, default=0):.1f} ms", "-", ""),
        ]
    w0 = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{w0}}  {'value':>14}  {'target':>18}")
    for name, value, target, verdict in rows:
        print(f"{name:<{w0}}  {value:>14}  {target:>18}  {verdict}")
    print(f"\nwriter {a.write_rate:g} trades/s for {a.seconds:g} s (a commit each); "
          f"{a.query_rate:g} queries/s: the probe ({0.6 * a.query_rate:g}/s) and the timed "
          f"query ({0.4 * a.query_rate:g}/s); lag measured to the end of the first probe that "
          f"saw the trade (resolution {1 / (0.6 * a.query_rate):.2f} s)")


if __name__ == "__main__":
    main()
