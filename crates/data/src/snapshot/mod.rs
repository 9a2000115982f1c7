//! Publication of the store as versioned, read-only columnar snapshots, made
//! of immutable segments so that new trades cost a small file, not a copy
//! of everything.
//!
//! Layout under the snapshot root (`$TRADEBOX_HOME/snapshot`):
//!
//! ```text
//! v000007/                  immutable version folders
//!   trades-000001.arrow     the base segment (hard link, shared with v000001..)
//!   trades-000006.arrow     delta segments, newer store ids (hard links)
//!   trades-000007.arrow     the delta this version added
//!   snapshots.json          balance snapshots, oldest first
//!   manifest.json           format, version, counts, segments
//! current -> v000007        relative symlink, switched by rename(2)
//! .lock                     held by whoever writes a version
//! ```
//!
//! Each segment is an Arrow IPC file sorted by timestamp; together, in the
//! order the manifest lists them, they hold every trade once. A segment
//! covers a range of store ids (its predecessor's `max_id`, its own]: the
//! store's ids only grow and writers commit one at a time, so the trades
//! not yet published are exactly those above the manifest's `max_id`.
//! Readers (`tradebox.data`) merge the segments by timestamp; a delta may
//! hold late trades, older than the base's newest.
//!
//! Publishing ([`publish`]) writes one delta of the new trades and links
//! the other segments, so its cost follows the new rows, not the store. When
//! the deltas grow past [`MAX_DELTAS`] files or 1/[`REBASE_RATIO`] of the
//! base's rows, [`compact`] merges them, or rebuilds the base, and may run
//! beside publications: it reads and writes outside the lock and installs
//! its segment only if no other compaction or full export came first.
//!
//! A version folder is written under a temporary name and renamed into
//! place, then `current` is replaced atomically. Readers resolve `current`
//! once and keep the folder they opened; one that must keep its folder on
//! disk takes a shared lock on its manifest ([`pin`]). The newest [`KEEP`]
//! versions and every pinned one stay; a segment's file goes with the last
//! version that links it, and a mapping of it stays valid even then.

mod rows;
mod version;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{store_error, Store};

/// The snapshot format this code writes. The Python helpers read it and
/// format 1 (one `trades.arrow`, written before segments existed).
pub const FORMAT: u32 = 2;
/// How many versions are kept on disk, besides pinned ones.
pub const KEEP: usize = 3;
/// More delta segments than this are merged into one.
pub const MAX_DELTAS: usize = 8;
/// Deltas holding more than 1/REBASE_RATIO of the base's rows are folded
/// into a new base.
pub const REBASE_RATIO: u64 = 8;

/// One segment file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Its file name in the version folder.
    pub file: String,
    pub rows: u64,
    pub first_trade_us: i64,
    pub last_trade_us: i64,
    /// The highest store id it holds.
    pub max_id: i64,
    /// Its size in bytes: a file that no longer has it (damaged on disk)
    /// is never linked into a new version.
    #[serde(default)]
    pub bytes: u64,
}

/// `manifest.json` of one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub version: u64,
    pub created_at: String,
    pub trades: u64,
    pub first_trade_us: Option<i64>,
    pub last_trade_us: Option<i64>,
    pub snapshots: u64,
    /// The highest store id published (format 2; 0 before).
    #[serde(default)]
    pub max_id: i64,
    /// Segments, base first (format 2; empty before).
    #[serde(default)]
    pub segments: Vec<Segment>,
    /// The identity of the store it was made from (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
}

impl Manifest {
    fn deltas(&self) -> &[Segment] {
        self.segments.get(1..).unwrap_or_default()
    }

    /// The compaction this version calls for, if any.
    pub fn compaction(&self) -> Option<Compaction> {
        let base = self.segments.first()?.rows;
        let deltas = self.deltas();
        due(base, deltas.iter().map(|s| s.rows).sum(), deltas.len())
    }
}

/// The compaction a base of `base` rows and `deltas` delta segments of
/// `delta_rows` in all call for.
fn due(base: u64, delta_rows: u64, deltas: usize) -> Option<Compaction> {
    if delta_rows.saturating_mul(REBASE_RATIO) > base {
        Some(Compaction::Rebase)
    } else if deltas > MAX_DELTAS {
        Some(Compaction::MergeDeltas)
    } else {
        None
    }
}

/// How deltas are folded together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compaction {
    /// Every segment into one new base.
    Rebase,
    /// The deltas into one delta; the base stays.
    MergeDeltas,
}

