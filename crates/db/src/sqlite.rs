//! SQLite connections as every tradebox store opens and uses them.
//!
//! # Settings
//!
//! [`connect`] is the only place a store file is opened: a busy timeout of
//! [`BUSY_TIMEOUT`] (a write that cannot get the lock within it fails with
//! [`DbError::Locked`] and changes nothing), WAL journaling (readers run
//! beside a writer; the mode is kept in the file), `synchronous=NORMAL`
//! (durable at each checkpoint, safe against corruption) and foreign keys
//! enforced.
//!
//! # Transactions
//!
//! [`Db`] holds two connections, each behind a mutex: one for writes, one
//! for reads (which never wait behind a write waiting for the file's
//! lock). So one store object can be shared between threads, and any
//! number of store objects in any number of processes may use the same
//! file. Each operation is one transaction:
//! reads are deferred (a consistent snapshot), writes `BEGIN IMMEDIATE`, so
//! read-check-write sequences cannot interleave with another writer's.
//!
//! [`BUSY_TIMEOUT`] bounds an operation's whole wait: for the mutex (other
//! threads of this process) and for the file's lock (other processes)
//! together. Without it, threads queued on the mutex while another process
//! holds the lock would each wait their own timeout in turn, the last of
//! `n` for `n` timeouts. An operation that cannot begin at once waits, on a
//! worker of a multi-threaded tokio runtime, only after `block_in_place`
//! has handed the worker's other tasks on: a locked store holds up the
//! requests that use it, not every request.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::DbError;

/// How long a write waits for another connection's lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// How a connection may use the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and write; the file (and its folder) is created when missing.
    ReadWrite,
    /// Read only; the file must exist.
    ReadOnly,
}

/// Opens `path` with the settings of every store (see the module
/// documentation).
pub fn connect(path: &Path, access: Access) -> Result<Connection, DbError> {
    let err = |e| DbError::from_sqlite(path, e);
    let conn = match access {
        Access::ReadWrite => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| DbError::ReadOnly {
                    path: path.to_path_buf(),
                    detail: format!("cannot create the folder {}: {e}", dir.display()),
                })?;
            }
            Connection::open(path).map_err(err)?
        }
        Access::ReadOnly => Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?,
    };
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    if access == Access::ReadWrite {
        // If another connection holds a lock right now the switch is left
        // to whoever opened the file first; a read-only file cannot switch,
        // which its first write reports instead.
        let _ = conn.pragma_update(None, "journal_mode", "WAL");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(err)?;
    Ok(conn)
}

/// A store file's connections (one for writes, one for reads), shared
/// between threads; see the module documentation.
pub struct Db {
    /// Where writes run.
    writer: Mutex<Connection>,
    /// Where reads run, so that they never wait behind a write waiting for
    /// the file's lock (a locked store still reads).
    reader: Mutex<Connection>,
    path: PathBuf,
}

/// A connection inside one transaction of a [`Db`] (or a store's own
/// connection): SQLite code run through [`Conn::run`] has its errors mapped
/// with the file's path.
#[derive(Clone, Copy)]
pub struct Conn<'a> {
    conn: &'a Connection,
    path: &'a Path,
}

impl<'a> Conn<'a> {
    /// Wraps a connection to the store at `path`.
    pub fn new(conn: &'a Connection, path: &'a Path) -> Conn<'a> {
        Conn { conn, path }
    }

    /// Runs SQLite code, mapping its failure to a [`DbError`].
    pub fn run<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, DbError> {
        f(self.conn).map_err(|e| DbError::from_sqlite(self.path, e))
    }

    /// The store file.
    pub fn path(&self) -> &'a Path {
        self.path
    }
}

