"""Test-only writer of the snapshot contract, in pure pyarrow.

The real snapshots are written by the Rust exporter (`tradebox data import`).
This module writes the same layout so the reader can be tested against
hand-made files (several record batches, bad manifests, nested balances):
format 1 (`write_version`: one trades.arrow) and format 2 (`write_segments`:
segment files, hard-linked between versions). It can also stand in for the
binary during development only (format 1):

    TRADEBOX_BIN=python/tests/_contract_writer.py pytest python/tests

runs `data import DB SNAPSHOT_DIR` with $TRADEBOX_HOME like the binary would.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc

SCHEMA = pa.schema(
    [
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("exchange", pa.large_utf8()),
        pa.field("account_name", pa.large_utf8()),
        pa.field("symbol", pa.large_utf8()),
        pa.field("side", pa.large_utf8()),
        pa.field("amount", pa.float64()),
        pa.field("price", pa.float64()),
        pa.field("fee", pa.float64()),
        pa.field("fee_currency", pa.large_utf8()),
        pa.field("trade_id", pa.large_utf8()),
    ]
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso_to_us(text: str) -> int:
    """Epoch microseconds of a naive-UTC (or offset) ISO timestamp string."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - _EPOCH) // timedelta(microseconds=1)


def trades_from_rows(rows) -> pa.Table:
    """Table in contract order from (timestamp_iso, exchange, account_name,
    symbol, side, amount, price, fee, fee_currency, trade_id) tuples,
    sorted by timestamp (stable)."""
    rows = sorted(((iso_to_us(r[0]), *r[1:]) for r in rows), key=lambda r: r[0])
    columns = list(zip(*rows)) if rows else [[] for _ in SCHEMA]
    return pa.Table.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, SCHEMA)], schema=SCHEMA
    )


def trades_from_sqlite(db_path) -> pa.Table:
    """All rows of the original `trades` table, in contract form."""
    with sqlite3.connect(db_path) as con:
        rows = con.execute(
            "SELECT timestamp, exchange, account_name, symbol, side, amount, price,"
            " fee, fee_currency, trade_id FROM trades ORDER BY timestamp, id"
        ).fetchall()
    return trades_from_rows(rows)


def snapshots_from_dir(snap_dir) -> list[dict]:
    """The snapshot_*.json files of a directory, oldest first."""
    snaps = [json.loads(p.read_text()) for p in Path(snap_dir).glob("snapshot_*.json")]
    return sorted(snaps, key=lambda s: s["date"])


def write_trades(path, table: pa.Table, batch_rows: int | None = None) -> None:
    """One Arrow IPC file of trades; `batch_rows` splits it into several
    record batches."""
    with pa.OSFile(str(path), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=batch_rows)


def _time_range(table: pa.Table) -> tuple[int | None, int | None]:
    """The first and last trade's epoch microseconds (min and max)."""
    ts = table.column("timestamp").cast(pa.int64()).to_pylist()
    return (min(ts), max(ts)) if ts else (None, None)


def _next_version_dir(root) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = 1 + max((int(p.name[1:]) for p in root.glob("v[0-9]*")), default=0)
    vdir = root / f"v{version:06d}"
    vdir.mkdir()
    return vdir


def _publish(vdir: Path, snapshots: list[dict], meta: dict, manifest: dict | None) -> Path:
    """Write snapshots.json and manifest.json (`meta` with the `manifest`
    overrides), then point `current` at `vdir`."""
    (vdir / "snapshots.json").write_text(json.dumps(snapshots))
    meta = {"version": int(vdir.name[1:]),
            "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **meta, "snapshots": len(snapshots), **(manifest or {})}
    (vdir / "manifest.json").write_text(json.dumps(meta))
    switch_current(vdir.parent, vdir.name)
    return vdir


def write_version(root, table: pa.Table, snapshots: list[dict], *,
                  batch_rows: int | None = None, manifest: dict | None = None) -> Path:
    """Write the next version dir under `root` in format 1 and point
    `current` at it.

    `batch_rows` splits trades.arrow into several record batches; `manifest`
    entries override the computed ones (to make broken snapshots)."""
    vdir = _next_version_dir(root)
    write_trades(vdir / "trades.arrow", table, batch_rows)
    first, last = _time_range(table)
    return _publish(vdir, snapshots, {"format": 1, "trades": len(table),
                                      "first_trade_us": first, "last_trade_us": last},
                    manifest)


def write_segments(root, segments, snapshots: list[dict], *,
                   batch_rows: int | None = None, manifest: dict | None = None) -> Path:
    """Write the next version dir under `root` in format 2 and point
    `current` at it.

    Each segment is a table (written as given, sorted or not), a list of
    rows (`trades_from_rows`) or the Path of an earlier version's segment
    file, hard-linked under its own name. New files are numbered after the
    highest trades-NNNNNN.arrow under `root`. `batch_rows` and `manifest`
    as in `write_version`."""
    vdir = _next_version_dir(root)
    number = max((int(p.stem[7:]) for p in Path(root).glob("v*/trades-*.arrow")), default=0)
    entries, rows = [], 0
    for segment in segments:
        if isinstance(segment, Path):
            path = vdir / segment.name
            os.link(segment, path)
            table = pa.ipc.open_file(str(path)).read_all()
        else:
            number += 1
            path = vdir / f"trades-{number:06d}.arrow"
            table = segment if isinstance(segment, pa.Table) else trades_from_rows(segment)
            write_trades(path, table, batch_rows)
        first, last = _time_range(table)
        rows += len(table)
        entries.append({"file": path.name, "rows": len(table), "first_trade_us": first,
                        "last_trade_us": last, "max_id": rows})
    firsts = [e["first_trade_us"] for e in entries if e["rows"]]
    lasts = [e["last_trade_us"] for e in entries if e["rows"]]
    return _publish(vdir, snapshots, {
        "format": 2, "trades": rows, "first_trade_us": min(firsts, default=None),
        "last_trade_us": max(lasts, default=None), "max_id": rows, "segments": entries,
    }, manifest)


def switch_current(root, version_name: str) -> None:
    """Atomically repoint the relative symlink `root/current`."""
    tmp = Path(root) / ".current.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(version_name, tmp)
    os.replace(tmp, Path(root) / "current")


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[:2] != ["data", "import"]:
        print("usage: _contract_writer.py data import TRADE_CACHE_DB SNAPSHOT_DIR",
              file=sys.stderr)
        return 2
    home = os.environ.get("TRADEBOX_HOME")
    if not home:
        print("TRADEBOX_HOME is not set", file=sys.stderr)
        return 2
    write_version(Path(home) / "snapshot", trades_from_sqlite(argv[2]),
                  snapshots_from_dir(argv[3]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