/// What a publication wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Written {
    /// Every trade, into one new base.
    Full { rows: u64 },
    /// Only the trades above the previous version's `max_id`.
    Delta { rows: u64 },
    /// The deltas merged into one, with the new trades if any.
    Merged { rows: u64 },
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Written::Full { rows } => write!(f, "full export of {rows} trades"),
            Written::Delta { rows } => write!(f, "delta of {rows} trades"),
            Written::Merged { rows } => write!(f, "deltas merged into one of {rows} trades"),
        }
    }
}

/// A published version and how it was made.
#[derive(Debug, Clone)]
pub struct Published {
    pub manifest: Manifest,
    pub written: Written,
    pub took: Duration,
}

/// How [`publish`] treats the deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Always a delta when the current version allows one: the caller
    /// compacts, typically on another thread (the follower).
    Delta,
    /// Compacts in the same step when due: a full export instead of a delta
    /// that would call for a rebase, one merged delta instead of too many
    /// (one-off commands).
    Compacted,
}

/// The Arrow schema of every segment.
pub fn trades_schema() -> Schema {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::LargeUtf8, nullable);
    let float = |name: &str| Field::new(name, DataType::Float64, false);
    Schema::new(vec![
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        text("exchange", false),
        text("account_name", false),
        text("symbol", false),
        text("side", false),
        float("amount"),
        float("price"),
        float("fee"),
        text("fee_currency", true),
        text("trade_id", true),
    ])
}

/// Folder of one version.
pub fn version_dir(root: &Path, version: u64) -> PathBuf {
    root.join(format!("v{version:06}"))
}

/// The version `current` points at, with its manifest; `None` before the first export.
pub fn current(root: &Path) -> Result<Option<(PathBuf, Manifest)>> {
    let link = root.join("current");
    let dir = match std::fs::canonicalize(&link) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(link, e)),
    };
    let manifest = manifest(&dir)?;
    Ok(Some((dir, manifest)))
}

/// The manifest of one version folder.
pub fn manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Invalid {
        path: path.clone(),
        reason: format!("unreadable manifest: {e}"),
    })
}

/// Keeps a version folder on disk while the returned file is open: a
/// shared lock on its manifest, which pruning respects. Fails if the
/// folder is gone (pruned before the lock was taken).
pub fn pin(dir: &Path) -> Result<File> {
    let path = dir.join("manifest.json");
    let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    file.lock_shared().map_err(|e| Error::io(&path, e))?;
    // Pruning renames a folder away before it deletes it: still at its
    // place means still there.
    if !path.exists() {
        return Err(Error::io(
            &path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "the version was removed"),
        ));
    }
    Ok(file)
}

/// Exports every trade as a new version (one base segment) and makes it current.
pub fn export(store: &Store, root: &Path) -> Result<Manifest> {
    let started = Instant::now();
    let lock = version::lock_root(root)?;
    let prev = current(root)?.map(|(dir, _)| dir);
    let plan = version::Plan::WHOLE;
    let published = version::publish_from(store, root, &lock, prev.as_deref(), plan, started)?;
    Ok(published.manifest)
}

/// Publishes what the store holds beyond the current version as a new
/// version: a delta of the new trades when the current version is of this
/// format and agrees with the store, else a full export (also the first).
pub fn publish(store: &Store, root: &Path, mode: Mode) -> Result<Published> {
    let started = Instant::now();
    let lock = version::lock_root(root)?;
    let current = current(root)?;
    let plan = match &current {
        Some((dir, m)) => plan(store, dir, m, mode)?,
        None => version::Plan::WHOLE,
    };
    let prev = current.as_ref().map(|(dir, _)| dir.as_path());
    version::publish_from(store, root, &lock, prev, plan, started)
}

/// What to publish over the current version `m` (in `dir`).
fn plan<'m>(store: &Store, dir: &Path, m: &'m Manifest, mode: Mode) -> Result<version::Plan<'m>> {
    use version::{Kind, Plan};
    if !intact(dir, m) {
        tracing::warn!(
            version = m.version,
            "a segment of the current version is missing or damaged; exporting the store whole"
        );
        return Ok(Plan::WHOLE);
    }
    // The trades the current version lacks are those above its max_id,
    // provided it was made from this store and nothing was removed since
    // (removing trades gives the store a new identity).
    let identity = store.identity()?;
    if m.format != FORMAT || identity.is_none() || m.store_id != identity {
        return Ok(Plan::WHOLE);
    }
    let new_rows = match mode {
        Mode::Compacted => count_range(store, m.max_id, i64::MAX)?,
        Mode::Delta => 0, // compacted elsewhere: not counted
    };
    if new_rows > 0 {
        let base = m.segments.first().map_or(0, |s| s.rows);
        match due(base, m.trades - base + new_rows, m.segments.len()) {
            Some(Compaction::Rebase) => return Ok(Plan::WHOLE),
            Some(Compaction::MergeDeltas) => {
                return Ok(Plan {
                    keep: &m.segments[..1],
                    after: m.segments[0].max_id,
                    kind: Kind::Merged,
                })
            }
            None => {}
        }
    }
    Ok(Plan {
        keep: &m.segments,
        after: m.max_id,
        kind: Kind::Delta,
    })
}