impl Db {
    /// Opens (creating if needed) the store file at `path` for reading and
    /// writing.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let writer = connect(path, Access::ReadWrite)?;
        let reader = connect(path, Access::ReadWrite)?;
        Ok(Db {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            path: path.to_path_buf(),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the schema with a read; only when `ready` says no, creates or
    /// migrates it in a write transaction (checking again inside it, as
    /// another process may have done it meanwhile). Opening a ready store
    /// therefore works while another connection holds the write lock.
    pub fn ensure_schema(
        &self,
        ready: fn(&Connection) -> rusqlite::Result<bool>,
        migrate: fn(&Connection) -> rusqlite::Result<()>,
    ) -> Result<(), DbError> {
        if self.read(|c| c.run(ready))? {
            return Ok(());
        }
        self.write(|c| {
            c.run(|conn| {
                if !ready(conn)? {
                    migrate(conn)?;
                }
                Ok(())
            })
        })
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committed when `f`
    /// succeeds; nothing is kept if it fails.
    pub fn write<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&Conn<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transaction(TransactionBehavior::Immediate, f)
    }

    /// Runs `f` in one read transaction (a consistent snapshot).
    pub fn read<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&Conn<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transaction(TransactionBehavior::Deferred, f)
    }

    fn transaction<T, E: From<DbError>>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Conn<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let f = match self.transaction_now(behavior, f) {
            Ok(done) => return done,
            Err(f) => f,
        };
        may_block(|| {
            let mut conn = self.lock(behavior)?;
            let tx = conn
                .transaction_with_behavior(behavior)
                .map_err(|e| E::from(DbError::from_sqlite(&self.path, e)))?;
            self.finish(tx, f)
        })
    }

    /// The transaction when it can begin at once (the connection free
    /// and, for a write, the file's lock too), as most do; else `f` back,
    /// untouched, to wait for its turn.
    fn transaction_now<T, E: From<DbError>, F: FnOnce(&Conn<'_>) -> Result<T, E>>(
        &self,
        behavior: TransactionBehavior,
        f: F,
    ) -> Result<Result<T, E>, F> {
        let err = |e| E::from(DbError::from_sqlite(&self.path, e));
        let Some(mut conn) = self.connection(behavior).try_lock() else {
            return Err(f);
        };
        if let Err(e) = conn.busy_timeout(Duration::ZERO) {
            return Ok(Err(err(e)));
        }
        let tx = match conn.transaction_with_behavior(behavior) {
            Ok(tx) => tx,
            Err(e) => match DbError::from_sqlite(&self.path, e) {
                DbError::Locked { .. } => return Err(f),
                other => return Ok(Err(E::from(other))),
            },
        };
        // Begun: the body's statements wait as any other's would.
        if let Err(e) = tx.busy_timeout(BUSY_TIMEOUT) {
            return Ok(Err(err(e)));
        }
        Ok(self.finish(tx, f))
    }

    /// Runs `f` in `tx`, committed when `f` succeeds.
    fn finish<T, E: From<DbError>>(
        &self,
        tx: rusqlite::Transaction<'_>,
        f: impl FnOnce(&Conn<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let value = f(&Conn::new(&tx, &self.path))?;
        tx.commit()
            .map_err(|e| E::from(DbError::from_sqlite(&self.path, e)))?;
        Ok(value)
    }

    /// The connection for a transaction of `behavior`: reads have one of
    /// their own.
    fn connection(&self, behavior: TransactionBehavior) -> &Mutex<Connection> {
        match behavior {
            TransactionBehavior::Deferred => &self.reader,
            _ => &self.writer,
        }
    }

    /// The connection, once the threads before this one are done, with
    /// its busy timeout set to what is left of [`BUSY_TIMEOUT`]; locked
    /// when that is used up waiting for them. (A panic inside a
    /// transaction rolled it back when the transaction was dropped, so the
    /// connection is still usable: the mutex does not poison.)
    fn lock(&self, behavior: TransactionBehavior) -> Result<MutexGuard<'_, Connection>, DbError> {
        let asked = Instant::now();
        let locked = || DbError::Locked {
            path: self.path.clone(),
        };
        let conn = self
            .connection(behavior)
            .try_lock_for(BUSY_TIMEOUT)
            .ok_or_else(locked)?;
        let left = BUSY_TIMEOUT.saturating_sub(asked.elapsed());
        if left.is_zero() {
            return Err(locked());
        }
        conn.busy_timeout(left)
            .map_err(|e| DbError::from_sqlite(&self.path, e))?;
        Ok(conn)
    }
}

