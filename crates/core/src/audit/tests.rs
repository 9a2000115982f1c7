//! Tests of the audit trail: the contract every backend keeps, run on
//! SQLite and on PostgreSQL (a throwaway cluster, a fresh database per
//! case), then what is particular to each.

use super::*;
use rusqlite::{params, Connection};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use tempfile::TempDir;
use tradebox_db::testing::PgCluster;

const MINUTE: Micros = 60_000_000;
/// 2025-11-01T00:00:00Z
const T0: Micros = 1_761_955_200_000_000;

fn setup() -> (TempDir, PathBuf, AuditLog) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tradebox.db");
    let log = AuditLog::open(&path).unwrap();
    (dir, path, log)
}

/// Opens another connection to one test's store each time it is called.
type Opener = Arc<dyn Fn() -> AuditLog + Send + Sync>;

/// One case of the contract, by name.
type Case = (&'static str, fn(Opener));

/// The contract: every case runs on every backend.
const CONTRACT: [Case; 8] = [
    ("record_and_read_back", record_and_read_back),
    ("query_filters_and_order", query_filters_and_order),
    (
        "unknown_names_survive_a_round_trip",
        unknown_names_survive_a_round_trip,
    ),
    (
        "empty_required_fields_are_refused",
        empty_required_fields_are_refused,
    ),
    (
        "prune_removes_only_older_rows",
        prune_removes_only_older_rows,
    ),
    ("parallel_records_all_land", parallel_records_all_land),
    ("ping_answers", ping_answers),
    (
        "the_replica_is_stamped_and_kept",
        the_replica_is_stamped_and_kept,
    ),
];

#[test]
fn the_contract_on_sqlite() {
    for (name, case) in CONTRACT {
        eprintln!("case {name}");
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("tradebox.db");
        case(Arc::new(move || AuditLog::open(&path).unwrap()));
    }
}

#[test]
fn the_contract_on_postgres() {
    let cluster = PgCluster::start().unwrap();
    for (name, case) in CONTRACT {
        eprintln!("case {name}");
        let url = cluster.database().unwrap();
        case(Arc::new(move || AuditLog::open_postgres(&url).unwrap()));
    }
}

fn the_replica_is_stamped_and_kept(open: Opener) {
    let log = open().with_replica("host-a:41");
    assert_eq!(log.replica(), Some("host-a:41"));
    log.record(&entry("U1", Action::Analyze, Outcome::Ok))
        .unwrap();
    let mut own = entry("U2", Action::Savefunc, Outcome::Ok);
    own.replica = Some("host-b:7".into());
    log.record(&own).unwrap();
    open()
        .record(&entry("U3", Action::Delfunc, Outcome::Ok))
        .unwrap();
    let rows = open().query(&AuditFilter::default()).unwrap();
    let replicas: Vec<Option<&str>> = rows.iter().map(|r| r.entry.replica.as_deref()).collect();
    assert_eq!(replicas, [None, Some("host-b:7"), Some("host-a:41")]);
    assert_eq!(
        serde_json::to_value(&rows[2]).unwrap()["replica"],
        "host-a:41"
    );
}

fn ping_answers(open: Opener) {
    let log = open();
    log.ping().unwrap();
    log.record(&entry("U1", Action::Analyze, Outcome::Ok))
        .unwrap();
    log.ping().unwrap();
}

fn entry(user: &str, action: Action, outcome: Outcome) -> AuditEntry {
    AuditEntry::new(user, Source::Slack, action, outcome)
}

fn record_and_read_back(open: Opener) {
    let log = open();
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

fn query_filters_and_order(open: Opener) {
    let log = open();
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

    let q = |f: AuditFilter| -> Vec<i64> { log.query(&f).unwrap().iter().map(|r| r.id).collect() };
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

fn unknown_names_survive_a_round_trip(open: Opener) {
    let log = open();
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

fn empty_required_fields_are_refused(open: Opener) {
    let log = open();
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

fn prune_removes_only_older_rows(open: Opener) {
    let log = open();
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

fn parallel_records_all_land(open: Opener) {
    let log = open();
    let barrier = Arc::new(Barrier::new(10));
    let threads: Vec<_> = (0..10)
        .map(|t| {
            let open = Arc::clone(&open);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let log = open();
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

#[test]
fn updates_are_refused_by_the_trigger_on_postgres() {
    use tradebox_db::pg::postgres::{Client, NoTls};
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    let log = AuditLog::open_postgres(&url).unwrap();
    let id = log
        .record(&entry("U1", Action::Analyze, Outcome::Error))
        .unwrap();
    // Another client, as an operator with psql would be.
    let errors = std::thread::spawn(move || {
        let mut client = Client::connect(&url, NoTls).unwrap();
        let one = client
            .execute("UPDATE audit_log SET outcome = 'ok' WHERE id = $1", &[&id])
            .unwrap_err();
        let all = client
            .execute("UPDATE audit_log SET user_id = 'U2'", &[])
            .unwrap_err();
        // Opening again (the schema is there) keeps the trigger.
        drop(AuditLog::open_postgres(&url).unwrap());
        let again = client
            .execute("UPDATE audit_log SET detail = 'x'", &[])
            .unwrap_err();
        [one, all, again].map(|e| e.as_db_error().unwrap().message().to_string())
    })
    .join()
    .unwrap();
    for message in errors {
        assert!(message.contains("append-only"), "{message}");
    }
    let rows = log.query(&AuditFilter::default()).unwrap();
    assert_eq!(
        (
            rows[0].entry.outcome.clone(),
            rows[0].entry.user_id.as_str()
        ),
        (Outcome::Error, "U1")
    );
}

#[test]
fn a_table_made_before_the_replica_column_gets_it() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tradebox.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,
             user_id TEXT NOT NULL, channel TEXT, source TEXT NOT NULL, action TEXT NOT NULL,
             function_name TEXT, function_version INTEGER, code TEXT, outcome TEXT NOT NULL,
             error_type TEXT, detail TEXT, duration_ms INTEGER);
             INSERT INTO audit_log (at, user_id, source, action, outcome)
             VALUES ('2025-11-01T00:00:00', 'U0', 'slack', 'analyze', 'ok');",
        )
        .unwrap();
    }
    let log = AuditLog::open(&path).unwrap().with_replica("r");
    log.record(&entry("U1", Action::Analyze, Outcome::Ok))
        .unwrap();
    let rows = log.query(&AuditFilter::default()).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].entry.replica.as_deref(), Some("r"));
    assert_eq!(rows[1].entry.replica, None, "the old row, kept");
}

#[test]
fn a_version_one_postgres_schema_gets_the_replica_column() {
    use tradebox_db::pg::postgres::{Client, NoTls};
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    let old = url.clone();
    std::thread::spawn(move || {
        let mut client = Client::connect(&old, NoTls).unwrap();
        client
            .batch_execute(
                "CREATE TABLE audit_log (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                 at TEXT NOT NULL, user_id TEXT NOT NULL, channel TEXT, source TEXT NOT NULL,
                 action TEXT NOT NULL, function_name TEXT, function_version BIGINT, code TEXT,
                 outcome TEXT NOT NULL, error_type TEXT, detail TEXT, duration_ms BIGINT);
                 CREATE TABLE tradebox_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
                 INSERT INTO tradebox_schema VALUES ('audit', 1);
                 INSERT INTO audit_log (at, user_id, source, action, outcome)
                 VALUES ('2025-11-01T00:00:00', 'U0', 'slack', 'analyze', 'ok');",
            )
            .unwrap();
    })
    .join()
    .unwrap();
    let log = AuditLog::open_postgres(&url).unwrap().with_replica("r");
    log.record(&entry("U1", Action::Analyze, Outcome::Ok))
        .unwrap();
    let rows = log.query(&AuditFilter::default()).unwrap();
    let replicas: Vec<Option<&str>> = rows.iter().map(|r| r.entry.replica.as_deref()).collect();
    assert_eq!(replicas, [Some("r"), None]);
}

#[test]
fn copy_into_keeps_every_entry_its_time_and_replica() {
    let (_dir, _path, sqlite) = setup();
    for minute in 0..5 {
        let mut e = entry(&format!("U{minute}"), Action::Runfunc, Outcome::Ok);
        e.replica = Some(format!("host:{minute}"));
        e.code = Some("result = 1  # ünï".into());
        sqlite.record_at(&e, T0 + minute * MINUTE).unwrap();
    }
    let cluster = PgCluster::start().unwrap();
    let pg = AuditLog::open_postgres(&cluster.database().unwrap()).unwrap();
    assert_eq!(sqlite.copy_into(&pg).unwrap(), 5);
    let strip = |log: &AuditLog| -> Vec<(String, AuditEntry)> {
        log.query(&AuditFilter::default())
            .unwrap()
            .into_iter()
            .map(|r| (r.at, r.entry))
            .collect()
    };
    assert_eq!(strip(&pg), strip(&sqlite));
    let err = sqlite.copy_into(&pg).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert_eq!(pg.count().unwrap(), 5);
}

#[test]
fn rows_the_store_could_not_take_are_kept_and_written_once_it_answers() {
    let cluster = PgCluster::start().unwrap();
    let log = AuditLog::open_postgres(&cluster.database().unwrap())
        .unwrap()
        .with_replica("r1");
    log.record_at(&entry("U0", Action::Analyze, Outcome::Ok), T0)
        .unwrap();
    cluster.stop_clean().unwrap();
    // Down: each row is refused as "try again", and kept with its time.
    for minute in 1..=3 {
        let e = entry(&format!("U{minute}"), Action::Analyze, Outcome::Error);
        let err = log.record_at(&e, T0 + minute * MINUTE).unwrap_err();
        assert!(err.is_locked(), "{err}");
    }
    assert_eq!(log.spooled(), 3);
    assert!(log.flush_spool().is_err());
    assert_eq!(log.spooled(), 3, "a failed flush keeps every row");
    cluster.restart().unwrap();
    // Back: the next row writes the kept ones first, in order, each at its
    // own time and with the replica's name.
    log.record_at(&entry("U4", Action::Analyze, Outcome::Ok), T0 + 4 * MINUTE)
        .unwrap();
    assert_eq!(log.spooled(), 0);
    let mut rows: Vec<(String, String, Option<String>)> = log
        .query(&AuditFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| (r.at, r.entry.user_id, r.entry.replica))
        .collect();
    rows.reverse();
    let users: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(users, ["U0", "U1", "U2", "U3", "U4"]);
    assert!(
        rows.iter().all(|r| r.2.as_deref() == Some("r1")),
        "{rows:?}"
    );
    let times: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "kept rows keep their own times");
    // Nothing kept: flushing writes nothing; a row the store refuses for
    // another reason (an empty user) is not kept.
    assert_eq!(log.flush_spool().unwrap(), 0);
    let err = log
        .record(&entry("", Action::Analyze, Outcome::Ok))
        .unwrap_err();
    assert!(!err.is_locked());
    assert_eq!(log.spooled(), 0);
}

/// A backend passing everything on to `inner`, except where a test steps
/// in: while `down`, an append fails and writes nothing; while `lost`, the
/// next append lands but is answered as if the store were gone (a
/// connection that broke after the statement was sent); with a `gate`, the
/// first `append_once` says so and waits to be let through.
struct Faulty {
    inner: Arc<dyn AuditBackend>,
    down: std::sync::atomic::AtomicBool,
    lost: std::sync::atomic::AtomicBool,
    gate: Option<Gate>,
}

/// Where [`Faulty::append_once`] waits the first time: it sends on
/// `entered`, then waits on `through`.
struct Gate {
    entered: std::sync::mpsc::Sender<()>,
    through: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    passed: std::sync::atomic::AtomicBool,
}

impl Faulty {
    fn new(inner: Arc<dyn AuditBackend>) -> Faulty {
        Faulty {
            inner,
            down: false.into(),
            lost: false.into(),
            gate: None,
        }
    }
}

fn gone() -> StoreError {
    StoreError::Db(tradebox_db::DbError::Unavailable {
        target: "test".into(),
        detail: "the connection broke".into(),
    })
}

impl AuditBackend for Faulty {
    fn append(&self, entry: &AuditEntry, at: Micros) -> Result<i64, StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.down.load(SeqCst) {
            return Err(gone());
        }
        let id = self.inner.append(entry, at)?;
        if self.lost.swap(false, SeqCst) {
            return Err(gone());
        }
        Ok(id)
    }
    fn append_once(&self, entry: &AuditEntry, at: Micros) -> Result<bool, StoreError> {
        let first = |gate: &&Gate| !gate.passed.swap(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(gate) = self.gate.as_ref().filter(first) {
            let _ = gate.entered.send(());
            let _ = gate.through.lock().unwrap().recv();
        }
        self.inner.append_once(entry, at)
    }
    fn append_releasing(
        &self,
        entry: &AuditEntry,
        at: Micros,
        lease: &str,
    ) -> Result<(i64, bool), StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(gone());
        }
        self.inner.append_releasing(entry, at, lease)
    }
    fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.query(filter)
    }
    fn prune(&self, before: Micros) -> Result<u64, StoreError> {
        self.inner.prune(before)
    }
    fn count(&self) -> Result<u64, StoreError> {
        self.inner.count()
    }
    fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping()
    }
}

