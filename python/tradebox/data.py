"""Read-only access to a tradebox data snapshot, for code run in the sandbox.

A snapshot is what the Rust exporter writes: a root dir holding version dirs
(`v000001`, ...) and a `current` symlink. A version dir holds its trades,
`snapshots.json` and `manifest.json`, in one of two formats:

  1  one `trades.arrow` (Arrow IPC file, sorted by timestamp);
  2  the segment files the manifest's `segments` lists (same schema, each
     sorted by timestamp), base first, then deltas that may hold late
     trades. The trades are all segments' rows in timestamp order; equal
     timestamps keep the segments' order. Segments are hard links shared
     between versions.

`Snapshot` memory-maps one version and answers the user helpers
`load_trades`, `load_balances` and `load_snapshots`; the module-level
functions of the same names use a default snapshot set by `configure()` or
the environment (`TRADEBOX_SNAPSHOT`, `TRADEBOX_AS_OF`). Mapped segment
files are cached by file identity, so a newer version reuses the mapping
of the segments it shares with an older one; `retain()` empties the cache
of what the snapshots still in use do not need.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import os
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc

__all__ = [
    "COLUMNS", "Snapshot", "SnapshotError", "configure", "open_snapshot",
    "load_trades", "load_balances", "load_snapshots", "retain",
]

FORMATS = (1, 2)
# Text is written with 64-bit offsets (large_utf8): pandas keeps its strings
# that way, so a column goes to pandas without a copy. Files written before
# (utf8) are still read; their rows are converted as a query takes them.
_STR, _OLD_STR, _F64 = pa.large_utf8(), pa.utf8(), pa.float64()
SCHEMA = {"timestamp": pa.timestamp("us", tz="UTC"), "exchange": _STR,
          "account_name": _STR, "symbol": _STR, "side": _STR, "amount": _F64,
          "price": _F64, "fee": _F64, "fee_currency": _STR, "trade_id": _STR}
COLUMNS = tuple(SCHEMA)
_ARROW_SCHEMA = pa.schema(list(SCHEMA.items()))
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_DAY_US = 86_400_000_000
# No Arrow thread pools: the zygote must hold a single thread when it forks.
_NO_THREADS = pa.ipc.IpcReadOptions(use_threads=False)
_AS_OF_FORMS = ("None (the clock), 'latest' (the newest trade), a date "
                "('YYYY-MM-DD' or datetime.date) or a datetime (ISO string or "
                "datetime.datetime, naive means UTC)")


class SnapshotError(Exception):
    """The snapshot is missing, unreadable or not in the expected format."""


def _us(dt: datetime) -> int:
    """Epoch microseconds of a datetime (naive means UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - _EPOCH) // _US


def _now_us() -> int:
    return _us(datetime.now(timezone.utc))


def _parse_instant(value, name: str, forms: str):
    """A date (date-only input) or a datetime from a date/datetime/ISO string."""
    if isinstance(value, (datetime, date)):  # pd.Timestamp is a datetime
        return value
    if isinstance(value, str):
        for parse in (date.fromisoformat, datetime.fromisoformat):
            try:
                return parse(value.strip())
            except ValueError:
                pass
        raise ValueError(f"{name}: cannot parse {value!r}; expected {forms}")
    raise TypeError(f"{name} must be {forms}, not {type(value).__name__}")


def _bound_us(value, name: str) -> int:
    """since/until as epoch microseconds; a date means its start (00:00 UTC)."""
    forms = "a date or datetime (datetime/pandas object or ISO string)"
    value = _parse_instant(value, name, forms)
    if not isinstance(value, datetime):
        value = datetime.combine(value, time())
    return _us(value)


def _check_days(days):
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, numbers.Real):
        raise TypeError(f"days must be a non-negative number or None, not {days!r}")
    if not days >= 0:  # also rejects NaN
        raise ValueError(f"days must be a non-negative number or None, not {days!r}")
    return None if math.isinf(days) else days


