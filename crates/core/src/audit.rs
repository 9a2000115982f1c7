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
//! The connection settings, transactions and errors are those of the
//! function store ([`crate::functions`]): each call is one transaction,
//! `BEGIN IMMEDIATE` for writes, safe from several threads and processes.

use std::fmt;
use std::path::Path;

use rusqlite::{params, params_from_iter, types::Value as SqlValue, Connection, Row};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tradebox_data::timestamp::{self, Micros};

use crate::functions::{objects_exist, Db, StoreError};

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
    duration_ms INTEGER
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
     function_version, code, outcome, error_type, detail, duration_ms";

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
        }
    }
}

/// Appends `entry` inside the caller's transaction (for stores that write
/// an action and its audit row together).
pub(crate) fn insert(tx: &Connection, entry: &AuditEntry, at: Micros) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO audit_log (at, user_id, channel, source, action, function_name,
         function_version, code, outcome, error_type, detail, duration_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
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
        ],
    )?;
    // Postgres: `RETURNING id`.
    Ok(tx.last_insert_rowid())
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

/// The audit trail; see the module documentation.
pub struct AuditLog {
    db: Db,
}

impl AuditLog {
    /// Opens the audit log in the SQLite file at `path`, creating the file,
    /// table, indexes and trigger when needed.
    pub fn open(path: impl AsRef<Path>) -> Result<AuditLog, StoreError> {
        let db = Db::open(path.as_ref())?;
        db.ensure_schema(schema_ready, migrate)?;
        Ok(AuditLog { db })
    }

    /// The file this log uses.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Appends `entry` stamped with the current time; returns its id.
    pub fn record(&self, entry: &AuditEntry) -> Result<i64, StoreError> {
        self.record_at(entry, timestamp::now())
    }

    /// Appends `entry` stamped with `at` (epoch microseconds): for callers
    /// that measured the time themselves, and for tests.
    pub fn record_at(&self, entry: &AuditEntry, at: Micros) -> Result<i64, StoreError> {
        check_entry(entry)?;
        self.db.write(|tx| Ok(insert(tx, entry, at)?))
    }

    /// Entries matching `filter`, newest first.
    pub fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
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
        self.db.read(|tx| {
            let mut stmt = tx.prepare(&sql)?;
            let rows = stmt
                .query_map(params_from_iter(args.iter()), record_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Removes the entries older than `before` (epoch microseconds), for the
    /// retention setting; returns how many. The only delete of the log.
    pub fn prune(&self, before: Micros) -> Result<u64, StoreError> {
        let cutoff = timestamp::format(before);
        self.db.write(|tx| {
            let n = tx.execute("DELETE FROM audit_log WHERE at < ?1", params![cutoff])?;
            if n > 0 {
                tracing::info!(removed = n, before = %cutoff, "audit log pruned");
            }
            Ok(n as u64)
        })
    }

    /// How many entries the log holds.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.db.read(|tx| {
            let n: i64 = tx.query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}

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
        },
    })
}

