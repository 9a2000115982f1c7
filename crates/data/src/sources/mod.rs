//! Sources the desk keeps writing, followed into the store
//! (`[[data.sources]]` in `tradebox.toml`):
//!
//! - `cex-reporter`: an original `trade_cache.db` that the collector keeps
//!   appending to (and, optionally, its `snapshots` folder);
//! - `csv-inbox`: a folder where every complete CSV dropped in is imported
//!   once, then moved to `done/`, or to `failed/` beside a `.error.txt`;
//! - `snapshots`: a folder of daily `snapshot_YYYY-MM-DD.json` files.
//!
//! A sync reads only what is new and writes it in store transactions that
//! also record the source's progress (its high-water mark, the files it
//! took), so whatever stops a sync (an error, a kill -9) leaves the store
//! and the source's state agreeing: the next sync goes on from there and
//! imports nothing twice. [`Follower`] polls the sources (and, while it
//! follows, wakes on filesystem notifications from their folders), backs
//! off after failures, and publishes a new snapshot version after any change.

mod cex;
mod files;
mod follow;
mod state;
mod watch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use files::Sightings;
pub use follow::{Follower, Outcome, Pass};
pub(crate) use state::SCHEMA as STATE_SCHEMA;
pub use state::{load_states, statuses, SourceState, SourceStatus};

use crate::error::Result;
use crate::store::Store;

/// What a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    CexReporter,
    CsvInbox,
    Snapshots,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::CexReporter => "cex-reporter",
            Kind::CsvInbox => "csv-inbox",
            Kind::Snapshots => "snapshots",
        }
    }
}

/// One `[[data.sources]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A short name: letters, digits, `-` and `_`.
    pub id: String,
    pub kind: Kind,
    /// The database file (cex-reporter) or folder (csv-inbox, snapshots);
    /// a relative path is relative to `$TRADEBOX_HOME`.
    pub path: PathBuf,
    /// How often the source is looked at.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u64,
    /// cex-reporter: its folder of daily balance snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<PathBuf>,
    /// cex-reporter: how often every row is read again (rows changed or
    /// re-inserted below the high-water mark are caught then).
    #[serde(default = "default_reconcile_minutes")]
    pub reconcile_minutes: u64,
    /// csv-inbox, snapshots: a file is taken once it has not changed for
    /// this long (or is renamed in, which is instant).
    #[serde(default = "default_settle_seconds")]
    pub settle_seconds: u64,
    /// csv-inbox: the exchange of rows in files without an exchange column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// csv-inbox: the account of rows in files without an account column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

fn default_poll_seconds() -> u64 {
    2
}
fn default_reconcile_minutes() -> u64 {
    60
}
fn default_settle_seconds() -> u64 {
    2
}

impl SourceConfig {
    /// A source with every option at its default.
    pub fn new(id: &str, kind: Kind, path: impl Into<PathBuf>) -> SourceConfig {
        SourceConfig {
            id: id.into(),
            kind,
            path: path.into(),
            poll_seconds: default_poll_seconds(),
            snapshots: None,
            reconcile_minutes: default_reconcile_minutes(),
            settle_seconds: default_settle_seconds(),
            exchange: None,
            account: None,
        }
    }

    /// What is wrong with this table, in words for the configuration error.
    pub fn check(&self) -> Result<(), String> {
        let id = &self.id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "source id {id:?} must be 1 to 64 letters, digits, '-' or '_'"
            ));
        }
        if self.path.as_os_str().is_empty() {
            return Err(format!("source {id:?}: path is empty"));
        }
        if !(1..=3600).contains(&self.poll_seconds) {
            return Err(format!(
                "source {id:?}: poll_seconds must be from 1 to 3600, not {}",
                self.poll_seconds
            ));
        }
        if !(1..=10_080).contains(&self.reconcile_minutes) {
            return Err(format!(
                "source {id:?}: reconcile_minutes must be from 1 to 10080, not {}",
                self.reconcile_minutes
            ));
        }
        if self.settle_seconds > 3600 {
            return Err(format!(
                "source {id:?}: settle_seconds must be at most 3600, not {}",
                self.settle_seconds
            ));
        }
        let only = |set: bool, key: &str, kind: Kind| {
            if set && self.kind != kind {
                Err(format!(
                    "source {id:?}: `{key}` applies to kind \"{}\" only",
                    kind.as_str()
                ))
            } else {
                Ok(())
            }
        };
        only(self.snapshots.is_some(), "snapshots", Kind::CexReporter)?;
        only(self.exchange.is_some(), "exchange", Kind::CsvInbox)?;
        only(self.account.is_some(), "account", Kind::CsvInbox)
    }

    /// The same source with its paths made absolute against `home`.
    pub fn resolved(&self, home: &Path) -> SourceConfig {
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                home.join(p)
            }
        };
        SourceConfig {
            path: abs(&self.path),
            snapshots: self.snapshots.as_deref().map(abs),
            ..self.clone()
        }
    }

    pub fn poll(&self) -> Duration {
        Duration::from_secs(self.poll_seconds)
    }
}

/// What one sync of one source did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// Trades and balance snapshots read from the source.
    pub read: u64,
    /// How many of them were new to the store.
    pub added: u64,
    /// Whether every row was read again (first sync, a replaced or
    /// truncated file, or the periodic reconciliation).
    pub full: bool,
    /// Files imported (csv-inbox, snapshots).
    pub files: Vec<String>,
    /// Rows or files refused, each with its reason (a bad row is skipped,
    /// a bad CSV file moved to `failed/`).
    pub rejected: Vec<String>,
    /// Something to retry at the next poll although the rest went in (a
    /// snapshot file that does not read yet).
    pub problem: Option<String>,
}

/// Brings one source into the store once; `config` has absolute paths.
pub fn sync(store: &mut Store, config: &SourceConfig) -> Result<SyncReport> {
    sync_seen(store, config, &mut Sightings::default())
}

/// [`sync`] for a follower, which remembers what it saw of the folders'
/// files from one pass to the next (see [`Sightings`]).
pub fn sync_seen(
    store: &mut Store,
    config: &SourceConfig,
    seen: &mut Sightings,
) -> Result<SyncReport> {
    match config.kind {
        Kind::CexReporter => {
            let mut report = cex::sync(store, config)?;
            if let Some(dir) = &config.snapshots {
                let more = files::sync_snapshots(store, config, dir, seen)?;
                report.read += more.read;
                report.added += more.added;
                report.files.extend(more.files);
                report.problem = more.problem;
            }
            Ok(report)
        }
        Kind::CsvInbox => files::sync_inbox(store, config, seen),
        Kind::Snapshots => files::sync_snapshots(store, config, &config.path, seen),
    }
}

#[cfg(test)]
mod tests;
