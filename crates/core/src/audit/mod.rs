//! The audit trail: one row per execution, save, delete, rename, import or
//! refusal (who, where, what code, which function version, when, how long,
//! outcome), in the append-only table `audit_log` of the store file.
//!
//! # Append-only
//!
//! The API has no update and no delete, except [`AuditLog::prune`] for the
//! retention setting. The database backs this up for updates: a trigger
//! (`audit_log_no_update`) aborts every `UPDATE` of the table, whoever runs
//! it. Deletes cannot be guarded the same way, because a trigger cannot tell
//! the retention prune from any other `DELETE`; instead `prune` is the only
//! `DELETE` on `audit_log` anywhere in the code, and it only removes rows
//! older than a cut-off. (Postgres: the same rules by a trigger function, or
//! by granting the service role only `INSERT, SELECT, DELETE`.)
//!
//! # Times
//!
//! `at` is stamped by [`AuditLog::record`] as canonical UTC text
//! (`YYYY-MM-DDTHH:MM:SS[.ffffff]`, see `tradebox_data::timestamp`), which
//! sorts as time does, so filters compare text.
//!
//! # Storage
//!
//! [`AuditLog`] checks entries and stamps them; an [`AuditBackend`] stores
//! them ([`sqlite::SqliteAudit`] in the store's SQLite file: each call one
//! transaction, `BEGIN IMMEDIATE` for writes, safe from several threads and
//! processes). A change that must land with its audit row (a save, a
//! delete) writes the row through [`AuditRows`] in its own transaction.

pub mod pg;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, MutexGuard, PoisonError, TryLockError};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tradebox_data::timestamp::{self, Micros};
use tradebox_db::DbError;

use crate::store::StoreError;

/// A closed-ish set of names stored as text: the named variants are what
/// tradebox writes; `Other` keeps values this version does not know (read
/// from a newer version's rows) instead of failing. Build values from text
/// with `From<&str>`, which picks the named variant when there is one.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version has no name for.
            Other(String),
        }

        impl $name {
            /// The text stored in the table.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(s) => s,
                }
            }
        }

        impl $name {
            /// Every value this version names, as stored.
            pub const NAMES: &'static [&'static str] = &[$($text,)+];
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => $name::$variant,)+
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok($name::from(s.as_str()))
            }
        }
    };
}

text_enum! {
    /// Where the request came from.
    Source {
        Slack => "slack",
        /// The local web console.
        Console => "console",
        Cli => "cli",
        /// The JSON HTTP API.
        Api => "api",
    }
}

text_enum! {
    /// What was asked for.
    Action {
        Analyze => "analyze",
        Runfunc => "runfunc",
        /// The Run button of a function list.
        RunButton => "run_button",
        Savefunc => "savefunc",
        Delfunc => "delfunc",
        Rename => "rename",
        Import => "import",
        Export => "export",
        Listfuncs => "listfuncs",
    }
}

text_enum! {
    /// How it ended.
    Outcome {
        Ok => "ok",
        /// The code ran and raised, or the request failed.
        Error => "error",
        Timeout => "timeout",
        /// The named function does not exist.
        NotFound => "not_found",
        RefusedPermission => "refused_permission",
        RefusedRateLimit => "refused_rate_limit",
        RefusedValidation => "refused_validation",
        RefusedQueueFull => "refused_queue_full",
    }
}

/// One event to record; [`AuditLog::record`] adds the id and the time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub user_id: String,
    pub channel: Option<String>,
    pub source: Source,
    pub action: Action,
    pub function_name: Option<String>,
    pub function_version: Option<u32>,
    /// The code that ran (or was saved), in full.
    pub code: Option<String>,
    pub outcome: Outcome,
    /// For errors: the kind (a Python exception name, `validation`, ...).
    pub error_type: Option<String>,
    pub detail: Option<String>,
    pub duration_ms: Option<u64>,
    /// The process that handled it (`[store] replica`, by default
    /// `host:pid`), so that rows from replicas sharing a store say which
    /// one wrote them.
    pub replica: Option<String>,
}

