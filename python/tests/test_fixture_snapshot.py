"""The reader against the real fixture, as exported by the tradebox binary.

Every expected figure is computed here from trade_cache.db (sqlite3) or the
snapshot JSON files, never hard-coded.
"""

import json
import os
import shutil
import sqlite3
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pytest

from tradebox.data import COLUMNS, open_snapshot

UTC = timezone.utc


def parse_utc(text: str) -> datetime:
    """A naive-UTC ISO timestamp of the original store, as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="session")
def db(fixture_dir):
    con = sqlite3.connect(f"file:{fixture_dir / 'trade_cache.db'}?mode=ro", uri=True)
    yield con
    con.close()


@pytest.fixture(scope="session")
def db_times(db) -> list[datetime]:
    return [parse_utc(t) for (t,) in db.execute("SELECT timestamp FROM trades")]


@pytest.fixture(scope="session")
def snap(snapshot_root):
    return open_snapshot(snapshot_root, as_of="latest")


@pytest.fixture(scope="session")
def balance_files(fixture_dir) -> dict[date, dict]:
    """{date: snapshot dict} read straight from the fixture's JSON files."""
    files = (fixture_dir / "snapshots").glob("snapshot_*.json")
    return {date.fromisoformat(p.stem.removeprefix("snapshot_")): json.loads(p.read_text())
            for p in files}


def scalar(db, query, *args):
    return db.execute(query, args).fetchone()[0]


def test_all_history_has_every_row(snap, db):
    assert len(snap.load_trades(days=None)) == scalar(db, "SELECT COUNT(*) FROM trades")


def test_columns_dtypes_and_order(snap):
    df = snap.load_trades(days=None)
    assert list(df.columns) == list(COLUMNS)
    assert isinstance(df.index, pd.RangeIndex)
    assert isinstance(df["timestamp"].dtype, pd.DatetimeTZDtype)
    assert str(df["timestamp"].dt.tz) == "UTC"
    assert df["timestamp"].is_monotonic_increasing
    for col in ("amount", "price", "fee"):
        assert df[col].dtype == "float64"
    for col in ("exchange", "account_name", "symbol", "side", "fee_currency", "trade_id"):
        assert pd.api.types.is_string_dtype(df[col]), col
        assert not isinstance(df[col].dtype, pd.CategoricalDtype), col