#[test]
fn a_row_recorded_while_kept_rows_are_written_joins_them_without_waiting() {
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::mpsc::channel;
    use std::time::Duration;
    let (_dir, path, _) = setup();
    let (entered_tx, entered) = channel();
    let (through, through_rx) = channel();
    let mut backend = Faulty::new(Arc::new(sqlite::SqliteAudit::open(&path).unwrap()));
    backend.gate = Some(Gate {
        entered: entered_tx,
        through: std::sync::Mutex::new(through_rx),
        passed: false.into(),
    });
    let backend = Arc::new(backend);
    let log = AuditLog::new(backend.clone());
    backend.down.store(true, SeqCst);
    let kept = entry("U1", Action::Analyze, Outcome::Error);
    assert!(log.record_at(&kept, T0).unwrap_err().is_locked());
    backend.down.store(false, SeqCst);

    // One thread writes the kept row and is held up at it (as by a store
    // that takes its time to answer)...
    let flusher = std::thread::spawn({
        let log = log.clone();
        move || log.flush_spool()
    });
    entered.recv_timeout(Duration::from_secs(30)).unwrap();
    // ... while a command records its row: kept at once, not waiting.
    let (done_tx, done) = channel();
    std::thread::spawn({
        let log = log.clone();
        move || {
            let second = entry("U2", Action::Analyze, Outcome::Ok);
            let _ = done_tx.send(log.record_at(&second, T0 + MINUTE));
        }
    });
    let err = done
        .recv_timeout(Duration::from_secs(30))
        .expect("the row waited for the thread writing the kept ones")
        .unwrap_err();
    assert!(err.is_locked(), "{err}");
    assert_eq!(log.spooled(), 2);

    // Let through: the writing thread writes both, in order, once each.
    through.send(()).unwrap();
    assert_eq!(flusher.join().unwrap().unwrap(), 2);
    assert_eq!(log.spooled(), 0);
    let users: Vec<String> = log
        .query(&AuditFilter::default())
        .unwrap()
        .into_iter()
        .rev()
        .map(|r| r.entry.user_id)
        .collect();
    assert_eq!(users, ["U1", "U2"]);
}

