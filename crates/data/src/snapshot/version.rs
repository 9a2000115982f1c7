//! Writing one version folder: staged under a temporary name (segments
//! linked from the current version or written new, the balance snapshots,
//! the manifest), synced, renamed into place, made `current`; then the
//! versions nobody needs any more are removed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow_array::RecordBatch;
use serde::Serialize;

use super::{rows, version_dir, Manifest, Published, Segment, Written, FORMAT, KEEP};
use crate::error::{Error, Result};
use crate::store::{store_error, Store};
use crate::timestamp;

/// The root's write lock: one version is written at a time.
pub(super) struct RootLock(#[allow(dead_code)] File);

pub(super) fn lock_root(root: &Path) -> Result<RootLock> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let path = root.join(".lock");
    let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
    file.lock().map_err(|e| Error::io(&path, e))?;
    Ok(RootLock(file))
}

/// What kind of version a [`Plan`] makes (its rows are known once read).
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Full,
    Delta,
    Merged,
}

impl Kind {
    fn with(self, rows: u64) -> Written {
        match self {
            Kind::Full => Written::Full { rows },
            Kind::Delta => Written::Delta { rows },
            Kind::Merged => Written::Merged { rows },
        }
    }
}

/// A publication: the current version's segments to keep (linked), the
/// store id above which trades are read into one new segment, and what
/// that makes.
pub(super) struct Plan<'m> {
    pub keep: &'m [Segment],
    pub after: i64,
    pub kind: Kind,
}

impl Plan<'_> {
    /// Every trade, into one new base.
    pub const WHOLE: Plan<'static> = Plan {
        keep: &[],
        after: 0,
        kind: Kind::Full,
    };
}

/// Publishes `plan` with every balance snapshot, on top of the current
/// version in `prev`.
pub(super) fn publish_from(
    store: &Store,
    root: &Path,
    _lock: &RootLock,
    prev: Option<&Path>,
    plan: Plan<'_>,
    started: Instant,
) -> Result<Published> {
    // One read transaction, so trades and snapshots agree with each other.
    let tx = store
        .conn()
        .unchecked_transaction()
        .map_err(|e| store_error(store.path(), e))?;
    let rows = rows::read(store, plan.after, None)?;
    let snapshots = store.balance_snapshots()?;
    let identity = store.identity()?;
    drop(tx);

    let staging = Staging::new(root, prev)?;
    let mut segments = Vec::with_capacity(plan.keep.len() + 1);
    for s in plan.keep {
        staging.link(&s.file)?;
        segments.push(s.clone());
    }
    let n = rows.batch.num_rows() as u64;
    if let (Some(first), Some(last)) = (rows.first_us, rows.last_us) {
        let file = staging.segment_name();
        let bytes = write_batch(&staging.tmp.join(&file), &rows.batch)?;
        segments.push(Segment {
            file,
            rows: n,
            first_trade_us: first,
            last_trade_us: last,
            max_id: rows.max_id,
            bytes,
        });
    }
    let snapshots_json = to_json(&snapshots, &staging.tmp)?;
    let manifest = staging.finish(segments, &snapshots_json, snapshots.len() as u64, identity)?;
    let written = plan.kind.with(n);
    tracing::info!(
        version = manifest.version,
        trades = manifest.trades,
        written = %written,
        publish_ms = started.elapsed().as_millis() as u64,
        "snapshot published"
    );
    Ok(Published {
        manifest,
        written,
        took: started.elapsed(),
    })
}

