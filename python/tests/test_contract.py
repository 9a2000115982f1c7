"""The reader against small hand-made snapshots (written by _contract_writer):
several record batches, window edges, as_of forms, argument and format
errors, nested balances and the module-level helpers."""

import json
from datetime import date, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pytest

import _contract_writer as cw
from tradebox import data
from tradebox.data import COLUMNS, SnapshotError, open_snapshot

TIMES = [
    "2025-01-01T00:00:00",
    "2025-01-03T00:00:00",
    "2025-01-03T12:00:00",
    "2025-01-09T23:59:59.999999",
    "2025-01-10T00:00:00",
    "2025-01-10T23:59:59.999999",
    "2025-01-11T00:00:00",
]
ROWS = [(t, ex, acc, "ALKIMI" if i % 2 else "BTC", "buy" if i % 3 else "sell",
         float(i + 1), 0.05, 0.001 * i, None if i == 2 else "USDT", f"t{i}")
        for i, (t, ex, acc) in enumerate(zip(
            TIMES, ["mexc", "MEXC", "gateio", "kraken", "mexc", "gateio", "kraken"],
            ["MM1", "mm2", "TM", "MM1", "TM", "MM2", "TM"]))]
NESTED = [
    {"date": "2025-01-02", "timestamp": "2025-01-02T10:00:00",
     "balances": {"binance": {"USDT": 1.0, "BTC": 2.0}, "kraken": {"USDT": 3.0}}},
    {"date": "2025-01-10", "timestamp": "2025-01-10T10:00:00",
     "balances": {"a": {"USDT": 5.0}, "total": {"USDT": 99.0}}},
]


def make(root, rows=ROWS, snapshots=NESTED, **kwargs):
    cw.write_version(root, cw.trades_from_rows(rows), snapshots, **kwargs)
    return root


@pytest.fixture
def root(tmp_path):
    return make(tmp_path / "snapshot", batch_rows=2)


def ids(df):
    return df["trade_id"].tolist()


def test_multi_batch_file_reads_like_the_rows(root):
    vdir = root / "current"
    assert pa.ipc.open_file(str(vdir / "trades.arrow")).num_record_batches == 4
    df = open_snapshot(vdir, as_of="latest").load_trades(days=None)
    assert ids(df) == [f"t{i}" for i in range(len(ROWS))]
    assert list(df.columns) == list(COLUMNS) and isinstance(df.index, pd.RangeIndex)
    assert df["timestamp"].iloc[3] == pd.Timestamp("2025-01-09T23:59:59.999999", tz="UTC")
    assert df["fee_currency"].isna().tolist() == [i == 2 for i in range(len(ROWS))]
    assert df["amount"].tolist() == [r[5] for r in ROWS]


def test_as_of_forms(root):
    trades = lambda as_of, **kw: ids(open_snapshot(root, as_of).load_trades(**kw))
    assert trades("latest", days=0) == ["t6"]
    assert trades("2025-01-10", days=None)[-1] == "t5"  # a date: end of day, inclusive
    assert trades(date(2025, 1, 10), days=None)[-1] == "t5"
    assert trades("2025-01-10T00:00:00", days=7) == ["t1", "t2", "t3", "t4"]
    assert trades(datetime(2025, 1, 10), days=7) == ["t1", "t2", "t3", "t4"]
    assert trades("2025-01-10T01:00:00+01:00", days=7) == ["t1", "t2", "t3", "t4"]
    assert trades(pd.Timestamp("2025-01-03", tz="UTC"), days=0.5) == ["t1"]
    assert trades(None, days=None) == ids(open_snapshot(root).load_trades(days=None))
    assert trades(None) == []  # the real clock is long past January 2025
    for bad in ("yesterday", "2025-13-01", 5, 1.5, ["2025-01-01"]):
        with pytest.raises(ValueError, match="as_of"):
            open_snapshot(root, as_of=bad)


def test_since_inclusive_until_exclusive(root):
    snap = open_snapshot(root, as_of="latest")
    assert ids(snap.load_trades(since="2025-01-03", until="2025-01-10")) == ["t1", "t2", "t3"]
    assert ids(snap.load_trades(since="2025-01-03T12:00:00", until="2025-01-10T00:00:00.000001")
               ) == ["t2", "t3", "t4"]
    # without `since`, `days` counts back from `until`
    assert ids(snap.load_trades(days=7, until="2025-01-10")) == ["t1", "t2", "t3"]
    assert ids(snap.load_trades(since="2025-01-10", until="2025-01-03")) == []