impl AuditEntry {
    /// An entry with the required fields; set the optional ones directly.
    pub fn new(
        user_id: impl Into<String>,
        source: Source,
        action: Action,
        outcome: Outcome,
    ) -> Self {
        AuditEntry {
            user_id: user_id.into(),
            channel: None,
            source,
            action,
            function_name: None,
            function_version: None,
            code: None,
            outcome,
            error_type: None,
            detail: None,
            duration_ms: None,
            replica: None,
        }
    }
}

/// A recorded entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    /// Canonical UTC text, as stored.
    pub at: String,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

impl AuditRecord {
    /// `at` in epoch microseconds (`None` only for a row not written by us).
    pub fn at_us(&self) -> Option<Micros> {
        timestamp::parse_canonical(&self.at)
    }
}

/// What [`AuditLog::query`] returns; every field narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub user: Option<String>,
    /// Only entries at or after this time (epoch microseconds).
    pub since: Option<Micros>,
    pub outcome: Option<Outcome>,
    pub action: Option<Action>,
    /// At most this many entries (the newest); `None` for all.
    pub limit: Option<usize>,
}

/// Where audit rows are kept; see [`sqlite::SqliteAudit`]. Every method is
/// one transaction; rows are never updated, and [`AuditBackend::prune`] is
/// the only delete.
pub trait AuditBackend: Send + Sync {
    /// Appends `entry` (already checked) stamped `at`; returns its id,
    /// which grows with every append.
    fn append(&self, entry: &AuditEntry, at: Micros) -> Result<i64, StoreError>;

    /// Appends `entry` stamped `at` unless the trail already holds it: a
    /// row with the same time, user, channel, source, action, code, outcome
    /// and replica. For a row kept in the spool, whose first write may have
    /// landed though its answer was lost (the connection broke after the
    /// statement was sent). Whether it wrote the row.
    fn append_once(&self, entry: &AuditEntry, at: Micros) -> Result<bool, StoreError>;

    /// [`AuditBackend::append`], removing the running place `lease` (a row
    /// of [`crate::leases`]' table in the same store) in the same write: a
    /// job's row and its place given back together, one transaction (on
    /// PostgreSQL one statement) instead of two. Returns the row's id and
    /// whether the place was there to remove (a place already gone is no
    /// error).
    fn append_releasing(
        &self,
        entry: &AuditEntry,
        at: Micros,
        lease: &str,
    ) -> Result<(i64, bool), StoreError>;

    /// Entries matching `filter`, newest first (by `at`, then by id).
    fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;

    /// Removes the entries stamped before `before`; returns how many.
    fn prune(&self, before: Micros) -> Result<u64, StoreError>;

    /// How many entries there are.
    fn count(&self) -> Result<u64, StoreError>;

    /// One cheap read of the store (whether it answers), for readiness.
    fn ping(&self) -> Result<(), StoreError>;
}

/// Appends an audit row inside a transaction another store opened, so a
/// change and its row land together or not at all.
pub trait AuditRows {
    /// Appends `entry` (already checked) stamped `at`; returns its id.
    fn append_audit(&self, entry: &AuditEntry, at: Micros) -> Result<i64, StoreError>;
}

/// How many rows the trail keeps in memory while its store cannot take
/// them (see [`AuditLog::record_at`]).
pub const SPOOL_LIMIT: usize = 10_000;

/// Rows waiting for the store, oldest first, with their times, and the
/// turn to write them to it. The rows' lock is held only to look at or
/// change the queue, never across a write to the store.
#[derive(Default)]
struct Spool {
    rows: std::sync::Mutex<std::collections::VecDeque<(AuditEntry, Micros)>>,
    /// Held by whoever writes the rows to the store, one at a time.
    writing: std::sync::Mutex<()>,
}

impl Spool {
    fn rows(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(AuditEntry, Micros)>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `entry` for later, unless the spool is full.
    fn keep(&self, entry: &AuditEntry, at: Micros) {
        let mut rows = self.rows();
        if rows.len() < SPOOL_LIMIT {
            rows.push_back((entry.clone(), at));
        } else {
            tracing::error!(
                "the audit spool is full ({SPOOL_LIMIT} rows waiting for the store): a row is lost"
            );
        }
    }
}

/// The audit trail; see the module documentation.
#[derive(Clone)]
pub struct AuditLog {
    backend: Arc<dyn AuditBackend>,
    replica: Option<Arc<str>>,
    spool: Arc<Spool>,
}

impl AuditLog {
    /// Opens the audit log in the SQLite file at `path`, creating the file,
    /// table, indexes and trigger when needed.
    pub fn open(path: impl AsRef<Path>) -> Result<AuditLog, StoreError> {
        Ok(AuditLog::new(Arc::new(sqlite::SqliteAudit::open(
            path.as_ref(),
        )?)))
    }