fn schema_ready(conn: &Connection) -> rusqlite::Result<bool> {
    objects_exist(conn, &SCHEMA_OBJECTS)
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::{Arc, Barrier};
    use tempfile::TempDir;

    const MINUTE: Micros = 60_000_000;
    /// 2025-11-01T00:00:00Z
    const T0: Micros = 1_761_955_200_000_000;

    fn setup() -> (TempDir, PathBuf, AuditLog) {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("tradebox.db");
        let log = AuditLog::open(&path).unwrap();
        (dir, path, log)
    }

    fn entry(user: &str, action: Action, outcome: Outcome) -> AuditEntry {
        AuditEntry::new(user, Source::Slack, action, outcome)
    }

    #[test]
    fn record_and_read_back() {
        let (_dir, _path, log) = setup();
        let mut e = entry("U1", Action::Runfunc, Outcome::Error);
        e.channel = Some("C1".into());
        e.function_name = Some("pnl".into());
        e.function_version = Some(3);
        e.code = Some("result = 1/0  # ünï 📈".into());
        e.error_type = Some("ZeroDivisionError".into());
        e.detail = Some("division by zero".into());
        e.duration_ms = Some(42);
        let id = log.record(&e).unwrap();
        let bare = log
            .record(&entry("U2", Action::Analyze, Outcome::Ok))
            .unwrap();
        assert!(bare > id);

        let all = log.query(&AuditFilter::default()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].id, id);
        assert_eq!(all[1].entry, e);
        let at = all[1].at_us().unwrap();
        assert!((timestamp::now() - at).abs() < 60_000_000);
        assert_eq!(log.count().unwrap(), 2);

        let json = serde_json::to_value(&all[1]).unwrap();
        assert_eq!(json["id"], id);
        assert_eq!(json["source"], "slack");
        assert_eq!(json["action"], "runfunc");
        assert_eq!(json["outcome"], "error");
        assert_eq!(json["function_version"], 3);
        assert!(json["at"].is_string());
    }

    #[test]
    fn query_filters_and_order() {
        let (_dir, _path, log) = setup();
        let rows = [
            ("U1", Action::Analyze, Outcome::Ok, 0),
            ("U2", Action::Runfunc, Outcome::Timeout, 1),
            ("U1", Action::Runfunc, Outcome::Ok, 2),
            ("U1", Action::Savefunc, Outcome::RefusedValidation, 3),
            ("U2", Action::RunButton, Outcome::RefusedRateLimit, 4),
            ("U1", Action::Runfunc, Outcome::Ok, 5),
        ];
        let mut ids = Vec::new();
        for (user, action, outcome, minute) in rows {
            ids.push(
                log.record_at(&entry(user, action, outcome), T0 + minute * MINUTE)
                    .unwrap(),
            );
        }
        // Recorded out of order in time: newest first still means by time.
        let late = log
            .record_at(&entry("U3", Action::Delfunc, Outcome::Ok), T0 + 10 * MINUTE)
            .unwrap();
        let early = log
            .record_at(&entry("U3", Action::Delfunc, Outcome::Ok), T0 - MINUTE)
            .unwrap();

        let q =
            |f: AuditFilter| -> Vec<i64> { log.query(&f).unwrap().iter().map(|r| r.id).collect() };
        let mut newest_first: Vec<i64> = ids.iter().rev().copied().collect();
        newest_first.insert(0, late);
        newest_first.push(early);
        assert_eq!(q(AuditFilter::default()), newest_first);

        let user = |u: &str| Some(u.to_string());
        assert_eq!(
            q(AuditFilter {
                user: user("U1"),
                ..Default::default()
            }),
            [ids[5], ids[3], ids[2], ids[0]]
        );
        assert_eq!(
            q(AuditFilter {
                since: Some(T0 + 3 * MINUTE),
                ..Default::default()
            }),
            [late, ids[5], ids[4], ids[3]]
        );
        // `since` is inclusive, to the microsecond.
        assert_eq!(
            q(AuditFilter {
                since: Some(T0 + 5 * MINUTE + 1),
                user: user("U1"),
                ..Default::default()
            }),
            Vec::<i64>::new()
        );
        assert_eq!(
            q(AuditFilter {
                outcome: Some(Outcome::Ok),
                user: user("U1"),
                ..Default::default()
            }),
            [ids[5], ids[2], ids[0]]
        );
        assert_eq!(
            q(AuditFilter {
                action: Some(Action::Runfunc),
                ..Default::default()
            }),
            [ids[5], ids[2], ids[1]]
        );
        assert_eq!(
            q(AuditFilter {
                action: Some(Action::Runfunc),
                outcome: Some(Outcome::Timeout),
                ..Default::default()
            }),
            [ids[1]]
        );
        assert_eq!(
            q(AuditFilter {
                limit: Some(2),
                ..Default::default()
            }),
            [late, ids[5]]
        );
        assert_eq!(
            q(AuditFilter {
                limit: Some(0),
                ..Default::default()
            }),
            Vec::<i64>::new()
        );
        assert_eq!(
            q(AuditFilter {
                user: user("U1"),
                since: Some(T0 + MINUTE),
                action: Some(Action::Runfunc),
                outcome: Some(Outcome::Ok),
                limit: Some(1),
            }),
            [ids[5]]
        );
        // Filter values are data, not SQL.
        assert!(q(AuditFilter {
            user: user("' OR 1=1 --"),
            ..Default::default()
        })
        .is_empty());
    }

    #[test]
    fn unknown_names_survive_a_round_trip() {
        let (_dir, _path, log) = setup();
        let e = AuditEntry::new(
            "U1",
            Source::from("web"),
            Action::from("help"),
            Outcome::from("refused_maintenance"),
        );
        log.record(&e).unwrap();
        let got = log
            .query(&AuditFilter {
                action: Some(Action::from("help")),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].entry, e);
        assert_eq!(Action::from("run_button"), Action::RunButton);
        assert_eq!(Outcome::RefusedQueueFull.to_string(), "refused_queue_full");
    }

    #[test]
    fn empty_required_fields_are_refused() {
        let (_dir, _path, log) = setup();
        let mut e = entry("", Action::Analyze, Outcome::Ok);
        assert!(matches!(
            log.record(&e).unwrap_err(),
            StoreError::Invalid(_)
        ));
        e.user_id = "U1".into();
        e.action = Action::from("");
        assert!(matches!(
            log.record(&e).unwrap_err(),
            StoreError::Invalid(_)
        ));
        assert_eq!(log.count().unwrap(), 0);
    }

    #[test]
    fn updates_are_refused_by_the_trigger() {
        let (_dir, path, log) = setup();
        let id = log
            .record(&entry("U1", Action::Analyze, Outcome::Error))
            .unwrap();
        let conn = Connection::open(&path).unwrap();
        let err = conn
            .execute(
                "UPDATE audit_log SET outcome = 'ok' WHERE id = ?1",
                params![id],
            )
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        let err = conn
            .execute("UPDATE audit_log SET user_id = 'U2'", [])
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        let rows = log.query(&AuditFilter::default()).unwrap();
        assert_eq!(
            (
                rows[0].entry.outcome.clone(),
                rows[0].entry.user_id.as_str()
            ),
            (Outcome::Error, "U1")
        );
        // Reopening does not drop the trigger.
        drop(log);
        let _log = AuditLog::open(&path).unwrap();
        assert!(conn
            .execute("UPDATE audit_log SET detail = 'x'", [])
            .is_err());
    }

    #[test]
    fn prune_removes_only_older_rows() {
        let (_dir, _path, log) = setup();
        for minute in 0..10 {
            log.record_at(
                &entry("U1", Action::Analyze, Outcome::Ok),
                T0 + minute * MINUTE,
            )
            .unwrap();
        }
        assert_eq!(log.prune(T0).unwrap(), 0);
        assert_eq!(log.prune(T0 + 3 * MINUTE).unwrap(), 3, "strictly older");
        assert_eq!(log.prune(T0 + 3 * MINUTE).unwrap(), 0);
        assert_eq!(log.count().unwrap(), 7);
        let oldest = log.query(&AuditFilter::default()).unwrap().pop().unwrap();
        assert_eq!(oldest.at_us(), Some(T0 + 3 * MINUTE));
        assert_eq!(log.prune(timestamp::now()).unwrap(), 7);
        assert_eq!(log.count().unwrap(), 0);
    }

    #[test]
    fn parallel_records_all_land() {
        let (_dir, path, log) = setup();
        let barrier = Arc::new(Barrier::new(10));
        let threads: Vec<_> = (0..10)
            .map(|t| {
                let path = path.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let log = AuditLog::open(&path).unwrap();
                    barrier.wait();
                    (0..20)
                        .map(|i| {
                            let mut e = entry(&format!("U{t}"), Action::Runfunc, Outcome::Ok);
                            e.detail = Some(format!("{t}/{i}"));
                            log.record(&e).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut ids: Vec<i64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 200);
        assert_eq!(log.count().unwrap(), 200);
        for t in 0..10 {
            let rows = log
                .query(&AuditFilter {
                    user: Some(format!("U{t}")),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(rows.len(), 20);
        }
    }

    #[test]
    fn shares_the_file_with_the_trade_store() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("tradebox.db");
        let log = AuditLog::open(&path).unwrap();
        log.record(&entry("U1", Action::Analyze, Outcome::Ok))
            .unwrap();
        let trades = tradebox_data::Store::open(&path).unwrap();
        assert_eq!(trades.trade_count().unwrap(), 0);
        let log2 = AuditLog::open(&path).unwrap();
        assert_eq!(log2.count().unwrap(), 1);
    }
}
