//! The PostgreSQL side of the connection plumbing: [`PgDb`], one
//! connection behind a mutex like [`crate::Db`], with one read or write
//! transaction per operation and [`PgDb::ensure_component`] under a lock held
//! for the transaction, so that replicas starting together migrate once.
//!
//! The client is the synchronous `postgres` crate, which runs its own small
//! async runtime for each call; calling it from a thread that is already
//! inside a runtime (a tokio worker, where the pipeline runs) would panic.
//! On a worker of a multi-threaded runtime (`serve`) a transaction runs in
//! place after `block_in_place` has handed the worker's other tasks on;
//! on a single-threaded runtime's thread it runs on a scoped thread of its
//! own, which borrows the caller's closure (no `'static` needed); on a
//! plain thread, in place. Long operations of plain threads
//! (an import, a mirror's sync) run where they are called
//! ([`PgDb::write_here`], [`PgDb::read_here`]). TLS follows libpq's
//! `sslmode` and `sslrootcert` ([`crate::tls`]).
//!
//! Round trips are what a command pays here, so: each connection keeps its
//! prepared statements (one round trip per statement after the first use,
//! not a prepare and an execute each time); a write's `BEGIN` and its
//! advisory lock go in one round trip; an operation of one statement (an
//! audit row, fetching a function, counting its use) runs on its own,
//! without `BEGIN` and `COMMIT` ([`PgDb::write_one`], [`PgDb::read_one`]).
//!
//! A connection that broke while idle (the server restarted) is found out
//! when a transaction cannot begin on it (for a single statement on a
//! connection idle over [`IDLE_PROBE`], by an empty query first); nothing
//! of the operation has run then, so it begins once more on a new
//! connection. One that breaks
//! during a transaction fails that operation with [`DbError::Unavailable`],
//! which nothing retries (the user is told to try again; the transaction
//! never committed, so nothing was half-written), and is replaced by the
//! next operation.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, Config, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::DbError;

/// The client crate, for the stores' own SQL (parameter and row types).
pub use postgres;

/// The version of `component`'s schema in this database: 0 when it was
/// never made. Versions live in `tradebox_schema`, one row per component.
pub fn schema_version(tx: &mut Client, component: &str) -> Result<i32, postgres::Error> {
    let exists: bool = tx
        .query_one("SELECT to_regclass('tradebox_schema') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(tx
        .query_opt(
            "SELECT version FROM tradebox_schema WHERE component = $1",
            &[&component],
        )?
        .map_or(0, |r| r.get(0)))
}

/// Records that `component`'s schema is at `version` (inside the migration
/// that made it so).
pub fn set_schema_version(
    tx: &mut Client,
    component: &str,
    version: i32,
) -> Result<(), postgres::Error> {
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS tradebox_schema (
             component TEXT PRIMARY KEY,
             version INTEGER NOT NULL
         )",
    )?;
    tx.execute(
        "INSERT INTO tradebox_schema (component, version) VALUES ($1, $2)
         ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
        &[&component, &version],
    )?;
    Ok(())
}

/// How long connecting may take before the store counts as unavailable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection idle this long is checked (one empty query) before a
/// single-statement write, which has no `BEGIN` to find a broken
/// connection out before anything is sent.
pub const IDLE_PROBE: Duration = Duration::from_secs(1);

/// How long one statement may wait for a lock or run.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The lock every write of one store takes first (`pg_advisory_xact_lock`),
/// so writes to it are serialised as SQLite's `BEGIN IMMEDIATE` serialises
/// them; schema changes take [`MIGRATION_LOCK`].
pub type LockKey = i64;

/// The advisory lock key of schema creation and migration.
pub const MIGRATION_LOCK: LockKey = 0x7472_6164_6562_6f78; // "tradebox"

/// How one try at a transaction ended.
enum Attempt<T, E> {
    Done(Result<T, E>),
    /// It could not begin: the connection had broken. Nothing ran.
    Stale(E),
}

/// What a transaction may do.
#[derive(Clone, Copy)]
enum Mode {
    Read,
    /// Write, first taking the advisory lock.
    Write(LockKey),
    /// One statement, on its own (atomic by itself).
    Single,
}

/// A connection and what it keeps.
struct Live {
    client: Client,
    /// Prepared statements, by their SQL.
    statements: HashMap<String, Statement>,
    /// A transaction was begun and not ended (its operation panicked): the
    /// connection is not used again.
    in_transaction: bool,
    /// When an operation last ended on it.
    used: Instant,
}