    /// Opens the audit log where `url` says.
    pub fn connect(url: &crate::store::StoreUrl) -> Result<AuditLog, StoreError> {
        match url {
            crate::store::StoreUrl::Sqlite(path) => AuditLog::open(path),
            crate::store::StoreUrl::Postgres(url) => AuditLog::open_postgres(url),
        }
    }

    /// Opens the audit log in the PostgreSQL database at `url`, creating
    /// the table, indexes and trigger when needed.
    pub fn open_postgres(url: &str) -> Result<AuditLog, StoreError> {
        Ok(AuditLog::new(Arc::new(pg::PgAudit::open(url)?)))
    }

    /// The audit log kept by `backend`.
    pub fn new(backend: Arc<dyn AuditBackend>) -> AuditLog {
        AuditLog {
            backend,
            replica: None,
            spool: Arc::default(),
        }
    }

    /// The log stamping every entry it records without a replica with
    /// `name`.
    pub fn with_replica(mut self, name: &str) -> AuditLog {
        self.replica = Some(Arc::from(name));
        self
    }

    /// The name entries are stamped with, when there is one.
    pub fn replica(&self) -> Option<&str> {
        self.replica.as_deref()
    }

    /// Appends `entry` stamped with the current time; returns its id.
    pub fn record(&self, entry: &AuditEntry) -> Result<i64, StoreError> {
        self.record_at(entry, timestamp::now())
    }

    /// Appends `entry` stamped with `at` (epoch microseconds): for callers
    /// that measured the time themselves, and for tests.
    ///
    /// When the store cannot take it for now (unavailable, as while
    /// PostgreSQL restarts, or locked), the row is kept in memory with its
    /// time, up to [`SPOOL_LIMIT`] rows, and written before the next one
    /// (or by [`AuditLog::flush_spool`]) once the store answers again; the
    /// error is still returned ([`StoreError::is_locked`]). A kept row is
    /// written only if the store does not hold it already: a write whose
    /// answer was lost may have landed. A row is lost only if this process
    /// ends before the store comes back, or the spool is full.
    pub fn record_at(&self, entry: &AuditEntry, at: Micros) -> Result<i64, StoreError> {
        self.record_with(entry, at, None).map(|(id, _)| id)
    }

    /// [`AuditLog::record`] for a job that held the running place `lease`
    /// ([`crate::leases::Leases`] on the same store), given back in the
    /// same write. Returns the row's id and whether the place was there to
    /// give back. When the write fails the place is not given back (the row
    /// is kept as [`AuditLog::record_at`] says): the caller gives it back
    /// on its own, or it expires.
    pub fn record_releasing(
        &self,
        entry: &AuditEntry,
        lease: &str,
    ) -> Result<(i64, bool), StoreError> {
        self.record_with(entry, timestamp::now(), Some(lease))
    }

    fn record_with(
        &self,
        entry: &AuditEntry,
        at: Micros,
        lease: Option<&str>,
    ) -> Result<(i64, bool), StoreError> {
        check_entry(entry)?;
        let stamped;
        let entry = match (&entry.replica, &self.replica) {
            (None, Some(name)) => {
                let mut e = entry.clone();
                e.replica = Some(name.to_string());
                stamped = e;
                &stamped
            }
            _ => entry,
        };
        let flushed = if self.spooled() == 0 {
            Ok(())
        } else {
            match self.spool.writing.try_lock() {
                Ok(turn) => self.flush_with(turn).map(drop),
                Err(TryLockError::Poisoned(turn)) => self.flush_with(turn.into_inner()).map(drop),
                // Another thread is writing the kept rows, so the store was
                // unavailable a moment ago: this row joins them rather than
                // wait behind that thread's timeout.
                Err(TryLockError::WouldBlock) => Err(StoreError::Db(DbError::Unavailable {
                    target: "the audit trail".into(),
                    detail: "rows kept while the store was unavailable are being written; \
                             this one is kept with them"
                        .into(),
                })),
            }
        };
        let result = match (flushed, lease) {
            (Ok(()), None) => self.backend.append(entry, at).map(|id| (id, false)),
            (Ok(()), Some(lease)) => self.backend.append_releasing(entry, at, lease),
            // Still down: no second try for this row.
            (Err(e), _) => Err(e),
        };
        match result {
            Err(e) if e.is_locked() => {
                self.spool.keep(entry, at);
                Err(e)
            }
            other => other,
        }
    }

