//! The audit trail in the store's SQLite file: the table `audit_log`, its
//! indexes and the trigger that refuses updates, on the shared connection
//! plumbing of `tradebox_db`.

use std::path::Path;

use rusqlite::{params, params_from_iter, types::Value as SqlValue, Connection, Row};
use tradebox_data::timestamp::{self, Micros};
use tradebox_db::schema::{objects_exist, table_columns};
use tradebox_db::{Conn, Db, DbError};

use super::{
    Action, AuditBackend, AuditEntry, AuditFilter, AuditRecord, AuditRows, Outcome, Source,
};
use crate::store::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    user_id TEXT NOT NULL,
    channel TEXT,
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    function_name TEXT,
    function_version INTEGER,
    code TEXT,
    outcome TEXT NOT NULL,
    error_type TEXT,
    detail TEXT,
    duration_ms INTEGER,
    replica TEXT
);
CREATE INDEX IF NOT EXISTS idx_audit_log_at ON audit_log(at);
CREATE INDEX IF NOT EXISTS idx_audit_log_user_at ON audit_log(user_id, at);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: rows cannot be updated');
END;
";

const SCHEMA_OBJECTS: [&str; 4] = [
    "audit_log",
    "idx_audit_log_at",
    "idx_audit_log_user_at",
    "audit_log_no_update",
];

const COLUMNS: &str = "id, at, user_id, channel, source, action, function_name, \
     function_version, code, outcome, error_type, detail, duration_ms, replica";

/// The audit trail in a SQLite file; one connection, shareable between
/// threads.
pub struct SqliteAudit {
    db: Db,
}

impl SqliteAudit {
    /// Opens the store file at `path`, creating the file, table, indexes and
    /// trigger when needed.
    pub fn open(path: &Path) -> Result<SqliteAudit, StoreError> {
        let db = Db::open(path)?;
        ensure_schema(&db)?;
        Ok(SqliteAudit { db })
    }
}

/// Creates the audit table, its indexes and trigger when missing, and adds
/// the `replica` column to a table made before it.
pub(crate) fn ensure_schema(db: &Db) -> Result<(), DbError> {
    db.ensure_schema(
        |conn| {
            Ok(objects_exist(conn, &SCHEMA_OBJECTS)?
                && table_columns(conn, "audit_log")?
                    .iter()
                    .any(|c| c == "replica"))
        },
        |conn| {
            conn.execute_batch(SCHEMA)?;
            if !table_columns(conn, "audit_log")?
                .iter()
                .any(|c| c == "replica")
            {
                conn.execute_batch("ALTER TABLE audit_log ADD COLUMN replica TEXT")?;
            }
            Ok(())
        },
    )
}

/// Appends `entry` inside the caller's transaction.
pub(crate) fn append(c: &Conn<'_>, entry: &AuditEntry, at: Micros) -> Result<i64, StoreError> {
    Ok(c.run(|conn| insert(conn, entry, at))?)
}

fn insert(tx: &Connection, entry: &AuditEntry, at: Micros) -> rusqlite::Result<i64> {
    run_insert(
        tx,
        "INSERT INTO audit_log (at, user_id, channel, source, action, function_name,
         function_version, code, outcome, error_type, detail, duration_ms, replica)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        entry,
        at,
    )?;
    // Postgres: `RETURNING id`.
    Ok(tx.last_insert_rowid())
}

/// [`insert`] unless a row with the same time, user, channel, source,
/// action, code, outcome and replica is there; whether it wrote one.
fn insert_once(tx: &Connection, entry: &AuditEntry, at: Micros) -> rusqlite::Result<bool> {
    let changed = run_insert(
        tx,
        "INSERT INTO audit_log (at, user_id, channel, source, action, function_name,
         function_version, code, outcome, error_type, detail, duration_ms, replica)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13
         WHERE NOT EXISTS (SELECT 1 FROM audit_log WHERE at = ?1 AND user_id = ?2
             AND channel IS ?3 AND source = ?4 AND action = ?5 AND code IS ?8
             AND outcome = ?9 AND replica IS ?13)",
        entry,
        at,
    )?;
    Ok(changed == 1)
}

