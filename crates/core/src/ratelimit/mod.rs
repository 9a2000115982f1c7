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
//! The counters are events `(user, at)` (`at` in epoch microseconds) kept
//! by a [`RateLimitBackend`]; [`sqlite::SqliteRateLimits`] keeps them as rows
//! of `rate_limit_events` in the store's SQLite file. One check is one
//! write transaction (`BEGIN IMMEDIATE` in SQLite): delete the user's events
//! that have left the window, count the rest, add one when below the limit.
//! So any number of limiter objects, threads, processes or replicas sharing
//! the store share the counters exactly, and old events never pile up (a
//! user keeps at most `executions` of them; [`RateLimiter::prune`] clears
//! users who stopped coming). Replicas are assumed to have synchronised
//! clocks.
//!
//! # Why not a token bucket
//!
//! Rate-limiting crates such as `governor` implement GCRA, which allows a
//! burst of N and then one more every window/N: after a burst of 10 a user
//! could run again 6 s later, which is not "N per window" and not what
//! users of the original bot know. They also keep their state in process
//! memory, which neither survives a restart nor is shared by several
//! processes or replicas. A window over events in the shared store gives
//! the exact rule and the sharing.

pub mod pg;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tradebox_data::timestamp::Micros;

use crate::config::RateLimitSection;
use crate::store::{body_not_run, StoreError};

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

/// A transaction body as a [`RateLimitBackend`] receives it: called with
/// the events of the open transaction; an `Err` rolls it back.
pub type RateLimitTx<'a> = &'a mut (dyn FnMut(&dyn RateLimitRows) -> Result<(), StoreError> + Send);