/// One connection to a PostgreSQL store, shared between threads; see the
/// module documentation.
pub struct PgDb {
    config: Config,
    /// Where the store is, for messages: host, port and database, never the
    /// password.
    target: String,
    /// The TLS connector `sslmode` and `sslrootcert` asked for.
    tls: MakeRustlsConnect,
    /// `sslmode` as given (`prefer` when not).
    sslmode: String,
    /// The connection; waited for at most [`STATEMENT_TIMEOUT`], so that
    /// threads queued behind operations stuck on a held lock or a server
    /// that stopped answering give up within one timeout, not one each.
    live: parking_lot::Mutex<Option<Live>>,
}

impl std::fmt::Debug for PgDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDb")
            .field("target", &self.target)
            .finish()
    }
}

/// A transaction of a [`PgDb`] (or, for [`PgDb::write_one`], a single
/// statement): its statements, whose failures are mapped with the store's
/// description, and which are prepared once per connection.
pub struct PgConn<'a> {
    live: Mutex<&'a mut Live>,
    target: &'a str,
}

impl<'a> PgConn<'a> {
    fn lock(&self) -> MutexGuard<'_, &'a mut Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn err(&self, e: postgres::Error) -> DbError {
        DbError::from_postgres(self.target, e)
    }

    /// Runs `f` on the statement for `sql`, prepared on first use.
    fn with<T>(
        &self,
        sql: &str,
        f: impl FnOnce(&mut Client, &Statement) -> Result<T, postgres::Error>,
    ) -> Result<T, DbError> {
        let mut live = self.lock();
        let live = &mut **live;
        let statement = match live.statements.get(sql) {
            Some(s) => s.clone(),
            None => {
                let s = live.client.prepare(sql).map_err(|e| self.err(e))?;
                live.statements.insert(sql.to_string(), s.clone());
                s
            }
        };
        f(&mut live.client, &statement).map_err(|e| {
            // A statement prepared before another replica changed the
            // schema is prepared again next time.
            if e.code().is_some_and(|c| {
                *c == postgres::error::SqlState::FEATURE_NOT_SUPPORTED
                    || *c == postgres::error::SqlState::INVALID_SQL_STATEMENT_NAME
            }) {
                live.statements.remove(sql);
            }
            self.err(e)
        })
    }

    /// The rows of a query.
    pub fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, DbError> {
        self.with(sql, |c, s| c.query(s, params))
    }

    /// The one row of a query.
    pub fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, DbError> {
        self.with(sql, |c, s| c.query_one(s, params))
    }

    /// The row of a query, if any.
    pub fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, DbError> {
        self.with(sql, |c, s| c.query_opt(s, params))
    }

    /// Runs a statement; the rows it changed.
    pub fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, DbError> {
        self.with(sql, |c, s| c.execute(s, params))
    }

    /// Runs anything else on the client (schema changes).
    pub fn run<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, DbError> {
        let mut live = self.lock();
        f(&mut live.client).map_err(|e| self.err(e))
    }

    /// Where the store is (host, port, database).
    pub fn target(&self) -> &str {
        self.target
    }
}

/// `host:port/database` of a connection string, without user or password.
pub fn describe(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .map(str::to_string)
        .or_else(|| config.get_user().map(str::to_string))
        .unwrap_or_default();
    format!("postgres {host}:{port}/{db}")
}

impl PgDb {
    /// Connects to the store at `url` (`postgres://user:pass@host:port/db`
    /// or `host=... dbname=...`), over TLS as its `sslmode` and
    /// `sslrootcert` say (see [`crate::tls`]).
    pub fn open(url: &str) -> Result<PgDb, DbError> {
        let tls = crate::tls::settings(url)?;
        let mut config: Config =
            tls.conninfo
                .parse()
                .map_err(|e: postgres::Error| DbError::Config {
                    detail: format!("not a PostgreSQL connection string: {e}"),
                })?;
        config.ssl_mode(tls.mode);
        config.connect_timeout(CONNECT_TIMEOUT);
        config.options(&format!(
            "-c statement_timeout={} -c lock_timeout={}",
            STATEMENT_TIMEOUT.as_millis(),
            STATEMENT_TIMEOUT.as_millis()
        ));
        let target = describe(&config);
        let db = PgDb {
            config,
            target,
            tls: tls.connector,
            sslmode: tls.shown,
            live: parking_lot::Mutex::new(None),
        };
        // Connect now, so that a wrong address is said at start.
        db.read(|_| Ok::<(), DbError>(()))?;
        Ok(db)
    }

    /// Where the store is, for messages (no password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The connection's `sslmode` (see [`crate::tls`]).
    pub fn sslmode(&self) -> &str {
        &self.sslmode
    }

