//! The per-user rate limit on executions: at most `executions` allowed
//! executions of one user within any `window` (config `[rate_limit]`,
//! default 10 per 60 s), a true sliding window as in the bot this replaces
//! ("Max 10 executions per 60s").
//!
//! # Semantics
//!
//! An execution allowed at time `t` counts against its user while
//! `now - window < t`, i.e. until `t + window`. [`RateLimiter::check_and_record`]
//! allows and records an execution when fewer than `executions` count;
//! otherwise it refuses with the seconds until enough of them leave the
//! window (rounded up, at least 1). Refused attempts are not recorded, so
//! retrying while limited does not push the time back. Users are counted
//! separately.
//!
//! # Storage
//!
//! The counters are rows of `rate_limit_events(user_id, at)` (`at` in epoch
//! microseconds, indexed on `(user_id, at)`) in the store's SQLite file,
//! with the connection settings, transactions and errors of the function
//! store ([`crate::functions`]). One check is one `BEGIN IMMEDIATE`
//! transaction: delete the user's rows that have left the window, count
//! the rest, insert a row when below the limit. So any number of limiter
//! objects, threads, processes or replicas sharing the file share the
//! counters exactly, and old rows never pile up (a user keeps at most
//! `executions` rows; [`RateLimiter::prune`] clears users who stopped
//! coming). Replicas are assumed to have synchronised clocks. The SQL is
//! plain, so a Postgres backend needs only its DDL and placeholders.
//!
//! # Why not `governor`
//!
//! DESIGN.md suggests a crate such as `governor`. Its GCRA algorithm
//! allows a burst of N and then one more every window/N: after a burst of
//! 10 a user could run again 6 s later, which is not "N per window" and
//! not what users of the original bot know. It also keeps its state in
//! process memory, which neither survives a restart nor is shared by
//! several processes or replicas. A window over rows in the shared store
//! gives the exact rule and the sharing.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection};
use serde::Serialize;
use tradebox_data::timestamp::Micros;