def _names(value, name: str):
    """A filter argument as a list of lower-case strings (None = no filter)."""
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple, set, frozenset)) or not all(
            isinstance(v, str) for v in values):
        raise TypeError(f"{name} must be a string or a list of strings, not {value!r}")
    return [v.lower() for v in values]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SnapshotError(f"missing snapshot file: {path}") from None
    except (OSError, ValueError) as e:
        raise SnapshotError(f"cannot read {path}: {e}") from None


def _version_dir(path) -> Path:
    """The real version dir for a version dir or a snapshot root (follows
    `current` once, so a later switch does not affect this snapshot)."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        return path.resolve()
    if (path / "current").exists():
        return (path / "current").resolve()
    if path.is_dir():
        raise SnapshotError(f"{path} is neither a snapshot version dir "
                            "(no manifest.json) nor a snapshot root (no 'current')")
    raise SnapshotError(f"snapshot directory not found: {path}")


def _map_trades(file: Path) -> pa.Table:
    """The trades of one Arrow IPC file, memory-mapped (zero copy) and
    checked: the contract's columns and types, in its order."""
    try:
        mapped = pa.memory_map(str(file)).read_buffer()
        table = pa.ipc.open_file(mapped, options=_NO_THREADS).read_all()
    except FileNotFoundError:
        raise SnapshotError(f"missing snapshot file: {file}") from None
    except (OSError, pa.ArrowInvalid) as e:
        raise SnapshotError(f"cannot read {file} as an Arrow IPC file: {e}") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise SnapshotError(f"{file}: missing columns {missing}")
    table = table.select(list(COLUMNS))
    wrong = [f"{f.name} is {f.type}, expected {SCHEMA[f.name]}"
             for f in table.schema if f.type != SCHEMA[f.name]
             and not (SCHEMA[f.name] == _STR and f.type == _OLD_STR)]
    if wrong:
        raise SnapshotError(f"{file}: wrong column types: {'; '.join(wrong)}")
    if table.column("timestamp").null_count:
        raise SnapshotError(f"{file}: timestamp has nulls")
    # No metadata, all nullable: segments of the same types concatenate.
    return pa.Table.from_arrays(table.columns, names=list(COLUMNS))


def _current(table: pa.Table) -> pa.Table:
    """`table` with the text columns of an older file (utf8) converted to
    large_utf8, so that every part of a query has `_ARROW_SCHEMA`."""
    if table.schema == _ARROW_SCHEMA:
        return table
    return pa.Table.from_arrays([column.cast(SCHEMA[name]) for name, column
                                 in zip(COLUMNS, table.columns)], schema=_ARROW_SCHEMA)


class _Segment:
    """One mapped trades file and a contiguous int64 view of its sorted
    timestamps, for binary search (the other columns stay memory-mapped even
    if the file has several batches). `key` is its entry in `_SEGMENTS`."""

    __slots__ = ("key", "table", "ts")

    def __init__(self, key, file: Path):
        self.key = key
        self.table = _map_trades(file)
        ts = self.table.column("timestamp")
        ts = ts.chunk(0) if ts.num_chunks == 1 else ts.combine_chunks()
        self.ts = ts.view(pa.int64()).to_numpy()
        if (self.ts[1:] < self.ts[:-1]).any():
            raise SnapshotError(f"{file}: trades are not sorted by timestamp")

    def window(self, lower, upper, upper_side):
        """The rows [start, stop) with lower <= timestamp and timestamp <= upper
        (upper_side 'right') or < upper ('left'); lower None: no lower bound."""
        stop = int(np.searchsorted(self.ts, upper, side=upper_side))
        start = 0 if lower is None else int(np.searchsorted(self.ts, lower, side="left"))
        return start, max(start, stop)


