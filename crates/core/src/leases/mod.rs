//! Running places shared by every replica on one store: a user runs at most
//! `pool.per_user_running` jobs at once across all of them. Each running
//! job holds a lease (a row naming its user and replica, with an expiry)
//! that its replica renews while the job runs and removes when it ends (in
//! the same write as the job's audit row,
//! [`crate::audit::AuditLog::record_releasing`]); a
//! replica that dies (killed, its machine gone) stops renewing, and its
//! leases expire after [`TTL`], which frees its users' places.
//!
//! Inside one replica the pipeline's own per-user queue orders the waiting
//! jobs; a job whose place is taken on another replica waits, asking again
//! every [`POLL`].

pub mod pg;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tradebox_data::timestamp::{self, Micros};

use crate::store::{StoreError, StoreUrl};

/// How long a lease lasts without being renewed.
pub const TTL: Duration = Duration::from_secs(15);
/// How often a running job's lease is renewed.
pub const RENEW: Duration = Duration::from_secs(5);
/// How often a job whose user's places are all taken elsewhere asks again.
pub const POLL: Duration = Duration::from_millis(100);

/// Where leases are kept.
pub trait LeaseBackend: Send + Sync {
    /// Takes lease `id` for `user` (by `replica`) until `expires`, unless
    /// `limit` unexpired leases of the user exist at `now`; `true` when
    /// taken. Expired leases are removed on the way.
    fn take(
        &self,
        id: &str,
        user: &str,
        replica: &str,
        limit: u32,
        now: Micros,
        expires: Micros,
    ) -> Result<bool, StoreError>;

    /// Moves lease `id`'s expiry; `false` when it is gone (it expired and
    /// was removed).
    fn renew(&self, id: &str, expires: Micros) -> Result<bool, StoreError>;

    /// Removes lease `id`.
    fn release(&self, id: &str) -> Result<(), StoreError>;

    /// The user's unexpired leases at `now`.
    fn held(&self, user: &str, now: Micros) -> Result<u64, StoreError>;
}

/// The shared running places; see the module documentation.
#[derive(Clone)]
pub struct Leases {
    backend: Arc<dyn LeaseBackend>,
    replica: Arc<str>,
    next: Arc<AtomicU64>,
}

impl Leases {
    /// Leases in the SQLite file at `path`, taken in the name of `replica`.
    pub fn open(path: impl AsRef<Path>, replica: &str) -> Result<Leases, StoreError> {
        let backend = sqlite::SqliteLeases::open(path.as_ref())?;
        Ok(Leases::new(Arc::new(backend), replica))
    }

    /// Leases in the PostgreSQL database at `url`.
    pub fn open_postgres(url: &str, replica: &str) -> Result<Leases, StoreError> {
        Ok(Leases::new(Arc::new(pg::PgLeases::open(url)?), replica))
    }

    /// Leases where `url` says.
    pub fn connect(url: &StoreUrl, replica: &str) -> Result<Leases, StoreError> {
        match url {
            StoreUrl::Sqlite(path) => Leases::open(path, replica),
            StoreUrl::Postgres(url) => Leases::open_postgres(url, replica),
        }
    }

    pub fn new(backend: Arc<dyn LeaseBackend>, replica: &str) -> Leases {
        Leases {
            backend,
            replica: Arc::from(replica),
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    fn micros(d: Duration) -> i64 {
        i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
    }

    /// A lease for one of `user`'s `limit` places, or `None` when every one
    /// is held (here or on another replica).
    pub fn try_take(&self, user: &str, limit: u32) -> Result<Option<String>, StoreError> {
        self.try_take_at(user, limit, timestamp::now())
    }

    /// [`Leases::try_take`] at `now` (epoch microseconds).
    pub fn try_take_at(
        &self,
        user: &str,
        limit: u32,
        now: Micros,
    ) -> Result<Option<String>, StoreError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}/{}/{n}", self.replica, now);
        let expires = now.saturating_add(Self::micros(TTL));
        Ok(self
            .backend
            .take(&id, user, &self.replica, limit.max(1), now, expires)?
            .then_some(id))
    }

    /// Keeps lease `id` for another [`TTL`] from `now`.
    pub fn renew_at(&self, id: &str, now: Micros) -> Result<bool, StoreError> {
        self.backend
            .renew(id, now.saturating_add(Self::micros(TTL)))
    }

    /// Keeps lease `id` for another [`TTL`].
    pub fn renew(&self, id: &str) -> Result<bool, StoreError> {
        self.renew_at(id, timestamp::now())
    }

    /// Gives lease `id` back.
    pub fn release(&self, id: &str) -> Result<(), StoreError> {
        self.backend.release(id)
    }

    /// The user's leases held now, on every replica.
    pub fn held(&self, user: &str) -> Result<u64, StoreError> {
        self.backend.held(user, timestamp::now())
    }

    /// [`Leases::held`] at `now`.
    pub fn held_at(&self, user: &str, now: Micros) -> Result<u64, StoreError> {
        self.backend.held(user, now)
    }
}
