//! What tradebox knows of each source, kept in the store beside the trades
//! (tables `source_state` and `source_files`) and written in the same
//! transactions as what a sync imports.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::error::Result;
use crate::store::{store_error, Store, Writer};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS source_state (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    identity TEXT,
    high_water INTEGER NOT NULL DEFAULT 0,
    reconciled_at TEXT,
    attempted_at TEXT,
    synced_at TEXT,
    changed_at TEXT,
    added_total INTEGER NOT NULL DEFAULT 0,
    newest_trade TEXT,
    error TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    rejected TEXT,
    rejected_total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS source_files (
    source_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    name TEXT NOT NULL,
    added INTEGER NOT NULL,
    imported_at TEXT NOT NULL,
    PRIMARY KEY (source_id, fingerprint)
);
";

/// The state of one source, as `data sources` and `data info` show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SourceState {
    pub id: String,
    pub kind: String,
    pub path: String,
    /// Which file the high-water mark belongs to (device:inode).
    pub identity: Option<String>,
    /// The largest source rowid imported (cex-reporter).
    pub high_water: i64,
    pub reconciled_at: Option<String>,
    /// The last sync attempt, and the last one that succeeded (UTC).
    pub attempted_at: Option<String>,
    pub synced_at: Option<String>,
    /// The last sync that added anything.
    pub changed_at: Option<String>,
    pub added_total: u64,
    /// The newest trade time imported from this source.
    pub newest_trade: Option<String>,
    /// Why the last sync failed; `None` once one succeeds.
    pub error: Option<String>,
    /// Failures in a row.
    pub failures: u64,
    /// The last row or file refused, with its reason.
    pub rejected: Option<String>,
    pub rejected_total: u64,
}

const COLUMNS: &str = "id, kind, path, identity, high_water, reconciled_at, attempted_at, \
    synced_at, changed_at, added_total, newest_trade, error, failures, rejected, rejected_total";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SourceState> {
    Ok(SourceState {
        id: r.get(0)?,
        kind: r.get(1)?,
        path: r.get(2)?,
        identity: r.get(3)?,
        high_water: r.get(4)?,
        reconciled_at: r.get(5)?,
        attempted_at: r.get(6)?,
        synced_at: r.get(7)?,
        changed_at: r.get(8)?,
        added_total: r.get::<_, i64>(9)?.max(0) as u64,
        newest_trade: r.get(10)?,
        error: r.get(11)?,
        failures: r.get::<_, i64>(12)?.max(0) as u64,
        rejected: r.get(13)?,
        rejected_total: r.get::<_, i64>(14)?.max(0) as u64,
    })
}

/// Every source's state, by id.
pub fn load_states(store: &Store) -> Result<Vec<SourceState>> {
    let err = |e| store_error(store.path(), e);
    let exists: bool = store
        .conn()
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'source_state'",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    if !exists {
        return Ok(Vec::new()); // a store no source has written to yet
    }
    let mut stmt = store
        .conn()
        .prepare(&format!("SELECT {COLUMNS} FROM source_state ORDER BY id"))
        .map_err(err)?;
    let rows = stmt
        .query_map([], from_row)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(err)?;
    Ok(rows)
}

