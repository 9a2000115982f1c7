//! The function store in the store's SQLite file, on the shared connection
//! plumbing of `tradebox_db`.
//!
//! # Tables
//!
//! Both tables live in the trade store's SQLite file, created when missing.
//!
//! - `saved_functions` keeps the original bot's columns (`id, name UNIQUE,
//!   description, code, created_by, created_at, last_used, use_count`) plus
//!   `version`, `updated_by`, `updated_at` and `deleted_at` (soft delete). A
//!   table written by the original bot is migrated in place on open: the
//!   missing columns are added with their defaults, and every function
//!   without a version row gets one (`save`, by its creator, at its last
//!   change).
//! - `function_versions` keeps one row per change, primary key
//!   `(function_id, version)`.
//!
//! The audit table is made too, since a save or a delete can write its
//! audit row in its own transaction.
//!
//! # Portability
//!
//! The queries are plain SQL (no `RETURNING`, no `INSERT OR ...`, no
//! `last_insert_rowid`) so another backend needs only its own DDL and
//! placeholders. The schema check and migration read `sqlite_master` /
//! `pragma_table_info` and are the only SQLite-specific parts, together with
//! `AUTOINCREMENT` in the DDL. Note for another backend: searches fold case
//! with the database's `lower()`, which in SQLite folds ASCII letters only
//! (`É` does not match `é`).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Row};
use tradebox_db::schema::{objects_exist, table_columns};
use tradebox_db::{Conn, Db};

use super::{
    Function, FunctionBackend, FunctionRows, FunctionTx, NewFunction, VersionAction, VersionRecord,
};
use crate::store::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS saved_functions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT UNIQUE NOT NULL,
    description TEXT,
    code TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used TEXT,
    use_count INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 1,
    updated_by TEXT,
    updated_at TEXT,
    deleted_at TEXT
);
CREATE TABLE IF NOT EXISTS function_versions (
    function_id INTEGER NOT NULL REFERENCES saved_functions(id),
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    code TEXT NOT NULL,
    saved_by TEXT NOT NULL,
    saved_at TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('save', 'rename', 'delete', 'import')),
    PRIMARY KEY (function_id, version)
);
CREATE INDEX IF NOT EXISTS idx_function_versions_name ON function_versions(name);
";

/// Schema objects whose absence means the schema must be (re)created.
const SCHEMA_OBJECTS: [&str; 3] = [
    "saved_functions",
    "function_versions",
    "idx_function_versions_name",
];

/// Our columns, added to a `saved_functions` table made by the original bot.
const ADDED_COLUMNS: [(&str, &str); 4] = [
    ("version", "version INTEGER NOT NULL DEFAULT 1"),
    ("updated_by", "updated_by TEXT"),
    ("updated_at", "updated_at TEXT"),
    ("deleted_at", "deleted_at TEXT"),
];

/// Functions without any version row (written by the original bot).
const UNVERSIONED: &str = "SELECT count(*) FROM saved_functions f
     WHERE NOT EXISTS (SELECT 1 FROM function_versions v WHERE v.function_id = f.id)";

const BACKFILL_VERSIONS: &str = "
INSERT INTO function_versions (function_id, version, name, description, code, saved_by, saved_at, action)
SELECT f.id, f.version, f.name, f.description, f.code, f.created_by,
       coalesce(f.updated_at, f.created_at), 'save'
FROM saved_functions f
WHERE NOT EXISTS (SELECT 1 FROM function_versions v WHERE v.function_id = f.id)";

/// The columns of [`Function`], in the order [`function_from_row`] reads
/// them, then `deleted_at`. `coalesce` covers rows of the original bot,
/// whose columns allowed NULL.
pub(super) const COLUMNS: &str =
    "id, name, coalesce(description, ''), code, created_by, created_at, \
     last_used, coalesce(use_count, 0), version, updated_by, updated_at, deleted_at";

pub(super) const VERSION_COLUMNS: &str =
    "function_id, version, name, coalesce(description, ''), code, saved_by, saved_at, action";

/// Case-insensitive substring match on name or description; `?1` is the
/// escaped pattern from [`like_pattern`].
const SEARCH_CONDITION: &str = "(lower(name) LIKE lower(?1) ESCAPE '\\' \
     OR lower(coalesce(description, '')) LIKE lower(?1) ESCAPE '\\')";

