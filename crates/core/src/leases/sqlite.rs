//! Leases in the store's SQLite file: `running_leases(id, user_id, replica,
//! expires_at)`, for processes sharing one file.

use std::path::Path;

use rusqlite::params;
use tradebox_data::timestamp::Micros;
use tradebox_db::schema::objects_exist;
use tradebox_db::{Conn, Db, DbError};

use super::LeaseBackend;
use crate::store::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS running_leases (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    replica TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_running_leases_user ON running_leases(user_id, expires_at);
";

const SCHEMA_OBJECTS: [&str; 2] = ["running_leases", "idx_running_leases_user"];

/// Removes lease `id` in the write transaction open on `c` (also the audit
/// trail's, which gives a job's place back in the write of its row);
/// whether it was there.
pub(crate) fn remove(c: &Conn<'_>, id: &str) -> Result<bool, DbError> {
    let removed = c.run(|conn| {
        conn.prepare_cached("DELETE FROM running_leases WHERE id = ?1")?
            .execute(params![id])
    })?;
    Ok(removed == 1)
}

/// Leases in a SQLite file; one connection, shareable between threads.
pub struct SqliteLeases {
    db: Db,
}

impl SqliteLeases {
    /// Opens the store file at `path`, creating the table when needed.
    pub fn open(path: &Path) -> Result<SqliteLeases, StoreError> {
        let db = Db::open(path)?;
        db.ensure_schema(
            |conn| objects_exist(conn, &SCHEMA_OBJECTS),
            |conn| conn.execute_batch(SCHEMA),
        )?;
        Ok(SqliteLeases { db })
    }
}

impl LeaseBackend for SqliteLeases {
    fn take(
        &self,
        id: &str,
        user: &str,
        replica: &str,
        limit: u32,
        now: Micros,
        expires: Micros,
    ) -> Result<bool, StoreError> {
        self.db.write(|c| {
            Ok(c.run(|conn| {
                conn.prepare_cached("DELETE FROM running_leases WHERE expires_at < ?1")?
                    .execute(params![now])?;
                let held: i64 = conn
                    .prepare_cached("SELECT count(*) FROM running_leases WHERE user_id = ?1")?
                    .query_row(params![user], |r| r.get(0))?;
                if held >= i64::from(limit) {
                    return Ok(false);
                }
                conn.prepare_cached(
                    "INSERT INTO running_leases (id, user_id, replica, expires_at)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![id, user, replica, expires])?;
                Ok(true)
            })?)
        })
    }

    fn renew(&self, id: &str, expires: Micros) -> Result<bool, StoreError> {
        self.db.write(|c| {
            let n = c.run(|conn| {
                conn.prepare_cached("UPDATE running_leases SET expires_at = ?1 WHERE id = ?2")?
                    .execute(params![expires, id])
            })?;
            Ok(n == 1)
        })
    }

    fn release(&self, id: &str) -> Result<(), StoreError> {
        self.db.write(|c| {
            remove(c, id)?;
            Ok(())
        })
    }

    fn held(&self, user: &str, now: Micros) -> Result<u64, StoreError> {
        self.db.read(|c| {
            let n: i64 = c.run(|conn| {
                conn.prepare_cached(
                    "SELECT count(*) FROM running_leases WHERE user_id = ?1 AND expires_at >= ?2",
                )?
                .query_row(params![user, now], |r| r.get(0))
            })?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}
