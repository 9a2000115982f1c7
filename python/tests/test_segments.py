"""Format-2 snapshots (segment files, written by _contract_writer): the
merge against a format-1 snapshot of the same trades, the order of equal
timestamps, the cache of mapped segments shared by hard links, and every
check of a format-2 manifest."""

import json
import os
import random
import re
import shutil
from datetime import datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import _contract_writer as cw
from tradebox import data
from tradebox.data import COLUMNS, SnapshotError, open_snapshot

T0 = datetime(2025, 3, 1)
EXCHANGES = ["mexc", "MEXC", "gateio", "kraken"]
ACCOUNTS = ["MM1", "mm2", "TM"]
SYMBOLS = ["BTC", "ALKIMI", "eth"]


@pytest.fixture(autouse=True)
def empty_cache():
    data.retain()
    yield
    data.retain()


def iso(us: int) -> str:
    return (T0 + timedelta(microseconds=us)).isoformat()


def row(us, trade_id, exchange="mexc", account="MM1", symbol="BTC"):
    return (iso(us), exchange, account, symbol, "buy", 1.0, 0.05, 0.001, "USDT", trade_id)


def ids(df):
    return df["trade_id"].tolist()


def reference(root, segments) -> data.Snapshot:
    """A format-1 snapshot of the segments' merged trades: each segment
    sorted, then their concatenation (by trades_from_rows), both stable and
    in plain Python."""
    by_time = lambda r: cw.iso_to_us(r[0])
    rows = [r for segment in segments for r in sorted(segment, key=by_time)]
    return open_snapshot(cw.write_version(root, cw.trades_from_rows(rows), []))