/// A segment written outside the lock by a compaction, not yet in a version.
pub(crate) struct Pending {
    path: PathBuf,
    /// Held while the file exists: an unlocked pending file is a leftover.
    _lock: File,
    pub rows: u64,
    first_us: i64,
    last_us: i64,
    max_id: i64,
    bytes: u64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

static PENDING: AtomicU64 = AtomicU64::new(0);

/// Writes the trades with ids in `(after, upto]` to a pending segment.
pub(super) fn write_pending(store: &Store, root: &Path, after: i64, upto: i64) -> Result<Pending> {
    let rows = rows::read(store, after, Some(upto))?;
    let path = root.join(format!(
        ".compact-{}-{}.arrow",
        std::process::id(),
        PENDING.fetch_add(1, Ordering::Relaxed)
    ));
    let lock = File::create(&path).map_err(|e| Error::io(&path, e))?;
    lock.lock().map_err(|e| Error::io(&path, e))?;
    let mut pending = Pending {
        path,
        _lock: lock,
        rows: rows.batch.num_rows() as u64,
        first_us: rows.first_us.unwrap_or(0),
        last_us: rows.last_us.unwrap_or(0),
        max_id: rows.max_id,
        bytes: 0,
    };
    pending.bytes = write_batch(&pending.path, &rows.batch)?;
    Ok(pending)
}

/// Installs a compaction: the current version `now` (in `prev`) with its
/// segments `folded` replaced by the pending one.
pub(super) fn install_compacted(
    root: &Path,
    _lock: &RootLock,
    prev: &Path,
    now: &Manifest,
    folded: std::ops::Range<usize>,
    pending: Pending,
    started: Instant,
) -> Result<Published> {
    let staging = Staging::new(root, Some(prev))?;
    let mut segments = Vec::with_capacity(now.segments.len());
    for s in &now.segments[..folded.start] {
        staging.link(&s.file)?;
        segments.push(s.clone());
    }
    if pending.rows > 0 {
        let file = staging.segment_name();
        let to = staging.tmp.join(&file);
        std::fs::rename(&pending.path, &to).map_err(|e| Error::io(&to, e))?;
        segments.push(Segment {
            file,
            rows: pending.rows,
            first_trade_us: pending.first_us,
            last_trade_us: pending.last_us,
            max_id: pending.max_id,
            bytes: pending.bytes,
        });
    }
    for s in &now.segments[folded.end..] {
        staging.link(&s.file)?;
        segments.push(s.clone());
    }
    let snapshots = staging.prev_file("snapshots.json")?;
    let manifest = staging.finish(segments, &snapshots, now.snapshots, now.store_id.clone())?;
    let rows = pending.rows;
    drop(pending);
    let kind = if folded.start == 0 {
        Kind::Full
    } else {
        Kind::Merged
    };
    Ok(Published {
        written: kind.with(rows),
        manifest,
        took: started.elapsed(),
    })
}

/// A version being written under `.tmp-vNNNNNN`, removed unless finished.
struct Staging {
    root: PathBuf,
    version: u64,
    tmp: PathBuf,
    /// The current version's folder, which kept segments are linked from.
    prev: Option<PathBuf>,
    done: bool,
}

impl Staging {
    fn new(root: &Path, prev: Option<&Path>) -> Result<Staging> {
        let version = versions(root)?.last().map_or(1, |v| v + 1);
        let tmp = root.join(format!(".tmp-v{version:06}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(Staging {
            root: root.to_path_buf(),
            version,
            tmp,
            prev: prev.map(Path::to_path_buf),
            done: false,
        })
    }

    /// The name of the segment this version adds.
    fn segment_name(&self) -> String {
        format!("trades-{:06}.arrow", self.version)
    }

    /// Links a file of the current version into this one.
    fn link(&self, file: &str) -> Result<()> {
        let prev = self.prev.as_deref().ok_or_else(|| Error::Invalid {
            path: self.root.clone(),
            reason: format!("segment {file} has no current version to come from"),
        })?;
        let (from, to) = (prev.join(file), self.tmp.join(file));
        std::fs::hard_link(&from, &to).map_err(|e| Error::io(&from, e))
    }

    /// The bytes of a file of the current version.
    fn prev_file(&self, file: &str) -> Result<Vec<u8>> {
        let path = self.prev.as_deref().unwrap_or(&self.root).join(file);
        std::fs::read(&path).map_err(|e| Error::io(&path, e))
    }

