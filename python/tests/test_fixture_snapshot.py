"""The reader against cex-reporter data as exported by the tradebox binary:
the repository's fixture, and the real data when TRADEBOX_FIXTURES names it
(conftest.py runs every test on each).

Every expected figure is computed here from trade_cache.db (sqlite3) or the
snapshot JSON files, never hard-coded; the fixture's own answers
(expected.json, from its generator) are checked at the end.
"""

import json
import shutil
import sqlite3
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pytest

import _contract_writer as cw
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


def text_or_none(value):
    """A string cell as the store has it: missing values (NaN in pandas'
    str columns) are NULL."""
    return None if value is None or value is pd.NA or value != value else value


def want_balances(snapshot: dict) -> dict:
    """What load_balances() gives for one snapshot file: flat balances as
    "total", nested ones as they are plus a "total" summed per asset."""
    balances = snapshot["balances"]
    if all(not isinstance(v, dict) for v in balances.values()):
        return {"total": balances}
    total = {}
    for assets in balances.values():
        for asset, amount in assets.items():
            total[asset] = total.get(asset, 0) + amount
    return {**balances, "total": total}


def assert_balances(got: dict, want: dict):
    """Equal, up to the order in which a "total" was summed."""
    assert set(got) == set(want), (got, want)
    for name, assets in want.items():
        assert got[name] == (pytest.approx(assets, rel=1e-15) if name == "total" else assets), name


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
    text = {"exchange", "account_name", "symbol", "side", "fee_currency", "trade_id"}
    got = Counter(zip(
        ((df["timestamp"] - epoch) // pd.Timedelta(microseconds=1)).tolist(),
        *([text_or_none(v) for v in df[c].tolist()] if c in text else df[c].tolist()
          for c in COLUMNS[1:])))
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
    # Beyond ASCII too (SQLite's lower() is ASCII-only, so count in Python).
    accounts = [a for (a,) in db.execute("SELECT account_name FROM trades")]
    for name in {a for a in accounts if not a.isascii()}:
        want = sum(a.lower() == name.lower() for a in accounts)
        assert len(snap.load_trades(days=None, account=name.upper())) == want, name


def test_a_non_ascii_account_is_filtered_case_insensitively(snap, repo_fixture, expected):
    if not repo_fixture:
        pytest.skip("the repository's fixture has the non-ASCII account")
    name = next(a for a in expected["trades"]["accounts"] if not a.isascii())
    want = expected["trades"]["by_account"][name]["count"]
    assert want > 0
    assert len(snap.load_trades(days=None, account=name.upper())) == want
    assert len(snap.load_trades(days=None, account=name.lower())) == want


def test_since_until(snap, db_times):
    # Two weeks in, for twelve days (on the real data: 2025-10-20 to 2025-11-01).
    since_day = min(db_times).date() + timedelta(days=13)
    until_day = since_day + timedelta(days=12)
    since = datetime.combine(since_day, datetime.min.time(), tzinfo=UTC)
    until = datetime.combine(until_day, datetime.min.time(), tzinfo=UTC)
    want = sum(since <= t < until for t in db_times)
    assert 0 < want < len(db_times)
    assert len(snap.load_trades(since=since_day.isoformat(), until=until_day.isoformat())) == want
    assert len(snap.load_trades(since=since_day, until=pd.Timestamp(until_day.isoformat()))) == want
    assert len(snap.load_trades(since=since.replace(tzinfo=None),
                                until=f"{until_day.isoformat()}T01:00:00+01:00")) == want
    assert len(snap.load_trades(days=None, until=until)) == sum(t < until for t in db_times)
    assert len(snap.load_trades(days=None, since=since)) == sum(t >= since for t in db_times)


def test_balances_of_latest_snapshot(snap, balance_files):
    newest = balance_files[max(balance_files)]
    assert snap.load_balances() == {"total": newest["balances"]}


def test_balances_as_of_a_past_date(snapshot_root, balance_files):
    # The first day without a file (on the real data: 2025-11-13) shows the day before.
    first = min(balance_files)
    as_of = next(first + timedelta(days=i) for i in range(1, 400)
                 if first + timedelta(days=i) not in balance_files)
    assert as_of < max(balance_files)
    expected = balance_files[max(d for d in balance_files if d <= as_of)]
    assert_balances(open_snapshot(snapshot_root, as_of=as_of.isoformat()).load_balances(),
                    want_balances(expected))
    before_all = min(balance_files) - timedelta(days=1)
    assert open_snapshot(snapshot_root, as_of=before_all).load_balances() == {}


def test_nested_balances_get_a_total(snapshot_root, balance_files):
    nested = [d for d, s in sorted(balance_files.items())
              if all(isinstance(v, dict) for v in s["balances"].values())]
    if not nested:
        pytest.skip("no nested balances in this data")
    for day in nested:
        got = open_snapshot(snapshot_root, as_of=day.isoformat()).load_balances()
        assert "total" in got and len(got) > 1
        assert_balances(got, want_balances(balance_files[day]))


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
    v2 = cw.write_version(root, old.table.slice(0, 10), old.load_snapshots(days=None))

    new = open_snapshot(root, as_of="latest")
    assert new.path == v2.resolve() and len(new.load_trades(days=None)) == 10
    assert old.path == v1 and len(old.load_trades(days=None)) == total
    shutil.rmtree(v1)  # a cleaned-up old version stays readable while mapped
    assert len(old.load_trades(days=None)) == total


def test_the_fixture_gives_its_expected_answers(snap, repo_fixture, expected):
    """The generator's own answers (plain Python over its rows) through the
    binary's export and the reader."""
    if not repo_fixture:
        pytest.skip("expected.json describes the repository's fixture")
    t = expected["trades"]
    df = snap.load_trades(days=None)
    assert len(df) == t["count"]
    assert df["timestamp"].iloc[0] == pd.Timestamp(t["first_timestamp"], tz="UTC")
    assert df["timestamp"].iloc[-1] == pd.Timestamp(t["last_timestamp"], tz="UTC")
    assert df["timestamp"].nunique() == t["distinct_timestamps"]
    assert sorted(df["exchange"].unique()) == t["exchanges"]
    assert sorted(df["account_name"].unique()) == t["accounts"]
    assert sorted(df["symbol"].unique()) == t["symbols"]
    for column, key in (("exchange", "by_exchange"), ("account_name", "by_account"),
                        ("side", "by_side"), ("symbol", "by_symbol")):
        got = df.groupby(column)["amount"].agg(["count", "sum"])
        assert {k: int(v) for k, v in got["count"].items()} == {
            k: v["count"] for k, v in t[key].items()}, key
        assert got["sum"].to_dict() == pytest.approx(
            {k: v["amount"] for k, v in t[key].items()}, rel=1e-12), key
    pairs = df.groupby(["exchange", "account_name"]).size().to_dict()
    assert pairs == {(p["exchange"], p["account_name"]): p["count"]
                     for p in t["by_exchange_account"]}
    fees = [text_or_none(c) for c in df["fee_currency"].tolist()]
    for entry in t["fees_by_currency"]:
        rows = [f for f, c in zip(df["fee"].tolist(), fees) if c == entry["currency"]]
        assert len(rows) == entry["count"], entry
        assert sum(rows) == pytest.approx(entry["fee"], rel=1e-12, abs=1e-12), entry
    assert sum(c is None for c in fees) == t["null_fee_currency"] > 0
    assert df["trade_id"].isna().sum() == t["null_trade_id"]
    assert df["amount"].min() == t["min_amount"] and df["amount"].max() == t["max_amount"]
    assert df["price"].min() == t["min_price"] and df["price"].max() == t["max_price"]

    week = snap.load_trades(days=7)
    assert len(week) == t["last_7_days"]["count"]
    assert week["timestamp"].iloc[0] >= pd.Timestamp(t["last_7_days"]["since"], tz="UTC")
    by_exchange = week.groupby("exchange")["amount"].agg(["count", "sum"])
    assert {k: int(v) for k, v in by_exchange["count"].items()} == {
        k: v["count"] for k, v in t["last_7_days"]["by_exchange"].items()}
    assert by_exchange["sum"].to_dict() == pytest.approx(
        {k: v["amount"] for k, v in t["last_7_days"]["by_exchange"].items()}, rel=1e-12)
    month = snap.load_trades(days=30)
    assert len(month) == t["last_30_days"]["count"]
    assert sorted(month["exchange"].unique()) == t["last_30_days"]["exchanges"]
    window = t["since_until"]
    assert len(snap.load_trades(since=window["since"], until=window["until"])) == window["count"]

    s = expected["snapshots"]
    everything = snap.load_snapshots(days=None)
    assert [x["date"] for x in everything] == s["dates"]
    assert len(everything) == s["count"]
    assert everything[-1] == s["latest"]
    assert snap.load_balances() == {"total": s["latest"]["balances"]}
    assert s["nested_dates"], "the fixture has nested balances"


@pytest.mark.parametrize("days", [0, 0.5, 1, 7, 30, 365, None])
@pytest.mark.parametrize("as_of", ["latest", "2000-01-01", None])
def test_rows_within_counts_what_load_trades_returns(snap, days, as_of):
    view = snap.with_as_of(as_of)
    assert view.rows_within(days) == len(view.load_trades(days=days))
