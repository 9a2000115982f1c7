"""Benchmark load_trades on the Arrow snapshot against the original design's
pd.read_sql on the SQLite store, in one warm process.

    .venv/bin/python benches/load_trades.py --snapshot $TRADEBOX_HOME/snapshot \\
        --db $TRADEBOX_HOME/tradebox.db [--repeat 30] [--sql-all-repeat 5] [--json]

Cases: days=7 and days=None, counted back from the newest trade (as_of
'latest'). Each side is run twice untimed, then timed with time.perf_counter;
both sides must return the same number of rows. Targets (p50, 1M rows):
days=7 <= 5 ms, days=None <= 50 ms.
"""

import argparse
import json
import sqlite3
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from tradebox.data import COLUMNS, open_snapshot  # noqa: E402

TARGET_P50_MS = {"days=7": 5.0, "days=None": 50.0}
SELECT = f"SELECT {', '.join(COLUMNS)} FROM trades"


def read_sql(con, cutoff):
    """The original way: the store's trades since `cutoff` (naive ISO text)."""
    if cutoff is None:
        df = pd.read_sql(SELECT, con)
    else:
        df = pd.read_sql(SELECT + " WHERE timestamp >= ?", con, params=(cutoff,))
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
    return df


def timed(fn, repeat, warmups=2):
    """(rows returned, p50 ms, p95 ms) over `repeat` timed calls."""
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        rows = len(fn())
        times.append((time.perf_counter() - start) * 1000)
    return rows, float(np.percentile(times, 50)), float(np.percentile(times, 95))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snapshot", required=True, help="snapshot root or version dir")
    parser.add_argument("--db", required=True, help="the SQLite store (trades table)")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per case (30)")
    parser.add_argument("--sql-all-repeat", type=int, default=5,
                        help="timed runs of read_sql for days=None, which is slow (5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    snap = open_snapshot(args.snapshot, as_of="latest")
    last_us = snap.manifest["last_trade_us"]
    if last_us is None:
        parser.error("the snapshot has no trades")
    newest = datetime(1970, 1, 1) + timedelta(microseconds=last_us)  # naive UTC, like the store
    con = sqlite3.connect(f"file:{Path(args.db).resolve()}?mode=ro", uri=True)

    cases = []
    for case, days in (("days=7", 7), ("days=None", None)):
        cutoff = None if days is None else (newest - timedelta(days=days)).isoformat()
        rows, p50, p95 = timed(lambda: snap.load_trades(days=days), args.repeat)
        sql_repeat = args.repeat if days is not None else min(args.repeat, args.sql_all_repeat)
        sql_rows, sql_p50, sql_p95 = timed(lambda: read_sql(con, cutoff), sql_repeat)
        assert rows == sql_rows, f"{case}: snapshot returned {rows} rows, read_sql {sql_rows}"
        cases.append({
            "case": case, "rows": rows,
            "snapshot": {"p50_ms": p50, "p95_ms": p95, "runs": args.repeat},
            "read_sql": {"p50_ms": sql_p50, "p95_ms": sql_p95, "runs": sql_repeat},
            "ratio": sql_p50 / p50,
            "target_p50_ms": TARGET_P50_MS[case], "meets_target": p50 <= TARGET_P50_MS[case],
        })
    con.close()

    if args.json:
        print(json.dumps({"snapshot": str(snap.path), "db": args.db, "trades": len(snap),
                          "as_of": newest.replace(tzinfo=timezone.utc).isoformat(),
                          "cases": cases}, indent=2))
        return
    print(f"snapshot {snap.path} ({len(snap):,} trades), db {args.db}, "
          f"as_of latest = {newest.isoformat()}Z")
    header = ("case", "rows", "snap p50 ms", "snap p95 ms", "sql p50 ms", "sql p95 ms",
              "ratio", "target p50 ms", "meets")
    lines = [header] + [(
        c["case"], f"{c['rows']:,}", f"{c['snapshot']['p50_ms']:.2f}",
        f"{c['snapshot']['p95_ms']:.2f}", f"{c['read_sql']['p50_ms']:.1f}",
        f"{c['read_sql']['p95_ms']:.1f}", f"{c['ratio']:.0f}x",
        f"{c['target_p50_ms']:.0f}", "yes" if c["meets_target"] else "NO") for c in cases]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(line, widths))))


if __name__ == "__main__":
    main()