/// One source's state; a source never synced has the default state.
pub(crate) fn load(store: &Store, id: &str) -> Result<SourceState> {
    store
        .conn()
        .query_row(
            &format!("SELECT {COLUMNS} FROM source_state WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()
        .map(|s| {
            s.unwrap_or_else(|| SourceState {
                id: id.into(),
                ..SourceState::default()
            })
        })
        .map_err(|e| store_error(store.path(), e))
}

impl Writer<'_> {
    /// Writes a source's whole state (in the transaction of what it imported).
    pub(crate) fn save_source_state(&mut self, s: &SourceState) -> Result<()> {
        self.local()?
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO source_state ({COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
                ),
                params![
                    s.id,
                    s.kind,
                    s.path,
                    s.identity,
                    s.high_water,
                    s.reconciled_at,
                    s.attempted_at,
                    s.synced_at,
                    s.changed_at,
                    s.added_total as i64,
                    s.newest_trade,
                    s.error,
                    s.failures as i64,
                    s.rejected,
                    s.rejected_total as i64,
                ],
            )
            .map(drop)
            .map_err(|e| store_error(self.path(), e))
    }

    /// Adds to a source's counters, in the transaction of what it imported
    /// or refused (its state row is created if it has none yet).
    pub(crate) fn count_for_source(
        &mut self,
        source: &super::SourceConfig,
        added: u64,
        refused: Option<&str>,
    ) -> Result<()> {
        self.local()?
            .execute(
                "INSERT INTO source_state (id, kind, path, added_total, rejected, rejected_total)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET
                    added_total = added_total + excluded.added_total,
                    rejected = coalesce(excluded.rejected, rejected),
                    rejected_total = rejected_total + excluded.rejected_total",
                params![
                    source.id,
                    source.kind.as_str(),
                    source.path.display().to_string(),
                    added as i64,
                    refused,
                    i64::from(refused.is_some()),
                ],
            )
            .map(drop)
            .map_err(|e| store_error(self.path(), e))
    }

    /// Records that a source took a file.
    pub(crate) fn record_source_file(
        &mut self,
        source: &str,
        fingerprint: &str,
        name: &str,
        added: u64,
    ) -> Result<()> {
        let at = self.now().to_string();
        self.local()?
            .execute(
                "INSERT OR REPLACE INTO source_files (source_id, fingerprint, name, added, imported_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![source, fingerprint, name, added as i64, at],
            )
            .map(drop)
            .map_err(|e| store_error(self.path(), e))
    }
}

/// Whether a source already took a file with this fingerprint (outside a write).
pub(crate) fn file_seen(store: &Store, source: &str, fingerprint: &str) -> Result<bool> {
    store
        .conn()
        .query_row(
            "SELECT 1 FROM source_files WHERE source_id = ?1 AND fingerprint = ?2",
            [source, fingerprint],
            |_| Ok(()),
        )
        .optional()
        .map(|r| r.is_some())
        .map_err(|e| store_error(store.path(), e))
}

/// A configured source with its state, as `data sources` and `doctor` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStatus {
    pub id: String,
    pub kind: super::Kind,
    /// Resolved against the home.
    pub path: std::path::PathBuf,
    pub poll_seconds: u64,
    pub synced_at: Option<String>,
    /// Seconds since the last successful sync.
    pub lag_seconds: Option<f64>,
    pub added_total: u64,
    pub newest_trade: Option<String>,
    pub error: Option<String>,
    pub failures: u64,
    pub rejected: Option<String>,
    pub rejected_total: u64,
}

/// The status of each of `configs` in the store of `home` (never synced:
/// empty state; no store yet: the same, and nothing is created).
pub fn statuses(home: &crate::Home, configs: &[super::SourceConfig]) -> Result<Vec<SourceStatus>> {
    let states = match Store::open_read_only(&home.store_path())? {
        Some(store) => load_states(&store)?,
        None => Vec::new(),
    };
    let now = crate::timestamp::now();
    Ok(configs
        .iter()
        .map(|c| {
            let st = states
                .iter()
                .find(|s| s.id == c.id)
                .cloned()
                .unwrap_or_default();
            SourceStatus {
                id: c.id.clone(),
                kind: c.kind,
                path: c.resolved(home.root()).path,
                poll_seconds: c.poll_seconds,
                lag_seconds: st.lag_seconds(now),
                synced_at: st.synced_at,
                added_total: st.added_total,
                newest_trade: st.newest_trade,
                error: st.error,
                failures: st.failures,
                rejected: st.rejected,
                rejected_total: st.rejected_total,
            }
        })
        .collect())
}