    /// Writes the rows kept while the store was unavailable, oldest first,
    /// each only if the trail does not hold it yet (its first write may
    /// have landed, see [`AuditBackend::append_once`]); how many left the
    /// spool. Stops at the first that fails (it stays, with those after it).
    /// Waits for another thread writing them to finish first.
    pub fn flush_spool(&self) -> Result<usize, StoreError> {
        let turn = self
            .spool
            .writing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.flush_with(turn)
    }

    /// [`AuditLog::flush_spool`] with the turn to write taken. Rows kept
    /// meanwhile by other threads are written too.
    fn flush_with(&self, _turn: MutexGuard<'_, ()>) -> Result<usize, StoreError> {
        let (mut flushed, mut landed) = (0, 0);
        loop {
            // Only the holder of the turn takes rows off, so the front
            // stays the same while it is written.
            let Some((entry, at)) = self.spool.rows().front().cloned() else {
                break;
            };
            if !self.backend.append_once(&entry, at)? {
                landed += 1;
            }
            self.spool.rows().pop_front();
            flushed += 1;
        }
        if flushed > 0 {
            tracing::info!(
                rows = flushed,
                already_written = landed,
                "audit rows kept while the store was unavailable written"
            );
        }
        Ok(flushed)
    }

    /// How many rows wait for the store.
    pub fn spooled(&self) -> usize {
        self.spool.rows().len()
    }

    /// Entries matching `filter`, newest first.
    pub fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.backend.query(filter)
    }

    /// Removes the entries older than `before` (epoch microseconds), for the
    /// retention setting; returns how many. The only delete of the log.
    pub fn prune(&self, before: Micros) -> Result<u64, StoreError> {
        let n = self.backend.prune(before)?;
        if n > 0 {
            tracing::info!(removed = n, before = %timestamp::format(before), "audit log pruned");
        }
        Ok(n)
    }

    /// How many entries the log holds.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.backend.count()
    }

    /// Copies every entry, oldest first and with its time and replica
    /// kept, into `other`, whose trail must be empty; returns how many.
    /// Ids are `other`'s own (in the same order).
    pub fn copy_into(&self, other: &AuditLog) -> Result<u64, StoreError> {
        if other.count()? > 0 {
            return Err(StoreError::Invalid(
                "the destination's audit trail is not empty: copy into an empty store".into(),
            ));
        }
        let mut rows = self.query(&AuditFilter::default())?;
        rows.reverse();
        for r in &rows {
            let at = r.at_us().ok_or_else(|| {
                StoreError::Invalid(format!(
                    "audit row {} has an unreadable time {:?}",
                    r.id, r.at
                ))
            })?;
            other.backend.append(&r.entry, at)?;
        }
        Ok(rows.len() as u64)
    }

    /// One cheap read of the store: `Ok` when it answers.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping()
    }
}

/// Refuses entries without the fields every row needs.
fn check_entry(entry: &AuditEntry) -> Result<(), StoreError> {
    let empty = [
        ("user_id", entry.user_id.as_str()),
        ("source", entry.source.as_str()),
        ("action", entry.action.as_str()),
        ("outcome", entry.outcome.as_str()),
    ]
    .into_iter()
    .find(|(_, v)| v.trim().is_empty());
    match empty {
        Some((field, _)) => Err(StoreError::Invalid(format!(
            "audit entry: {field} is empty"
        ))),
        None => Ok(()),
    }
}