    /// Writes the snapshots and manifest, then makes the version current.
    fn finish(
        mut self,
        segments: Vec<Segment>,
        snapshots_json: &[u8],
        snapshots: u64,
        store_id: Option<String>,
    ) -> Result<Manifest> {
        // Unchanged balance snapshots are linked, not written again.
        if self.prev_file("snapshots.json").ok().as_deref() == Some(snapshots_json) {
            self.link("snapshots.json")?;
        } else {
            write_file(&self.tmp.join("snapshots.json"), |w| {
                w.write_all(snapshots_json)
                    .map_err(|e| Error::io(&self.tmp, e))
            })?;
        }
        let manifest = Manifest {
            format: FORMAT,
            version: self.version,
            created_at: timestamp::format_rfc3339(timestamp::now()),
            trades: segments.iter().map(|s| s.rows).sum(),
            first_trade_us: segments.iter().map(|s| s.first_trade_us).min(),
            last_trade_us: segments.iter().map(|s| s.last_trade_us).max(),
            snapshots,
            max_id: segments.last().map_or(0, |s| s.max_id),
            segments,
            store_id,
        };
        let bytes = to_json(&manifest, &self.tmp)?;
        write_file(&self.tmp.join("manifest.json"), |w| {
            w.write_all(&bytes).map_err(|e| Error::io(&self.tmp, e))
        })?;
        sync_dir(&self.tmp)?;

        let dir = version_dir(&self.root, self.version);
        std::fs::rename(&self.tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        self.done = true;
        let next = self.root.join(".current.tmp");
        let _ = std::fs::remove_file(&next);
        std::os::unix::fs::symlink(format!("v{:06}", self.version), &next)
            .map_err(|e| Error::io(&next, e))?;
        std::fs::rename(&next, self.root.join("current")).map_err(|e| Error::io(&self.root, e))?;
        sync_dir(&self.root)?;
        prune(&self.root)?;
        Ok(manifest)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Version numbers present, ascending.
fn versions(root: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name();
        if let Some(v) = name
            .to_str()
            .and_then(|n| n.strip_prefix('v'))
            .and_then(|n| n.parse().ok())
        {
            out.push(v);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Removes the versions older than the newest [`KEEP`] that no reader has
/// pinned, and what an interrupted writer left (its staging folder, a
/// compaction's pending segment, a half-removed version). Runs under the
/// root lock.
fn prune(root: &Path) -> Result<()> {
    let all = versions(root)?;
    for v in &all[..all.len().saturating_sub(KEEP)] {
        let dir = version_dir(root, *v);
        // Pinned: a reader holds a shared lock on the manifest.
        if let Ok(manifest) = File::open(dir.join("manifest.json")) {
            if manifest.try_lock().is_err() {
                continue;
            }
        }
        let trash = root.join(format!(".trash-v{v:06}"));
        std::fs::rename(&dir, &trash).map_err(|e| Error::io(&dir, e))?;
        std::fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))?;
    }
    for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if name.starts_with(".trash-") {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        } else if name.starts_with(".compact-") {
            // Locked while its compaction runs.
            if File::open(&path).is_ok_and(|f| f.try_lock().is_ok()) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    Ok(())
}

fn to_json(value: &impl Serialize, at: &Path) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::io(at, e.into()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes one segment file; returns its size.
fn write_batch(path: &Path, batch: &RecordBatch) -> Result<u64> {
    // A write that fails (a full disk) names the file, not only Arrow.
    let named = |e: arrow_schema::ArrowError| match e {
        arrow_schema::ArrowError::IoError(_, io) => Error::io(path, io),
        other => other.into(),
    };
    write_file(path, |w| {
        let mut writer =
            arrow_ipc::writer::FileWriter::try_new(w, &batch.schema()).map_err(named)?;
        writer.write(batch).map_err(named)?;
        writer.finish().map_err(named)
    })?;
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| Error::io(path, e))
}

fn write_file(path: &Path, f: impl FnOnce(&mut BufWriter<&File>) -> Result<()>) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, &file);
    f(&mut w)?;
    w.flush().map_err(|e| Error::io(path, e))?;
    drop(w);
    file.sync_all().map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