def random_segments(rng: random.Random):
    """1-5 segments of random trades: a base, then deltas that either follow
    it (ties with the newest allowed) or hold late trades; few distinct
    timestamps, so equal ones within and across segments are common."""
    hour = 3_600_000_000
    times = sorted(rng.sample(range(0, 40 * 24 * hour, hour // 4), rng.randint(1, 60)))
    times += [t + 1 for t in rng.sample(times, len(times) // 4)]  # 1 us apart
    n = iter(range(10**6))
    newest = 0

    def rows(count, pool):
        nonlocal newest
        picked = [rng.choice(pool) for _ in range(count)]
        newest = max(newest, *picked)
        return [(iso(us), rng.choice(EXCHANGES), rng.choice(ACCOUNTS), rng.choice(SYMBOLS),
                 rng.choice(["buy", "sell"]), rng.random(), 1.5, 0.0,
                 rng.choice(["USDT", None]), f"t{next(n)}") for us in picked]

    segments = [rows(rng.choice([1, 5, 50, 400, 3000]), times)]
    for _ in range(rng.randint(0, 4)):
        late = rng.random() < 0.6
        pool = times if late else [t for t in times if t >= newest] + [newest + hour]
        segments.append(rows(rng.randint(1, 30), pool))
    return segments


def queries(rng: random.Random):
    """load_trades keyword arguments: days windows, since/until (also
    empty and reversed ones) and filters, alone and together."""
    when = lambda: iso(rng.randrange(-24 * 3_600_000_000, 42 * 24 * 3_600_000_000))
    yield {"days": None}
    yield {"days": 0}
    for _ in range(12):
        kw = rng.choice([{"days": rng.choice([0.01, 0.5, 1, 3, 7, 30, None])},
                         {"since": when()}, {"until": when()},
                         {"since": when(), "until": when()},
                         {"days": rng.choice([1, 7]), "until": when()}])
        if rng.random() < 0.4:
            kw["exchange"] = rng.choice(["MEXC", ["gateio", "Kraken"], "none"])
        if rng.random() < 0.3:
            kw["account"] = rng.choice(["mm1", ["TM", "MM2"]])
        if rng.random() < 0.3:
            kw["asset"] = rng.choice(["btc", "ETH"])
        yield kw


@pytest.mark.parametrize("seed", range(40))
def test_merge_equals_a_format_1_snapshot(tmp_path, seed):
    rng = random.Random(seed)
    segments = random_segments(rng)
    as_of = rng.choice(["latest", iso(rng.randrange(0, 40 * 24 * 3_600_000_000))])
    merged = open_snapshot(cw.write_segments(tmp_path / "2", segments, []), as_of)
    single = reference(tmp_path / "1", segments).with_as_of(as_of)
    assert merged.manifest["format"] == 2 and len(merged._segments) == len(segments)
    assert len(merged) == len(single) == sum(map(len, segments))
    assert merged.table.equals(single.table)
    for kw in queries(rng):
        pd.testing.assert_frame_equal(merged.load_trades(**kw), single.load_trades(**kw),
                                      check_exact=True, obj=str(kw))
        if set(kw) <= {"days"}:
            assert merged.rows_within(kw["days"]) == single.rows_within(kw["days"]), kw


def _with_utf8_text(table: pa.Table) -> pa.Table:
    """`table` as files were written before text had 64-bit offsets."""
    return pa.Table.from_arrays([c.cast(pa.utf8()) if c.type == pa.large_utf8() else c
                                 for c in table.columns], names=table.column_names)


@pytest.mark.parametrize("seed", range(12))
def test_files_with_utf8_text_are_read_as_before_beside_newer_ones(tmp_path, seed):
    """Files written before text was large_utf8 (a store published then, and
    deltas published since) answer the same queries as one new file."""
    rng = random.Random(seed)
    segments = random_segments(rng)
    vdir = cw.write_segments(tmp_path / "2", segments, [])
    names = [e["file"] for e in json.loads((vdir / "manifest.json").read_text())["segments"]]
    older = [n for n in names if rng.random() < 0.6] or names[:1]
    for name in older:
        table = pa.ipc.open_file(str(vdir / name)).read_all()
        (vdir / name).unlink()
        cw.write_trades(vdir / name, _with_utf8_text(table))
    merged = open_snapshot(vdir, "latest")
    assert {s.table.schema.field("trade_id").type for s in merged._segments} == (
        {pa.utf8()} if len(older) == len(names) else {pa.utf8(), pa.large_utf8()})
    single = reference(tmp_path / "1", segments).with_as_of("latest")
    assert merged.table.equals(single.table)
    for kw in queries(rng):
        pd.testing.assert_frame_equal(merged.load_trades(**kw), single.load_trades(**kw),
                                      check_exact=True, obj=str(kw))


def test_both_merge_paths_are_taken():
    """The random cases above go through concatenation alone and through the
    sort (so neither path is left untested by chance)."""
    paths = set()
    for seed in range(40):
        segments = random_segments(random.Random(seed))
        ranges = [(min(t), max(t)) for t in
                  ([cw.iso_to_us(r[0]) for r in s] for s in segments)]
        if len(ranges) > 1:
            paths.add(any(b[0] < a[1] for a, b in zip(ranges, ranges[1:])))
    assert paths == {False, True}


def test_equal_timestamps_keep_segment_order(tmp_path):
    a = [row(10, "a1"), row(20, "a2"), row(20, "a3")]
    b = [row(20, "b1"), row(30, "b2")]  # follows a: concatenated
    c = [row(20, "c1"), row(5, "c0")]  # late: sorted
    snap = open_snapshot(cw.write_segments(tmp_path / "s", [a, b], []), "latest")
    assert ids(snap.load_trades(days=None)) == ["a1", "a2", "a3", "b1", "b2"]
    snap = open_snapshot(cw.write_segments(tmp_path / "s", [a, b, c], []), "latest")
    assert ids(snap.load_trades(days=None)) == ["c0", "a1", "a2", "a3", "b1", "c1", "b2"]
    assert ids(snap.load_trades(days=None, since=iso(20), until=iso(21))) == [
        "a2", "a3", "b1", "c1"]
    assert ids(snap.table.to_pandas()) == ids(snap.load_trades(days=None))


def test_the_sort_is_stable_on_many_ties(tmp_path):
    """Thousands of rows on a few timestamps, across segments whose ranges
    overlap: sort_indices must keep the concatenation's order."""
    segments = [[row(t % 7, f"s{s}-{i:05d}") for i, t in enumerate(sorted(range(s, 4000, 3)))]
                for s in range(3)]
    snap = open_snapshot(cw.write_segments(tmp_path / "s", segments, []), "latest")
    got = ids(snap.load_trades(days=None))
    by_time = lambda r: cw.iso_to_us(r[0])
    want = [r[-1] for r in sorted((r for s in segments for r in sorted(s, key=by_time)),
                                  key=by_time)]
    assert got == want


def test_one_contributing_segment_is_returned_as_it_is(tmp_path):
    base = [row(i * 1000, f"b{i}") for i in range(10)]
    late = [row(500, "late", exchange="kraken")]
    snap = open_snapshot(cw.write_segments(tmp_path / "s", [base, late], []), "latest")
    assert ids(snap.load_trades(days=None, exchange="mexc")) == [f"b{i}" for i in range(10)]
    assert ids(snap.load_trades(days=None, exchange="kraken")) == ["late"]
    assert ids(snap.load_trades(days=None, since=iso(600))) == [f"b{i}" for i in range(1, 10)]
    none = snap.load_trades(days=None, exchange="none")
    empty = open_snapshot(cw.write_version(tmp_path / "e", cw.trades_from_rows([]), []))
    pd.testing.assert_frame_equal(none, empty.load_trades(days=None))


def test_no_segments(tmp_path):
    snap = open_snapshot(cw.write_segments(tmp_path / "s", [], []), "latest")
    empty = open_snapshot(cw.write_version(tmp_path / "e", cw.trades_from_rows([]), []))
    assert snap.manifest["last_trade_us"] is None and len(snap) == 0
    assert snap.rows_within(None) == 0 and snap.table.num_rows == 0
    pd.testing.assert_frame_equal(snap.load_trades(days=None), empty.load_trades(days=None))
    assert list(snap.load_trades().columns) == list(COLUMNS)


def test_several_batches_and_extra_manifest_keys(tmp_path):
    segments = [[row(i, f"a{i}") for i in range(0, 20, 2)],
                [row(i, f"b{i}") for i in range(1, 9, 2)]]
    vdir = cw.write_segments(tmp_path / "s", segments, [], batch_rows=3,
                             manifest={"store_id": "abc", "max_id": 99})
    snap = open_snapshot(vdir, "latest")
    assert snap._segments[0].table.column("timestamp").num_chunks == 4
    assert ids(snap.load_trades(days=None)) == [
        "a0", "b1", "a2", "b3", "a4", "b5", "a6", "b7", *(f"a{i}" for i in range(8, 20, 2))]


def test_a_newer_version_reuses_the_mapped_segments(tmp_path):
    root = tmp_path / "s"
    v1 = cw.write_segments(root, [[row(i, f"b{i}") for i in range(100)], [row(50, "d1")]], [])
    old = open_snapshot(root, "latest")
    base = v1 / old.manifest["segments"][0]["file"]
    # The next version links the base and folds the delta into a new one.
    v2 = cw.write_segments(root, [base, [row(50, "d1"), row(200, "d2")]], [])
    assert os.stat(v2 / base.name).st_ino == os.stat(base).st_ino
    new = open_snapshot(root, "latest")
    assert new.path == v2.resolve() and len(new) == 102
    assert new._segments[0] is old._segments[0]
    assert new._segments[0].table is old._segments[0].table
    assert new._segments[0].ts is old._segments[0].ts
    assert len(data._SEGMENTS) == 3

    # A copied version dir holds other files: mapped anew.
    shutil.copytree(v2, root / "v000003")
    copied = open_snapshot(root / "v000003", "latest")
    assert copied._segments[0].table is not new._segments[0].table
    assert len(data._SEGMENTS) == 5

    data.retain(new)
    assert set(data._SEGMENTS) == {s.key for s in new._segments}
    shutil.rmtree(v1)  # a forgotten, removed segment stays readable while mapped
    assert ids(old.load_trades(days=None))[49:52] == ["b49", "b50", "d1"]
    assert ids(copied.load_trades(days=None))[-2:] == ["b99", "d2"]
    assert open_snapshot(v2)._segments[0] is new._segments[0]
    data.retain(new, copied)
    assert len(data._SEGMENTS) == 2  # what was forgotten is not brought back
    data.retain()
    assert data._SEGMENTS == {}
    again = open_snapshot(v2)
    assert again._segments[0] is not new._segments[0] and len(again) == len(new)


def test_with_as_of_shares_the_segments(tmp_path):
    snap = open_snapshot(cw.write_segments(tmp_path / "s", [[row(0, "a")], [row(1, "b")]], []))
    view = snap.with_as_of("latest")
    assert view._segments is snap._segments and ids(view.load_trades(days=0)) == ["b"]


def test_format_1_is_one_segment(tmp_path):
    rows = [row(i, f"t{i}") for i in range(5)]
    snap = open_snapshot(cw.write_version(tmp_path / "s", cw.trades_from_rows(rows), [],
                                          manifest={"trades": 99}), "latest")
    assert len(snap._segments) == 1 and len(snap) == 5  # rows counted in the file
    assert snap.table is snap._segments[0].table


def unsorted_table():
    table = cw.trades_from_rows([row(1, "a"), row(2, "b")])
    return table.take(pa.array([1, 0]))


def write_bad(tmp_path, edit=None, files=None):
    """A format-2 version of two one-row segments (trades-000001.arrow and
    trades-000002.arrow) whose manifest `edit` changes or whose files
    `files` replaces ({name: bytes or table})."""
    vdir = cw.write_segments(tmp_path / "s", [[row(0, "a")], [row(1, "b")]], [])
    manifest = json.loads((vdir / "manifest.json").read_text())
    if edit:
        edit(manifest)
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    for name, content in (files or {}).items():
        (vdir / name).unlink(missing_ok=True)
        if isinstance(content, bytes):
            (vdir / name).write_bytes(content)
        else:
            cw.write_trades(vdir / name, content)
    return vdir


def set_file(i, name):
    return lambda m: m["segments"][i].update(file=name)


@pytest.mark.parametrize("edit, files, match", [
    (lambda m: m.update(segments={"file": "trades-000001.arrow"}), None,
     "'segments' must be a list of objects"),
    (lambda m: m.pop("segments"), None, "'segments' must be a list of objects, not None"),
    (lambda m: m["segments"].append("trades-000001.arrow"), None,
     "'segments' must be a list of objects"),
    *[(set_file(0, name), None, re.escape(f"segment file {name!r} is not a plain '*.arrow'"))
      for name in ["../v000001/trades-000001.arrow", "sub/x.arrow", "/abs.arrow",
                   ".hidden.arrow", "x..arrow", "trades-000001.parquet", "trades.arrow\0",
                   "", None, 7]],
    (set_file(1, "trades-000001.arrow"), None, "'trades-000001.arrow' is listed twice"),
    (set_file(1, "nowhere.arrow"), None, "missing snapshot file: .*/nowhere.arrow"),
    (None, {"trades-000002.arrow": b"not arrow"},
     "cannot read .*trades-000002.arrow as an Arrow IPC file"),
    (lambda m: m["segments"][1].update(rows=2), None,
     "trades-000002.arrow: 1 rows, but the manifest says rows=2"),
    (lambda m: m["segments"][1].pop("rows"), None, "rows=None"),
    (lambda m: m.update(trades=3), None,
     "the segments hold 2 trades, but the manifest says trades=3"),
    (lambda m: m.update(segments=m["segments"][:1]), None,
     "the segments hold 1 trades, but the manifest says trades=2"),
    (None, {"trades-000002.arrow": unsorted_table()},
     "trades-000002.arrow: trades are not sorted by timestamp"),
    (None, {"trades-000002.arrow": cw.trades_from_rows([row(1, "b")]).drop_columns(["side"])},
     r"trades-000002.arrow: missing columns \['side'\]"),
    (None, {"trades-000001.arrow": cw.trades_from_rows([row(0, "a")]).set_column(
        5, "amount", pa.array(["1"]))}, "trades-000001.arrow: wrong column types: amount is"),
    (lambda m: m.update(format=3), None, r"unsupported snapshot format 3"),
])
def test_format_2_errors(tmp_path, edit, files, match):
    vdir = write_bad(tmp_path, edit=edit, files=files)
    with pytest.raises(SnapshotError, match=match):
        open_snapshot(vdir)


def test_sort_indices_is_stable():
    """What _merge relies on, checked on Arrow itself with many equal keys
    over several chunks."""
    keys = [i % 3 for i in range(10_000)]
    table = pa.Table.from_batches([pa.record_batch({"timestamp": keys[i:i + 999],
                                                    "n": range(i, min(i + 999, 10_000))})
                                   for i in range(0, 10_000, 999)])
    order = pc.sort_indices(table, sort_keys=[("timestamp", "ascending")]).to_pylist()
    assert order == sorted(range(10_000), key=lambda i: keys[i])