/// Folds the current version's deltas as [`Manifest::compaction`] asks,
/// while other versions may be published: [`prepare`] reads and writes the
/// new segment outside the lock, [`Prepared::install`] installs it with the
/// deltas published meanwhile. `None` when nothing was due, or when another
/// full export or compaction came first.
pub fn compact(store: &Store, root: &Path) -> Result<Option<Published>> {
    match prepare(store, root)? {
        Some(prepared) => prepared.install(root),
        None => Ok(None),
    }
}

/// A compaction whose segment is written, not yet installed.
pub struct Prepared {
    kind: Compaction,
    /// The version it was made from.
    from: Manifest,
    /// How many of its segments stay as they are (the base, when merging).
    keep: usize,
    pending: version::Pending,
    started: Instant,
}

/// The first half of [`compact`]: `None` when nothing is due.
pub fn prepare(store: &Store, root: &Path) -> Result<Option<Prepared>> {
    let started = Instant::now();
    let Some((_, m)) = current(root)? else {
        return Ok(None);
    };
    let Some(kind) = m.compaction().filter(|_| m.format == FORMAT) else {
        return Ok(None);
    };
    let keep: usize = match kind {
        Compaction::Rebase => 0,
        Compaction::MergeDeltas => 1,
    };
    let after = keep.checked_sub(1).map_or(0, |i| m.segments[i].max_id);
    let pending = version::write_pending(store, root, after, m.max_id)?;
    if pending.rows != m.segments[keep..].iter().map(|s| s.rows).sum::<u64>() {
        tracing::info!("the store changed under a compaction; it is dropped");
        return Ok(None);
    }
    Ok(Some(Prepared {
        kind,
        from: m,
        keep,
        pending,
        started,
    }))
}

impl Prepared {
    /// Installs the segment in place of those it folds, keeping every
    /// segment published since; `None` (and nothing changed) if the
    /// current version no longer holds the folded segments.
    pub fn install(self, root: &Path) -> Result<Option<Published>> {
        let lock = version::lock_root(root)?;
        let Some((dir, now)) = current(root)? else {
            return Ok(None);
        };
        let names = |s: &[Segment]| s.iter().map(|s| s.file.clone()).collect::<Vec<_>>();
        let covered = now
            .segments
            .iter()
            .take_while(|s| s.max_id <= self.from.max_id)
            .count();
        if now.format != FORMAT || names(&now.segments[..covered]) != names(&self.from.segments) {
            return Ok(None);
        }
        let published = version::install_compacted(
            root,
            &lock,
            &dir,
            &now,
            self.keep..covered,
            self.pending,
            self.started,
        )?;
        tracing::info!(
            version = published.manifest.version,
            kind = ?self.kind,
            ms = published.took.as_millis() as u64,
            "snapshot compacted"
        );
        Ok(Some(published))
    }
}

/// Whether every segment of the version in `dir` is there with its size
/// (a stat each: cheap enough for every pass of a follower).
pub fn intact(dir: &Path, m: &Manifest) -> bool {
    m.segments.iter().all(|s| {
        std::fs::metadata(dir.join(&s.file)).is_ok_and(|f| f.is_file() && f.len() == s.bytes)
    })
}

/// Whether a file of the current version is missing or damaged.
pub fn damaged(root: &Path) -> Result<bool> {
    Ok(current(root)?.is_some_and(|(dir, m)| !intact(&dir, &m)))
}

/// Whether the current version must be published again: there is none
/// while the store holds trades, it holds fewer trades or balance
/// snapshots than the store (a publication cut short), or a file of it is
/// damaged.
pub fn stale(store: &Store, root: &Path) -> Result<bool> {
    let Some((dir, m)) = current(root)? else {
        return Ok(store.trade_count()? > 0);
    };
    let (trades, snapshots) = store.counts()?;
    Ok(trades != m.trades || snapshots != m.snapshots || !intact(&dir, &m))
}

/// How many trades have a store id in `(after, upto]`.
fn count_range(store: &Store, after: i64, upto: i64) -> Result<u64> {
    store
        .conn()
        .query_row(
            "SELECT count(*) FROM trades WHERE id > ?1 AND id <= ?2",
            [after, upto],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n as u64)
        .map_err(|e| store_error(store.path(), e))
}

#[cfg(test)]
mod tests;
