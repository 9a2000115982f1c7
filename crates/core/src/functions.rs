//! The function store: named pandas snippets saved with `/savefunc` and run
//! with `/runfunc`, with every change kept as a version.
//!
//! # Tables
//!
//! Both tables live in the trade store's SQLite file, created when missing.
//!
//! - `saved_functions` keeps the original bot's columns (`id, name UNIQUE,
//!   description, code, created_by, created_at, last_used, use_count`) plus
//!   `version` (the latest version number), `updated_by`, `updated_at` and
//!   `deleted_at` (soft delete). A table written by the original bot is
//!   migrated in place on open: the missing columns are added with their
//!   defaults, and every function without a version row gets one (`save`,
//!   by its creator, at its last change).
//! - `function_versions` keeps one row per change, primary key
//!   `(function_id, version)`: the name, description and code after the
//!   change, who made it, when, and the action (`save`, `rename`, `delete`,
//!   `import`). Versions of one function count up from 1 without gaps, and
//!   `saved_functions.version` is always its newest version.
//!
//! # Rules
//!
//! - Only the creator or an admin may save over, rename or delete a live
//!   function ([`StoreError::NotOwner`]); import is an admin operation and
//!   is not checked here.
//! - Delete is soft: the row stays (hidden from `get`, `list`, `search`,
//!   `suggest`, `stats`, `export`) and a `delete` version is written, so
//!   [`FunctionStore::history`] still shows it.
//! - Saving (or importing) the name of a deleted function revives the same
//!   row as a *new function that continues the old history*: the version
//!   number keeps counting, but whoever saves it becomes its creator (a
//!   deleted function has no owner left to protect), `created_at` is now,
//!   and the use count starts again at 0. Saving over a live function keeps
//!   its creator, creation time and use count.
//! - Renaming onto the name of a deleted function frees that name: the
//!   deleted function is renamed to `<name>~<id>` (with a `rename` version),
//!   so its history stays reachable by that name. A live holder of the
//!   target name gives [`StoreError::NameTaken`].
//! - Names are case-sensitive; the store refuses empty names and names over
//!   [`MAX_NAME_CHARS`] characters. The command layer checks the rest.
//!
//! # Concurrency and portability
//!
//! Each store object owns one connection (WAL, `synchronous=NORMAL`, 2 s
//! busy timeout) behind a mutex, so it can be shared between threads; any
//! number of store objects in any number of processes may use the same
//! file. Every operation is one transaction: reads are deferred, writes
//! `BEGIN IMMEDIATE`, so read-check-write sequences (ownership, name free,
//! `use_count + 1`) cannot interleave. A write that cannot get the lock
//! within the busy timeout fails with [`StoreError::Locked`] and changes
//! nothing.
//!
//! The queries are plain SQL (no `RETURNING`, no `INSERT OR ...`, no
//! `last_insert_rowid`) so a Postgres backend only needs its own DDL and
//! placeholders. The schema check and migration (`Db::ensure_schema`
//! callers) read `sqlite_master` / `pragma_table_info` and are the only
//! SQLite-specific parts, together with `AUTOINCREMENT` in the DDL. Note for
//! that backend: `search` folds case with the database's `lower()`, which in
//! SQLite folds ASCII letters only (`É` does not match `é`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;
use serde_json::{Map, Value};
use tradebox_data::timestamp;

use crate::audit::{AuditEntry, AuditLog};

/// The longest function name the store accepts, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// How long a write waits for another connection's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// The `format` tag of [`FunctionStore::export`] documents.
pub const EXPORT_FORMAT: &str = "tradebox-functions";

/// The version of the export document layout.
pub const EXPORT_FORMAT_VERSION: u64 = 1;

/// How many functions [`Stats::top`] holds.
const TOP_N: i64 = 5;

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

/// The columns of [`Function`], in the order [`function_from_row`] reads them.
/// `coalesce` covers rows of the original bot, whose columns allowed NULL.
const COLUMNS: &str = "id, name, coalesce(description, ''), code, created_by, created_at, \
     last_used, coalesce(use_count, 0), version, updated_by, updated_at, deleted_at";

const VERSION_COLUMNS: &str =
    "function_id, version, name, coalesce(description, ''), code, saved_by, saved_at, action";

/// Everything that can go wrong in the function store and the audit log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no function named `{name}`")]
    NotFound { name: String },

    #[error("function `{name}` belongs to {owner}; only its creator or an admin can change it")]
    NotOwner { name: String, owner: String },

    #[error("a function named `{name}` already exists; choose another name")]
    NameTaken { name: String },

    #[error(
        "store {path} is locked by another process; nothing was changed, try again in a moment"
    )]
    Locked { path: PathBuf },

    #[error("store {path} is read-only ({detail}); nothing was changed")]
    ReadOnly { path: PathBuf, detail: String },

    #[error("{0}")]
    Invalid(String),

    #[error("store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// True when the request is at fault (unknown name, not the owner, name
    /// taken, invalid input) rather than the machine.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound { .. }
                | StoreError::NotOwner { .. }
                | StoreError::NameTaken { .. }
                | StoreError::Invalid(_)
        )
    }
}

/// A saved function as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Function {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub code: String,
    pub created_by: String,
    /// Canonical UTC text (`YYYY-MM-DDTHH:MM:SS[.ffffff]`), as all times here.
    pub created_at: String,
    pub last_used: Option<String>,
    pub use_count: u64,
    /// The newest version number; what an execution ran.
    pub version: u32,
    pub updated_by: Option<String>,
    pub updated_at: Option<String>,
}

/// What [`FunctionStore::save`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SaveOutcome {
    pub function: Function,
    /// True for a new function (or a deleted one brought back), false for a
    /// new version of a live function.
    pub created: bool,
}

/// What a version row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionAction {
    Save,
    Rename,
    Delete,
    Import,
}

impl VersionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionAction::Save => "save",
            VersionAction::Rename => "rename",
            VersionAction::Delete => "delete",
            VersionAction::Import => "import",
        }
    }

    fn parse(s: &str) -> Option<VersionAction> {
        match s {
            "save" => Some(VersionAction::Save),
            "rename" => Some(VersionAction::Rename),
            "delete" => Some(VersionAction::Delete),
            "import" => Some(VersionAction::Import),
            _ => None,
        }
    }
}

/// One row of a function's history: the state after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionRecord {
    pub function_id: i64,
    pub version: u32,
    pub name: String,
    pub description: String,
    pub code: String,
    pub saved_by: String,
    pub saved_at: String,
    pub action: VersionAction,
}

/// Totals for `/listfuncs` and the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Live functions.
    pub total_functions: u64,
    /// Sum of the use counts of live functions.
    pub total_uses: u64,
    /// Up to 5 live functions that were used at least once, most used first
    /// (ties by name, ignoring ASCII case).
    pub top: Vec<(String, u64)>,
}

/// What [`FunctionStore::import`] did, by function name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// New functions, and deleted ones brought back.
    pub created: Vec<String>,
    /// Live functions whose description or code changed: a new version each.
    pub updated: Vec<String>,
    /// Live functions identical to the import: no new version.
    pub unchanged: Vec<String>,
}

/// The function store; see the module documentation.
pub struct FunctionStore {
    db: Db,
}

impl FunctionStore {
    /// Opens the store in the SQLite file at `path` (normally
    /// `$TRADEBOX_HOME/tradebox.db`), creating the file, the tables or the
    /// missing columns when needed.
    pub fn open(path: impl AsRef<Path>) -> Result<FunctionStore, StoreError> {
        let db = Db::open(path.as_ref())?;
        db.ensure_schema(schema_ready, migrate)?;
        Ok(FunctionStore { db })
    }

    /// The file this store uses.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Saves `name` as a new function (version 1), as a new version of a live
    /// function, or revives a deleted one (see the module documentation).
    /// Saving over a live function created by someone else needs `is_admin`.
    pub fn save(
        &self,
        name: &str,
        description: &str,
        code: &str,
        user: &str,
        is_admin: bool,
    ) -> Result<SaveOutcome, StoreError> {
        self.save_inner(name, description, code, user, is_admin, None)
    }