/// Runs `f`, which may wait for a lock: on a worker of a multi-threaded
/// tokio runtime (`serve`) once the worker has handed its other tasks on,
/// so that requests waiting for a locked store do not hold up the ones
/// that do not touch it; elsewhere in place.
fn may_block<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{objects_exist, table_columns};
    use tempfile::TempDir;

    /// Another connection to `path`, holding its lock until it rolls back.
    fn held(path: &Path) -> Connection {
        let blocker = Connection::open(path).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        blocker
    }

    fn setup() -> (TempDir, PathBuf, Db) {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("sub").join("tradebox.db");
        let db = Db::open(&path).unwrap();
        (dir, path, db)
    }

    #[test]
    fn settings_of_every_connection() {
        let (_dir, path, db) = setup();
        let (journal, sync, fk, busy): (String, i64, i64, i64) = db
            .read(|c| {
                c.run(|conn| {
                    Ok((
                        conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?,
                        conn.pragma_query_value(None, "synchronous", |r| r.get(0))?,
                        conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?,
                        conn.pragma_query_value(None, "busy_timeout", |r| r.get(0))?,
                    ))
                })
            })
            .map_err(|e: DbError| e)
            .unwrap();
        assert_eq!(journal.to_lowercase(), "wal");
        assert_eq!(sync, 1, "NORMAL");
        assert_eq!(fk, 1);
        assert_eq!(busy, 2000);
        let ro = connect(&path, Access::ReadOnly).unwrap();
        let fk: i64 = ro
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn failed_writes_keep_nothing_and_schema_is_made_once() {
        let (_dir, _path, db) = setup();
        fn ready(conn: &Connection) -> rusqlite::Result<bool> {
            objects_exist(conn, &["t"])
        }
        fn migrate(conn: &Connection) -> rusqlite::Result<()> {
            conn.execute_batch("CREATE TABLE t (a INTEGER, b TEXT)")
        }
        db.ensure_schema(ready, migrate).unwrap();
        db.ensure_schema(ready, migrate).unwrap();
        let columns = db
            .read(|c| c.run(|conn| table_columns(conn, "t")))
            .map_err(|e: DbError| e)
            .unwrap();
        assert_eq!(columns, ["a", "b"]);

        #[derive(Debug)]
        enum Mine {
            Db(DbError),
            Refused,
        }
        impl From<DbError> for Mine {
            fn from(e: DbError) -> Self {
                Mine::Db(e)
            }
        }
        let failed: Result<(), Mine> = db.write(|c| {
            c.run(|conn| conn.execute("INSERT INTO t (a) VALUES (1)", []))?;
            Err(Mine::Refused)
        });
        assert!(matches!(failed, Err(Mine::Refused)));
        let n: i64 = db
            .read(|c| c.run(|conn| conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))))
            .map_err(|e: DbError| e)
            .unwrap();
        assert_eq!(n, 0, "rolled back");
        let bad: Result<(), Mine> = db.write(|c| {
            c.run(|conn| conn.execute_batch("NOT SQL"))?;
            Ok(())
        });
        match bad {
            Err(Mine::Db(DbError::Sqlite { path, .. })) => assert_eq!(path, db.path()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_held_lock_is_locked_after_the_busy_timeout() {
        let (_dir, path, db) = setup();
        let blocker = held(&path);
        let started = std::time::Instant::now();
        let err = db.write(|_| Ok::<_, DbError>(())).unwrap_err();
        assert!(err.is_locked(), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(1500));
        assert_eq!(err.path(), Some(path.as_path()));
        assert!(err.to_string().contains("is locked by another process"));
        blocker.execute_batch("ROLLBACK").unwrap();
        db.write(|_| Ok::<_, DbError>(())).unwrap();
    }

    #[test]
    fn threads_queued_behind_a_held_lock_each_wait_one_busy_timeout_at_most() {
        let (_dir, path, db) = setup();
        let blocker = held(&path);
        let db = std::sync::Arc::new(db);
        let threads: Vec<_> = (0..5)
            .map(|_| {
                let db = std::sync::Arc::clone(&db);
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let result = db.write(|_| Ok::<_, DbError>(()));
                    (result, started.elapsed())
                })
            })
            .collect();
        for t in threads {
            let (result, took) = t.join().unwrap();
            let err = result.unwrap_err();
            assert!(err.is_locked(), "{err}");
            // One after another, the fifth would wait five timeouts.
            assert!(
                took < BUSY_TIMEOUT + Duration::from_millis(1500),
                "{took:?}"
            );
        }
        blocker.execute_batch("ROLLBACK").unwrap();
        db.write(|_| Ok::<_, DbError>(())).unwrap();
    }

    #[test]
    fn writes_waiting_for_a_held_lock_do_not_hold_up_a_runtimes_other_tasks() {
        let (_dir, path, db) = setup();
        let blocker = held(&path);
        let db = std::sync::Arc::new(db);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        // More waiting writes than the runtime has workers...
        let writes: Vec<_> = (0..6)
            .map(|_| {
                let db = std::sync::Arc::clone(&db);
                rt.spawn(async move { db.write(|_| Ok::<_, DbError>(())) })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // ... and a task that does not touch the store runs at once.
        let spawned = Instant::now();
        let ran = rt.block_on(rt.spawn(async { Instant::now() })).unwrap();
        let waited = ran.duration_since(spawned);
        assert!(waited < Duration::from_secs(1), "{waited:?}");
        for w in writes {
            assert!(rt.block_on(w).unwrap().unwrap_err().is_locked());
        }
        // A free store: the write begins at once, on the worker.
        blocker.execute_batch("ROLLBACK").unwrap();
        let db2 = std::sync::Arc::clone(&db);
        rt.block_on(rt.spawn(async move { db2.write(|_| Ok::<_, DbError>(())) }))
            .unwrap()
            .unwrap();
    }

    #[test]
    fn reads_answer_while_a_write_waits_for_a_held_lock() {
        let (_dir, path, db) = setup();
        db.write(|c| {
            c.run(|conn| conn.execute_batch("CREATE TABLE t (a); INSERT INTO t VALUES (7)"))
        })
        .unwrap();
        let _blocker = held(&path);
        let db = std::sync::Arc::new(db);
        let writer = std::thread::spawn({
            let db = std::sync::Arc::clone(&db);
            move || db.write(|_| Ok::<_, DbError>(()))
        });
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let a: i64 = db
            .read(|c| c.run(|conn| conn.query_row("SELECT a FROM t", [], |r| r.get(0))))
            .unwrap();
        assert_eq!(a, 7);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "the read waited {took:?}");
        assert!(writer.join().unwrap().unwrap_err().is_locked());
    }

    #[test]
    fn read_only_files_say_so() {
        let dir = TempDir::new().unwrap();
        let missing = dir.path().join("missing.db");
        assert!(connect(&missing, Access::ReadOnly).is_err());
        let path = dir.path().join("t.db");
        Db::open(&path)
            .unwrap()
            .write(|c| c.run(|conn| conn.execute_batch("CREATE TABLE t (a)")))
            .unwrap();
        let ro = connect(&path, Access::ReadOnly).unwrap();
        let err = DbError::from_sqlite(
            &path,
            ro.execute("INSERT INTO t VALUES (1)", []).unwrap_err(),
        );
        assert!(matches!(err, DbError::ReadOnly { .. }), "{err}");
        assert!(err.to_string().contains("is read-only"));
    }
}