/// The order of lists: most used first, then by name ignoring ASCII case.
pub(super) const ORDER: &str = "ORDER BY use_count DESC, lower(name), name";

/// Functions in a SQLite file; one connection, shareable between threads.
pub struct SqliteFunctions {
    db: Db,
}

impl SqliteFunctions {
    /// Opens the store file at `path`, creating the file, the tables or the
    /// missing columns when needed.
    pub fn open(path: &Path) -> Result<SqliteFunctions, StoreError> {
        let db = Db::open(path)?;
        db.ensure_schema(schema_ready, migrate)?;
        crate::audit::sqlite::ensure_schema(&db)?;
        Ok(SqliteFunctions { db })
    }
}

impl FunctionBackend for SqliteFunctions {
    fn write(&self, body: FunctionTx<'_>) -> Result<(), StoreError> {
        self.db.write(|c| body(c))
    }

    fn read(&self, body: FunctionTx<'_>) -> Result<(), StoreError> {
        self.db.read(|c| body(c))
    }
}

impl FunctionRows for Conn<'_> {
    fn find(&self, name: &str) -> Result<Option<(Function, bool)>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM saved_functions WHERE name = ?1");
        Ok(self.run(|c| {
            c.query_row(&sql, params![name], row_with_deleted)
                .optional()
        })?)
    }

    fn by_id(&self, id: i64) -> Result<Function, StoreError> {
        Ok(self.run(|c| by_id(c, id))?)
    }

    fn list(
        &self,
        search: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Function>, StoreError> {
        Ok(self.run(|c| match search {
            Some(query) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM saved_functions WHERE deleted_at IS NULL \
                     AND {SEARCH_CONDITION} {ORDER} LIMIT ?2 OFFSET ?3"
                );
                let mut stmt = c.prepare(&sql)?;
                let rows = stmt.query_map(
                    params![like_pattern(query), to_i64(limit), to_i64(offset)],
                    function_from_row,
                )?;
                rows.collect()
            }
            None => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM saved_functions WHERE deleted_at IS NULL \
                     {ORDER} LIMIT ?1 OFFSET ?2"
                );
                let mut stmt = c.prepare(&sql)?;
                let rows =
                    stmt.query_map(params![to_i64(limit), to_i64(offset)], function_from_row)?;
                rows.collect()
            }
        })?)
    }

    fn count(&self, search: Option<&str>) -> Result<u64, StoreError> {
        let n: i64 = self.run(|c| match search {
            Some(query) => c.query_row(
                &format!(
                    "SELECT count(*) FROM saved_functions WHERE deleted_at IS NULL \
                     AND {SEARCH_CONDITION}"
                ),
                params![like_pattern(query)],
                |r| r.get(0),
            ),
            None => c.query_row(
                "SELECT count(*) FROM saved_functions WHERE deleted_at IS NULL",
                [],
                |r| r.get(0),
            ),
        })?;
        Ok(to_u64(n))
    }

    fn all_live(&self) -> Result<Vec<Function>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM saved_functions WHERE deleted_at IS NULL ORDER BY name");
        Ok(self.run(|c| {
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([], function_from_row)?;
            rows.collect()
        })?)
    }

    fn live_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.run(|c| {
            let mut stmt =
                c.prepare("SELECT name FROM saved_functions WHERE deleted_at IS NULL")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect()
        })?)
    }

    fn former_holder(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.run(|c| {
            c.query_row(
                "SELECT function_id FROM function_versions WHERE name = ?1
                 ORDER BY saved_at DESC, function_id DESC LIMIT 1",
                params![name],
                |r| r.get(0),
            )
            .optional()
        })?)
    }

    fn versions(&self, id: i64) -> Result<Vec<VersionRecord>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM function_versions WHERE function_id = ?1 ORDER BY version"
        );
        Ok(self.run(|c| {
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(params![id], version_from_row)?;
            rows.collect()
        })?)
    }

    fn totals(&self) -> Result<(u64, u64), StoreError> {
        let (functions, uses): (i64, i64) = self.run(|c| {
            c.query_row(
                "SELECT count(*), coalesce(sum(coalesce(use_count, 0)), 0)
                 FROM saved_functions WHERE deleted_at IS NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        Ok((to_u64(functions), to_u64(uses)))
    }

    fn most_used(&self, n: usize) -> Result<Vec<(String, u64)>, StoreError> {
        let sql = format!(
            "SELECT name, use_count FROM saved_functions
             WHERE deleted_at IS NULL AND use_count > 0 {ORDER} LIMIT ?1"
        );
        Ok(self.run(|c| {
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(params![to_i64(n)], |r| {
                Ok((r.get::<_, String>(0)?, to_u64(r.get::<_, i64>(1)?)))
            })?;
            rows.collect()
        })?)
    }

    fn insert(&self, n: &NewFunction<'_>, user: &str, now: &str) -> Result<Function, StoreError> {
        Ok(self.run(|c| {
            c.execute(
                "INSERT INTO saved_functions (name, description, code, created_by, created_at,
                 last_used, use_count, version, updated_by, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9)",
                params![
                    n.name,
                    n.description,
                    n.code,
                    n.created_by,
                    n.created_at,
                    n.last_used,
                    to_i64_u(n.use_count),
                    user,
                    now
                ],
            )?;
            let sql = format!("SELECT {COLUMNS} FROM saved_functions WHERE name = ?1");
            c.query_row(&sql, params![n.name], function_from_row)
        })?)
    }

    fn revive(
        &self,
        id: i64,
        n: &NewFunction<'_>,
        user: &str,
        now: &str,
    ) -> Result<Function, StoreError> {
        Ok(self.run(|c| {
            c.execute(
                "UPDATE saved_functions SET description = ?1, code = ?2, created_by = ?3,
                 created_at = ?4, last_used = ?5, use_count = ?6, version = version + 1,
                 updated_by = ?7, updated_at = ?8, deleted_at = NULL WHERE id = ?9",
                params![
                    n.description,
                    n.code,
                    n.created_by,
                    n.created_at,
                    n.last_used,
                    to_i64_u(n.use_count),
                    user,
                    now,
                    id
                ],
            )?;
            by_id(c, id)
        })?)
    }

    fn update_code(
        &self,
        id: i64,
        description: &str,
        code: &str,
        user: &str,
        now: &str,
    ) -> Result<Function, StoreError> {
        Ok(self.run(|c| {
            c.execute(
                "UPDATE saved_functions SET description = ?1, code = ?2, version = version + 1,
                 updated_by = ?3, updated_at = ?4 WHERE id = ?5",
                params![description, code, user, now, id],
            )?;
            by_id(c, id)
        })?)
    }

    fn set_name(&self, id: i64, name: &str, user: &str, now: &str) -> Result<Function, StoreError> {
        Ok(self.run(|c| {
            c.execute(
                "UPDATE saved_functions SET name = ?1, version = version + 1, updated_by = ?2,
                 updated_at = ?3 WHERE id = ?4",
                params![name, user, now, id],
            )?;
            by_id(c, id)
        })?)
    }

    fn mark_deleted(&self, id: i64, user: &str, now: &str) -> Result<Function, StoreError> {
        Ok(self.run(|c| {
            c.execute(
                "UPDATE saved_functions SET version = version + 1, updated_by = ?1,
                 updated_at = ?2, deleted_at = ?2 WHERE id = ?3",
                params![user, now, id],
            )?;
            by_id(c, id)
        })?)
    }

    fn count_use(&self, name: &str, now: &str) -> Result<Option<Function>, StoreError> {
        let changed = self.run(|c| {
            c.execute(
                "UPDATE saved_functions SET use_count = coalesce(use_count, 0) + 1, last_used = ?1
                 WHERE name = ?2 AND deleted_at IS NULL",
                params![now, name],
            )
        })?;
        if changed == 0 {
            return Ok(None);
        }
        Ok(self.find(name)?.map(|(f, _)| f))
    }

    fn add_version(
        &self,
        f: &Function,
        saved_by: &str,
        saved_at: &str,
        action: VersionAction,
    ) -> Result<(), StoreError> {
        self.run(|c| {
            c.execute(
                "INSERT INTO function_versions
                 (function_id, version, name, description, code, saved_by, saved_at, action)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    f.id,
                    f.version,
                    f.name,
                    f.description,
                    f.code,
                    saved_by,
                    saved_at,
                    action.as_str()
                ],
            )
        })?;
        Ok(())
    }

    fn everything(&self) -> Result<Vec<(Function, Option<String>)>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM saved_functions ORDER BY id");
        Ok(self.run(|c| {
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([], |r| Ok((function_from_row(r)?, r.get(11)?)))?;
            rows.collect()
        })?)
    }

    fn restore(&self, f: &Function, deleted_at: Option<&str>) -> Result<i64, StoreError> {
        Ok(self.run(|c| {
            c.execute(
                "INSERT INTO saved_functions (name, description, code, created_by, created_at,
                 last_used, use_count, version, updated_by, updated_at, deleted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    f.name,
                    f.description,
                    f.code,
                    f.created_by,
                    f.created_at,
                    f.last_used,
                    to_i64_u(f.use_count),
                    f.version,
                    f.updated_by,
                    f.updated_at,
                    deleted_at
                ],
            )?;
            c.query_row(
                "SELECT id FROM saved_functions WHERE name = ?1",
                params![f.name],
                |r| r.get(0),
            )
        })?)
    }
}