    /// [`FunctionStore::save`], appending `entry` (with the saved version
    /// filled in) to the audit trail in the same transaction: a save and its
    /// audit row land together or not at all. `_audit` shows the audit table
    /// exists.
    #[allow(clippy::too_many_arguments)]
    pub fn save_audited(
        &self,
        name: &str,
        description: &str,
        code: &str,
        user: &str,
        is_admin: bool,
        _audit: &AuditLog,
        entry: &AuditEntry,
    ) -> Result<SaveOutcome, StoreError> {
        self.save_inner(name, description, code, user, is_admin, Some(entry))
    }

    fn save_inner(
        &self,
        name: &str,
        description: &str,
        code: &str,
        user: &str,
        is_admin: bool,
        entry: Option<&AuditEntry>,
    ) -> Result<SaveOutcome, StoreError> {
        check_name(name)?;
        check_code(code)?;
        check_user(user)?;
        self.db.write(|tx| {
            let now = now_text();
            let outcome = match find_any(tx, name)? {
                None => {
                    let fields = NewFunction::fresh(name, description, code, user, &now);
                    SaveOutcome {
                        function: insert_function(tx, &fields, user, &now, VersionAction::Save)?,
                        created: true,
                    }
                }
                Some((f, true)) => {
                    let fields = NewFunction::fresh(name, description, code, user, &now);
                    SaveOutcome {
                        function: revive(tx, f.id, &fields, user, &now, VersionAction::Save)?,
                        created: true,
                    }
                }
                Some((f, false)) => {
                    check_owner(&f, user, is_admin)?;
                    SaveOutcome {
                        function: update_code(
                            tx,
                            f.id,
                            description,
                            code,
                            user,
                            &now,
                            VersionAction::Save,
                        )?,
                        created: false,
                    }
                }
            };
            audit_in(tx, entry, outcome.function.version)?;
            tracing::debug!(
                name,
                version = outcome.function.version,
                created = outcome.created,
                "function saved"
            );
            Ok(outcome)
        })
    }

    /// The live function called exactly `name` (case-sensitive).
    pub fn get(&self, name: &str) -> Result<Option<Function>, StoreError> {
        self.db.read(|tx| Ok(find_live(tx, name)?))
    }

    /// Counts one use of `name` (`use_count + 1`, `last_used` = now) and
    /// returns the function as updated, in one transaction: the count is
    /// exact however many runs finish at once.
    pub fn record_use(&self, name: &str) -> Result<Function, StoreError> {
        self.db.write(|tx| {
            let changed = tx.execute(
                "UPDATE saved_functions SET use_count = coalesce(use_count, 0) + 1, last_used = ?1
                 WHERE name = ?2 AND deleted_at IS NULL",
                params![now_text(), name],
            )?;
            if changed == 0 {
                return Err(not_found(name).into());
            }
            find_live(tx, name)?.ok_or_else(|| not_found(name).into())
        })
    }

