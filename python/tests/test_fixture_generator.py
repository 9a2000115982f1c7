"""The repository's fixture (tests/fixtures/cex-reporter): its generator
reproduces it exactly, it has the original cex-reporter schema and formats,
and expected.json agrees with what SQLite reads from trade_cache.db."""

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests/fixtures/cex-reporter"
GENERATOR = REPO / "tests/fixtures/generate.py"

# The original `trades` table: (name, type, not null, primary key).
COLUMNS = [
    ("id", "INTEGER", 0, 1), ("trade_id", "TEXT", 0, 0), ("exchange", "TEXT", 1, 0),
    ("account_name", "TEXT", 1, 0), ("timestamp", "TEXT", 1, 0), ("symbol", "TEXT", 1, 0),
    ("side", "TEXT", 1, 0), ("amount", "REAL", 1, 0), ("price", "REAL", 1, 0),
    ("fee", "REAL", 1, 0), ("fee_currency", "TEXT", 0, 0), ("cached_at", "TEXT", 1, 0),
]
UNIQUE_KEY = ["exchange", "account_name", "trade_id", "timestamp", "symbol", "side", "amount",
              "price"]
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?")


def connect(path: Path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def table_state(path: Path):
    """Everything of trade_cache.db that the format fixes: schema objects,
    every row with its storage classes, and the AUTOINCREMENT counter."""
    con = connect(path)
    try:
        master = con.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        rows = con.execute(
            "SELECT *, typeof(trade_id), typeof(amount), typeof(price), typeof(fee), "
            "typeof(fee_currency) FROM trades ORDER BY id").fetchall()
        sequence = con.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
    finally:
        con.close()
    return master, rows, sequence


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fixture") / "cex-reporter"
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(out)],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_generator_reproduces_the_committed_fixture(regenerated):
    committed = sorted(p.relative_to(FIXTURE) for p in FIXTURE.rglob("*") if p.is_file())
    fresh = sorted(p.relative_to(regenerated) for p in regenerated.rglob("*") if p.is_file())
    assert fresh == committed
    for rel in committed:
        if rel.suffix == ".json":
            assert (regenerated / rel).read_bytes() == (FIXTURE / rel).read_bytes(), rel
    assert table_state(regenerated / "trade_cache.db") == table_state(FIXTURE / "trade_cache.db")


def test_the_database_has_the_original_schema():
    path = FIXTURE / "trade_cache.db"
    assert path.stat().st_size < 500 * 1024
    con = connect(path)
    try:
        columns = [(name, type_, notnull, pk)
                   for _, name, type_, notnull, _, pk in con.execute("PRAGMA table_info(trades)")]
        assert columns == COLUMNS
        unique = [name for _, name, is_unique, origin, _ in con.execute("PRAGMA index_list(trades)")
                  if is_unique and origin == "u"]
        assert len(unique) == 1
        key = [name for _, _, name in con.execute(f"PRAGMA index_info({unique[0]})")]
        assert key == UNIQUE_KEY
        indexes = {name: [c for _, _, c in con.execute(f"PRAGMA index_info({name})")]
                   for (name,) in con.execute(
                       "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
        assert indexes == {"idx_timestamp": ["timestamp"],
                           "idx_exchange_account": ["exchange", "account_name"]}
        assert "AUTOINCREMENT" in con.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'trades'").fetchone()[0]
        for ts, cached in con.execute("SELECT timestamp, cached_at FROM trades"):
            assert TIMESTAMP.fullmatch(ts) and not ts.endswith(".000000"), ts
            assert TIMESTAMP.fullmatch(cached) and cached >= ts, (ts, cached)
        assert con.execute("SELECT count(*) FROM trades WHERE side NOT IN ('buy', 'sell')"
                           ).fetchone()[0] == 0
        # Stored in the order a poller caches them, not in time order.
        ids_by_time = [i for (i,) in con.execute("SELECT id FROM trades ORDER BY timestamp, id")]
        assert ids_by_time != sorted(ids_by_time)
    finally:
        con.close()


def test_snapshot_files_have_the_original_layout():
    files = sorted((FIXTURE / "snapshots").glob("snapshot_*.json"))
    expected = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))
    assert [f.stem.removeprefix("snapshot_") for f in files] == expected["snapshots"]["dates"]
    shapes = set()
    for f in files:
        text = f.read_text(encoding="utf-8")
        snap = json.loads(text)
        assert list(snap) == ["date", "timestamp", "balances"]
        assert f.name == f"snapshot_{snap['date']}.json"
        assert TIMESTAMP.fullmatch(snap["timestamp"]) and snap["timestamp"].startswith(snap["date"])
        assert text == json.dumps(snap, indent=2), f"{f.name}: two-space indent, no final newline"
        values = list(snap["balances"].values())
        if all(isinstance(v, dict) for v in values):
            shapes.add("nested")
            assert all(isinstance(x, float) for v in values for x in v.values())
        else:
            shapes.add("flat")
            assert all(isinstance(v, float) for v in values)
    assert shapes == {"flat", "nested"}


def test_expected_agrees_with_sqlite():
    """expected.json (plain Python in the generator) against SQL on the file."""
    t = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))["trades"]
    con = connect(FIXTURE / "trade_cache.db")
    try:
        one = lambda sql: con.execute(sql).fetchone()
        assert one("SELECT count(*) FROM trades")[0] == t["count"]
        assert one("SELECT min(timestamp), max(timestamp) FROM trades") == (
            t["first_timestamp"], t["last_timestamp"])
        assert one("SELECT count(DISTINCT timestamp) FROM trades")[0] == t["distinct_timestamps"]
        for column, key in (("exchange", "by_exchange"), ("account_name", "by_account"),
                            ("side", "by_side"), ("symbol", "by_symbol")):
            got = {k: (n, s) for k, n, s in con.execute(
                f"SELECT {column}, count(*), sum(amount) FROM trades GROUP BY 1")}
            assert {k: n for k, (n, _) in got.items()} == {
                k: v["count"] for k, v in t[key].items()}, key
            assert {k: s for k, (_, s) in got.items()} == pytest.approx(
                {k: v["amount"] for k, v in t[key].items()}, rel=1e-12), key
        fees = {c: (n, f) for c, n, f in con.execute(
            "SELECT fee_currency, count(*), sum(fee) FROM trades GROUP BY 1")}
        assert {e["currency"]: e["count"] for e in t["fees_by_currency"]} == {
            c: n for c, (n, _) in fees.items()}
        for e in t["fees_by_currency"]:
            assert fees[e["currency"]][1] == pytest.approx(e["fee"], rel=1e-12, abs=1e-12)
        assert one("SELECT count(*) FROM trades WHERE trade_id IS NULL")[0] == t["null_trade_id"]
        assert one("SELECT count(*) FROM trades WHERE fee_currency IS NULL")[0] == \
            t["null_fee_currency"]
        assert len({f["currency"] for f in t["fees_by_currency"]}) >= 4
        assert one("SELECT min(amount), max(amount) FROM trades") == (
            t["min_amount"], t["max_amount"])
        week = t["last_7_days"]
        assert one("SELECT count(*) FROM trades WHERE timestamp >= '%s'" % week["since"])[0] == \
            week["count"]
        # Several trades share a timestamp; the shape the tests rely on.
        assert t["distinct_timestamps"] < t["count"]
        assert len(t["exchanges"]) == 5 and len(t["accounts"]) == 5 and len(t["symbols"]) >= 2
        assert any(not a.isascii() for a in t["accounts"])
    finally:
        con.close()
