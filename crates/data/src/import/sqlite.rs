//! Import from an original `trade_cache.db` (or any SQLite file whose
//! `trades` table has the same columns). Rows are validated one by one and
//! timestamps normalised, so a bad row is named by its id.

use std::path::Path;

use crate::progress::Progress;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::error::{Error, Result};
use crate::model::{check_number, check_text, Side, Trade};
use crate::store::Writer;
use crate::timestamp;

const REQUIRED: [&str; 8] = [
    "exchange",
    "account_name",
    "timestamp",
    "symbol",
    "side",
    "amount",
    "price",
    "fee",
];

/// Trades read before they are written.
const BATCH: usize = 4096;

/// Imports the `trades` table of `path`; returns (read, added).
pub(super) fn import(
    w: &mut Writer<'_>,
    path: &Path,
    progress: &dyn Progress,
) -> Result<(u64, u64)> {
    let src = open_source(path)?;
    let reader = TradeReader::new(&src, path)?;
    let total: i64 = src
        .query_row("SELECT count(*) FROM trades", [], |r| r.get(0))
        .map_err(|e| source_error(path, e))?;
    progress.stage(
        &format!("importing {}", path.display()),
        Some(u64::try_from(total).unwrap_or(0)),
    );
    let (mut read, mut added) = (0u64, 0u64);
    // Written a batch at a time (one statement each on a shared store).
    let mut batch: Vec<(Trade, Option<String>)> = Vec::with_capacity(BATCH);
    let mut flush = |batch: &mut Vec<(Trade, Option<String>)>, w: &mut Writer<'_>| {
        let rows = batch.iter().map(|(t, at)| (t, at.as_deref()));
        added += w.insert_trades(rows)?;
        progress.advance(batch.len() as u64);
        batch.clear();
        Ok::<(), Error>(())
    };
    reader.each_after(0, None, |_, trade, cached_at| {
        read += 1;
        batch.push((trade, cached_at));
        if batch.len() == BATCH {
            flush(&mut batch, w)?;
        }
        Ok(())
    })?;
    flush(&mut batch, w)?;
    Ok((read, added))
}

/// Reads validated trades out of a source's `trades` table in rowid order.
pub(crate) struct TradeReader<'a> {
    src: &'a Connection,
    path: &'a Path,
    sql: String,
}

impl<'a> TradeReader<'a> {
    /// Checks the table and its columns.
    pub(crate) fn new(src: &'a Connection, path: &'a Path) -> Result<TradeReader<'a>> {
        let sql_err = |e: rusqlite::Error| source_error(path, e);
        let mut columns = Vec::new();
        {
            let mut stmt = src.prepare("PRAGMA table_info(trades)").map_err(sql_err)?;
            let mut rows = stmt.query([]).map_err(sql_err)?;
            while let Some(row) = rows.next().map_err(sql_err)? {
                columns.push(
                    row.get::<_, String>(1)
                        .map_err(sql_err)?
                        .to_ascii_lowercase(),
                );
            }
        }
        if columns.is_empty() {
            return Err(Error::NoTradesTable { path: path.into() });
        }
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|c| !columns.iter().any(|have| have == c))
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingColumns {
                path: path.into(),
                columns: missing.join(", "),
            });
        }
        let optional = |c: &str| {
            if columns.iter().any(|have| have == c) {
                c.to_string()
            } else {
                "NULL".to_string()
            }
        };
        let sql = format!(
            "SELECT rowid, {}, {}, {}, {} FROM trades WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            REQUIRED.join(", "),
            optional("trade_id"),
            optional("fee_currency"),
            optional("cached_at"),
        );
        Ok(TradeReader { src, path, sql })
    }

    /// The largest rowid of the table (0 when empty).
    pub(crate) fn max_rowid(&self) -> Result<i64> {
        self.src
            .query_row("SELECT coalesce(max(rowid), 0) FROM trades", [], |r| {
                r.get(0)
            })
            .map_err(|e| source_error(self.path, e))
    }

    /// Calls `f(rowid, trade, cached_at)` for each row after `after` in
    /// rowid order, at most `limit` rows, in one read transaction (one
    /// statement). A bad row stops it with an error naming the row.
    pub(crate) fn each_after(
        &self,
        after: i64,
        limit: Option<u64>,
        mut f: impl FnMut(i64, Trade, Option<String>) -> Result<()>,
    ) -> Result<()> {
        let path = self.path;
        let sql_err = |e: rusqlite::Error| source_error(path, e);
        let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut stmt = self.src.prepare_cached(&self.sql).map_err(sql_err)?;
        let mut rows = stmt
            .query(rusqlite::params![after, limit])
            .map_err(sql_err)?;
        while let Some(row) = rows.next().map_err(sql_err)? {
            let row_id: i64 = row.get(0).map_err(sql_err)?;
            let cell = |i: usize, column: &'static str| -> Result<Cell<'_>> {
                let value = row.get_ref(i).map_err(sql_err)?;
                Ok(Cell {
                    value,
                    column,
                    row_id,
                    path,
                })
            };
            let trade = Trade {
                exchange: cell(1, "exchange")?.text()?,
                account_name: cell(2, "account_name")?.text()?,
                timestamp: cell(3, "timestamp")?.timestamp()?,
                symbol: cell(4, "symbol")?.text()?,
                side: cell(5, "side")?.side()?,
                amount: cell(6, "amount")?.number()?,
                price: cell(7, "price")?.number()?,
                fee: cell(8, "fee")?.number()?,
                trade_id: cell(9, "trade_id")?.optional_text()?,
                fee_currency: cell(10, "fee_currency")?.optional_text()?,
            };
            let cached_at = cell(11, "cached_at")?.optional_text()?;
            f(row_id, trade, cached_at)?;
        }
        Ok(())
    }
}

