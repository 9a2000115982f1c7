//! The rate limiter's events in a PostgreSQL store: the same table as the
//! SQLite backend (`rate_limit_events(user_id, at)`, indexed on
//! `(user_id, at)`), on the connection plumbing of `tradebox_db::pg`.
//! Every check-and-record is one transaction holding this store's advisory
//! lock, so the limit stays exact across every replica sharing the store.

use tradebox_data::timestamp::Micros;
use tradebox_db::{PgConn, PgDb};

use super::{RateLimitBackend, RateLimitRows, RateLimitTx};
use crate::store::StoreError;

pub(crate) const COMPONENT: &str = "rate_limit";
pub(crate) const VERSION: i32 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rate_limit_events (
    user_id TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_rate_limit_events_user_at ON rate_limit_events(user_id, at);
";

/// The advisory lock every write of the events takes.
const LOCK: i64 = 0x0072_6174_656c_696d; // "ratelim"

/// The events in a PostgreSQL database; one connection, shareable between
/// threads.
pub struct PgRateLimits {
    db: PgDb,
}

impl PgRateLimits {
    /// Connects to the store at `url`, creating the table when needed.
    pub fn open(url: &str) -> Result<PgRateLimits, StoreError> {
        let db = PgDb::open(url)?;
        db.ensure_component(COMPONENT, VERSION, SCHEMA)?;
        Ok(PgRateLimits { db })
    }
}

impl RateLimitBackend for PgRateLimits {
    fn write(&self, body: RateLimitTx<'_>) -> Result<(), StoreError> {
        self.db.write(LOCK, |c| body(c))
    }

    fn read(&self, body: RateLimitTx<'_>) -> Result<(), StoreError> {
        self.db.read(|c| body(c))
    }
}

impl RateLimitRows for PgConn<'_> {
    fn forget(&self, user: Option<&str>, cutoff: Micros) -> Result<usize, StoreError> {
        let n = match user {
            Some(user) => self.execute(
                "DELETE FROM rate_limit_events WHERE user_id = $1 AND at <= $2",
                &[&user, &cutoff],
            ),
            None => self.execute("DELETE FROM rate_limit_events WHERE at <= $1", &[&cutoff]),
        }?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn count_after(&self, user: &str, cutoff: Micros) -> Result<u64, StoreError> {
        let n: i64 = self
            .query_one(
                "SELECT count(*) FROM rate_limit_events WHERE user_id = $1 AND at > $2",
                &[&user, &cutoff],
            )
            .map(|r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn nth_after(&self, user: &str, cutoff: Micros, n: u64) -> Result<Option<Micros>, StoreError> {
        let offset = i64::try_from(n).unwrap_or(i64::MAX);
        Ok(self
            .query_opt(
                "SELECT at FROM rate_limit_events WHERE user_id = $1 AND at > $2
                 ORDER BY at LIMIT 1 OFFSET $3",
                &[&user, &cutoff, &offset],
            )
            .map(|r| r.map(|r| r.get(0)))?)
    }

    fn forget_and_count(&self, user: &str, cutoff: Micros) -> Result<u64, StoreError> {
        // One statement: its parts see the same snapshot, and the count
        // only looks after the cut-off, which the deleted events are not.
        let n: i64 = self
            .query_one(
                "WITH forgotten AS (
                     DELETE FROM rate_limit_events WHERE user_id = $1 AND at <= $2
                 )
                 SELECT count(*) FROM rate_limit_events WHERE user_id = $1 AND at > $2",
                &[&user, &cutoff],
            )?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn forget_count_and_add(
        &self,
        user: &str,
        cutoff: Micros,
        at: Micros,
        limit: u64,
    ) -> Result<u64, StoreError> {
        // One statement (one round trip): its parts see the same snapshot,
        // taken after the transaction's lock, so the count is exact; the new
        // event goes in only below the limit, and is not in the count.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let n: i64 = self
            .query_one(
                "WITH forgotten AS (
                     DELETE FROM rate_limit_events WHERE user_id = $1 AND at <= $2
                 ), counted AS (
                     SELECT count(*) AS n FROM rate_limit_events WHERE user_id = $1 AND at > $2
                 ), added AS (
                     INSERT INTO rate_limit_events (user_id, at)
                     SELECT $1, $3 FROM counted WHERE n < $4
                 )
                 SELECT n FROM counted",
                &[&user, &cutoff, &at, &limit],
            )?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn add(&self, user: &str, at: Micros) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO rate_limit_events (user_id, at) VALUES ($1, $2)",
            &[&user, &at],
        )?;
        Ok(())
    }
}
