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
use tradebox_db::pg::postgres::types::ToSql;
use tradebox_db::pg::PgConn;
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
            tx: Tx::Local(tx),
            path: path.clone(),
            cached_at: timestamp::format(timestamp::now()),
            changed: Changed::default(),
        };
        let value = f(&mut writer)?;
        if let Tx::Local(tx) = writer.tx {
            tx.commit().map_err(|e| store_error(&path, e))?;
        }
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

/// A trade store imports write to: the local SQLite [`Store`] or the shared
/// PostgreSQL one ([`crate::shared::Shared`]).
pub trait Target {
    /// Runs `f` in one write transaction; nothing is kept if it fails.
    fn write<T>(&mut self, f: impl FnOnce(&mut Writer<'_>) -> Result<T>) -> Result<T>;
    /// Counts, date ranges and per-account breakdown.
    fn summary(&self) -> Result<StoreSummary>;
}

impl Target for Store {
    fn write<T>(&mut self, f: impl FnOnce(&mut Writer<'_>) -> Result<T>) -> Result<T> {
        Store::write(self, f)
    }
    fn summary(&self) -> Result<StoreSummary> {
        Store::summary(self)
    }
}

/// A write transaction on the store, local ([`Store::write`]) or shared
/// ([`crate::shared::Shared::write`]): the importers write through it and
/// do not know which.
pub struct Writer<'a> {
    tx: Tx<'a>,
    path: PathBuf,
    cached_at: String,
    changed: Changed,
}

/// The transaction under a [`Writer`].
enum Tx<'a> {
    Local(rusqlite::Transaction<'a>),
    Shared(&'a (dyn SharedTx + 'a)),
}

/// What a write changed, so a shared store tells the replicas only when it
/// has something new.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Changed {
    pub trades: bool,
    pub snapshots: bool,
}

/// The statements a shared (PostgreSQL) transaction offers a writer.
pub(crate) trait SharedTx {
    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64>;
}

impl SharedTx for PgConn<'_> {
    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        Ok(PgConn::execute(self, sql, params)?)
    }
}

/// How many rows one statement inserts into a shared store.
const SHARED_BATCH: usize = 4096;

impl<'a> Writer<'a> {
    /// A writer on a shared store's transaction; `target` names it in messages.
    pub(crate) fn shared(tx: &'a (dyn SharedTx + 'a), target: &str) -> Writer<'a> {
        Writer {
            tx: Tx::Shared(tx),
            path: PathBuf::from(target),
            cached_at: timestamp::format(timestamp::now()),
            changed: Changed::default(),
        }
    }

    /// What the write changed so far.
    pub(crate) fn changed(&self) -> Changed {
        self.changed
    }

    /// The local SQLite transaction: what only the local store keeps
    /// (followed sources' state) is written through it.
    pub(crate) fn local(&self) -> Result<&rusqlite::Transaction<'a>> {
        match &self.tx {
            Tx::Local(tx) => Ok(tx),
            Tx::Shared(_) => Err(Error::InvalidArgument(format!(
                "followed sources keep their state in the local SQLite store and cannot \
                 write to the shared store {}; import with `tradebox data import` instead",
                self.path.display()
            ))),
        }
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
    /// the same index), so re-importing it adds nothing. (The shared store's
    /// key treats NULLs as equal: `NULLS NOT DISTINCT`.)
    pub fn insert_trade(&mut self, t: &Trade, cached_at: Option<&str>) -> Result<bool> {
        let added = match &self.tx {
            Tx::Local(tx) => insert_local(tx, &self.path, t, cached_at.unwrap_or(&self.cached_at))?,
            Tx::Shared(tx) => insert_shared(*tx, &[(t, cached_at)], &self.cached_at)? == 1,
        };
        self.changed.trades |= added;
        Ok(added)
    }

    /// Inserts many trades, each as [`Writer::insert_trade`] would; how many
    /// were new. A shared store takes them a few thousand per statement.
    pub fn insert_trades<'t>(
        &mut self,
        trades: impl IntoIterator<Item = (&'t Trade, Option<&'t str>)>,
    ) -> Result<u64> {
        let mut added = 0;
        match &self.tx {
            Tx::Local(tx) => {
                for (t, cached_at) in trades {
                    let at = cached_at.unwrap_or(&self.cached_at);
                    added += u64::from(insert_local(tx, &self.path, t, at)?);
                }
            }
            Tx::Shared(tx) => {
                let mut batch = Vec::with_capacity(SHARED_BATCH);
                for row in trades {
                    batch.push(row);
                    if batch.len() == SHARED_BATCH {
                        added += insert_shared(*tx, &batch, &self.cached_at)?;
                        batch.clear();
                    }
                }
                added += insert_shared(*tx, &batch, &self.cached_at)?;
            }
        }
        self.changed.trades |= added > 0;
        Ok(added)
    }

    /// Inserts or replaces the snapshot of a date; returns whether anything changed.
    pub fn upsert_snapshot(&mut self, s: &BalanceSnapshot) -> Result<bool> {
        let balances = s.balances.to_string();
        let n = match &self.tx {
            Tx::Local(tx) => tx
                .execute(
                    "INSERT INTO balance_snapshots (date, timestamp, balances, imported_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(date) DO UPDATE SET timestamp = excluded.timestamp,
                        balances = excluded.balances, imported_at = excluded.imported_at
                     WHERE timestamp != excluded.timestamp OR balances != excluded.balances",
                    params![s.date, s.timestamp, balances, self.cached_at],
                )
                .map_err(|e| store_error(&self.path, e))?,
            Tx::Shared(tx) => tx.execute(
                "INSERT INTO balance_snapshots (date, timestamp, balances, imported_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (date) DO UPDATE SET timestamp = EXCLUDED.timestamp,
                    balances = EXCLUDED.balances, imported_at = EXCLUDED.imported_at
                 WHERE balance_snapshots.timestamp <> EXCLUDED.timestamp
                    OR balance_snapshots.balances <> EXCLUDED.balances",
                &[&s.date, &s.timestamp, &balances, &self.cached_at],
            )? as usize,
        };
        self.changed.snapshots |= n == 1;
        Ok(n == 1)
    }

    /// Removes every trade and snapshot (for `data demo --replace`), giving
    /// the store a new identity.
    pub fn clear(&mut self) -> Result<()> {
        match &self.tx {
            Tx::Local(tx) => tx
                .execute_batch(
                    "DELETE FROM trades; DELETE FROM balance_snapshots;
                     UPDATE store_meta SET value = lower(hex(randomblob(16))) WHERE key = 'identity';",
                )
                .map_err(|e| store_error(&self.path, e))?,
            Tx::Shared(tx) => {
                tx.execute("DELETE FROM trades", &[])?;
                tx.execute("DELETE FROM balance_snapshots", &[])?;
                tx.execute(
                    "UPDATE trade_store_state SET identity = md5(random()::text || clock_timestamp()::text)",
                    &[],
                )?;
            }
        }
        self.changed = Changed {
            trades: true,
            snapshots: true,
        };
        Ok(())
    }
}

