//! Leases in a PostgreSQL store: the same table as the SQLite backend; a
//! take holds this store's advisory lock, so two replicas never both take a
//! user's last place.

use tradebox_data::timestamp::Micros;
use tradebox_db::PgDb;

use super::LeaseBackend;
use crate::store::StoreError;

pub(crate) const COMPONENT: &str = "leases";
pub(crate) const VERSION: i32 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS running_leases (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    replica TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_running_leases_user ON running_leases(user_id, expires_at);
";

/// The advisory lock every take holds.
const LOCK: i64 = 0x006c_6561_7365; // "lease"

/// Leases in a PostgreSQL database; one connection, shareable between
/// threads.
pub struct PgLeases {
    db: PgDb,
}

impl PgLeases {
    /// Connects to the store at `url`, creating the table when needed.
    pub fn open(url: &str) -> Result<PgLeases, StoreError> {
        let db = PgDb::open(url)?;
        db.ensure_component(COMPONENT, VERSION, SCHEMA)?;
        Ok(PgLeases { db })
    }
}

impl LeaseBackend for PgLeases {
    fn take(
        &self,
        id: &str,
        user: &str,
        replica: &str,
        limit: u32,
        now: Micros,
        expires: Micros,
    ) -> Result<bool, StoreError> {
        let limit = i64::from(limit);
        // One statement under the lock: the expired leases go, and the new
        // one goes in only below the limit. Its parts see the same snapshot,
        // so the count leaves out the expired leases itself.
        self.db.write(LOCK, |c| {
            let taken = c.execute(
                "WITH expired AS (DELETE FROM running_leases WHERE expires_at < $5)
                 INSERT INTO running_leases (id, user_id, replica, expires_at)
                 SELECT $1, $2, $3, $4
                 WHERE (SELECT count(*) FROM running_leases
                        WHERE user_id = $2 AND expires_at >= $5) < $6",
                &[&id, &user, &replica, &expires, &now, &limit],
            )?;
            Ok(taken == 1)
        })
    }

    fn renew(&self, id: &str, expires: Micros) -> Result<bool, StoreError> {
        self.db.write_one(|c| {
            let n = c.execute(
                "UPDATE running_leases SET expires_at = $1 WHERE id = $2",
                &[&expires, &id],
            )?;
            Ok(n == 1)
        })
    }

    fn release(&self, id: &str) -> Result<(), StoreError> {
        self.db.write_one(|c| {
            c.execute("DELETE FROM running_leases WHERE id = $1", &[&id])?;
            Ok(())
        })
    }

    fn held(&self, user: &str, now: Micros) -> Result<u64, StoreError> {
        self.db.read(|c| {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM running_leases WHERE user_id = $1 AND expires_at >= $2",
                    &[&user, &now],
                )?
                .get(0);
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}