/// `%query%` with the LIKE wildcards and the escape character escaped.
pub(super) fn like_pattern(query: &str) -> String {
    let mut p = String::with_capacity(query.len() + 2);
    p.push('%');
    for c in query.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

// ---------------------------------------------------------------------------
// Rows.

fn by_id(conn: &Connection, id: i64) -> rusqlite::Result<Function> {
    let sql = format!("SELECT {COLUMNS} FROM saved_functions WHERE id = ?1");
    conn.query_row(&sql, params![id], function_from_row)
}

/// A [`Function`] and whether it is deleted.
fn row_with_deleted(r: &Row<'_>) -> rusqlite::Result<(Function, bool)> {
    let f = function_from_row(r)?;
    let deleted = r.get::<_, Option<String>>(11)?.is_some();
    Ok((f, deleted))
}

fn function_from_row(r: &Row<'_>) -> rusqlite::Result<Function> {
    Ok(Function {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        code: r.get(3)?,
        created_by: r.get(4)?,
        created_at: r.get(5)?,
        last_used: r.get(6)?,
        use_count: to_u64(r.get(7)?),
        version: r.get(8)?,
        updated_by: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

fn version_from_row(r: &Row<'_>) -> rusqlite::Result<VersionRecord> {
    let action: String = r.get(7)?;
    let action = VersionAction::parse(&action).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            7,
            rusqlite::types::Type::Text,
            format!("unknown version action {action:?}").into(),
        )
    })?;
    Ok(VersionRecord {
        function_id: r.get(0)?,
        version: r.get(1)?,
        name: r.get(2)?,
        description: r.get(3)?,
        code: r.get(4)?,
        saved_by: r.get(5)?,
        saved_at: r.get(6)?,
        action,
    })
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_i64_u(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------
// Schema.

fn schema_ready(conn: &Connection) -> rusqlite::Result<bool> {
    if !objects_exist(conn, &SCHEMA_OBJECTS)? {
        return Ok(false);
    }
    let columns = table_columns(conn, "saved_functions")?;
    if ADDED_COLUMNS
        .iter()
        .any(|(name, _)| !columns.iter().any(|c| c == name))
    {
        return Ok(false);
    }
    let unversioned: i64 = conn.query_row(UNVERSIONED, [], |r| r.get(0))?;
    Ok(unversioned == 0)
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let existed = objects_exist(conn, &["saved_functions"])?;
    conn.execute_batch(SCHEMA)?;
    let columns = table_columns(conn, "saved_functions")?;
    for (name, definition) in ADDED_COLUMNS {
        if !columns.iter().any(|c| c == name) {
            conn.execute_batch(&format!(
                "ALTER TABLE saved_functions ADD COLUMN {definition}"
            ))?;
        }
    }
    let backfilled = conn.execute(BACKFILL_VERSIONS, [])?;
    if existed && backfilled > 0 {
        tracing::info!(
            functions = backfilled,
            "saved functions of the original bot now have a first version"
        );
    }
    Ok(())
}
