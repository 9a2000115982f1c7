//! The trade store: a SQLite file whose `trades` table keeps the original
//! `trade_cache.db` columns and UNIQUE key, plus balance snapshots.
//!
//! Every write goes through [`Store::write`], one transaction: an import
//! either lands whole or not at all. The file is opened, and its failures
//! are mapped, by the database layer (`tradebox_db`) that the function
//! store, audit trail and rate limiter share.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use tradebox_db::{connect, Access, DbError};

use crate::error::{Error, Result};
use crate::model::Trade;
use crate::timestamp;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS trades (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trade_id TEXT,
    exchange TEXT NOT NULL,
    account_name TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    amount REAL NOT NULL,
    price REAL NOT NULL,
    fee REAL NOT NULL,
    fee_currency TEXT,
    cached_at TEXT NOT NULL,
    UNIQUE(exchange, account_name, trade_id, timestamp, symbol, side, amount, price)
);
CREATE INDEX IF NOT EXISTS idx_timestamp ON trades(timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_exchange_account ON trades(exchange, account_name);
CREATE TABLE IF NOT EXISTS balance_snapshots (
    date TEXT PRIMARY KEY,
    timestamp TEXT NOT NULL,
    balances TEXT NOT NULL,
    imported_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO store_meta (key, value) VALUES ('identity', lower(hex(randomblob(16))));
";

/// An open trade store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Trades of one exchange and account, for `data info`.
#[derive(Debug, Clone, Serialize)]
pub struct AccountSummary {
    pub exchange: String,
    pub account_name: String,
    pub trades: u64,
    pub first_trade: String,
    pub last_trade: String,
}

/// What the store holds.
#[derive(Debug, Clone, Serialize)]
pub struct StoreSummary {
    pub trades: u64,
    pub first_trade: Option<String>,
    pub last_trade: Option<String>,
    pub accounts: Vec<AccountSummary>,
    pub snapshots: u64,
    pub first_snapshot: Option<String>,
    pub last_snapshot: Option<String>,
}

/// One daily balance snapshot as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalanceSnapshot {
    pub date: String,
    pub timestamp: String,
    pub balances: serde_json::Value,
}

impl Store {
    /// Opens the store for writing, creating the file and schema if needed.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let store = Store {
            conn: connect(path, Access::ReadWrite)?,
            path: path.to_path_buf(),
        };
        store
            .conn
            .execute_batch(SCHEMA)
            .and_then(|()| store.conn.execute_batch(crate::sources::STATE_SCHEMA))
            .map_err(|e| store_error(path, e))?;
        Ok(store)
    }

    /// Opens an existing store read-only; `None` when there is no store yet.
    pub fn open_read_only(path: &Path) -> Result<Option<Store>> {
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(Store {
            conn: connect(path, Access::ReadOnly)?,
            path: path.to_path_buf(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Runs `f` in one write transaction; nothing is kept if it fails.
    pub fn write<T>(&mut self, f: impl FnOnce(&mut Writer<'_>) -> Result<T>) -> Result<T> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| store_error(&path, e))?;
        let mut writer = Writer {
            tx,
            path: path.clone(),
            cached_at: timestamp::format(timestamp::now()),
        };
        let value = f(&mut writer)?;
        writer.tx.commit().map_err(|e| store_error(&path, e))?;
        Ok(value)
    }

    pub fn trade_count(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT count(*) FROM trades", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| store_error(&self.path, e))
    }

    /// How many trades and balance snapshots the store holds.
    pub fn counts(&self) -> Result<(u64, u64)> {
        self.conn
            .query_row(
                "SELECT (SELECT count(*) FROM trades), (SELECT count(*) FROM balance_snapshots)",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| store_error(&self.path, e))
    }

    /// Counts, date ranges and per-account breakdown.
    pub fn summary(&self) -> Result<StoreSummary> {
        let err = |e| store_error(&self.path, e);
        let (trades, first_trade, last_trade) = self
            .conn
            .query_row(
                "SELECT count(*), min(timestamp), max(timestamp) FROM trades",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
            )
            .map_err(err)?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT exchange, account_name, count(*), min(timestamp), max(timestamp)
                 FROM trades GROUP BY exchange, account_name ORDER BY exchange, account_name",
            )
            .map_err(err)?;
        let accounts = stmt
            .query_map([], |r| {
                Ok(AccountSummary {
                    exchange: r.get(0)?,
                    account_name: r.get(1)?,
                    trades: r.get::<_, i64>(2)? as u64,
                    first_trade: r.get(3)?,
                    last_trade: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(err)?;
        let (snapshots, first_snapshot, last_snapshot) = self
            .conn
            .query_row(
                "SELECT count(*), min(date), max(date) FROM balance_snapshots",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
            )
            .map_err(err)?;
        Ok(StoreSummary {
            trades,
            first_trade,
            last_trade,
            accounts,
            snapshots,
            first_snapshot,
            last_snapshot,
        })
    }

    /// All balance snapshots, oldest first.
    pub fn balance_snapshots(&self) -> Result<Vec<BalanceSnapshot>> {
        let err = |e| store_error(&self.path, e);
        let mut stmt = self
            .conn
            .prepare("SELECT date, timestamp, balances FROM balance_snapshots ORDER BY date")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(err)?;
        rows.into_iter()
            .map(|(date, timestamp, balances)| {
                let balances = serde_json::from_str(&balances).map_err(|e| Error::Invalid {
                    path: self.path.clone(),
                    reason: format!("stored balances of {date} are not JSON: {e}"),
                })?;
                Ok(BalanceSnapshot {
                    date,
                    timestamp,
                    balances,
                })
            })
            .collect()
    }

    /// A random name of this store's content, renewed whenever trades are
    /// removed: a snapshot made from the same identity holds a prefix of
    /// its trades by id. `None` for a store opened read-only before it had one.
    pub fn identity(&self) -> Result<Option<String>> {
        let found = self
            .conn
            .query_row(
                "SELECT value FROM store_meta WHERE key = 'identity'",
                [],
                |r| r.get(0),
            )
            .optional();
        match found {
            Ok(id) => Ok(id),
            Err(rusqlite::Error::SqliteFailure(_, Some(msg))) if msg.contains("no such table") => {
                Ok(None)
            }
            Err(e) => Err(store_error(&self.path, e)),
        }
    }

    /// Newest trade timestamp as stored, if any.
    pub fn last_trade(&self) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT max(timestamp) FROM trades", [], |r| r.get(0))
            .optional()
            .map(Option::flatten)
            .map_err(|e| store_error(&self.path, e))
    }
}

/// A write transaction on the store; see [`Store::write`].
pub struct Writer<'a> {
    tx: rusqlite::Transaction<'a>,
    path: PathBuf,
    cached_at: String,
}

impl Writer<'_> {
    pub(crate) fn tx(&self) -> &rusqlite::Transaction<'_> {
        &self.tx
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The time of this write, as stored (`cached_at` of its new trades).
    pub(crate) fn now(&self) -> &str {
        &self.cached_at
    }

    /// Inserts a trade unless an identical one (the UNIQUE key) is there;
    /// returns whether it was new. `cached_at` defaults to now. The original
    /// table allows a NULL `trade_id`, and SQLite's UNIQUE treats NULLs as
    /// distinct: such a row is looked up first (`IS` matches NULL, through
    /// the same index), so re-importing it adds nothing.
    pub fn insert_trade(&mut self, t: &Trade, cached_at: Option<&str>) -> Result<bool> {
        if t.trade_id.is_none() {
            let mut seen = self
                .tx
                .prepare_cached(
                    "SELECT 1 FROM trades WHERE exchange = ?1 AND account_name = ?2
                     AND trade_id IS NULL AND timestamp = ?3 AND symbol = ?4 AND side = ?5
                     AND amount = ?6 AND price = ?7 LIMIT 1",
                )
                .map_err(|e| store_error(&self.path, e))?;
            let exists = seen
                .exists(params![
                    t.exchange,
                    t.account_name,
                    timestamp::format(t.timestamp),
                    t.symbol,
                    t.side.as_str(),
                    t.amount,
                    t.price,
                ])
                .map_err(|e| store_error(&self.path, e))?;
            if exists {
                return Ok(false);
            }
        }
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO trades (trade_id, exchange, account_name, timestamp, symbol,
                 side, amount, price, fee, fee_currency, cached_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .map_err(|e| store_error(&self.path, e))?;
        let n = stmt
            .execute(params![
                t.trade_id,
                t.exchange,
                t.account_name,
                timestamp::format(t.timestamp),
                t.symbol,
                t.side.as_str(),
                t.amount,
                t.price,
                t.fee,
                t.fee_currency,
                cached_at.unwrap_or(&self.cached_at),
            ])
            .map_err(|e| store_error(&self.path, e))?;
        Ok(n == 1)
    }

    /// Inserts or replaces the snapshot of a date; returns whether anything changed.
    pub fn upsert_snapshot(&mut self, s: &BalanceSnapshot) -> Result<bool> {
        let balances = s.balances.to_string();
        let n = self
            .tx
            .execute(
                "INSERT INTO balance_snapshots (date, timestamp, balances, imported_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(date) DO UPDATE SET timestamp = excluded.timestamp,
                    balances = excluded.balances, imported_at = excluded.imported_at
                 WHERE timestamp != excluded.timestamp OR balances != excluded.balances",
                params![s.date, s.timestamp, balances, self.cached_at],
            )
            .map_err(|e| store_error(&self.path, e))?;
        Ok(n == 1)
    }

    /// Removes every trade and snapshot (for `data demo --replace`).
    pub fn clear(&mut self) -> Result<()> {
        self.tx
            .execute_batch(
                "DELETE FROM trades; DELETE FROM balance_snapshots;
                 UPDATE store_meta SET value = lower(hex(randomblob(16))) WHERE key = 'identity';",
            )
            .map_err(|e| store_error(&self.path, e))
    }
}

/// A SQLite failure on the store, mapped by the database layer (locked,
/// read-only or other).
pub(crate) fn store_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::Db(DbError::from_sqlite(path, e))
}
