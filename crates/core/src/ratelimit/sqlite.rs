//! The rate limiter's events in the store's SQLite file: the table
//! `rate_limit_events(user_id, at)`, indexed on `(user_id, at)`, on the
//! shared connection plumbing of `tradebox_db`.

use std::path::Path;

use rusqlite::{params, OptionalExtension};
use tradebox_data::timestamp::Micros;
use tradebox_db::schema::objects_exist;
use tradebox_db::{Conn, Db};

use super::{RateLimitBackend, RateLimitRows, RateLimitTx};
use crate::store::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rate_limit_events (
    user_id TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_rate_limit_events_user_at ON rate_limit_events(user_id, at);
";

const SCHEMA_OBJECTS: [&str; 2] = ["rate_limit_events", "idx_rate_limit_events_user_at"];

/// The events in a SQLite file; one connection, shareable between threads.
pub struct SqliteRateLimits {
    db: Db,
}

impl SqliteRateLimits {
    /// Opens the store file at `path`, creating the file and the table
    /// when needed.
    pub fn open(path: &Path) -> Result<SqliteRateLimits, StoreError> {
        let db = Db::open(path)?;
        db.ensure_schema(
            |conn| objects_exist(conn, &SCHEMA_OBJECTS),
            |conn| conn.execute_batch(SCHEMA),
        )?;
        Ok(SqliteRateLimits { db })
    }
}

impl RateLimitBackend for SqliteRateLimits {
    fn write(&self, body: RateLimitTx<'_>) -> Result<(), StoreError> {
        self.db.write(|c| body(c))
    }

    fn read(&self, body: RateLimitTx<'_>) -> Result<(), StoreError> {
        self.db.read(|c| body(c))
    }
}

impl RateLimitRows for Conn<'_> {
    fn forget(&self, user: Option<&str>, cutoff: Micros) -> Result<usize, StoreError> {
        Ok(self.run(|conn| match user {
            Some(user) => conn
                .prepare_cached("DELETE FROM rate_limit_events WHERE user_id = ?1 AND at <= ?2")?
                .execute(params![user, cutoff]),
            None => conn.execute(
                "DELETE FROM rate_limit_events WHERE at <= ?1",
                params![cutoff],
            ),
        })?)
    }

    fn count_after(&self, user: &str, cutoff: Micros) -> Result<u64, StoreError> {
        let n: i64 = self.run(|conn| {
            conn.prepare_cached(
                "SELECT count(*) FROM rate_limit_events WHERE user_id = ?1 AND at > ?2",
            )?
            .query_row(params![user, cutoff], |r| r.get(0))
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn nth_after(&self, user: &str, cutoff: Micros, n: u64) -> Result<Option<Micros>, StoreError> {
        let offset = i64::try_from(n).unwrap_or(i64::MAX);
        Ok(self.run(|conn| {
            conn.query_row(
                "SELECT at FROM rate_limit_events WHERE user_id = ?1 AND at > ?2
                 ORDER BY at LIMIT 1 OFFSET ?3",
                params![user, cutoff, offset],
                |r| r.get(0),
            )
            .optional()
        })?)
    }

    fn add(&self, user: &str, at: Micros) -> Result<(), StoreError> {
        self.run(|conn| {
            conn.prepare_cached("INSERT INTO rate_limit_events (user_id, at) VALUES (?1, ?2)")?
                .execute(params![user, at])
        })?;
        Ok(())
    }
}
