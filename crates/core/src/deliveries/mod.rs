//! Deliveries already taken, shared by every process on one store: a
//! Slack delivery (keyed by its `trigger_id`) redelivered to another
//! connection, or retried against another replica behind a load balancer,
//! is claimed once, so the command runs once whichever replica gets it.
//! Each process also keeps its own in-memory record in front of this one
//! (`tradebox_slack`'s `dedupe`), so repeats to the same process cost no
//! store round trip.
//!
//! A claim is one statement: insert the key unless it is there (`ON
//! CONFLICT DO NOTHING`), dropping the claims older than [`KEEP`] on the
//! way; two processes claiming one key at once get one `true` between
//! them.

pub mod pg;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tradebox_data::timestamp::{self, Micros};

use crate::store::{StoreError, StoreUrl};

/// How long a claim is kept (Slack redelivers within minutes).
pub const KEEP: Duration = Duration::from_secs(3600);

/// Where claims are kept.
pub trait DeliveryBackend: Send + Sync {
    /// Claims `key` at `at`, forgetting claims made before `forget_before`;
    /// `true` when no claim of `key` was kept.
    fn claim(&self, key: &str, at: Micros, forget_before: Micros) -> Result<bool, StoreError>;
}

/// The shared record of deliveries taken; see the module documentation.
#[derive(Clone)]
pub struct Deliveries {
    backend: Arc<dyn DeliveryBackend>,
}

impl Deliveries {
    /// The record in the SQLite file at `path`, creating its table.
    pub fn open(path: impl AsRef<Path>) -> Result<Deliveries, StoreError> {
        Ok(Deliveries::new(Arc::new(sqlite::SqliteDeliveries::open(
            path.as_ref(),
        )?)))
    }

    /// The record in the PostgreSQL database at `url`, creating its table.
    pub fn open_postgres(url: &str) -> Result<Deliveries, StoreError> {
        Ok(Deliveries::new(Arc::new(pg::PgDeliveries::open(url)?)))
    }

    /// The record where `url` says.
    pub fn connect(url: &StoreUrl) -> Result<Deliveries, StoreError> {
        match url {
            StoreUrl::Sqlite(path) => Deliveries::open(path),
            StoreUrl::Postgres(url) => Deliveries::open_postgres(url),
        }
    }

    pub fn new(backend: Arc<dyn DeliveryBackend>) -> Deliveries {
        Deliveries { backend }
    }

    /// `true` the first time `key` is claimed (within [`KEEP`]), by any
    /// process sharing the store.
    pub fn claim(&self, key: &str) -> Result<bool, StoreError> {
        self.claim_at(key, timestamp::now())
    }

    /// [`Deliveries::claim`] at a given time (epoch microseconds).
    pub fn claim_at(&self, key: &str, at: Micros) -> Result<bool, StoreError> {
        if key.is_empty() {
            return Err(StoreError::Invalid("a delivery key cannot be empty".into()));
        }
        let keep = i64::try_from(KEEP.as_micros()).unwrap_or(i64::MAX);
        self.backend.claim(key, at, at.saturating_sub(keep))
    }
}