    /// Live functions, most used first, then by name (ignoring ASCII case).
    pub fn list(&self, limit: usize, offset: usize) -> Result<Vec<Function>, StoreError> {
        self.db.read(|tx| {
            let sql = format!(
                "SELECT {COLUMNS} FROM saved_functions WHERE deleted_at IS NULL
                 ORDER BY use_count DESC, lower(name), name LIMIT ?1 OFFSET ?2"
            );
            let mut stmt = tx.prepare(&sql)?;
            let rows = stmt
                .query_map(params![to_i64(limit), to_i64(offset)], function_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// How many live functions there are.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.db.read(|tx| {
            let n: i64 = tx.query_row(
                "SELECT count(*) FROM saved_functions WHERE deleted_at IS NULL",
                [],
                |r| r.get(0),
            )?;
            Ok(to_u64(n))
        })
    }

    /// Live functions whose name or description contains `query`, ignoring
    /// case; the query is plain text (`%`, `_`, `\` and quotes match
    /// themselves). Ordered like [`FunctionStore::list`].
    pub fn search(
        &self,
        query: &str,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Function>, StoreError> {
        let pattern = like_pattern(query);
        self.db.read(|tx| {
            let sql = format!(
                "SELECT {COLUMNS} FROM saved_functions WHERE deleted_at IS NULL AND {SEARCH_CONDITION}
                 ORDER BY use_count DESC, lower(name), name LIMIT ?2 OFFSET ?3"
            );
            let mut stmt = tx.prepare(&sql)?;
            let rows = stmt
                .query_map(
                    params![pattern, to_i64(limit), to_i64(offset)],
                    function_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// How many live functions [`FunctionStore::search`] finds in all.
    pub fn search_count(&self, query: &str) -> Result<u64, StoreError> {
        let pattern = like_pattern(query);
        self.db.read(|tx| {
            let sql = format!(
                "SELECT count(*) FROM saved_functions WHERE deleted_at IS NULL AND {SEARCH_CONDITION}"
            );
            let n: i64 = tx.query_row(&sql, params![pattern], |r| r.get(0))?;
            Ok(to_u64(n))
        })
    }

    /// Up to `n` live names close to `name`, best first, for "not found"
    /// messages: same name in another case, then names containing it or
    /// contained in it, then names within a small edit distance.
    pub fn suggest(&self, name: &str, n: usize) -> Result<Vec<String>, StoreError> {
        let names = self.db.read(|tx| {
            let mut stmt =
                tx.prepare("SELECT name FROM saved_functions WHERE deleted_at IS NULL")?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(names)
        })?;
        Ok(rank_suggestions(name, &names, n))
    }

    /// Soft-deletes the live function `name` (creator or admin only) and
    /// returns it as it was deleted (its `version` is the `delete` version).
    pub fn delete(&self, name: &str, user: &str, is_admin: bool) -> Result<Function, StoreError> {
        self.delete_inner(name, user, is_admin, None)
    }

    /// [`FunctionStore::delete`] with its audit row in the same transaction
    /// (see [`FunctionStore::save_audited`]).
    pub fn delete_audited(
        &self,
        name: &str,
        user: &str,
        is_admin: bool,
        _audit: &AuditLog,
        entry: &AuditEntry,
    ) -> Result<Function, StoreError> {
        self.delete_inner(name, user, is_admin, Some(entry))
    }

    fn delete_inner(
        &self,
        name: &str,
        user: &str,
        is_admin: bool,
        entry: Option<&AuditEntry>,
    ) -> Result<Function, StoreError> {
        check_user(user)?;
        self.db.write(|tx| {
            let f = find_live(tx, name)?.ok_or_else(|| not_found(name))?;
            check_owner(&f, user, is_admin)?;
            let now = now_text();
            tx.execute(
                "UPDATE saved_functions SET version = version + 1, updated_by = ?1, updated_at = ?2,
                 deleted_at = ?2 WHERE id = ?3",
                params![user, now, f.id],
            )?;
            let f = by_id(tx, f.id)?;
            insert_version(tx, &f, user, &now, VersionAction::Delete)?;
            audit_in(tx, entry, f.version)?;
            tracing::debug!(name, user, "function deleted");
            Ok(f)
        })
    }

    /// Renames the live function `old` to `new` (creator or admin only).
    pub fn rename(
        &self,
        old: &str,
        new: &str,
        user: &str,
        is_admin: bool,
    ) -> Result<Function, StoreError> {
        check_name(new)?;
        check_user(user)?;
        if old == new {
            return Err(StoreError::Invalid(format!(
                "function `{old}` already has that name"
            )));
        }
        self.db.write(|tx| {
            let f = find_live(tx, old)?.ok_or_else(|| not_found(old))?;
            check_owner(&f, user, is_admin)?;
            let now = now_text();
            match find_any(tx, new)? {
                Some((_, false)) => {
                    return Err(StoreError::NameTaken {
                        name: new.to_string(),
                    }
                    .into())
                }
                Some((holder, true)) => {
                    let tombstone = format!("{new}~{}", holder.id);
                    set_name(tx, holder.id, &tombstone, user, &now)?;
                }
                None => {}
            }
            let f = set_name(tx, f.id, new, user, &now)?;
            tracing::debug!(old, new, user, "function renamed");
            Ok(f)
        })
    }

    /// Every version of the function called `name`, oldest first, deleted
    /// functions included. `name` is looked up as the current name first,
    /// then as a former name (the most recent function that had it).
    pub fn history(&self, name: &str) -> Result<Vec<VersionRecord>, StoreError> {
        self.db.read(|tx| {
            let id: Option<i64> = tx
                .query_row(
                    "SELECT id FROM saved_functions WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()?;
            let id = match id {
                Some(id) => Some(id),
                None => tx
                    .query_row(
                        "SELECT function_id FROM function_versions WHERE name = ?1
                         ORDER BY saved_at DESC, function_id DESC LIMIT 1",
                        params![name],
                        |r| r.get(0),
                    )
                    .optional()?,
            };
            let id = id.ok_or_else(|| not_found(name))?;
            Ok(versions_of(tx, id)?)
        })
    }

    /// Totals and the most used functions.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        self.db.read(|tx| {
            let (total_functions, total_uses): (i64, i64) = tx.query_row(
                "SELECT count(*), coalesce(sum(coalesce(use_count, 0)), 0)
                 FROM saved_functions WHERE deleted_at IS NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let mut stmt = tx.prepare(
                "SELECT name, use_count FROM saved_functions
                 WHERE deleted_at IS NULL AND use_count > 0
                 ORDER BY use_count DESC, lower(name), name LIMIT ?1",
            )?;
            let top = stmt
                .query_map(params![TOP_N], |r| {
                    Ok((r.get::<_, String>(0)?, to_u64(r.get::<_, i64>(1)?)))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Stats {
                total_functions: to_u64(total_functions),
                total_uses: to_u64(total_uses),
                top,
            })
        })
    }

    /// All live functions with their versions, by name, as one JSON
    /// document that [`FunctionStore::import`] reads back:
    /// `{format, format_version, exported_at, functions: [{...Function,
    /// versions: [...]}]}`.
    pub fn export(&self) -> Result<Value, StoreError> {
        let functions = self.db.read(|tx| {
            let sql = format!(
                "SELECT {COLUMNS} FROM saved_functions WHERE deleted_at IS NULL ORDER BY name"
            );
            let mut stmt = tx.prepare(&sql)?;
            let functions = stmt
                .query_map([], function_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut out = Vec::with_capacity(functions.len());
            for f in functions {
                let versions = versions_of(tx, f.id)?;
                out.push((f, versions));
            }
            Ok(out)
        })?;
        let mut list = Vec::with_capacity(functions.len());
        for (f, versions) in functions {
            let mut obj = match serde_json::to_value(&f) {
                Ok(Value::Object(obj)) => obj,
                _ => return Err(StoreError::Invalid(format!("cannot export `{}`", f.name))),
            };
            obj.remove("id");
            let versions = versions
                .into_iter()
                .map(|v| {
                    serde_json::json!({
                        "version": v.version,
                        "name": v.name,
                        "description": v.description,
                        "code": v.code,
                        "saved_by": v.saved_by,
                        "saved_at": v.saved_at,
                        "action": v.action.as_str(),
                    })
                })
                .collect();
            obj.insert("versions".into(), Value::Array(versions));
            list.push(Value::Object(obj));
        }
        Ok(serde_json::json!({
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "exported_at": timestamp::format_rfc3339(timestamp::now()),
            "functions": list,
        }))
    }

    /// Adds or updates functions by name from an [`FunctionStore::export`]
    /// document (or any object with a `functions` array of `{name, code,
    /// description?}`), all or nothing. A changed function gets a new
    /// `import` version saved by `user`; an identical one (same name,
    /// description and code) is left alone. New functions keep the file's
    /// `created_by`, `created_at`, `use_count` and `last_used` when present,
    /// so moving a library between installs keeps authorship; the recorded
    /// versions in the file are informational and not replayed.
    pub fn import(&self, value: &Value, user: &str) -> Result<ImportReport, StoreError> {
        check_user(user)?;
        let entries = parse_import(value)?;
        self.db.write(|tx| {
            let now = now_text();
            let mut report = ImportReport::default();
            for e in &entries {
                let fields = NewFunction {
                    name: &e.name,
                    description: &e.description,
                    code: &e.code,
                    created_by: e.created_by.as_deref().unwrap_or(user),
                    created_at: e.created_at.as_deref().unwrap_or(&now),
                    use_count: e.use_count,
                    last_used: e.last_used.as_deref(),
                };
                match find_any(tx, &e.name)? {
                    None => {
                        insert_function(tx, &fields, user, &now, VersionAction::Import)?;
                        report.created.push(e.name.clone());
                    }
                    Some((f, true)) => {
                        revive(tx, f.id, &fields, user, &now, VersionAction::Import)?;
                        report.created.push(e.name.clone());
                    }
                    Some((f, false)) if f.description == e.description && f.code == e.code => {
                        report.unchanged.push(e.name.clone());
                    }
                    Some((f, false)) => {
                        update_code(
                            tx,
                            f.id,
                            &e.description,
                            &e.code,
                            user,
                            &now,
                            VersionAction::Import,
                        )?;
                        report.updated.push(e.name.clone());
                    }
                }
            }
            tracing::debug!(
                created = report.created.len(),
                updated = report.updated.len(),
                unchanged = report.unchanged.len(),
                "functions imported"
            );
            Ok(report)
        })
    }
}

/// Case-insensitive substring match on name or description; `?1` is the
/// escaped pattern from [`like_pattern`].
const SEARCH_CONDITION: &str = "(lower(name) LIKE lower(?1) ESCAPE '\\' \
     OR lower(coalesce(description, '')) LIKE lower(?1) ESCAPE '\\')";

/// `%query%` with the LIKE wildcards and the escape character escaped.
fn like_pattern(query: &str) -> String {
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
// Row access (all inside a transaction).

/// The fields of a function as created (or revived).
struct NewFunction<'a> {
    name: &'a str,
    description: &'a str,
    code: &'a str,
    created_by: &'a str,
    created_at: &'a str,
    use_count: u64,
    last_used: Option<&'a str>,
}

impl<'a> NewFunction<'a> {
    fn fresh(
        name: &'a str,
        description: &'a str,
        code: &'a str,
        user: &'a str,
        now: &'a str,
    ) -> Self {
        NewFunction {
            name,
            description,
            code,
            created_by: user,
            created_at: now,
            use_count: 0,
            last_used: None,
        }
    }
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

/// The function holding `name`, live or deleted.
fn find_any(conn: &Connection, name: &str) -> rusqlite::Result<Option<(Function, bool)>> {
    let sql = format!("SELECT {COLUMNS} FROM saved_functions WHERE name = ?1");
    conn.query_row(&sql, params![name], row_with_deleted)
        .optional()
}

fn find_live(conn: &Connection, name: &str) -> rusqlite::Result<Option<Function>> {
    let sql =
        format!("SELECT {COLUMNS} FROM saved_functions WHERE name = ?1 AND deleted_at IS NULL");
    conn.query_row(&sql, params![name], function_from_row)
        .optional()
}

fn by_id(conn: &Connection, id: i64) -> rusqlite::Result<Function> {
    let sql = format!("SELECT {COLUMNS} FROM saved_functions WHERE id = ?1");
    conn.query_row(&sql, params![id], function_from_row)
}

fn versions_of(conn: &Connection, id: i64) -> rusqlite::Result<Vec<VersionRecord>> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM function_versions WHERE function_id = ?1 ORDER BY version"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map(params![id], version_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Writes the version row for the state `f` is in now.
fn insert_version(
    conn: &Connection,
    f: &Function,
    saved_by: &str,
    saved_at: &str,
    action: VersionAction,
) -> rusqlite::Result<()> {
    conn.execute(
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
    )?;
    Ok(())
}

fn insert_function(
    conn: &Connection,
    n: &NewFunction<'_>,
    user: &str,
    now: &str,
    action: VersionAction,
) -> rusqlite::Result<Function> {
    conn.execute(
        "INSERT INTO saved_functions (name, description, code, created_by, created_at, last_used,
         use_count, version, updated_by, updated_at)
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
    let f = conn.query_row(&sql, params![n.name], function_from_row)?;
    insert_version(conn, &f, user, now, action)?;
    Ok(f)
}

/// Brings back the deleted function `id` as a new function (continuing its
/// version numbers).
fn revive(
    conn: &Connection,
    id: i64,
    n: &NewFunction<'_>,
    user: &str,
    now: &str,
    action: VersionAction,
) -> rusqlite::Result<Function> {
    conn.execute(
        "UPDATE saved_functions SET description = ?1, code = ?2, created_by = ?3, created_at = ?4,
         last_used = ?5, use_count = ?6, version = version + 1, updated_by = ?7, updated_at = ?8,
         deleted_at = NULL WHERE id = ?9",
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
    let f = by_id(conn, id)?;
    insert_version(conn, &f, user, now, action)?;
    Ok(f)
}

/// A new version of the live function `id` with new description and code.
fn update_code(
    conn: &Connection,
    id: i64,
    description: &str,
    code: &str,
    user: &str,
    now: &str,
    action: VersionAction,
) -> rusqlite::Result<Function> {
    conn.execute(
        "UPDATE saved_functions SET description = ?1, code = ?2, version = version + 1,
         updated_by = ?3, updated_at = ?4 WHERE id = ?5",
        params![description, code, user, now, id],
    )?;
    let f = by_id(conn, id)?;
    insert_version(conn, &f, user, now, action)?;
    Ok(f)
}

/// A `rename` version of function `id`.
fn set_name(
    conn: &Connection,
    id: i64,
    name: &str,
    user: &str,
    now: &str,
) -> rusqlite::Result<Function> {
    conn.execute(
        "UPDATE saved_functions SET name = ?1, version = version + 1, updated_by = ?2,
         updated_at = ?3 WHERE id = ?4",
        params![name, user, now, id],
    )?;
    let f = by_id(conn, id)?;
    insert_version(conn, &f, user, now, VersionAction::Rename)?;
    Ok(f)
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

/// True when every named table, index or trigger exists.
pub(crate) fn objects_exist(conn: &Connection, names: &[&str]) -> rusqlite::Result<bool> {
    for name in names {
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )?;
        if n == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

fn table_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = stmt
        .query_map(params![table], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(names)
}

// ---------------------------------------------------------------------------
// Checks.

fn check_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() {
        return Err(StoreError::Invalid("the function name is empty".into()));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(StoreError::Invalid(format!(
            "the function name is {chars} characters long; at most {MAX_NAME_CHARS} are allowed"
        )));
    }
    Ok(())
}

fn check_code(code: &str) -> Result<(), StoreError> {
    if code.trim().is_empty() {
        return Err(StoreError::Invalid("the function code is empty".into()));
    }
    Ok(())
}

fn check_user(user: &str) -> Result<(), StoreError> {
    if user.trim().is_empty() {
        return Err(StoreError::Invalid("the user id is empty".into()));
    }
    Ok(())
}

fn check_owner(f: &Function, user: &str, is_admin: bool) -> Result<(), StoreError> {
    if f.created_by == user || is_admin {
        Ok(())
    } else {
        Err(StoreError::NotOwner {
            name: f.name.clone(),
            owner: f.created_by.clone(),
        })
    }
}

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound {
        name: name.to_string(),
    }
}

fn now_text() -> String {
    timestamp::format(timestamp::now())
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
// Import document.

/// One function of an import document, checked.
struct ImportEntry {
    name: String,
    description: String,
    code: String,
    created_by: Option<String>,
    created_at: Option<String>,
    use_count: u64,
    last_used: Option<String>,
}

fn invalid(msg: String) -> StoreError {
    StoreError::Invalid(format!("import: {msg}"))
}

fn parse_import(value: &Value) -> Result<Vec<ImportEntry>, StoreError> {
    let obj = value.as_object().ok_or_else(|| {
        invalid("expected a JSON object with a \"functions\" array, as written by export".into())
    })?;
    if let Some(format) = obj.get("format") {
        if format.as_str() != Some(EXPORT_FORMAT) {
            return Err(invalid(format!(
                "\"format\" is {format}, expected \"{EXPORT_FORMAT}\""
            )));
        }
    }
    if let Some(v) = obj.get("format_version") {
        if v.as_u64() != Some(EXPORT_FORMAT_VERSION) {
            return Err(invalid(format!(
                "\"format_version\" {v} is not supported (this version reads {EXPORT_FORMAT_VERSION})"
            )));
        }
    }
    let list = match obj.get("functions") {
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("\"functions\" must be an array".into())),
        None => return Err(invalid("the object has no \"functions\" array".into())),
    };
    let mut seen = HashSet::new();
    let mut entries = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let at = format!("functions[{i}]");
        let item = item
            .as_object()
            .ok_or_else(|| invalid(format!("{at} must be an object")))?;
        let name = match item.get("name") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(invalid(format!("{at}: \"name\" must be a string"))),
        };
        let at = format!("{at} ({name:?})");
        check_name(&name).map_err(|e| invalid(format!("{at}: {e}")))?;
        if !seen.insert(name.clone()) {
            return Err(invalid(format!("{at}: the name appears more than once")));
        }
        let code = match item.get("code") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => {
                return Err(invalid(format!(
                    "{at}: \"code\" must be a non-empty string"
                )))
            }
        };
        let created_by = optional_text(item, "created_by", &at)?;
        if created_by.as_deref().is_some_and(|u| u.trim().is_empty()) {
            return Err(invalid(format!("{at}: \"created_by\" is empty")));
        }
        let created_at = optional_text(item, "created_at", &at)?;
        let last_used = optional_text(item, "last_used", &at)?;
        for (key, text) in [("created_at", &created_at), ("last_used", &last_used)] {
            if let Some(text) = text {
                timestamp::parse(text).map_err(|e| invalid(format!("{at}: \"{key}\": {e}")))?;
            }
        }
        let use_count = match item.get("use_count") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_u64().ok_or_else(|| {
                invalid(format!(
                    "{at}: \"use_count\" must be a non-negative integer"
                ))
            })?,
        };
        entries.push(ImportEntry {
            name,
            description: optional_text(item, "description", &at)?.unwrap_or_default(),
            code,
            created_by,
            created_at,
            use_count,
            last_used,
        });
    }
    Ok(entries)
}

/// A string field that may be missing or null.
fn optional_text(
    item: &Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<String>, StoreError> {
    match item.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("{at}: \"{key}\" must be a string"))),
    }
}

// ---------------------------------------------------------------------------
// Suggestions.

fn rank_suggestions(query: &str, names: &[String], n: usize) -> Vec<String> {
    let q: Vec<char> = query.to_lowercase().chars().collect();
    if q.is_empty() || n == 0 {
        return Vec::new();
    }
    let q_text: String = q.iter().collect();
    let max_distance = ((q.len() + 1) / 3).max(1);
    let mut ranked: Vec<(u8, usize, &String)> = names
        .iter()
        .filter_map(|name| {
            let lower = name.to_lowercase();
            let c: Vec<char> = lower.chars().collect();
            let distance = levenshtein(&q, &c);
            let rank = if lower == q_text {
                0
            } else if q.len().min(c.len()) >= 2
                && (lower.contains(&q_text) || q_text.contains(&lower))
            {
                1
            } else if distance <= max_distance {
                2
            } else {
                return None;
            };
            Some((rank, distance, name))
        })
        .collect();
    ranked.sort();
    ranked
        .into_iter()
        .take(n)
        .map(|(_, _, name)| name.clone())
        .collect()
}

/// Edit distance (insertions, deletions, substitutions) between two strings.
fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------
// Connection plumbing, shared with the audit log.

/// One connection to the store file behind a mutex: a store object can be
/// shared between threads, and each operation holds the connection for one
/// transaction.
pub(crate) struct Db {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// An error inside a transaction: SQLite's (mapped with the path on the way
/// out) or already one of ours.
/// Appends the audit row of a write, with its version, in its transaction.
fn audit_in(tx: &Connection, entry: Option<&AuditEntry>, version: u32) -> Result<(), Failure> {
    if let Some(entry) = entry {
        let mut entry = entry.clone();
        entry.function_version = Some(version);
        crate::audit::insert(tx, &entry, timestamp::now())?;
    }
    Ok(())
}

pub(crate) enum Failure {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl Failure {
    fn at(self, path: &Path) -> StoreError {
        match self {
            Failure::Sql(e) => sqlite_error(path, e),
            Failure::Store(e) => e,
        }
    }
}

impl Db {
    /// Opens (creating if needed) the file with the store's settings, in the
    /// same way as the trade store.
    pub(crate) fn open(path: &Path) -> Result<Db, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::ReadOnly {
                path: path.to_path_buf(),
                detail: format!("cannot create the folder {}: {e}", dir.display()),
            })?;
        }
        let conn = Connection::open(path).map_err(|e| sqlite_error(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sqlite_error(path, e))?;
        // WAL lets readers run beside a writer. The mode is kept in the
        // file; if another connection holds a lock right now the switch is
        // left to whoever opened the file first.
        let _ = conn.pragma_update(None, "journal_mode", "WAL");
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| sqlite_error(path, e))?;
        Ok(Db {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the schema with a read; only when `ready` says no, creates or
    /// migrates it in a write transaction (checking again inside it, as
    /// another process may have done it meanwhile). Opening a ready store
    /// therefore works while another connection holds the write lock.
    pub(crate) fn ensure_schema(
        &self,
        ready: fn(&Connection) -> rusqlite::Result<bool>,
        migrate: fn(&Connection) -> rusqlite::Result<()>,
    ) -> Result<(), StoreError> {
        if self.read(|tx| Ok(ready(tx)?))? {
            return Ok(());
        }
        self.write(|tx| {
            if !ready(tx)? {
                migrate(tx)?;
            }
            Ok(())
        })
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction; nothing is kept if it
    /// fails.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        self.transaction(TransactionBehavior::Immediate, f)
    }

    /// Runs `f` in one read transaction (a consistent snapshot).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        self.transaction(TransactionBehavior::Deferred, f)
    }

    fn transaction<T>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Connection) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(behavior)
            .map_err(|e| sqlite_error(&self.path, e))?;
        let value = f(&tx).map_err(|e| e.at(&self.path))?;
        tx.commit().map_err(|e| sqlite_error(&self.path, e))?;
        Ok(value)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic inside a transaction rolled it back when the transaction
        // was dropped, so the connection is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Maps SQLite failures to the errors a user can act on.
pub(crate) fn sqlite_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked { path },
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly {
            path,
            detail: "the file or its folder cannot be written".into(),
        },
        _ => StoreError::Sqlite { path, source: e },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::time::Instant;
    use tempfile::TempDir;

    fn setup() -> (TempDir, PathBuf, FunctionStore) {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("tradebox.db");
        let store = FunctionStore::open(&path).unwrap();
        (dir, path, store)
    }

    fn names(fs: &[Function]) -> Vec<&str> {
        fs.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn create_and_get() {
        let (_dir, _path, s) = setup();
        let out = s
            .save("pnl", "daily pnl", "result = 1", "U1", false)
            .unwrap();
        assert!(out.created);
        let f = out.function;
        assert_eq!(f.name, "pnl");
        assert_eq!(f.description, "daily pnl");
        assert_eq!(f.code, "result = 1");
        assert_eq!(f.created_by, "U1");
        assert_eq!(f.version, 1);
        assert_eq!(f.use_count, 0);
        assert_eq!(f.last_used, None);
        assert_eq!(f.updated_by.as_deref(), Some("U1"));
        assert!(timestamp::parse(&f.created_at).is_ok());
        assert_eq!(s.get("pnl").unwrap(), Some(f));
        assert_eq!(s.get("PNL").unwrap(), None, "names are case-sensitive");
        assert_eq!(s.get("missing").unwrap(), None);
        assert_eq!(s.count().unwrap(), 1);
    }

    #[test]
    fn invalid_input_is_refused() {
        let (_dir, _path, s) = setup();
        let long = "a".repeat(65);
        for (name, code, user) in [
            ("", "x", "U1"),
            ("  ", "x", "U1"),
            (long.as_str(), "x", "U1"),
            ("ok", "  \n", "U1"),
            ("ok", "x", ""),
        ] {
            let err = s.save(name, "", code, user, false).unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{err}");
            assert!(err.is_user_error());
        }
        // 64 characters (not bytes) is fine.
        let max = "é".repeat(64);
        s.save(&max, "", "x", "U1", false).unwrap();
        assert_eq!(s.count().unwrap(), 1);
    }

    #[test]
    fn list_order_and_paging() {
        let (_dir, _path, s) = setup();
        for name in ["delta", "alpha", "charlie", "bravo"] {
            s.save(name, "", "x", "U1", false).unwrap();
        }
        for _ in 0..3 {
            s.record_use("charlie").unwrap();
        }
        s.record_use("delta").unwrap();
        s.record_use("bravo").unwrap();
        let all = s.list(10, 0).unwrap();
        assert_eq!(names(&all), ["charlie", "bravo", "delta", "alpha"]);
        assert_eq!(names(&s.list(2, 1).unwrap()), ["bravo", "delta"]);
        assert!(s.list(10, 4).unwrap().is_empty());
        assert_eq!(s.count().unwrap(), 4);
    }

    #[test]
    fn record_use_counts_and_stamps() {
        let (_dir, _path, s) = setup();
        s.save("f", "", "x", "U1", false).unwrap();
        let f = s.record_use("f").unwrap();
        assert_eq!(f.use_count, 1);
        assert!(f.last_used.is_some());
        assert_eq!(s.record_use("f").unwrap().use_count, 2);
        assert!(matches!(
            s.record_use("nope").unwrap_err(),
            StoreError::NotFound { name } if name == "nope"
        ));
    }

    #[test]
    fn search_is_case_insensitive_and_literal() {
        let (_dir, _path, s) = setup();
        s.save("Daily_PnL", "profit and loss per day", "x", "U1", false)
            .unwrap();
        s.save("volume", "Traded VOLUME by exchange", "x", "U1", false)
            .unwrap();
        s.save("pct", "fee as 100% of nothing", "x", "U1", false)
            .unwrap();
        s.save("abc", "plain", "x", "U1", false).unwrap();
        s.save("a_c", "underscore name", "x", "U1", false).unwrap();
        s.save("back", r"path C:\data\x", "x", "U1", false).unwrap();

        let found = |q: &str| names(&s.search(q, 50, 0).unwrap()).join(",");
        assert_eq!(found("pnl"), "Daily_PnL");
        assert_eq!(found("DAILY"), "Daily_PnL");
        assert_eq!(found("volume"), "volume");
        // `%` and `_` match only themselves.
        assert_eq!(found("%"), "pct");
        assert_eq!(found("100%"), "pct");
        assert_eq!(found("a_c"), "a_c");
        assert_eq!(found("_"), "a_c,Daily_PnL");
        assert_eq!(found(r"\data"), "back");
        assert_eq!(found(r"\"), "back");
        assert_eq!(found("zzz"), "");
        assert_eq!(s.search_count("_").unwrap(), 2);
        assert_eq!(s.search_count("").unwrap(), 6);
        assert_eq!(names(&s.search("", 2, 1).unwrap()).len(), 2);
    }

    #[test]
    fn sql_looking_text_is_stored_and_searched_literally() {
        let (_dir, _path, s) = setup();
        let name = "x'); DROP TABLE saved_functions;--";
        let desc = "' OR 1=1 --";
        s.save(
            name,
            desc,
            "result = \"'; DELETE FROM audit_log; --\"",
            "U1",
            false,
        )
        .unwrap();
        s.save("other", "harmless", "x", "U1", false).unwrap();
        let f = s.get(name).unwrap().unwrap();
        assert_eq!(f.description, desc);
        assert_eq!(names(&s.search("' OR 1=1", 10, 0).unwrap()), [name]);
        assert_eq!(names(&s.search("DROP TABLE", 10, 0).unwrap()), [name]);
        assert!(s.search("'; --", 10, 0).unwrap().is_empty());
        assert_eq!(s.search_count("' OR '1'='1").unwrap(), 0);
        assert_eq!(s.count().unwrap(), 2);
    }

    #[test]
    fn unicode_round_trips() {
        let (_dir, _path, s) = setup();
        let desc = "Gewinn 📈 für MM1 — 日次損益 🚀";
        let code = "result = '✓ ünïcödé'  # 🐍";
        s.save("emoji", desc, code, "U1", false).unwrap();
        let f = s.get("emoji").unwrap().unwrap();
        assert_eq!(f.description, desc);
        assert_eq!(f.code, code);
        assert_eq!(names(&s.search("📈", 10, 0).unwrap()), ["emoji"]);
        assert_eq!(names(&s.search("日次", 10, 0).unwrap()), ["emoji"]);
        // ASCII letters fold; the non-ASCII ones match in their own case.
        assert_eq!(names(&s.search("GEWINN", 10, 0).unwrap()), ["emoji"]);
        assert_eq!(names(&s.search("für", 10, 0).unwrap()), ["emoji"]);
        let history = s.history("emoji").unwrap();
        assert_eq!(history[0].description, desc);
    }

    #[test]
    fn saves_make_versions_and_history() {
        let (_dir, _path, s) = setup();
        s.save("f", "one", "a = 1", "U1", false).unwrap();
        s.record_use("f").unwrap();
        let out = s.save("f", "two", "a = 2", "U1", false).unwrap();
        assert!(!out.created);
        assert_eq!(out.function.version, 2);
        assert_eq!(out.function.code, "a = 2");
        assert_eq!(out.function.use_count, 1, "use count kept");
        // Saving the same code again is still a new version.
        assert_eq!(
            s.save("f", "two", "a = 2", "U1", false)
                .unwrap()
                .function
                .version,
            3
        );
        let h = s.history("f").unwrap();
        assert_eq!(
            h.iter()
                .map(|v| (v.version, v.code.as_str(), v.action))
                .collect::<Vec<_>>(),
            [
                (1, "a = 1", VersionAction::Save),
                (2, "a = 2", VersionAction::Save),
                (3, "a = 2", VersionAction::Save)
            ]
        );
        assert!(h
            .iter()
            .all(|v| v.saved_by == "U1" && v.function_id == h[0].function_id));
        assert!(matches!(
            s.history("nope").unwrap_err(),
            StoreError::NotFound { .. }
        ));
    }

    #[test]
    fn saving_over_another_users_function_needs_admin() {
        let (_dir, _path, s) = setup();
        s.save("f", "", "a = 1", "U1", false).unwrap();
        let err = s.save("f", "", "a = 2", "U2", false).unwrap_err();
        match &err {
            StoreError::NotOwner { name, owner } => {
                assert_eq!((name.as_str(), owner.as_str()), ("f", "U1"));
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("U1"));
        assert_eq!(s.get("f").unwrap().unwrap().code, "a = 1");
        assert_eq!(s.history("f").unwrap().len(), 1);

        let f = s.save("f", "", "a = 3", "ADMIN", true).unwrap().function;
        assert_eq!(f.code, "a = 3");
        assert_eq!(f.created_by, "U1", "the creator stays the creator");
        assert_eq!(f.updated_by.as_deref(), Some("ADMIN"));
        assert_eq!(s.history("f").unwrap()[1].saved_by, "ADMIN");
    }

    #[test]
    fn delete_by_creator_admin_and_other() {
        let (_dir, _path, s) = setup();
        s.save("mine", "", "x", "U1", false).unwrap();
        s.save("theirs", "", "x", "U1", false).unwrap();

        let err = s.delete("mine", "U2", false).unwrap_err();
        assert!(matches!(err, StoreError::NotOwner { ref owner, .. } if owner == "U1"));
        assert!(s.get("mine").unwrap().is_some());

        let f = s.delete("mine", "U1", false).unwrap();
        assert_eq!((f.name.as_str(), f.version), ("mine", 2));
        s.delete("theirs", "ADMIN", true).unwrap();
        assert_eq!(s.count().unwrap(), 0);

        for name in ["mine", "missing"] {
            let err = s.delete(name, "U1", false).unwrap_err();
            assert!(matches!(err, StoreError::NotFound { name: ref n } if n == name));
        }
    }

    #[test]
    fn deleted_functions_are_hidden_but_kept_in_history() {
        let (_dir, _path, s) = setup();
        s.save("gone", "to delete", "x", "U1", false).unwrap();
        s.save("kept", "", "x", "U1", false).unwrap();
        s.record_use("gone").unwrap();
        s.delete("gone", "U1", false).unwrap();

        assert_eq!(s.get("gone").unwrap(), None);
        assert_eq!(names(&s.list(10, 0).unwrap()), ["kept"]);
        assert!(s.search("delete", 10, 0).unwrap().is_empty());
        assert_eq!(s.search_count("gone").unwrap(), 0);
        assert!(s.suggest("gone", 5).unwrap().is_empty());
        let stats = s.stats().unwrap();
        assert_eq!((stats.total_functions, stats.total_uses), (1, 0));
        assert!(matches!(
            s.record_use("gone").unwrap_err(),
            StoreError::NotFound { .. }
        ));
        assert!(matches!(
            s.rename("gone", "back", "U1", false).unwrap_err(),
            StoreError::NotFound { .. }
        ));

        let h = s.history("gone").unwrap();
        assert_eq!(
            h.iter().map(|v| v.action).collect::<Vec<_>>(),
            [VersionAction::Save, VersionAction::Delete]
        );
        assert_eq!(h[1].code, "x");
        assert_eq!(h[1].saved_by, "U1");
    }

    #[test]
    fn saving_a_deleted_name_revives_it_for_the_new_saver() {
        let (_dir, _path, s) = setup();
        s.save("f", "old", "a = 1", "U1", false).unwrap();
        s.record_use("f").unwrap();
        s.delete("f", "U1", false).unwrap();

        // Anyone may take the name of a deleted function.
        let out = s.save("f", "new", "a = 2", "U2", false).unwrap();
        assert!(out.created);
        let f = out.function;
        assert_eq!(f.created_by, "U2");
        assert_eq!(f.use_count, 0);
        assert_eq!(f.last_used, None);
        assert_eq!(f.version, 3);
        assert_eq!(s.get("f").unwrap(), Some(f.clone()));
        // Now U2 owns it.
        assert!(matches!(
            s.save("f", "", "a = 3", "U1", false).unwrap_err(),
            StoreError::NotOwner { .. }
        ));
        let h = s.history("f").unwrap();
        assert_eq!(
            h.iter()
                .map(|v| (v.version, v.action, v.saved_by.as_str()))
                .collect::<Vec<_>>(),
            [
                (1, VersionAction::Save, "U1"),
                (2, VersionAction::Delete, "U1"),
                (3, VersionAction::Save, "U2")
            ]
        );
        assert!(h.iter().all(|v| v.function_id == f.id));
    }

    #[test]
    fn rename_rules() {
        let (_dir, _path, s) = setup();
        s.save("old", "d", "x", "U1", false).unwrap();
        s.save("taken", "", "x", "U2", false).unwrap();

        assert!(matches!(
            s.rename("old", "new", "U2", false).unwrap_err(),
            StoreError::NotOwner { .. }
        ));
        assert!(matches!(
            s.rename("old", "taken", "U1", false).unwrap_err(),
            StoreError::NameTaken { ref name } if name == "taken"
        ));
        assert!(matches!(
            s.rename("nope", "new", "U1", false).unwrap_err(),
            StoreError::NotFound { ref name } if name == "nope"
        ));
        assert!(matches!(
            s.rename("old", "", "U1", false).unwrap_err(),
            StoreError::Invalid(_)
        ));
        assert!(matches!(
            s.rename("old", "old", "U1", false).unwrap_err(),
            StoreError::Invalid(_)
        ));

        let f = s.rename("old", "new", "U1", false).unwrap();
        assert_eq!(
            (f.name.as_str(), f.version, f.created_by.as_str()),
            ("new", 2, "U1")
        );
        assert_eq!(s.get("old").unwrap(), None);
        assert_eq!(s.get("new").unwrap(), Some(f.clone()));
        let h = s.history("new").unwrap();
        assert_eq!(
            h.iter()
                .map(|v| (v.name.as_str(), v.action))
                .collect::<Vec<_>>(),
            [("old", VersionAction::Save), ("new", VersionAction::Rename)]
        );
        // The former name still finds the history.
        assert_eq!(s.history("old").unwrap(), h);

        // An admin may rename anyone's function; case-only renames work.
        s.rename("taken", "Taken", "ADMIN", true).unwrap();
        assert!(s.get("Taken").unwrap().is_some());
    }

    #[test]
    fn rename_onto_a_deleted_name_moves_the_deleted_one_aside() {
        let (_dir, _path, s) = setup();
        let gone = s
            .save("report", "old", "a = 1", "U1", false)
            .unwrap()
            .function;
        s.delete("report", "U1", false).unwrap();
        s.save("draft", "new", "a = 2", "U2", false).unwrap();

        let f = s.rename("draft", "report", "U2", false).unwrap();
        assert_eq!(f.code, "a = 2");
        assert_eq!(s.get("report").unwrap(), Some(f));
        let moved = format!("report~{}", gone.id);
        let h = s.history(&moved).unwrap();
        assert_eq!(
            h.iter().map(|v| v.action).collect::<Vec<_>>(),
            [
                VersionAction::Save,
                VersionAction::Delete,
                VersionAction::Rename
            ]
        );
        assert_eq!(s.get(&moved).unwrap(), None, "still deleted");
        assert_eq!(s.count().unwrap(), 1);
    }

    #[test]
    fn stats_totals_and_top() {
        let (_dir, _path, s) = setup();
        assert_eq!(
            s.stats().unwrap(),
            Stats {
                total_functions: 0,
                total_uses: 0,
                top: vec![]
            }
        );
        for (name, uses) in [
            ("a", 1),
            ("b", 5),
            ("c", 3),
            ("d", 3),
            ("e", 2),
            ("f", 4),
            ("g", 0),
        ] {
            s.save(name, "", "x", "U1", false).unwrap();
            for _ in 0..uses {
                s.record_use(name).unwrap();
            }
        }
        let stats = s.stats().unwrap();
        assert_eq!(stats.total_functions, 7);
        assert_eq!(stats.total_uses, 18);
        let top: Vec<(&str, u64)> = stats.top.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        assert_eq!(top, [("b", 5), ("f", 4), ("c", 3), ("d", 3), ("e", 2)]);
    }

    #[test]
    fn suggest_close_names() {
        let (_dir, _path, s) = setup();
        for name in [
            "daily_pnl",
            "weekly_pnl",
            "volume",
            "fees",
            "volume_by_exchange",
            "x",
        ] {
            s.save(name, "", "x", "U1", false).unwrap();
        }
        assert_eq!(
            s.suggest("Volume", 3).unwrap(),
            ["volume", "volume_by_exchange"]
        );
        assert_eq!(s.suggest("daly_pnl", 3).unwrap(), ["daily_pnl"]);
        assert_eq!(s.suggest("pnl", 5).unwrap(), ["daily_pnl", "weekly_pnl"]);
        assert_eq!(s.suggest("fee", 5).unwrap(), ["fees"]);
        assert_eq!(s.suggest("volmue", 1).unwrap(), ["volume"]);
        assert!(s.suggest("completely_different", 5).unwrap().is_empty());
        assert!(s.suggest("", 5).unwrap().is_empty());
        assert!(s.suggest("fees", 0).unwrap().is_empty());
    }

    #[test]
    fn levenshtein_distances() {
        let d = |a: &str, b: &str| {
            levenshtein(
                &a.chars().collect::<Vec<_>>(),
                &b.chars().collect::<Vec<_>>(),
            )
        };
        assert_eq!(d("", ""), 0);
        assert_eq!(d("abc", ""), 3);
        assert_eq!(d("", "ab"), 2);
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("flaw", "lawn"), 2);
        assert_eq!(d("pnl", "pnl"), 0);
        assert_eq!(d("émoji", "emoji"), 1);
    }

    #[test]
    fn like_pattern_escapes() {
        assert_eq!(like_pattern("a%b_c\\d"), r"%a\%b\_c\\d%");
        assert_eq!(like_pattern(""), "%%");
    }

    #[test]
    fn export_import_round_trip_and_idempotency() {
        let (_dir, _path, a) = setup();
        a.save("pnl", "daily 📈", "result = 1", "U1", false)
            .unwrap();
        a.save("pnl", "daily 📈", "result = 2", "U1", false)
            .unwrap();
        a.save("fees", "", "result = 3", "U2", false).unwrap();
        a.save("gone", "", "x", "U2", false).unwrap();
        a.delete("gone", "U2", false).unwrap();
        for _ in 0..4 {
            a.record_use("pnl").unwrap();
        }
        let doc = a.export().unwrap();
        assert_eq!(doc["format"], EXPORT_FORMAT);
        let list = doc["functions"].as_array().unwrap();
        assert_eq!(list.len(), 2, "deleted functions are not exported");
        assert_eq!(list[1]["name"], "pnl");
        assert_eq!(list[1]["versions"].as_array().unwrap().len(), 2);
        assert_eq!(list[1]["versions"][0]["code"], "result = 1");

        // Into an empty store: authorship and counts come along.
        let dir = TempDir::new().unwrap();
        let b = FunctionStore::open(dir.path().join("b.db")).unwrap();
        let report = b.import(&doc, "ADMIN").unwrap();
        assert_eq!(report.created, ["fees", "pnl"]);
        assert!(report.updated.is_empty() && report.unchanged.is_empty());
        let pnl = b.get("pnl").unwrap().unwrap();
        let orig = a.get("pnl").unwrap().unwrap();
        assert_eq!(
            (
                &pnl.description,
                &pnl.code,
                &pnl.created_by,
                &pnl.created_at,
                pnl.use_count,
                &pnl.last_used
            ),
            (
                &orig.description,
                &orig.code,
                &orig.created_by,
                &orig.created_at,
                orig.use_count,
                &orig.last_used
            )
        );
        assert_eq!(pnl.version, 1);
        assert_eq!(pnl.updated_by.as_deref(), Some("ADMIN"));
        let h = b.history("pnl").unwrap();
        assert_eq!(
            (h.len(), h[0].action, h[0].saved_by.as_str()),
            (1, VersionAction::Import, "ADMIN")
        );

        // Again: nothing changes.
        let report = b.import(&doc, "ADMIN").unwrap();
        assert_eq!(report.unchanged, ["fees", "pnl"]);
        assert!(report.created.is_empty() && report.updated.is_empty());
        assert_eq!(b.history("pnl").unwrap().len(), 1);

        // Back into the original: unchanged too.
        let report = a.import(&doc, "ADMIN").unwrap();
        assert_eq!(report.unchanged, ["fees", "pnl"]);
        assert_eq!(a.history("pnl").unwrap().len(), 2);

        // A changed code is a new `import` version; creator kept.
        let mut changed = doc.clone();
        changed["functions"][1]["code"] = "result = 42".into();
        let report = b.import(&changed, "ADMIN").unwrap();
        assert_eq!(report.updated, ["pnl"]);
        assert_eq!(report.unchanged, ["fees"]);
        let pnl = b.get("pnl").unwrap().unwrap();
        assert_eq!(
            (pnl.code.as_str(), pnl.version, pnl.created_by.as_str()),
            ("result = 42", 2, "U1")
        );
        assert_eq!(b.history("pnl").unwrap()[1].action, VersionAction::Import);

        // Importing a deleted name revives it.
        b.delete("fees", "ADMIN", true).unwrap();
        let report = b.import(&doc, "ADMIN").unwrap();
        assert_eq!(report.created, ["fees"]);
        assert_eq!(b.get("fees").unwrap().unwrap().created_by, "U2");

        // A minimal document works; the importer becomes the creator.
        let minimal = serde_json::json!({"functions": [{"name": "m", "code": "x"}]});
        assert_eq!(b.import(&minimal, "U9").unwrap().created, ["m"]);
        let m = b.get("m").unwrap().unwrap();
        assert_eq!((m.created_by.as_str(), m.description.as_str()), ("U9", ""));
    }

    #[test]
    fn import_validates_the_shape() {
        let (_dir, _path, s) = setup();
        let cases = [
            (serde_json::json!([]), "\"functions\" array"),
            (serde_json::json!({}), "no \"functions\""),
            (serde_json::json!({"functions": {}}), "must be an array"),
            (
                serde_json::json!({"format": "other", "functions": []}),
                "\"format\"",
            ),
            (
                serde_json::json!({"format_version": 2, "functions": []}),
                "not supported",
            ),
            (
                serde_json::json!({"functions": [1]}),
                "functions[0] must be an object",
            ),
            (
                serde_json::json!({"functions": [{"code": "x"}]}),
                "\"name\" must be a string",
            ),
            (
                serde_json::json!({"functions": [{"name": "", "code": "x"}]}),
                "name is empty",
            ),
            (
                serde_json::json!({"functions": [{"name": "a".repeat(65), "code": "x"}]}),
                "at most 64",
            ),
            (
                serde_json::json!({"functions": [{"name": "a"}]}),
                "\"code\" must be a non-empty string",
            ),
            (
                serde_json::json!({"functions": [{"name": "a", "code": 3}]}),
                "\"code\"",
            ),
            (
                serde_json::json!({"functions": [{"name": "a", "code": "x", "description": 5}]}),
                "\"description\" must be a string",
            ),
            (
                serde_json::json!({"functions": [{"name": "a", "code": "x", "use_count": -1}]}),
                "\"use_count\"",
            ),
            (
                serde_json::json!({"functions": [{"name": "a", "code": "x", "created_at": "yesterday"}]}),
                "\"created_at\"",
            ),
            (
                serde_json::json!({"functions": [{"name": "a", "code": "x", "created_by": ""}]}),
                "\"created_by\" is empty",
            ),
            (
                serde_json::json!({"functions": [{"name": "a", "code": "x"}, {"name": "a", "code": "y"}]}),
                "more than once",
            ),
        ];
        for (doc, want) in cases {
            let err = s.import(&doc, "ADMIN").unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, StoreError::Invalid(_)), "{text}");
            assert!(
                text.starts_with("import: ") && text.contains(want),
                "{text} / {want}"
            );
        }
        // All or nothing: a bad entry after a good one keeps nothing.
        let doc =
            serde_json::json!({"functions": [{"name": "good", "code": "x"}, {"name": "bad"}]});
        assert!(s.import(&doc, "ADMIN").is_err());
        assert_eq!(s.count().unwrap(), 0);
    }

    #[test]
    fn parallel_record_use_is_exact() {
        let (_dir, path, s) = setup();
        s.save("hot", "", "x", "U1", false).unwrap();
        let barrier = Arc::new(Barrier::new(10));
        let threads: Vec<_> = (0..10)
            .map(|_| {
                let path = path.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let store = FunctionStore::open(&path).unwrap();
                    barrier.wait();
                    let mut seen = Vec::new();
                    for _ in 0..10 {
                        seen.push(store.record_use("hot").unwrap().use_count);
                    }
                    seen
                })
            })
            .collect();
        let mut seen: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=100).collect::<Vec<_>>(),
            "every count returned once"
        );
        assert_eq!(s.get("hot").unwrap().unwrap().use_count, 100);
    }