/// Where the events are kept; see [`sqlite::SqliteRateLimits`].
pub trait RateLimitBackend: Send + Sync {
    /// Runs `body` in one write transaction that no other write to the
    /// same events interleaves with; an `Err` from `body` rolls it back.
    fn write(&self, body: RateLimitTx<'_>) -> Result<(), StoreError>;

    /// Runs `body` in one read transaction.
    fn read(&self, body: RateLimitTx<'_>) -> Result<(), StoreError>;
}

/// The events, inside a transaction of a [`RateLimitBackend`].
pub trait RateLimitRows {
    /// Deletes the events at or before `cutoff`, of `user` or (with `None`)
    /// of everyone; returns how many.
    fn forget(&self, user: Option<&str>, cutoff: Micros) -> Result<usize, StoreError>;

    /// How many events of `user` are after `cutoff`.
    fn count_after(&self, user: &str, cutoff: Micros) -> Result<u64, StoreError>;

    /// The time of the `n`-th oldest (from 0) event of `user` after `cutoff`.
    fn nth_after(&self, user: &str, cutoff: Micros, n: u64) -> Result<Option<Micros>, StoreError>;

    /// Adds an event of `user` at `at`.
    fn add(&self, user: &str, at: Micros) -> Result<(), StoreError>;

    /// [`RateLimitRows::forget`] of `user`'s events at or before `cutoff`,
    /// then [`RateLimitRows::count_after`]: a backend may do both at once.
    fn forget_and_count(&self, user: &str, cutoff: Micros) -> Result<u64, StoreError> {
        self.forget(Some(user), cutoff)?;
        self.count_after(user, cutoff)
    }

    /// [`RateLimitRows::forget_and_count`], then [`RateLimitRows::add`] of
    /// an event at `at` when the count is below `limit`: the count before
    /// the event. A backend may do it all at once.
    fn forget_count_and_add(
        &self,
        user: &str,
        cutoff: Micros,
        at: Micros,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let counted = self.forget_and_count(user, cutoff)?;
        if counted < limit {
            self.add(user, at)?;
        }
        Ok(counted)
    }
}

/// The shared sliding-window limiter; see the module documentation.
pub struct RateLimiter {
    backend: Arc<dyn RateLimitBackend>,
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
        let window_us = check_settings(executions, window)?;
        let backend = sqlite::SqliteRateLimits::open(db_path.as_ref())?;
        Ok(RateLimiter {
            backend: Arc::new(backend),
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

    /// The limiter of `section` where `url` says.
    pub fn connect(
        url: &crate::store::StoreUrl,
        section: &RateLimitSection,
    ) -> Result<RateLimiter, StoreError> {
        match url {
            crate::store::StoreUrl::Sqlite(path) => RateLimiter::from_config(path, section),
            crate::store::StoreUrl::Postgres(url) => {
                RateLimiter::open_postgres(url, section.executions, section.window())
            }
        }
    }

    /// [`RateLimiter::open`] on the PostgreSQL database at `url`.
    pub fn open_postgres(
        url: &str,
        executions: u32,
        window: Duration,
    ) -> Result<RateLimiter, StoreError> {
        let backend = pg::PgRateLimits::open(url)?;
        RateLimiter::new(Arc::new(backend), executions, window)
    }

    /// A limiter whose events `backend` keeps: at most `executions` per
    /// user within any `window`.
    pub fn new(
        backend: Arc<dyn RateLimitBackend>,
        executions: u32,
        window: Duration,
    ) -> Result<RateLimiter, StoreError> {
        let window_us = check_settings(executions, window)?;
        Ok(RateLimiter {
            backend,
            executions,
            window,
            window_us,
        })
    }

    /// Executions allowed per user within [`RateLimiter::window`].
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
        let limit = u64::from(self.executions);
        self.write(|rows| {
            // Events at or before the cut-off no longer count: drop them.
            let counted = rows.forget_count_and_add(user, cutoff, now_us, limit)?;
            if counted < limit {
                let remaining = u32::try_from(limit - counted - 1).unwrap_or(0);
                return Ok(Decision::Allowed { remaining });
            }
            // Below the limit again once the (counted - limit + 1) oldest
            // have left: when the one at index counted - limit does.
            let leaving = rows
                .nth_after(user, cutoff, counted - limit)?
                .ok_or_else(|| StoreError::Backend("a counted rate-limit event vanished".into()))?;
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
        let n = self.read(|rows| rows.count_after(user, cutoff))?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Deletes every user's events that left the window by `now_us`;
    /// returns how many. Only needed for users who stopped coming: each
    /// check already clears its own user's old events.
    pub fn prune(&self, now_us: Micros) -> Result<usize, StoreError> {
        let cutoff = now_us.saturating_sub(self.window_us);
        self.write(|rows| rows.forget(None, cutoff))
    }

    /// Runs `f` in one write transaction and returns what it produced.
    fn write<T: Send>(
        &self,
        mut f: impl FnMut(&dyn RateLimitRows) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let mut out = None;
        self.backend.write(&mut |rows| {
            out = Some(f(rows)?);
            Ok(())
        })?;
        out.ok_or_else(body_not_run)
    }

    /// Runs `f` in one read transaction and returns what it produced.
    fn read<T: Send>(
        &self,
        mut f: impl FnMut(&dyn RateLimitRows) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let mut out = None;
        self.backend.read(&mut |rows| {
            out = Some(f(rows)?);
            Ok(())
        })?;
        out.ok_or_else(body_not_run)
    }

    /// The sentence for a limited user, with this limiter's numbers, as the
    /// original bot wrote it: "Rate limit exceeded. Max 10 executions per
    /// 60s. Try again in 12s."
    pub fn limited_message(&self, retry_after_seconds: u64) -> String {
        format!(
            "Rate limit exceeded. Max {} executions per {}s. Try again in {retry_after_seconds}s.",
            self.executions,
            self.window.as_secs_f64()
        )
    }
}

/// The window in microseconds, or why the settings cannot work.
fn check_settings(executions: u32, window: Duration) -> Result<i64, StoreError> {
    if executions == 0 {
        return Err(StoreError::Invalid(
            "the rate limit must allow at least one execution per window".to_owned(),
        ));
    }
    i64::try_from(window.as_micros())
        .ok()
        .filter(|us| *us > 0)
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "the rate-limit window must be longer than zero and shorter than a \
                 lifetime, not {window:?}"
            ))
        })
}

/// Whole seconds, rounded up, at least 1.
fn seconds_rounded_up(us: i64) -> u64 {
    let seconds = us.saturating_add(MICROS_PER_SECOND - 1) / MICROS_PER_SECOND;
    u64::try_from(seconds).unwrap_or(0).max(1)
}