fn insert_local(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    t: &Trade,
    cached_at: &str,
) -> Result<bool> {
    if t.trade_id.is_none() {
        let mut seen = tx
            .prepare_cached(
                "SELECT 1 FROM trades WHERE exchange = ?1 AND account_name = ?2
                 AND trade_id IS NULL AND timestamp = ?3 AND symbol = ?4 AND side = ?5
                 AND amount = ?6 AND price = ?7 LIMIT 1",
            )
            .map_err(|e| store_error(path, e))?;
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
            .map_err(|e| store_error(path, e))?;
        if exists {
            return Ok(false);
        }
    }
    let mut stmt = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO trades (trade_id, exchange, account_name, timestamp, symbol,
             side, amount, price, fee, fee_currency, cached_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(|e| store_error(path, e))?;
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
            cached_at,
        ])
        .map_err(|e| store_error(path, e))?;
    Ok(n == 1)
}

/// Inserts `rows` into a shared store in one statement (columns as arrays,
/// unnested in order); how many were new.
fn insert_shared(tx: &dyn SharedTx, rows: &[(&Trade, Option<&str>)], now: &str) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let text = |f: &dyn Fn(&Trade) -> Option<&str>| -> Vec<Option<String>> {
        rows.iter().map(|(t, _)| f(t).map(str::to_string)).collect()
    };
    let trade_id = text(&|t| t.trade_id.as_deref());
    let exchange = text(&|t| Some(&t.exchange));
    let account = text(&|t| Some(&t.account_name));
    let stamp: Vec<String> = rows
        .iter()
        .map(|(t, _)| timestamp::format(t.timestamp))
        .collect();
    let symbol = text(&|t| Some(&t.symbol));
    let side = text(&|t| Some(t.side.as_str()));
    let number = |f: fn(&Trade) -> f64| -> Vec<f64> { rows.iter().map(|(t, _)| f(t)).collect() };
    let (amount, price, fee) = (number(|t| t.amount), number(|t| t.price), number(|t| t.fee));
    let fee_currency = text(&|t| t.fee_currency.as_deref());
    let cached_at: Vec<&str> = rows.iter().map(|(_, at)| at.unwrap_or(now)).collect();
    tx.execute(
        "INSERT INTO trades (trade_id, exchange, account_name, timestamp, symbol, side,
                             amount, price, fee, fee_currency, cached_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::float8[], $8::float8[], $9::float8[],
                              $10::text[], $11::text[])
         ON CONFLICT DO NOTHING",
        &[
            &trade_id,
            &exchange,
            &account,
            &stamp,
            &symbol,
            &side,
            &amount,
            &price,
            &fee,
            &fee_currency,
            &cached_at,
        ],
    )
}

/// A SQLite failure on the store, mapped by the database layer (locked,
/// read-only or other).
pub(crate) fn store_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::Db(DbError::from_sqlite(path, e))
}