    #[test]
    fn one_store_shared_between_threads() {
        let (_dir, _path, s) = setup();
        let s = Arc::new(s);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    s.save(&format!("f{i}"), "", "x", "U1", false).unwrap();
                    for _ in 0..5 {
                        s.record_use(&format!("f{i}")).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = s.stats().unwrap();
        assert_eq!((stats.total_functions, stats.total_uses), (8, 40));
    }

    #[test]
    fn parallel_saves_of_one_new_name_create_it_once() {
        let (_dir, path, _s) = setup();
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let store = FunctionStore::open(&path).unwrap();
                    barrier.wait();
                    store
                        .save("race", "", &format!("v = {i}"), "U1", false)
                        .unwrap()
                })
            })
            .collect();
        let outcomes: Vec<SaveOutcome> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(outcomes.iter().filter(|o| o.created).count(), 1);
        let mut versions: Vec<u32> = outcomes.iter().map(|o| o.function.version).collect();
        versions.sort_unstable();
        assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    }

    #[test]
    fn locked_file_gives_locked_not_a_panic() {
        let (_dir, path, s) = setup();
        s.save("f", "", "x", "U1", false).unwrap();

        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();

        // A store opened while the lock is held still opens and reads.
        let other = FunctionStore::open(&path).unwrap();
        assert!(other.get("f").unwrap().is_some());
        let started = Instant::now();
        let err = other.save("g", "", "y", "U1", false).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "waited for the busy timeout"
        );
        assert!(err.to_string().contains("locked"));
        assert!(matches!(
            s.record_use("f").unwrap_err(),
            StoreError::Locked { .. }
        ));

        blocker.execute_batch("ROLLBACK").unwrap();
        other.save("g", "", "y", "U1", false).unwrap();
        assert_eq!(s.count().unwrap(), 2);
        assert_eq!(
            s.get("f").unwrap().unwrap().use_count,
            0,
            "the failed use left nothing"
        );
        let check: String = blocker
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    #[test]
    fn migrates_a_table_of_the_original_bot() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("trade_cache.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE saved_functions (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    name TEXT UNIQUE NOT NULL,
                    description TEXT,
                    code TEXT NOT NULL,
                    created_by TEXT NOT NULL,
                    created_at TEXT NOT NULL,
                    last_used TEXT,
                    use_count INTEGER DEFAULT 0
                );
                INSERT INTO saved_functions (name, description, code, created_by, created_at, last_used, use_count)
                VALUES ('legacy', NULL, 'result = 1', 'U0', '2025-10-08T14:26:45.123456', NULL, NULL),
                       ('used', 'd', 'result = 2', 'U0', '2025-10-09T10:00:00', '2025-10-10T10:00:00', 7);",
            )
            .unwrap();
        }
        let s = FunctionStore::open(&path).unwrap();
        let legacy = s.get("legacy").unwrap().unwrap();
        assert_eq!(
            (
                legacy.description.as_str(),
                legacy.use_count,
                legacy.version,
                legacy.updated_by
            ),
            ("", 0, 1, None)
        );
        let h = s.history("used").unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(
            (
                h[0].version,
                h[0].action,
                h[0].saved_by.as_str(),
                h[0].saved_at.as_str()
            ),
            (1, VersionAction::Save, "U0", "2025-10-09T10:00:00")
        );
        assert_eq!(s.record_use("legacy").unwrap().use_count, 1);
        assert_eq!(
            s.save("used", "d", "result = 3", "U0", false)
                .unwrap()
                .function
                .version,
            2
        );
        assert_eq!(names(&s.list(10, 0).unwrap()), ["used", "legacy"]);
        drop(s);
        // Opening again finds nothing to do.
        let s = FunctionStore::open(&path).unwrap();
        assert_eq!(s.history("used").unwrap().len(), 2);
    }

    /// The original bot's data, as in the data crate's tests.
    fn fixtures() -> PathBuf {
        std::env::var_os("TRADEBOX_FIXTURES").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cex-reporter"),
            PathBuf::from,
        )
    }

    #[test]
    fn opens_a_copy_of_the_original_trade_cache() {
        use crate::audit::AuditLog;
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("trade_cache.db");
        std::fs::copy(fixtures().join("trade_cache.db"), &path).unwrap();
        let s = FunctionStore::open(&path).unwrap();
        let audit = AuditLog::open(&path).unwrap();
        s.save("pnl", "", "result = 1", "U1", false).unwrap();
        assert_eq!(s.count().unwrap(), 1);
        assert_eq!(audit.count().unwrap(), 0);
        let trades = tradebox_data::Store::open(&path).unwrap();
        assert_eq!(trades.trade_count().unwrap(), 3970);
    }

    #[test]
    fn coexists_with_the_trade_store_and_the_audit_log() {
        use crate::audit::{Action, AuditEntry, AuditLog, Outcome, Source};
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("home").join("tradebox.db");
        let trades = tradebox_data::Store::open(&path).unwrap();
        let functions = FunctionStore::open(&path).unwrap();
        let audit = AuditLog::open(&path).unwrap();

        let f = functions.save("f", "", "x", "U1", false).unwrap().function;
        let mut entry = AuditEntry::new("U1", Source::Cli, Action::Savefunc, Outcome::Ok);
        entry.function_name = Some(f.name.clone());
        entry.function_version = Some(f.version);
        audit.record(&entry).unwrap();
        assert_eq!(trades.trade_count().unwrap(), 0);
        drop(trades);

        // Reopened in the other order, everything is still there.
        let audit = AuditLog::open(&path).unwrap();
        let functions2 = FunctionStore::open(&path).unwrap();
        let mut trades = tradebox_data::Store::open(&path).unwrap();
        trades.write(|w| w.clear()).unwrap();
        assert_eq!(functions2.count().unwrap(), 1);
        assert_eq!(audit.count().unwrap(), 1);
        let conn = Connection::open(&path).unwrap();
        for table in [
            "trades",
            "balance_snapshots",
            "saved_functions",
            "function_versions",
            "audit_log",
        ] {
            assert!(objects_exist(&conn, &[table]).unwrap(), "{table}");
        }
    }
}