def test_rows_equal_the_store(snap, db):
    df = snap.load_trades(days=None)
    epoch = pd.Timestamp(0, tz="UTC")
    got = Counter(zip(
        ((df["timestamp"] - epoch) // pd.Timedelta(microseconds=1)).tolist(),
        *(df[c].tolist() for c in COLUMNS[1:])))
    query = f"SELECT {', '.join(COLUMNS)} FROM trades"
    epoch_dt = datetime(1970, 1, 1, tzinfo=UTC)
    want = Counter(((parse_utc(r[0]) - epoch_dt) // timedelta(microseconds=1), *r[1:])
                   for r in db.execute(query))
    assert got == want


def test_counts_per_exchange_and_account(snap, db):
    df = snap.load_trades(days=None)
    assert df["exchange"].value_counts().to_dict() == dict(
        db.execute("SELECT exchange, COUNT(*) FROM trades GROUP BY exchange"))
    by_account = df.groupby(["exchange", "account_name"]).size().to_dict()
    assert by_account == {(e, a): n for e, a, n in db.execute(
        "SELECT exchange, account_name, COUNT(*) FROM trades GROUP BY 1, 2")}


def test_total_amount_per_side(snap, db):
    got = snap.load_trades(days=None).groupby("side")["amount"].sum().to_dict()
    want = dict(db.execute("SELECT side, SUM(amount) FROM trades GROUP BY side"))
    assert got == pytest.approx(want, rel=1e-12)


def test_last_7_days_from_latest_trade(snap, db_times):
    newest = max(db_times)
    want = sum(newest - timedelta(days=7) <= t <= newest for t in db_times)
    df = snap.load_trades(days=7)
    assert len(df) == want
    assert df["timestamp"].iloc[-1] == pd.Timestamp(newest)


def test_filters_are_case_insensitive(snap, db):
    count = lambda where, *args: scalar(db, f"SELECT COUNT(*) FROM trades WHERE {where}", *args)
    assert len(snap.load_trades(days=None, exchange="MEXC")) == count("lower(exchange) = 'mexc'")
    assert len(snap.load_trades(days=None, exchange=["MEXC", "GateIO"])) == count(
        "lower(exchange) IN ('mexc', 'gateio')")
    assert len(snap.load_trades(days=None, account=["mm1", "Tm"])) == count(
        "lower(account_name) IN ('mm1', 'tm')")
    assert len(snap.load_trades(days=None, asset="alkimi")) == count("lower(symbol) = 'alkimi'")
    assert len(snap.load_trades(days=None, exchange="mexc", account="TM1")) == count(
        "lower(exchange) = 'mexc' AND lower(account_name) = 'tm1'")
    none = snap.load_trades(days=None, exchange="no-such-exchange")
    assert len(none) == 0 and list(none.columns) == list(COLUMNS)


def test_since_until(snap, db_times):
    since, until = datetime(2025, 10, 20, tzinfo=UTC), datetime(2025, 11, 1, tzinfo=UTC)
    want = sum(since <= t < until for t in db_times)
    assert len(snap.load_trades(since="2025-10-20", until="2025-11-01")) == want
    assert len(snap.load_trades(since=date(2025, 10, 20), until=pd.Timestamp("2025-11-01"))) == want
    assert len(snap.load_trades(since=since.replace(tzinfo=None),
                                until="2025-11-01T01:00:00+01:00")) == want
    assert len(snap.load_trades(days=None, until=until)) == sum(t < until for t in db_times)
    assert len(snap.load_trades(days=None, since=since)) == sum(t >= since for t in db_times)


def test_balances_of_latest_snapshot(snap, balance_files):
    newest = balance_files[max(balance_files)]
    assert snap.load_balances() == {"total": newest["balances"]}


def test_balances_as_of_a_past_date(snapshot_root, balance_files):
    as_of = date(2025, 11, 13)
    expected = balance_files[max(d for d in balance_files if d <= as_of)]
    assert open_snapshot(snapshot_root, as_of="2025-11-13").load_balances() == {
        "total": expected["balances"]}
    before_all = min(balance_files) - timedelta(days=1)
    assert open_snapshot(snapshot_root, as_of=before_all).load_balances() == {}


def test_snapshots_window(snap, db_times, balance_files):
    as_of_date = max(db_times).date()
    week = [balance_files[d] for d in sorted(balance_files)
            if as_of_date - timedelta(days=7) <= d <= as_of_date]
    assert snap.load_snapshots(days=7) == week
    everything = snap.load_snapshots(days=None)
    assert len(everything) == len(balance_files)
    assert everything == [balance_files[d] for d in sorted(balance_files)]


def test_open_snapshot_survives_a_switch_of_current(snapshot_root, tmp_path):
    root = tmp_path / "snapshot"
    shutil.copytree(snapshot_root, root, symlinks=True)
    old = open_snapshot(root, as_of="latest")
    total = len(old.load_trades(days=None))

    # A second version holding only the first 10 trades, then an atomic switch.
    v1 = old.path
    v2 = root / f"v{int(v1.name[1:]) + 1:06d}"
    shutil.copytree(v1, v2)
    table = pa.ipc.open_file(pa.memory_map(str(v1 / "trades.arrow"))).read_all()
    (v2 / "trades.arrow").unlink()
    with pa.ipc.new_file(str(v2 / "trades.arrow"), table.schema) as writer:
        writer.write_table(table.slice(0, 10))
    os.symlink(v2.name, root / "current.new")
    os.replace(root / "current.new", root / "current")

    new = open_snapshot(root, as_of="latest")
    assert new.path == v2.resolve() and len(new.load_trades(days=None)) == 10
    assert old.path == v1 and len(old.load_trades(days=None)) == total
    shutil.rmtree(v1)  # a cleaned-up old version stays readable while mapped
    assert len(old.load_trades(days=None)) == total