def _identity(st: os.stat_result) -> tuple:
    """A file's identity for the caches below: a hard link in another
    version is the same file. Files are never rewritten in place (the
    exporter writes new files)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


# The mapped segment files by identity. An entry's mapping holds its inode,
# so no other file can take that identity while it is cached.
_SEGMENTS: dict[tuple, _Segment] = {}


def _open_segment(file: Path) -> _Segment:
    """The mapped segment of `file`, from `_SEGMENTS` if it is there."""
    try:
        st = os.stat(file)
    except FileNotFoundError:
        raise SnapshotError(f"missing snapshot file: {file}") from None
    except OSError as e:
        raise SnapshotError(f"cannot read {file}: {e}") from None
    key = _identity(st)
    segment = _SEGMENTS.get(key)
    if segment is None:
        segment = _SEGMENTS[key] = _Segment(key, file)
    return segment


def _plain_arrow_name(name) -> bool:
    return (isinstance(name, str) and name.endswith(".arrow") and not name.startswith(".")
            and "/" not in name and ".." not in name and "\0" not in name)


def _open_segments(vdir: Path, manifest: dict) -> tuple[_Segment, ...]:
    """The segments of a format-2 version, checked against its manifest."""
    where = vdir / "manifest.json"
    entries = manifest.get("segments")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SnapshotError(f"{where}: 'segments' must be a list of objects, "
                            f"not {entries!r:.100}")
    segments, names = [], set()
    for entry in entries:
        name, rows = entry.get("file"), entry.get("rows")
        if not _plain_arrow_name(name):
            raise SnapshotError(f"{where}: segment file {name!r} is not a plain "
                                "'*.arrow' file name")
        if name in names:
            raise SnapshotError(f"{where}: segment file {name!r} is listed twice")
        names.add(name)
        segment = _open_segment(vdir / name)
        if segment.table.num_rows != rows:
            raise SnapshotError(f"{vdir / name}: {segment.table.num_rows} rows, "
                                f"but the manifest says rows={rows!r}")
        segments.append(segment)
    total = sum(s.table.num_rows for s in segments)
    if total != manifest.get("trades"):
        raise SnapshotError(f"{where}: the segments hold {total} trades, but the "
                            f"manifest says trades={manifest.get('trades')!r}")
    return tuple(segments)


def _merge(parts) -> pa.Table:
    """The trades of `parts`, each segment's share as (table, first_us,
    last_us), oldest segment first, none empty, in one table ordered by
    timestamp, equal timestamps in segment order: a stable sort of their
    concatenation, or the concatenation itself when each part starts at or
    after the end of the one before."""
    if len(parts) <= 1:
        # Made when needed: an empty table holds Arrow memory, which the
        # zygote must not hold (a job would inherit it).
        return parts[0][0] if parts else _ARROW_SCHEMA.empty_table()
    table = pa.concat_tables([part for part, _, _ in parts])
    if any(first < last for (_, _, last), (_, first, _) in zip(parts, parts[1:])):
        order = pc.sort_indices(table, sort_keys=[("timestamp", "ascending")])  # stable
        table = table.take(order)
    return table


# The last balance snapshots read, by file identity: a version whose
# balances did not change links the same file, and is not parsed again.
_BALANCES: dict[tuple, tuple[list, list]] = {}


def _read_snapshots(path: Path) -> tuple[list, list]:
    """The balance snapshots of `path` sorted by date, and their dates."""
    try:
        key = _identity(os.stat(path))
    except OSError:
        key = None
    if key is not None and key in _BALANCES:
        return _BALANCES[key]
    snapshots = _read_json(path)
    try:
        dated = sorted(((date.fromisoformat(s["date"]), s) for s in snapshots),
                       key=lambda pair: pair[0])
    except (KeyError, TypeError, ValueError) as e:
        raise SnapshotError(f"{path}: expected a list of "
                            f"{{date: 'YYYY-MM-DD', ...}} objects ({e!r})") from None
    parsed = ([s for _, s in dated], [d for d, _ in dated])
    if key is not None:
        _BALANCES.clear()
        _BALANCES[key] = parsed
    return parsed


def retain(*snapshots: Snapshot) -> None:
    """Forget the cached mappings of segment files none of `snapshots` uses.

    Opening a version reuses the mapping (and checks) of each segment file
    an earlier `Snapshot` mapped: a long-lived process that switches to a
    new snapshot calls `retain(new)` (with any other snapshot it keeps) so
    the cache does not grow with each version. Snapshots keep their own
    mappings: one not retained stays readable; `retain()` empties the cache."""
    keep = {segment.key for snapshot in snapshots for segment in snapshot._segments}
    for key in _SEGMENTS.keys() - keep:
        del _SEGMENTS[key]


class Snapshot:
    """One memory-mapped snapshot version, seen from a fixed `as_of` clock.

    `path` is a version dir, or a snapshot root whose `current` link is
    resolved once (a later switch does not affect this object). `as_of` is
    "now" for the `days` windows: None = the real clock (read at each call),
    'latest' = the newest trade, a date ('YYYY-MM-DD' or datetime.date) = the
    end of that day UTC, a datetime (ISO string or datetime.datetime, naive
    means UTC) = that instant.
    """

    def __init__(self, path, as_of=None):
        self.path = _version_dir(path)
        self.manifest = _read_json(self.path / "manifest.json")
        got = self.manifest.get("format") if isinstance(self.manifest, dict) else None
        if got not in FORMATS:
            raise SnapshotError(f"{self.path}: unsupported snapshot format {got!r}, "
                                f"expected one of {FORMATS}")
        self._segments = (_open_segments(self.path, self.manifest) if got == 2
                          else (_open_segment(self.path / "trades.arrow"),))
        self._snapshots, self._snap_dates = _read_snapshots(self.path / "snapshots.json")
        self.as_of = as_of
        self._as_of_us = self._parse_as_of(as_of)

    def _parse_as_of(self, as_of):
        """None (read the clock per call) or the as_of instant in epoch us."""
        if as_of is None:
            return None
        if isinstance(as_of, str) and as_of.strip().lower() == "latest":
            last = self.manifest.get("last_trade_us")
            return int(last) if last is not None else None
        try:
            value = _parse_instant(as_of, "as_of", _AS_OF_FORMS)
        except TypeError as e:
            raise ValueError(str(e)) from None
        if isinstance(value, datetime):
            return _us(value)
        return _us(datetime.combine(value + timedelta(days=1), time())) - 1

    def with_as_of(self, as_of) -> "Snapshot":
        """The same mapped data seen from another `as_of` (cheap: no copy)."""
        view = copy.copy(self)
        view.as_of = as_of
        view._as_of_us = self._parse_as_of(as_of)
        return view

    def _now(self) -> int:
        return _now_us() if self._as_of_us is None else self._as_of_us

    def _as_of_date(self) -> date:
        return (_EPOCH + self._now() * _US).date()

    def __len__(self) -> int:
        return sum(segment.table.num_rows for segment in self._segments)

    @property
    def table(self) -> pa.Table:
        """All trades as one table, in order (merged at each access: for tests
        and introspection; `load_trades` reads the segments themselves)."""
        return _merge([(_current(s.table), s.ts[0], s.ts[-1]) for s in self._segments
                       if len(s.ts)])

    def __repr__(self) -> str:
        return f"Snapshot({str(self.path)!r}, as_of={self.as_of!r}, trades={len(self)})"

    def load_trades(self, days=30, exchange=None, asset=None, account=None,
                    since=None, until=None) -> pd.DataFrame:
        """Trades in [since, until) as a DataFrame, oldest first.

        Without `until` the window ends at the as_of instant (inclusive);
        without `since` it starts `days` before its end (days=None: all
        history). `exchange`, `asset` (the symbol) and `account` take a
        string or a list of strings, matched case-insensitively."""
        days = _check_days(days)
        named = [(col, _names(val, arg)) for col, val, arg in (
            ("exchange", exchange, "exchange"), ("symbol", asset, "asset"),
            ("account_name", account, "account"))]
        filters = [(col, pa.array(names, _STR)) for col, names in named
                   if names is not None]
        bounds = self._bounds(days, since, until)
        parts = []  # each segment's rows in the window, filtered, if any
        for segment in self._segments:
            start, stop = segment.window(*bounds)
            table = _current(segment.table.slice(start, stop - start))
            for column, names in filters:
                table = table.filter(pc.is_in(pc.utf8_lower(table.column(column)),
                                              value_set=names))
            if table.num_rows:
                parts.append((table, segment.ts[start], segment.ts[stop - 1]))
        return _merge(parts).to_pandas(use_threads=False)

    def _bounds(self, days, since=None, until=None):
        """`load_trades`' time window (`days` already checked) as the
        arguments of `_Segment.window`: (lower, upper, upper_side)."""
        if until is None:
            upper, side = self._now(), "right"
        else:
            upper, side = _bound_us(until, "until"), "left"
        if since is not None:
            lower = _bound_us(since, "since")
        elif days is not None:
            lower = max(upper - round(days * _DAY_US), -2**63)
        else:
            lower = None
        return lower, upper, side

    def rows_within(self, days) -> int:
        """How many trades `load_trades(days=days)` returns (nothing loaded)."""
        bounds = self._bounds(_check_days(days))
        return sum(stop - start for start, stop in
                   (segment.window(*bounds) for segment in self._segments))

    def load_balances(self) -> dict:
        """`{name: {asset: amount}}` from the latest balance snapshot on or
        before the as_of date, with a "total" entry; `{}` if there is none."""
        as_of_date = self._as_of_date()
        latest = None
        for snap, day in zip(self._snapshots, self._snap_dates):
            if day <= as_of_date:
                latest = snap
        if latest is None:
            return {}
        balances = latest.get("balances") or {}
        if all(isinstance(v, numbers.Real) for v in balances.values()):
            return {"total": dict(balances)}
        if not all(isinstance(v, dict) for v in balances.values()):
            raise SnapshotError(f"snapshot {latest.get('date')}: balances mix "
                                "assets and nested accounts")
        result = copy.deepcopy(balances)
        if "total" not in result:
            total = {}
            for assets in balances.values():
                for asset, amount in assets.items():
                    total[asset] = total.get(asset, 0) + amount
            result["total"] = total
        return result

    def load_snapshots(self, days=30) -> list:
        """Balance snapshots dated within `days` before the as_of date
        (inclusive; days=None: all up to it), oldest first."""
        days = _check_days(days)
        last = self._as_of_date()
        first = date.min if days is None else last - timedelta(days=days)
        return [copy.deepcopy(s) for s, d in zip(self._snapshots, self._snap_dates)
                if first <= d <= last]


def open_snapshot(path, as_of=None) -> Snapshot:
    """Open a snapshot root or version dir (see `Snapshot`)."""
    return Snapshot(path, as_of)


_default: Snapshot | None = None


def configure(path, as_of=None) -> Snapshot:
    """Set the snapshot used by the module-level helpers."""
    global _default
    _default = Snapshot(path, as_of)
    return _default


def _snapshot() -> Snapshot:
    if _default is None:
        path = os.environ.get("TRADEBOX_SNAPSHOT")
        if not path:
            raise SnapshotError("no snapshot configured: call tradebox.data.configure(path)"
                                " or set TRADEBOX_SNAPSHOT")
        configure(path, os.environ.get("TRADEBOX_AS_OF") or None)
    return _default


def load_trades(days=30, exchange=None, asset=None, account=None, since=None, until=None):
    """`Snapshot.load_trades` on the default snapshot."""
    return _snapshot().load_trades(days, exchange, asset, account, since, until)


def load_balances():
    """`Snapshot.load_balances` on the default snapshot."""
    return _snapshot().load_balances()


def load_snapshots(days=30):
    """`Snapshot.load_snapshots` on the default snapshot."""
    return _snapshot().load_snapshots(days)