/// A row whose write landed though its answer was lost is kept as if it had
/// not; flushing it must not write it twice, while rows alike in all but
/// one field are still written.
fn a_row_whose_answer_was_lost_is_written_once(inner: Arc<dyn AuditBackend>) {
    let backend = Faulty::new(inner);
    backend
        .lost
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let log = AuditLog::new(Arc::new(backend)).with_replica("r1");
    let mut first = entry("U1", Action::Analyze, Outcome::Ok);
    first.code = Some("result = 1".into());
    first.channel = None;
    let err = log.record_at(&first, T0).unwrap_err();
    assert!(err.is_locked(), "{err}");
    assert_eq!(log.spooled(), 1);
    // The same command's twins in all but one field, at the same time.
    let mut twins = Vec::new();
    for change in 0..4 {
        let mut e = first.clone();
        match change {
            0 => e.code = Some("result = 2".into()),
            1 => e.outcome = Outcome::Error,
            2 => e.channel = Some("C1".into()),
            _ => e.user_id = "U2".into(),
        }
        twins.push(e);
    }
    // The next record flushes the kept row first: it is there already.
    log.record_at(&twins[0], T0).unwrap();
    assert_eq!(log.spooled(), 0);
    for e in &twins[1..] {
        log.record_at(e, T0).unwrap();
    }
    assert_eq!(log.count().unwrap(), 5, "one row per command, none twice");
    // The same code run again a minute later is a command of its own.
    log.record_at(&first, T0 + MINUTE).unwrap();
    assert_eq!(log.count().unwrap(), 6);
}

#[test]
fn a_row_whose_answer_was_lost_is_written_once_on_sqlite() {
    let dir = TempDir::new().unwrap();
    let backend = sqlite::SqliteAudit::open(&dir.path().join("tradebox.db")).unwrap();
    a_row_whose_answer_was_lost_is_written_once(Arc::new(backend));
}

#[test]
fn a_row_whose_answer_was_lost_is_written_once_on_postgres() {
    let cluster = PgCluster::start().unwrap();
    let backend = pg::PgAudit::open(&cluster.database().unwrap()).unwrap();
    a_row_whose_answer_was_lost_is_written_once(Arc::new(backend));
}
