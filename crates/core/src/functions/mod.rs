//! The function store: named pandas snippets saved with `/savefunc` and run
//! with `/runfunc`, with every change kept as a version.
//!
//! # Layout
//!
//! - this module: [`FunctionStore`], the rules below, over a
//!   [`FunctionBackend`] that keeps the rows;
//! - [`versions`]: the history of a function ([`VersionRecord`]);
//! - [`transfer`]: export and import documents;
//! - [`sqlite`]: the backend in the store's SQLite file (tables, migration
//!   of the original bot's table, SQL);
//! - `suggest`: close names for "not found" messages.
//!
//! # Data
//!
//! A function has the original bot's fields (`id, name UNIQUE, description,
//! code, created_by, created_at, last_used, use_count`) plus `version` (the
//! latest version number), `updated_by`, `updated_at` and a deletion mark
//! (soft delete). Every change also writes a version: the name, description
//! and code after the change, who made it, when, and the action (`save`,
//! `rename`, `delete`, `import`). Versions of one function count up from 1
//! without gaps, and a function's `version` is always its newest version.
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
//! # Concurrency
//!
//! Every operation is one backend transaction, writes serialised against
//! each other, so read-check-write sequences (ownership, name free,
//! `use_count + 1`) cannot interleave, whichever process or thread runs
//! them. A write that cannot get the lock in time fails with a locked
//! [`StoreError::Db`] and changes nothing.

pub mod pg;
pub mod sqlite;
mod suggest;
#[cfg(test)]
mod tests;
pub mod transfer;
pub mod versions;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tradebox_data::timestamp;

use crate::audit::{AuditEntry, AuditRows};
use crate::store::{body_not_run, StoreError};

pub use transfer::{ImportReport, EXPORT_FORMAT, EXPORT_FORMAT_VERSION};
pub use versions::{VersionAction, VersionRecord};

/// The longest function name the store accepts, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// How many functions [`Stats::top`] holds.
const TOP_N: usize = 5;

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

/// The fields of a function as created (or revived).
#[derive(Debug, Clone, Copy)]
pub struct NewFunction<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub code: &'a str,
    pub created_by: &'a str,
    pub created_at: &'a str,
    pub use_count: u64,
    pub last_used: Option<&'a str>,
}