use crate::config::RateLimitSection;
use crate::functions::{objects_exist, Db, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rate_limit_events (
    user_id TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_rate_limit_events_user_at ON rate_limit_events(user_id, at);
";

const SCHEMA_OBJECTS: [&str; 2] = ["rate_limit_events", "idx_rate_limit_events_user_at"];

const MICROS_PER_SECOND: i64 = 1_000_000;

/// The answer of [`RateLimiter::check_and_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// The execution may run and was counted; `remaining` more fit in the
    /// window now.
    Allowed { remaining: u32 },
    /// The user has used up the window; retry after this many seconds.
    Limited { retry_after_seconds: u64 },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

/// The shared sliding-window limiter; see the module documentation.
pub struct RateLimiter {
    db: Db,
    executions: u32,
    window: Duration,
    window_us: i64,
}

impl RateLimiter {
    /// Opens the limiter on the SQLite file at `db_path` (normally
    /// `$TRADEBOX_HOME/tradebox.db`), creating the table when needed:
    /// at most `executions` per user within any `window`.
    pub fn open(
        db_path: impl AsRef<Path>,
        executions: u32,
        window: Duration,
    ) -> Result<RateLimiter, StoreError> {
        if executions == 0 {
            return Err(StoreError::Invalid(
                "the rate limit must allow at least one execution per window".to_owned(),
            ));
        }
        let window_us = i64::try_from(window.as_micros())
            .ok()
            .filter(|us| *us > 0)
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "the rate-limit window must be longer than zero and shorter than a \
                     lifetime, not {window:?}"
                ))
            })?;
        let db = Db::open(db_path.as_ref())?;
        db.ensure_schema(schema_ready, migrate)?;
        Ok(RateLimiter {
            db,
            executions,
            window,
            window_us,
        })
    }

    /// [`RateLimiter::open`] with the `[rate_limit]` settings.
    pub fn from_config(
        db_path: impl AsRef<Path>,
        section: &RateLimitSection,
    ) -> Result<RateLimiter, StoreError> {
        RateLimiter::open(db_path, section.executions, section.window())
    }

    /// The file this limiter uses.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    pub fn executions(&self) -> u32 {
        self.executions
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Decides whether `user` may run one more execution at `now_us`
    /// (epoch microseconds) and, if so, counts it; all in one transaction.
    pub fn check_and_record(&self, user: &str, now_us: Micros) -> Result<Decision, StoreError> {
        if user.is_empty() {
            return Err(StoreError::Invalid(
                "a rate-limited execution needs a user".to_owned(),
            ));
        }
        let cutoff = now_us.saturating_sub(self.window_us);
        let limit = i64::from(self.executions);
        self.db.write(|tx| {
            // Rows at or before the cut-off no longer count: drop them.
            tx.execute(
                "DELETE FROM rate_limit_events WHERE user_id = ?1 AND at <= ?2",
                params![user, cutoff],
            )?;
            let counted: i64 = tx.query_row(
                "SELECT count(*) FROM rate_limit_events WHERE user_id = ?1 AND at > ?2",
                params![user, cutoff],
                |r| r.get(0),
            )?;
            if counted < limit {
                tx.execute(
                    "INSERT INTO rate_limit_events (user_id, at) VALUES (?1, ?2)",
                    params![user, now_us],
                )?;
                let remaining = u32::try_from(limit - counted - 1).unwrap_or(0);
                return Ok(Decision::Allowed { remaining });
            }
            // Below the limit again once the (counted - limit + 1) oldest
            // have left: when the one at index counted - limit does.
            let leaving: i64 = tx.query_row(
                "SELECT at FROM rate_limit_events WHERE user_id = ?1 AND at > ?2
                 ORDER BY at LIMIT 1 OFFSET ?3",
                params![user, cutoff, counted - limit],
                |r| r.get(0),
            )?;
            let wait_us = leaving
                .saturating_add(self.window_us)
                .saturating_sub(now_us);
            Ok(Decision::Limited {
                retry_after_seconds: seconds_rounded_up(wait_us),
            })
        })
    }

    /// How many executions `user` has counted at `now_us`, without
    /// recording anything.
    pub fn used(&self, user: &str, now_us: Micros) -> Result<u32, StoreError> {
        let cutoff = now_us.saturating_sub(self.window_us);
        let n: i64 = self.db.read(|tx| {
            Ok(tx.query_row(
                "SELECT count(*) FROM rate_limit_events WHERE user_id = ?1 AND at > ?2",
                params![user, cutoff],
                |r| r.get(0),
            )?)
        })?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Deletes every user's rows that left the window by `now_us`; returns
    /// how many. Only needed for users who stopped coming: each check
    /// already clears its own user's old rows.
    pub fn prune(&self, now_us: Micros) -> Result<usize, StoreError> {
        let cutoff = now_us.saturating_sub(self.window_us);
        self.db.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM rate_limit_events WHERE at <= ?1",
                params![cutoff],
            )?)
        })
    }

    /// The sentence for a limited user, e.g. "Rate limit reached: at most
    /// 10 executions per 60 s. Try again in 12 s."
    pub fn limited_message(&self, retry_after_seconds: u64) -> String {
        let plural = if self.executions == 1 { "" } else { "s" };
        format!(
            "Rate limit reached: at most {} execution{plural} per {} s. \
             Try again in {retry_after_seconds} s.",
            self.executions,
            self.window.as_secs_f64()
        )
    }
}

