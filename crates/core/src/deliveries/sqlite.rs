//! Delivery claims in the store's SQLite file: `slack_deliveries(key, at)`.

use std::path::Path;

use rusqlite::params;
use tradebox_data::timestamp::Micros;
use tradebox_db::schema::objects_exist;
use tradebox_db::Db;

use super::DeliveryBackend;
use crate::store::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS slack_deliveries (
    key TEXT PRIMARY KEY,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_slack_deliveries_at ON slack_deliveries(at);
";

const SCHEMA_OBJECTS: [&str; 2] = ["slack_deliveries", "idx_slack_deliveries_at"];

/// Claims in a SQLite file; one connection, shareable between threads.
pub struct SqliteDeliveries {
    db: Db,
}

impl SqliteDeliveries {
    /// Opens the store file at `path`, creating the table when needed.
    pub fn open(path: &Path) -> Result<SqliteDeliveries, StoreError> {
        let db = Db::open(path)?;
        db.ensure_schema(
            |conn| objects_exist(conn, &SCHEMA_OBJECTS),
            |conn| conn.execute_batch(SCHEMA),
        )?;
        Ok(SqliteDeliveries { db })
    }
}

impl DeliveryBackend for SqliteDeliveries {
    fn claim(&self, key: &str, at: Micros, forget_before: Micros) -> Result<bool, StoreError> {
        self.db.write(|c| {
            let inserted = c.run(|conn| {
                conn.prepare_cached("DELETE FROM slack_deliveries WHERE at < ?1")?
                    .execute(params![forget_before])?;
                conn.prepare_cached(
                    "INSERT INTO slack_deliveries (key, at) VALUES (?1, ?2)
                     ON CONFLICT (key) DO NOTHING",
                )?
                .execute(params![key, at])
            })?;
            Ok(inserted == 1)
        })
    }
}