def test_filters(root):
    snap = open_snapshot(root, as_of="latest")
    assert ids(snap.load_trades(days=None, exchange="Mexc")) == ["t0", "t1", "t4"]
    assert ids(snap.load_trades(days=None, exchange=("mexc", "KRAKEN"), account="mm1")
               ) == ["t0", "t3"]
    assert ids(snap.load_trades(days=None, asset="btc")) == ["t0", "t2", "t4", "t6"]
    assert ids(snap.load_trades(days=None, account=[])) == []


@pytest.mark.parametrize("kwargs, error, word", [
    ({"days": -1}, ValueError, "days"),
    ({"days": float("nan")}, ValueError, "days"),
    ({"days": "7"}, TypeError, "days"),
    ({"days": True}, TypeError, "days"),
    ({"exchange": 5}, TypeError, "exchange"),
    ({"account": ["MM1", 2]}, TypeError, "account"),
    ({"asset": {"BTC": 1}}, TypeError, "asset"),
    ({"since": "last week"}, ValueError, "since"),
    ({"until": 1736467200}, TypeError, "until"),
])
def test_argument_errors(root, kwargs, error, word):
    with pytest.raises(error, match=word):
        open_snapshot(root, as_of="latest").load_trades(**kwargs)


def test_snapshots_days_errors(root):
    with pytest.raises(ValueError, match="days"):
        open_snapshot(root).load_snapshots(-1)
    with pytest.raises(TypeError, match="days"):
        open_snapshot(root).load_snapshots("7")


def test_nested_balances_get_a_total_and_are_copies(root):
    assert open_snapshot(root, as_of="2025-01-09").load_balances() == {
        "binance": {"USDT": 1.0, "BTC": 2.0}, "kraken": {"USDT": 3.0},
        "total": {"USDT": 4.0, "BTC": 2.0}}
    snap = open_snapshot(root, as_of="latest")
    balances = snap.load_balances()
    assert balances == NESTED[1]["balances"]  # an existing "total" is kept as given
    balances["total"]["USDT"] = 0
    snap.load_snapshots(days=None)[0]["balances"].clear()
    assert snap.load_balances() == NESTED[1]["balances"]
    assert snap.load_snapshots(days=None) == NESTED
    assert snap.load_snapshots(days=7) == NESTED[1:]
    assert snap.load_snapshots(days=9) == NESTED


def test_empty_snapshot(tmp_path):
    snap = open_snapshot(make(tmp_path / "s", rows=[], snapshots=[]), as_of="latest")
    df = snap.load_trades(days=None)
    assert len(df) == 0 and list(df.columns) == list(COLUMNS)
    assert isinstance(df["timestamp"].dtype, pd.DatetimeTZDtype)
    assert snap.load_balances() == {} and snap.load_snapshots() == []


def test_snapshot_errors(tmp_path):
    with pytest.raises(SnapshotError, match="not found"):
        open_snapshot(tmp_path / "nowhere")
    with pytest.raises(SnapshotError, match="neither"):
        open_snapshot(tmp_path)
    with pytest.raises(SnapshotError, match=r"format 3, expected one of \(1, 2\)"):
        open_snapshot(make(tmp_path / "f", manifest={"format": 3}))

    missing_file = make(tmp_path / "m") / "current"
    (missing_file / "trades.arrow").unlink()
    with pytest.raises(SnapshotError, match="missing snapshot file.*trades.arrow"):
        open_snapshot(missing_file)

    no_fee = make(tmp_path / "c") / "current"
    table = cw.trades_from_rows(ROWS).drop_columns(["fee"])
    with pa.ipc.new_file(str(no_fee / "trades.arrow"), table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(SnapshotError, match="missing columns.*fee"):
        open_snapshot(no_fee)

    bad_json = make(tmp_path / "j") / "current"
    (bad_json / "snapshots.json").write_text(json.dumps({"date": "2025-01-01"}))
    with pytest.raises(SnapshotError, match="snapshots.json"):
        open_snapshot(bad_json)


def test_module_helpers(root, monkeypatch):
    monkeypatch.setattr(data, "_default", None)
    monkeypatch.delenv("TRADEBOX_SNAPSHOT", raising=False)
    with pytest.raises(SnapshotError, match="configure"):
        data.load_trades()

    monkeypatch.setenv("TRADEBOX_SNAPSHOT", str(root))
    monkeypatch.setenv("TRADEBOX_AS_OF", "2025-01-09")
    assert ids(data.load_trades(days=1)) == ["t3"]
    assert data.load_balances()["total"] == {"USDT": 4.0, "BTC": 2.0}

    data.configure(root, as_of="latest")
    assert ids(data.load_trades(days=0, exchange="KRAKEN")) == ["t6"]
    assert data.load_snapshots(days=None) == NESTED
    assert data.load_balances()["total"] == {"USDT": 99.0}