/// Whole seconds, rounded up, at least 1.
fn seconds_rounded_up(us: i64) -> u64 {
    let seconds = us.saturating_add(MICROS_PER_SECOND - 1) / MICROS_PER_SECOND;
    u64::try_from(seconds).unwrap_or(0).max(1)
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

    /// 2025-11-29T00:00:00Z, in microseconds.
    const T0: Micros = 1_764_374_400_000_000;
    const S: Micros = MICROS_PER_SECOND;
    const MINUTE: Duration = Duration::from_secs(60);

    fn setup(executions: u32, window: Duration) -> (TempDir, PathBuf, RateLimiter) {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("tradebox.db");
        let limiter = RateLimiter::open(&path, executions, window).unwrap();
        (dir, path, limiter)
    }

    fn allowed(remaining: u32) -> Decision {
        Decision::Allowed { remaining }
    }

    fn limited(retry_after_seconds: u64) -> Decision {
        Decision::Limited {
            retry_after_seconds,
        }
    }

    fn rows(path: &Path) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.query_row("SELECT count(*) FROM rate_limit_events", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn ten_allowed_then_limited_until_the_oldest_leaves() {
        let (_dir, _path, rl) = setup(10, MINUTE);
        // One execution per second from T0 to T0 + 9 s.
        for i in 0..10 {
            let d = rl.check_and_record("U1", T0 + i * S).unwrap();
            assert_eq!(d, allowed(9 - u32::try_from(i).unwrap()));
            assert!(d.is_allowed());
        }
        // The oldest (T0) leaves the window at T0 + 60 s.
        assert_eq!(rl.check_and_record("U1", T0 + 10 * S).unwrap(), limited(50));
        assert_eq!(
            rl.check_and_record("U1", T0 + 10 * S + 1).unwrap(),
            limited(50)
        );
        assert_eq!(
            rl.check_and_record("U1", T0 + 9 * S + S / 2).unwrap(),
            limited(51)
        );
        assert_eq!(rl.check_and_record("U1", T0 + 59 * S).unwrap(), limited(1));
        assert_eq!(
            rl.check_and_record("U1", T0 + 60 * S - 1).unwrap(),
            limited(1),
            "at least 1"
        );
        assert!(!limited(1).is_allowed());
        assert_eq!(rl.used("U1", T0 + 30 * S).unwrap(), 10);
        assert_eq!(
            rl.used("U1", T0 + 65 * S).unwrap(),
            4,
            "T0+6s .. T0+9s still count"
        );
    }

    #[test]
    fn the_window_slides() {
        let (_dir, _path, rl) = setup(10, MINUTE);
        for i in 0..10 {
            assert!(rl.check_and_record("U1", T0 + i * S).unwrap().is_allowed());
        }
        // Exactly one window after the first, the first no longer counts.
        assert_eq!(rl.check_and_record("U1", T0 + 60 * S).unwrap(), allowed(0));
        // The next slot frees at T0 + 61 s.
        assert_eq!(rl.check_and_record("U1", T0 + 60 * S).unwrap(), limited(1));
        assert_eq!(rl.check_and_record("U1", T0 + 61 * S).unwrap(), allowed(0));
        // Not a fixed window: a burst at the end of one minute and one at
        // the start of the next never give more than 10 in 60 s.
        let (_dir, _path, rl) = setup(10, MINUTE);
        for _ in 0..10 {
            assert!(rl.check_and_record("U2", T0 + 59 * S).unwrap().is_allowed());
        }
        assert_eq!(rl.check_and_record("U2", T0 + 61 * S).unwrap(), limited(58));
        // Nor a token bucket: no refill of one slot every window/N.
        assert_eq!(rl.check_and_record("U2", T0 + 65 * S).unwrap(), limited(54));
        // Long after, the whole window is free again.
        assert_eq!(rl.check_and_record("U2", T0 + 119 * S).unwrap(), allowed(9));
    }

    #[test]
    fn refusals_are_not_counted() {
        let (_dir, path, rl) = setup(10, MINUTE);
        for _ in 0..10 {
            assert!(rl.check_and_record("U1", T0).unwrap().is_allowed());
        }
        for i in 0..100 {
            let d = rl.check_and_record("U1", T0 + 30 * S + i).unwrap();
            assert!(!d.is_allowed());
        }
        assert_eq!(rows(&path), 10);
        // Had the refusals counted, U1 would wait until T0 + 90 s.
        for i in 0..10 {
            assert_eq!(
                rl.check_and_record("U1", T0 + 60 * S).unwrap(),
                allowed(9 - i)
            );
        }
    }

    #[test]
    fn users_are_independent() {
        let (_dir, _path, rl) = setup(3, MINUTE);
        for i in 0..3 {
            assert_eq!(rl.check_and_record("U1", T0).unwrap(), allowed(2 - i));
        }
        assert!(!rl.check_and_record("U1", T0).unwrap().is_allowed());
        assert_eq!(rl.check_and_record("U2", T0).unwrap(), allowed(2));
        assert_eq!(rl.check_and_record("alice", T0).unwrap(), allowed(2));
        assert_eq!(
            rl.check_and_record("u1", T0).unwrap(),
            allowed(2),
            "exact ids"
        );
        assert_eq!(rl.used("U1", T0).unwrap(), 3);
        assert_eq!(rl.used("U2", T0).unwrap(), 1);
        assert_eq!(rl.used("nobody", T0).unwrap(), 0);
    }

    #[test]
    fn concurrent_limiters_share_the_counters_exactly() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("tradebox.db");
        let barrier = Arc::new(Barrier::new(10));
        let threads: Vec<_> = (0..10)
            .map(|_| {
                let path = path.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let rl = RateLimiter::open(&path, 10, MINUTE).unwrap();
                    barrier.wait();
                    (0..5)
                        .map(|_| rl.check_and_record("U1", T0).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let decisions: Vec<Decision> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(decisions.len(), 50);
        let mut remaining: Vec<u32> = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Allowed { remaining } => Some(*remaining),
                Decision::Limited { .. } => None,
            })
            .collect();
        remaining.sort_unstable();
        assert_eq!(
            remaining,
            (0..10).collect::<Vec<_>>(),
            "exactly 10 allowed, each once"
        );
        assert!(decisions
            .iter()
            .filter(|d| !d.is_allowed())
            .all(|d| *d == limited(60)));
        assert_eq!(rows(&path), 10);
    }

    #[test]
    fn old_rows_are_deleted() {
        let (_dir, path, rl) = setup(10, MINUTE);
        for i in 0..5 {
            rl.check_and_record("U1", T0 + i * S).unwrap();
            rl.check_and_record("U2", T0 + i * S).unwrap();
        }
        assert_eq!(rows(&path), 10);
        // U1's next check clears U1's rows that left the window, not U2's.
        assert_eq!(rl.check_and_record("U1", T0 + 200 * S).unwrap(), allowed(9));
        assert_eq!(rows(&path), 6);
        // prune clears everyone's.
        assert_eq!(rl.prune(T0 + 200 * S).unwrap(), 5);
        assert_eq!(rows(&path), 1);
        assert_eq!(rl.prune(T0 + 300 * S).unwrap(), 1);
        assert_eq!(rows(&path), 0);
    }

    #[test]
    fn a_lowered_limit_waits_for_enough_rows_to_leave() {
        let (_dir, path, rl) = setup(10, MINUTE);
        for i in 0..10 {
            rl.check_and_record("U1", T0 + i * S).unwrap();
        }
        drop(rl);
        // Now 3 per minute: 8 of the 10 must leave, the 8th (T0 + 7 s) at
        // T0 + 67 s.
        let rl = RateLimiter::open(&path, 3, MINUTE).unwrap();
        assert_eq!(rl.check_and_record("U1", T0 + 10 * S).unwrap(), limited(57));
        assert_eq!(rl.check_and_record("U1", T0 + 67 * S).unwrap(), allowed(0));
    }

    #[test]
    fn short_windows_and_rounding() {
        let (_dir, _path, rl) = setup(1, Duration::from_millis(1500));
        assert_eq!(rl.check_and_record("U1", T0).unwrap(), allowed(0));
        assert_eq!(rl.check_and_record("U1", T0 + 1).unwrap(), limited(2));
        assert_eq!(rl.check_and_record("U1", T0 + S).unwrap(), limited(1));
        assert_eq!(
            rl.check_and_record("U1", T0 + 3 * S / 2).unwrap(),
            allowed(0)
        );
        assert_eq!(
            rl.limited_message(2),
            "Rate limit reached: at most 1 execution per 1.5 s. Try again in 2 s."
        );
        let (_dir, _path, rl) = setup(10, MINUTE);
        assert_eq!(
            rl.limited_message(12),
            "Rate limit reached: at most 10 executions per 60 s. Try again in 12 s."
        );
        assert_eq!(seconds_rounded_up(0), 1);
        assert_eq!(seconds_rounded_up(1), 1);
        assert_eq!(seconds_rounded_up(S), 1);
        assert_eq!(seconds_rounded_up(S + 1), 2);
        assert_eq!(seconds_rounded_up(-5), 1);
    }

    #[test]
    fn invalid_settings_and_input_are_refused() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("tradebox.db");
        assert!(matches!(
            RateLimiter::open(&path, 0, MINUTE),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            RateLimiter::open(&path, 10, Duration::ZERO),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            RateLimiter::open(&path, 10, Duration::from_secs(u64::MAX)),
            Err(StoreError::Invalid(_))
        ));
        let rl = RateLimiter::open(&path, 10, MINUTE).unwrap();
        assert!(matches!(
            rl.check_and_record("", T0),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn shares_the_store_file_and_the_config() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("tradebox.db");
        let store = crate::functions::FunctionStore::open(&path).unwrap();
        store.save("pnl", "", "result = 1", "U1", false).unwrap();
        let section = RateLimitSection {
            executions: 2,
            window_seconds: 30,
        };
        let rl = RateLimiter::from_config(&path, &section).unwrap();
        assert_eq!(rl.executions(), 2);
        assert_eq!(rl.window(), Duration::from_secs(30));
        assert_eq!(rl.path(), path);
        assert_eq!(rl.check_and_record("U1", T0).unwrap(), allowed(1));
        assert!(store.get("pnl").unwrap().is_some());
        // Reopening finds the table and the counters.
        let again = RateLimiter::from_config(&path, &section).unwrap();
        assert_eq!(again.check_and_record("U1", T0).unwrap(), allowed(0));
        assert_eq!(rl.check_and_record("U1", T0 + 29 * S).unwrap(), limited(1));
    }

    #[test]
    fn decisions_serialize_for_the_api() {
        assert_eq!(
            serde_json::to_value(allowed(3)).unwrap(),
            serde_json::json!({"decision": "allowed", "remaining": 3})
        );
        assert_eq!(
            serde_json::to_value(limited(7)).unwrap(),
            serde_json::json!({"decision": "limited", "retry_after_seconds": 7})
        );
    }
}