impl<'a> NewFunction<'a> {
    /// A new function of `user`, created `now`, never used.
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

/// A transaction body as a [`FunctionBackend`] receives it: called with
/// the rows of the open transaction; an `Err` rolls it back.
pub type FunctionTx<'a> = &'a mut (dyn FnMut(&dyn FunctionRows) -> Result<(), StoreError> + Send);

/// Where functions and their versions are kept; see [`sqlite`].
pub trait FunctionBackend: Send + Sync {
    /// Runs `body` in one write transaction, serialised against every other
    /// write to the same functions; an `Err` from `body` rolls it back.
    fn write(&self, body: FunctionTx<'_>) -> Result<(), StoreError>;

    /// Runs `body` in one read transaction (a consistent snapshot).
    fn read(&self, body: FunctionTx<'_>) -> Result<(), StoreError>;

    /// [`FunctionBackend::read`] of `body`, which makes exactly one
    /// statement (consistent by itself): a backend may run it without a
    /// transaction around it (one round trip instead of three on
    /// PostgreSQL).
    fn read_one(&self, body: FunctionTx<'_>) -> Result<(), StoreError> {
        self.read(body)
    }

    /// [`FunctionBackend::write`] of `body`, which makes exactly one
    /// statement (atomic by itself), as [`FunctionBackend::read_one`].
    fn write_one(&self, body: FunctionTx<'_>) -> Result<(), StoreError> {
        self.write(body)
    }
}

/// The functions and their versions inside a transaction of a
/// [`FunctionBackend`]. "Live" means not deleted. The changes set
/// `updated_by` and `updated_at`, count the version up by one and return
/// the function as changed; they write no version row (the store adds it
/// with [`FunctionRows::add_version`]).
pub trait FunctionRows: AuditRows {
    /// The function called exactly `name`, live or deleted, and whether it
    /// is deleted.
    fn find(&self, name: &str) -> Result<Option<(Function, bool)>, StoreError>;

    /// The function with this id, live or deleted.
    fn by_id(&self, id: i64) -> Result<Function, StoreError>;

    /// Live functions, most used first, then by name ignoring ASCII case,
    /// then by name; with `search`, only those whose name or description
    /// contains it as plain text, ignoring ASCII case.
    fn list(
        &self,
        search: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Function>, StoreError>;

    /// How many functions [`FunctionRows::list`] has in all.
    fn count(&self, search: Option<&str>) -> Result<u64, StoreError>;

    /// Every live function, by name.
    fn all_live(&self) -> Result<Vec<Function>, StoreError>;

    /// The names of the live functions, in any order.
    fn live_names(&self) -> Result<Vec<String>, StoreError>;

    /// The function that most recently had `name` in its history.
    fn former_holder(&self, name: &str) -> Result<Option<i64>, StoreError>;

    /// The versions of function `id`, oldest first.
    fn versions(&self, id: i64) -> Result<Vec<VersionRecord>, StoreError>;

    /// Live functions and the sum of their use counts.
    fn totals(&self) -> Result<(u64, u64), StoreError>;

    /// Up to `n` live functions used at least once, in [`FunctionRows::list`] order.
    fn most_used(&self, n: usize) -> Result<Vec<(String, u64)>, StoreError>;

    /// Adds a function at version 1.
    fn insert(&self, f: &NewFunction<'_>, user: &str, now: &str) -> Result<Function, StoreError>;

    /// Brings back the deleted function `id` with the fields of `f`.
    fn revive(
        &self,
        id: i64,
        f: &NewFunction<'_>,
        user: &str,
        now: &str,
    ) -> Result<Function, StoreError>;

    /// A new description and code for function `id`.
    fn update_code(
        &self,
        id: i64,
        description: &str,
        code: &str,
        user: &str,
        now: &str,
    ) -> Result<Function, StoreError>;

    /// A new name for function `id`.
    fn set_name(&self, id: i64, name: &str, user: &str, now: &str) -> Result<Function, StoreError>;

    /// Marks function `id` deleted at `now`.
    fn mark_deleted(&self, id: i64, user: &str, now: &str) -> Result<Function, StoreError>;

    /// `use_count + 1` and `last_used = now` for the live function `name`,
    /// returned as changed; `None` when there is none.
    fn count_use(&self, name: &str, now: &str) -> Result<Option<Function>, StoreError>;

    /// Writes the version row for the state `f` is in now.
    fn add_version(
        &self,
        f: &Function,
        saved_by: &str,
        saved_at: &str,
        action: VersionAction,
    ) -> Result<(), StoreError>;

    /// Every function, live and deleted (with when it was deleted), by id.
    fn everything(&self) -> Result<Vec<(Function, Option<String>)>, StoreError>;

    /// Writes `f` as it is, every field kept but its id (a new one is
    /// returned), deleted at `deleted_at` when given, without a version
    /// row. For copying a store.
    fn restore(&self, f: &Function, deleted_at: Option<&str>) -> Result<i64, StoreError>;
}

/// The function store; see the module documentation.
#[derive(Clone)]
pub struct FunctionStore {
    backend: Arc<dyn FunctionBackend>,
}

impl FunctionStore {
    /// Opens the store in the SQLite file at `path` (normally
    /// `$TRADEBOX_HOME/tradebox.db`), creating the file, the tables or the
    /// missing columns when needed.
    pub fn open(path: impl AsRef<Path>) -> Result<FunctionStore, StoreError> {
        Ok(FunctionStore::new(Arc::new(sqlite::SqliteFunctions::open(
            path.as_ref(),
        )?)))
    }

    /// Opens the store where `url` says.
    pub fn connect(url: &crate::store::StoreUrl) -> Result<FunctionStore, StoreError> {
        match url {
            crate::store::StoreUrl::Sqlite(path) => FunctionStore::open(path),
            crate::store::StoreUrl::Postgres(url) => FunctionStore::open_postgres(url),
        }
    }

    /// Opens the store in the PostgreSQL database at `url`, creating the
    /// tables when needed.
    pub fn open_postgres(url: &str) -> Result<FunctionStore, StoreError> {
        Ok(FunctionStore::new(Arc::new(pg::PgFunctions::open(url)?)))
    }

    /// The store kept by `backend`.
    pub fn new(backend: Arc<dyn FunctionBackend>) -> FunctionStore {
        FunctionStore { backend }
    }

    /// Runs `f` in one write transaction and returns what it produced.
    fn write<T: Send>(
        &self,
        mut f: impl FnMut(&dyn FunctionRows) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let mut out = None;
        self.backend.write(&mut |rows| {
            out = Some(f(rows)?);
            Ok(())
        })?;
        out.ok_or_else(body_not_run)
    }

    /// Runs `f`, which makes one statement (a write when `write`), as
    /// [`FunctionBackend::read_one`] and [`FunctionBackend::write_one`].
    fn one<T: Send>(
        &self,
        write: bool,
        mut f: impl FnMut(&dyn FunctionRows) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let mut out = None;
        let mut body = |rows: &dyn FunctionRows| {
            out = Some(f(rows)?);
            Ok(())
        };
        if write {
            self.backend.write_one(&mut body)?;
        } else {
            self.backend.read_one(&mut body)?;
        }
        out.ok_or_else(body_not_run)
    }

    /// Runs `f` in one read transaction and returns what it produced.
    fn read<T: Send>(
        &self,
        mut f: impl FnMut(&dyn FunctionRows) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let mut out = None;
        self.backend.read(&mut |rows| {
            out = Some(f(rows)?);
            Ok(())
        })?;
        out.ok_or_else(body_not_run)
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
    /// audit row land together or not at all.
    pub fn save_audited(
        &self,
        name: &str,
        description: &str,
        code: &str,
        user: &str,
        is_admin: bool,
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
        let outcome = self.write(|rows| {
            let now = now_text();
            let fresh = NewFunction::fresh(name, description, code, user, &now);
            let outcome = match rows.find(name)? {
                None => SaveOutcome {
                    function: rows.insert(&fresh, user, &now)?,
                    created: true,
                },
                Some((f, true)) => SaveOutcome {
                    function: rows.revive(f.id, &fresh, user, &now)?,
                    created: true,
                },
                Some((f, false)) => {
                    check_owner(&f, user, is_admin)?;
                    SaveOutcome {
                        function: rows.update_code(f.id, description, code, user, &now)?,
                        created: false,
                    }
                }
            };
            rows.add_version(&outcome.function, user, &now, VersionAction::Save)?;
            audit_in(rows, entry, outcome.function.version)?;
            Ok(outcome)
        })?;
        tracing::debug!(
            name,
            version = outcome.function.version,
            created = outcome.created,
            "function saved"
        );
        Ok(outcome)
    }

    /// The live function called exactly `name` (case-sensitive).
    pub fn get(&self, name: &str) -> Result<Option<Function>, StoreError> {
        // One statement: no transaction needed around it.
        self.one(false, |rows| live(rows, name))
    }

    /// Counts one use of `name` (`use_count + 1`, `last_used` = now) and
    /// returns the function as updated, in one transaction: the count is
    /// exact however many runs finish at once.
    pub fn record_use(&self, name: &str) -> Result<Function, StoreError> {
        // One UPDATE, atomic by itself (its row lock orders concurrent ones).
        self.one(true, |rows| {
            rows.count_use(name, &now_text())?
                .ok_or_else(|| not_found(name))
        })
    }

    /// Live functions, most used first, then by name (ignoring ASCII case).
    pub fn list(&self, limit: usize, offset: usize) -> Result<Vec<Function>, StoreError> {
        self.read(|rows| rows.list(None, limit, offset))
    }

    /// How many live functions there are.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.read(|rows| rows.count(None))
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
        self.read(|rows| rows.list(Some(query), limit, offset))
    }

    /// How many live functions [`FunctionStore::search`] finds in all.
    pub fn search_count(&self, query: &str) -> Result<u64, StoreError> {
        self.read(|rows| rows.count(Some(query)))
    }

    /// Up to `n` live names close to `name`, best first, for "not found"
    /// messages: same name in another case, then names containing it or
    /// contained in it, then names within a small edit distance.
    pub fn suggest(&self, name: &str, n: usize) -> Result<Vec<String>, StoreError> {
        let names = self.read(|rows| rows.live_names())?;
        Ok(suggest::rank(name, &names, n))
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
        let f = self.write(|rows| {
            let f = live(rows, name)?.ok_or_else(|| not_found(name))?;
            check_owner(&f, user, is_admin)?;
            let now = now_text();
            let deleted = f.version; // the audit names what was deleted
            let f = rows.mark_deleted(f.id, user, &now)?;
            rows.add_version(&f, user, &now, VersionAction::Delete)?;
            audit_in(rows, entry, deleted)?;
            Ok(f)
        })?;
        tracing::debug!(name, user, "function deleted");
        Ok(f)
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
        let f = self.write(|rows| {
            let f = live(rows, old)?.ok_or_else(|| not_found(old))?;
            check_owner(&f, user, is_admin)?;
            let now = now_text();
            match rows.find(new)? {
                Some((_, false)) => {
                    return Err(StoreError::NameTaken {
                        name: new.to_string(),
                    })
                }
                Some((holder, true)) => {
                    let tombstone = format!("{new}~{}", holder.id);
                    let moved = rows.set_name(holder.id, &tombstone, user, &now)?;
                    rows.add_version(&moved, user, &now, VersionAction::Rename)?;
                }
                None => {}
            }
            let f = rows.set_name(f.id, new, user, &now)?;
            rows.add_version(&f, user, &now, VersionAction::Rename)?;
            Ok(f)
        })?;
        tracing::debug!(old, new, user, "function renamed");
        Ok(f)
    }

    /// Every version of the function called `name`, oldest first, deleted
    /// functions included. `name` is looked up as the current name first,
    /// then as a former name (the most recent function that had it).
    pub fn history(&self, name: &str) -> Result<Vec<VersionRecord>, StoreError> {
        self.read(|rows| {
            let id = match rows.find(name)? {
                Some((f, _)) => Some(f.id),
                None => rows.former_holder(name)?,
            };
            let id = id.ok_or_else(|| not_found(name))?;
            rows.versions(id)
        })
    }

    /// Totals and the most used functions.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        self.read(|rows| {
            let (total_functions, total_uses) = rows.totals()?;
            Ok(Stats {
                total_functions,
                total_uses,
                top: rows.most_used(TOP_N)?,
            })
        })
    }

    /// All live functions with their versions, by name, as one JSON
    /// document that [`FunctionStore::import`] reads back (see
    /// [`transfer`]).
    pub fn export(&self) -> Result<Value, StoreError> {
        let functions = self.read(|rows| {
            let mut out = Vec::new();
            for f in rows.all_live()? {
                let versions = rows.versions(f.id)?;
                out.push((f, versions));
            }
            Ok(out)
        })?;
        transfer::document(functions)
    }

    /// Copies every function, live and deleted, with its whole history,
    /// into `other`, which must hold none; returns (functions, versions)
    /// copied. All or nothing on the receiving side.
    pub fn copy_into(&self, other: &FunctionStore) -> Result<(u64, u64), StoreError> {
        let all = self.read(|rows| {
            let mut out = Vec::new();
            for (f, deleted_at) in rows.everything()? {
                let versions = rows.versions(f.id)?;
                out.push((f, deleted_at, versions));
            }
            Ok(out)
        })?;
        other.write(|rows| {
            if !rows.everything()?.is_empty() {
                return Err(StoreError::Invalid(
                    "the destination already holds functions: copy into an empty store".into(),
                ));
            }
            let mut versions = 0;
            for (f, deleted_at, history) in &all {
                let id = rows.restore(f, deleted_at.as_deref())?;
                // Each version row as it was, under the new id.
                for v in history {
                    let state = Function {
                        id,
                        version: v.version,
                        name: v.name.clone(),
                        description: v.description.clone(),
                        code: v.code.clone(),
                        ..f.clone()
                    };
                    rows.add_version(&state, &v.saved_by, &v.saved_at, v.action)?;
                }
                versions += history.len() as u64;
            }
            Ok((all.len() as u64, versions))
        })
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
        let entries = transfer::parse(value)?;
        let report = self.write(|rows| {
            let now = now_text();
            let mut report = ImportReport::default();
            for e in &entries {
                let fields = e.fields(user, &now);
                match rows.find(&e.name)? {
                    None => {
                        let f = rows.insert(&fields, user, &now)?;
                        rows.add_version(&f, user, &now, VersionAction::Import)?;
                        report.created.push(e.name.clone());
                    }
                    Some((f, true)) => {
                        let f = rows.revive(f.id, &fields, user, &now)?;
                        rows.add_version(&f, user, &now, VersionAction::Import)?;
                        report.created.push(e.name.clone());
                    }
                    Some((f, false)) if f.description == e.description && f.code == e.code => {
                        report.unchanged.push(e.name.clone());
                    }
                    Some((f, false)) => {
                        let f = rows.update_code(f.id, &e.description, &e.code, user, &now)?;
                        rows.add_version(&f, user, &now, VersionAction::Import)?;
                        report.updated.push(e.name.clone());
                    }
                }
            }
            Ok(report)
        })?;
        tracing::debug!(
            created = report.created.len(),
            updated = report.updated.len(),
            unchanged = report.unchanged.len(),
            "functions imported"
        );
        Ok(report)
    }
}

/// The live function called `name`.
fn live(rows: &dyn FunctionRows, name: &str) -> Result<Option<Function>, StoreError> {
    Ok(rows
        .find(name)?
        .and_then(|(f, deleted)| (!deleted).then_some(f)))
}

/// Appends the audit row of a write, with its version, in its transaction.
fn audit_in(
    rows: &dyn FunctionRows,
    entry: Option<&AuditEntry>,
    version: u32,
) -> Result<(), StoreError> {
    if let Some(entry) = entry {
        let mut entry = entry.clone();
        entry.function_version = Some(version);
        rows.append_audit(&entry, timestamp::now())?;
    }
    Ok(())
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
