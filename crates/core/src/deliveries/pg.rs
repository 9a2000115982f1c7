//! Delivery claims in a PostgreSQL store: the same table as the SQLite
//! backend, each claim one statement (no transaction around it).

use tradebox_data::timestamp::Micros;
use tradebox_db::PgDb;

use super::DeliveryBackend;
use crate::store::StoreError;

pub(crate) const COMPONENT: &str = "deliveries";
pub(crate) const VERSION: i32 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS slack_deliveries (
    key TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_slack_deliveries_at ON slack_deliveries(at);
";

/// Claims in a PostgreSQL database; one connection, shareable between
/// threads.
pub struct PgDeliveries {
    db: PgDb,
}

impl PgDeliveries {
    /// Connects to the store at `url`, creating the table when needed.
    pub fn open(url: &str) -> Result<PgDeliveries, StoreError> {
        let db = PgDb::open(url)?;
        db.ensure_component(COMPONENT, VERSION, SCHEMA)?;
        Ok(PgDeliveries { db })
    }
}

impl DeliveryBackend for PgDeliveries {
    fn claim(&self, key: &str, at: Micros, forget_before: Micros) -> Result<bool, StoreError> {
        self.db.write_one(|c| {
            // The parts of one statement do not see each other's changes:
            // an old claim of this very key is taken over by the insert
            // rather than deleted beside it.
            let inserted = c.execute(
                "WITH forgotten AS (DELETE FROM slack_deliveries WHERE at < $3 AND key <> $1)
                 INSERT INTO slack_deliveries (key, at) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET at = EXCLUDED.at
                 WHERE slack_deliveries.at < $3",
                &[&key, &at, &forget_before],
            )?;
            Ok(inserted == 1)
        })
    }
}