/// Runs the insert `sql` with `entry` stamped `at` as its 13 parameters,
/// in the table's column order; how many rows it wrote.
fn run_insert(
    tx: &Connection,
    sql: &str,
    entry: &AuditEntry,
    at: Micros,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(sql)?.execute(params![
        timestamp::format(at),
        entry.user_id,
        entry.channel,
        entry.source.as_str(),
        entry.action.as_str(),
        entry.function_name,
        entry.function_version,
        entry.code,
        entry.outcome.as_str(),
        entry.error_type,
        entry.detail,
        entry
            .duration_ms
            .map(|d| i64::try_from(d).unwrap_or(i64::MAX)),
        entry.replica,
    ])
}

impl AuditRows for Conn<'_> {
    fn append_audit(&self, entry: &AuditEntry, at: Micros) -> Result<i64, StoreError> {
        append(self, entry, at)
    }
}

impl AuditBackend for SqliteAudit {
    fn append(&self, entry: &AuditEntry, at: Micros) -> Result<i64, StoreError> {
        self.db.write(|c| append(c, entry, at))
    }

    fn append_once(&self, entry: &AuditEntry, at: Micros) -> Result<bool, StoreError> {
        self.db
            .write(|c| Ok(c.run(|conn| insert_once(conn, entry, at))?))
    }

    fn append_releasing(
        &self,
        entry: &AuditEntry,
        at: Micros,
        lease: &str,
    ) -> Result<(i64, bool), StoreError> {
        self.db.write(|c| {
            let removed = crate::leases::sqlite::remove(c, lease)?;
            Ok((append(c, entry, at)?, removed))
        })
    }

    fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE 1 = 1");
        let mut args: Vec<SqlValue> = Vec::new();
        let mut arg = |sql: &mut String, condition: &str, value: SqlValue| {
            args.push(value);
            sql.push_str(&format!(" AND {condition} ?{}", args.len()));
        };
        if let Some(user) = &filter.user {
            arg(&mut sql, "user_id =", SqlValue::Text(user.clone()));
        }
        if let Some(since) = filter.since {
            arg(&mut sql, "at >=", SqlValue::Text(timestamp::format(since)));
        }
        if let Some(outcome) = &filter.outcome {
            arg(
                &mut sql,
                "outcome =",
                SqlValue::Text(outcome.as_str().into()),
            );
        }
        if let Some(action) = &filter.action {
            arg(&mut sql, "action =", SqlValue::Text(action.as_str().into()));
        }
        sql.push_str(" ORDER BY at DESC, id DESC");
        if let Some(limit) = filter.limit {
            args.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" LIMIT ?{}", args.len()));
        }
        self.db.read(|c| {
            Ok(c.run(|conn| {
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt
                    .query_map(params_from_iter(args.iter()), record_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })?)
        })
    }

    fn prune(&self, before: Micros) -> Result<u64, StoreError> {
        let cutoff = timestamp::format(before);
        self.db.write(|c| {
            let n =
                c.run(|conn| conn.execute("DELETE FROM audit_log WHERE at < ?1", params![cutoff]))?;
            Ok(n as u64)
        })
    }

    fn count(&self) -> Result<u64, StoreError> {
        self.db.read(|c| {
            let n: i64 =
                c.run(|conn| conn.query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0)))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        // The newest id: one look at the table's b-tree, whatever its size.
        self.db.read(|c| {
            c.run(|conn| {
                conn.query_row("SELECT max(id) FROM audit_log", [], |r| {
                    r.get::<_, Option<i64>>(0)
                })
            })?;
            Ok(())
        })
    }
}

fn record_from_row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let text = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    Ok(AuditRecord {
        id: r.get(0)?,
        at: r.get(1)?,
        entry: AuditEntry {
            user_id: r.get(2)?,
            channel: r.get(3)?,
            source: Source::from(text(4)?.as_str()),
            action: Action::from(text(5)?.as_str()),
            function_name: r.get(6)?,
            function_version: r.get(7)?,
            code: r.get(8)?,
            outcome: Outcome::from(text(9)?.as_str()),
            error_type: r.get(10)?,
            detail: r.get(11)?,
            duration_ms: r
                .get::<_, Option<i64>>(12)?
                .map(|d| u64::try_from(d).unwrap_or(0)),
            replica: r.get(13)?,
        },
    })
}