    /// Brings `component`'s schema to `version` by running `ddl` when the
    /// database has an older one (none counts as 0): under
    /// [`MIGRATION_LOCK`], checking again once the lock is held (another
    /// replica may have done it meanwhile), recording the version in the
    /// same transaction. `ddl` must take the schema from any older version
    /// (`IF NOT EXISTS` everywhere). A newer version (another build
    /// migrated it) is left alone; `tradebox store check` reports it.
    pub fn ensure_component(
        &self,
        component: &str,
        version: i32,
        ddl: &str,
    ) -> Result<(), DbError> {
        if self.read(|c| c.run(|tx| schema_version(tx, component)))? >= version {
            return Ok(());
        }
        self.write(MIGRATION_LOCK, |c| {
            c.run(|tx| {
                if schema_version(tx, component)? < version {
                    tx.batch_execute(ddl)?;
                    set_schema_version(tx, component, version)?;
                }
                Ok(())
            })
        })
    }

    /// Runs `f` in one transaction holding the advisory lock `lock` (every
    /// write of one store names the same key, so they are serialised),
    /// committed when `f` succeeds; nothing is kept if it fails.
    pub fn write<T: Send, E: From<DbError> + Send>(
        &self,
        lock: LockKey,
        f: impl FnOnce(&PgConn<'_>) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.transaction(Mode::Write(lock), f)
    }

    /// Runs `f`, which must run exactly one statement (atomic by itself),
    /// without a transaction around it: one round trip instead of three.
    pub fn write_one<T: Send, E: From<DbError> + Send>(
        &self,
        f: impl FnOnce(&PgConn<'_>) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.transaction(Mode::Single, f)
    }

    /// Runs `f`, which must run exactly one statement (consistent by
    /// itself), without a transaction around it: [`PgDb::write_one`] for a
    /// read.
    pub fn read_one<T: Send, E: From<DbError> + Send>(
        &self,
        f: impl FnOnce(&PgConn<'_>) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.transaction(Mode::Single, f)
    }

    /// Runs `f` in one read transaction (`REPEATABLE READ`: a consistent
    /// snapshot).
    pub fn read<T: Send, E: From<DbError> + Send>(
        &self,
        f: impl FnOnce(&PgConn<'_>) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.transaction(Mode::Read, f)
    }

    /// [`PgDb::write`] on the calling thread, for long operations (an
    /// import) whose closure borrows what cannot cross threads. It must not
    /// be called from an async task (the client would panic there): only
    /// from plain threads, such as the CLI's, `spawn_blocking`'s or a
    /// follower's.
    pub fn write_here<T, E: From<DbError>>(
        &self,
        lock: LockKey,
        f: impl FnOnce(&PgConn<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transaction_retried(Mode::Write(lock), f)
    }

    /// [`PgDb::read`] on the calling thread; see [`PgDb::write_here`].
    pub fn read_here<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&PgConn<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transaction_retried(Mode::Read, f)
    }

    /// A connection of its own that listens on `channel` (`LISTEN`), for a
    /// thread that waits for another process's `NOTIFY`.
    pub fn listen(&self, channel: &str) -> Result<Listener, DbError> {
        let mut client = self
            .config
            .connect(self.tls.clone())
            .map_err(|e| DbError::from_postgres(&self.target, e))?;
        let quoted = format!("\"{}\"", channel.replace('"', "\"\""));
        client
            .batch_execute(&format!("LISTEN {quoted}"))
            .map_err(|e| DbError::from_postgres(&self.target, e))?;
        Ok(Listener {
            client,
            target: self.target.clone(),
        })
    }

    fn transaction<T: Send, E: From<DbError> + Send>(
        &self,
        mode: Mode,
        f: impl FnOnce(&PgConn<'_>) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            // A plain thread: here.
            Err(_) => return self.transaction_retried(mode, f),
            // A worker of a multi-threaded runtime (`serve`): here too, once
            // the worker has handed its other tasks on (no thread to start
            // and wait for, which with idle CPUs costs a wake-up each time).
            Ok(RuntimeFlavor::MultiThread) => {
                return tokio::task::block_in_place(|| self.transaction_retried(mode, f))
            }
            // A single-threaded runtime cannot hand its tasks on: a thread
            // of its own.
            Ok(_) => {}
        }
        std::thread::scope(|s| {
            s.spawn(|| self.transaction_retried(mode, f))
                .join()
                .unwrap_or_else(|_| {
                    Err(E::from(DbError::Unavailable {
                        target: self.target.clone(),
                        detail: "a store operation panicked".into(),
                    }))
                })
        })
    }

    /// A transaction on this thread, begun once more on a new connection
    /// when the first could not begin (the connection broke while idle, as
    /// when the server restarted: nothing of the operation ran yet).
    fn transaction_retried<T, E: From<DbError>>(
        &self,
        mode: Mode,
        f: impl FnOnce(&PgConn<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut f = Some(f);
        match self.transaction_here(mode, &mut f) {
            Attempt::Stale(_) => match self.transaction_here(mode, &mut f) {
                Attempt::Done(result) => result,
                Attempt::Stale(e) => Err(e),
            },
            Attempt::Done(result) => result,
        }
    }

    /// One try at a transaction; `f` is taken only once it has begun.
    fn transaction_here<T, E: From<DbError>, F>(
        &self,
        mode: Mode,
        f: &mut Option<F>,
    ) -> Attempt<T, E>
    where
        F: FnOnce(&PgConn<'_>) -> Result<T, E>,
    {
        let err = |e| E::from(DbError::from_postgres(&self.target, e));
        let mut guard = match self.live() {
            Ok(guard) => guard,
            Err(e) => return Attempt::Done(Err(E::from(e))),
        };
        let Some(live) = guard.as_mut() else {
            return Attempt::Done(Err(E::from(DbError::Unavailable {
                target: self.target.clone(),
                detail: "no connection".into(),
            })));
        };
        let begin = match mode {
            Mode::Read => {
                Some("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY".to_string())
            }
            Mode::Write(key) => Some(format!("BEGIN; SELECT pg_advisory_xact_lock({key})")),
            Mode::Single => None,
        };
        // What finds a connection broken while idle before anything of the
        // operation is sent: its BEGIN, or for a single statement on a
        // connection idle a while, an empty query.
        let probe = match &begin {
            Some(begin) => Some(begin.as_str()),
            None if live.used.elapsed() >= IDLE_PROBE => Some(""),
            None => None,
        };
        if let Some(probe) = probe {
            match live.client.batch_execute(probe) {
                Ok(()) => live.in_transaction = begin.is_some(),
                // A connection found broken is replaced by the next `live()`.
                Err(e) if e.is_closed() => return Attempt::Stale(err(e)),
                Err(e) => return Attempt::Done(Err(err(e))),
            }
        }
        let Some(f) = f.take() else {
            return Attempt::Done(Err(E::from(DbError::Unavailable {
                target: self.target.clone(),
                detail: "the operation was already run".into(),
            })));
        };
        let result = f(&PgConn {
            live: Mutex::new(&mut *live),
            target: &self.target,
        });
        live.used = Instant::now();
        if begin.is_none() {
            return Attempt::Done(result);
        }
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        match live.client.batch_execute(end) {
            Ok(()) => live.in_transaction = false,
            Err(e) if result.is_ok() => return Attempt::Done(Err(err(e))),
            // The body's error says what went wrong; the connection, if it
            // broke, is replaced (`in_transaction` stays set).
            Err(_) => {}
        }
        Attempt::Done(result)
    }

    /// The connection, made when there is none or it cannot be used.
    fn live(&self) -> Result<parking_lot::MutexGuard<'_, Option<Live>>, DbError> {
        let mut guard =
            self.live
                .try_lock_for(STATEMENT_TIMEOUT)
                .ok_or_else(|| DbError::Unavailable {
                    target: self.target.clone(),
                    detail: format!(
                        "busy: no turn on this process's connection within {}s",
                        STATEMENT_TIMEOUT.as_secs()
                    ),
                })?;
        let usable = guard
            .as_ref()
            .is_some_and(|l| !l.in_transaction && !l.client.is_closed());
        if !usable {
            let client = self
                .config
                .connect(self.tls.clone())
                .map_err(|e| DbError::from_postgres(&self.target, e))?;
            *guard = Some(Live {
                client,
                statements: HashMap::new(),
                in_transaction: false,
                used: Instant::now(),
            });
        }
        Ok(guard)
    }
}

/// A connection listening for notifications; see [`PgDb::listen`].
pub struct Listener {
    client: Client,
    target: String,
}

impl Listener {
    /// Waits up to `timeout` for a notification; the payloads of those that
    /// came (empty when none did). An error means the connection broke: make
    /// a new listener.
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<String>, DbError> {
        use postgres::fallible_iterator::FallibleIterator;
        let err = |e| DbError::from_postgres(&self.target, e);
        let mut got = Vec::new();
        let first = self
            .client
            .notifications()
            .timeout_iter(timeout)
            .next()
            .map_err(err)?;
        if let Some(first) = first {
            got.push(first.payload().to_string());
            // Whatever else already arrived, without waiting.
            let mut notes = self.client.notifications();
            let mut more = notes.iter();
            while let Some(n) = more.next().map_err(err)? {
                got.push(n.payload().to_string());
            }
        }
        if self.client.is_closed() {
            return Err(DbError::Unavailable {
                target: self.target.clone(),
                detail: "the listening connection closed".into(),
            });
        }
        Ok(got)
    }
}