/// Opens a source that another process may be writing: read-only, never
/// as immutable (its pages may change under us), waiting at most `busy`
/// for a writer's lock.
pub(crate) fn open_live_source(path: &Path, busy: std::time::Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| source_error(path, e))?;
    conn.busy_timeout(busy).map_err(|e| source_error(path, e))?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| source_error(path, e))?;
    Ok(conn)
}

/// Opens the source read-only; a database in a folder we cannot write
/// (WAL needs its -shm file) is retried as immutable.
fn open_source(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| source_error(path, e))?;
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(conn),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::CannotOpen) => {
            let uri = format!("file:{}?immutable=1", path.display());
            Connection::open_with_flags(uri, flags).map_err(|e| source_error(path, e))
        }
        Err(e) => Err(source_error(path, e)),
    }
}

pub(crate) fn source_error(path: &Path, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => Error::UnknownFormat { path: path.into() },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Invalid {
            path: path.into(),
            reason: "the database is locked by another process (retrying)".into(),
        },
        _ => Error::Invalid {
            path: path.into(),
            reason: format!("cannot read the SQLite file: {e}"),
        },
    }
}

/// One value of a source row, with what is needed to name it in an error.
struct Cell<'a> {
    value: ValueRef<'a>,
    column: &'static str,
    row_id: i64,
    path: &'a Path,
}

impl Cell<'_> {
    fn fail(&self, reason: String) -> Error {
        Error::SqliteRow {
            path: self.path.into(),
            row_id: self.row_id,
            column: self.column,
            reason,
        }
    }

    fn optional_text(&self) -> Result<Option<String>> {
        match self.value {
            ValueRef::Null => Ok(None),
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map(|s| Some(s.to_string()))
                .map_err(|_| self.fail("text is not valid UTF-8".into())),
            ValueRef::Integer(i) => Ok(Some(i.to_string())),
            ValueRef::Real(f) => Ok(Some(f.to_string())),
            ValueRef::Blob(_) => Err(self.fail("a blob where text was expected".into())),
        }
    }

    fn text(&self) -> Result<String> {
        let t = self.optional_text()?.unwrap_or_default();
        check_text(&t, self.column).map_err(|r| self.fail(r))
    }

    fn timestamp(&self) -> Result<i64> {
        let t = self.text()?;
        timestamp::parse(&t).map_err(|r| self.fail(r))
    }

    fn side(&self) -> Result<Side> {
        Side::parse(&self.text()?).map_err(|r| self.fail(r))
    }

    fn number(&self) -> Result<f64> {
        let v = match self.value {
            ValueRef::Integer(i) => i as f64,
            ValueRef::Real(f) => f,
            ValueRef::Text(_) => {
                return crate::model::parse_number(&self.text()?, self.column)
                    .map_err(|r| self.fail(r))
            }
            _ => return Err(self.fail("not a number".into())),
        };
        check_number(v, self.column).map_err(|r| self.fail(r))
    }
}
