//! Folder sources: a CSV inbox (each complete file imported once, then
//! moved to `done/`, or to `failed/` beside a `.error.txt`) and a folder of
//! daily balance snapshot files (each new or changed file imported).
//!
//! A file is taken once it has not been modified for `settle_seconds`
//! (a file renamed in is complete at once). While following, that is also
//! judged by the follower's own clock ([`Sightings`]): a file the wall
//! clock dates in the future (the clock was set back) is not stuck, and one
//! seen growing is not taken because the clock jumped ahead. Names that writers use while
//! writing (`.name`, `*.tmp`, `*.part`, `*.partial`, `*~`, `*.crdownload`,
//! `*.swp`) are never taken. Each file is imported in one store
//! transaction that also records its fingerprint (the SHA-256 of a CSV's
//! bytes; a snapshot file's name, size and time), so a file whose move
//! was cut short by a crash, or the same file dropped again, is never
//! imported twice.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::state;
use super::{SourceConfig, SyncReport};
use crate::error::{Error, Result};
use crate::import::csv::{self, CsvOptions};
use crate::import::snapshots;
use crate::store::Store;

/// Names of files still being written, by the usual conventions.
fn in_progress(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.ends_with('~')
        || [".tmp", ".part", ".partial", ".crdownload", ".swp"]
            .iter()
            .any(|s| lower.ends_with(s))
}

/// What a follower saw of the files in its folders (size and time, and
/// since when unchanged by the monotonic clock), from one pass to the next.
#[derive(Debug, Default)]
pub struct Sightings(HashMap<PathBuf, Sighting>);

#[derive(Debug)]
struct Sighting {
    len: u64,
    modified: Option<SystemTime>,
    since: Instant,
}

/// The regular files of `dir` (sorted by name) that `wanted` accepts and
/// that have settled: unchanged since the last pass that saw them, and
/// either unchanged for `settle` by the monotonic clock or dated at least
/// `settle` ago by the wall clock.
fn settled_files(
    dir: &Path,
    settle: Duration,
    wanted: impl Fn(&str) -> bool,
    seen: &mut Sightings,
) -> Result<Vec<(String, std::fs::Metadata)>> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::Invalid {
            path: dir.into(),
            reason: "not a folder".into(),
        });
    }
    let (wall, now) = (SystemTime::now(), Instant::now());
    let mut out = Vec::new();
    let mut here = HashMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not UTF-8: not a name a desk's tools write
        };
        if in_progress(&name) || !wanted(&name) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let (len, modified) = (meta.len(), meta.modified().ok());
        let before = seen.0.get(&entry.path());
        let same = before.filter(|s| s.len == len && s.modified == modified);
        let since = same.map_or(now, |s| s.since);
        let quiet = now.duration_since(since) >= settle;
        let old = modified
            .and_then(|m| wall.duration_since(m).ok())
            .is_some_and(|age| age >= settle);
        if (before.is_none() || same.is_some()) && (quiet || old) {
            out.push((name, meta));
        }
        here.insert(
            entry.path(),
            Sighting {
                len,
                modified,
                since,
            },
        );
    }
    // Only the files there now are remembered (taken ones have moved).
    seen.0.retain(|path, _| path.parent() != Some(dir));
    seen.0.extend(here);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `dir/name`, or `dir/stem.N.ext` for the first N free.
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, format!(".{e}")),
        _ => (name, String::new()),
    };
    (1..)
        .map(|n| dir.join(format!("{stem}.{n}{ext}")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}

fn move_into(file: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let to = free_name(dir, name);
    std::fs::rename(file, &to).map_err(|e| Error::io(file, e))?;
    Ok(to)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub(super) fn sync_inbox(
    store: &mut Store,
    config: &SourceConfig,
    seen: &mut Sightings,
) -> Result<SyncReport> {
    let dir = config.path.as_path();
    let wanted = |n: &str| {
        let l = n.to_ascii_lowercase();
        l.ends_with(".csv") || l.ends_with(".tsv") || l.ends_with(".txt")
    };
    let options = CsvOptions {
        exchange: config.exchange.clone(),
        account: config.account.clone(),
    };
    let mut report = SyncReport::default();
    let settle = Duration::from_secs(config.settle_seconds);
    for (name, _) in settled_files(dir, settle, wanted, seen)? {
        let file = dir.join(&name);
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // taken away meanwhile
            Err(e) => return Err(Error::io(&file, e)),
        };
        let fingerprint = hex(&Sha256::digest(&bytes));
        if state::file_seen(store, &config.id, &fingerprint)? {
            // Imported before (the same file again, or a move cut short).
            move_into(&file, &dir.join("done"), &name)?;
            report.files.push(format!("{name} (already imported)"));
            continue;
        }
        let parsed = if bytes.is_empty() {
            Err(Error::EmptyFile { path: file.clone() })
        } else {
            csv::parse(bytes.as_slice(), &file, &options)
        };
        let trades = match parsed {
            Ok(t) => t,
            Err(e) if e.is_input_error() => {
                let failed = dir.join("failed");
                let moved = move_into(&file, &failed, &name)?;
                let moved_name = moved
                    .file_name()
                    .map_or_else(|| name.clone(), |n| n.to_string_lossy().into_owned());
                let note = failed.join(format!("{moved_name}.error.txt"));
                let text = format!("{e}\n\nNothing of this file was imported. Fix it and drop it into the inbox again.\n");
                std::fs::write(&note, text).map_err(|err| Error::io(&note, err))?;
                let why = format!("{name}: {e}");
                store.write(|w| w.count_for_source(config, 0, Some(&why)))?;
                report.rejected.push(why);
                continue;
            }
            Err(e) => return Err(e),
        };
        let added = store.write(|w| {
            let mut added = 0u64;
            for t in &trades {
                added += u64::from(w.insert_trade(t, None)?);
            }
            w.record_source_file(&config.id, &fingerprint, &name, added)?;
            w.count_for_source(config, added, None)?;
            Ok(added)
        })?;
        report.read += trades.len() as u64;
        report.added += added;
        move_into(&file, &dir.join("done"), &name)?;
        report.files.push(name);
    }
    Ok(report)
}

pub(super) fn sync_snapshots(
    store: &mut Store,
    config: &SourceConfig,
    dir: &Path,
    seen: &mut Sightings,
) -> Result<SyncReport> {
    let wanted = |n: &str| n.starts_with("snapshot_") && n.ends_with(".json");
    let mut report = SyncReport::default();
    let mut problems = Vec::new();
    let settle = Duration::from_secs(config.settle_seconds);
    for (name, meta) in settled_files(dir, settle, wanted, seen)? {
        let modified = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let fingerprint = format!("{name}:{}:{modified}", meta.len());
        if state::file_seen(store, &config.id, &fingerprint)? {
            continue;
        }
        let file = dir.join(&name);
        // A file being rewritten reads as incomplete JSON: left for the next poll.
        let snap = match snapshots::read(&file) {
            Ok(s) => s,
            Err(e) if e.is_input_error() => {
                problems.push(e.to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        let added = store.write(|w| {
            let added = u64::from(w.upsert_snapshot(&snap)?);
            w.record_source_file(&config.id, &fingerprint, &name, added)?;
            w.count_for_source(config, added, None)?;
            Ok(added)
        })?;
        report.read += 1;
        report.added += added;
        report.files.push(name);
    }
    if let Some(first) = problems.first() {
        // The good files are in; the bad ones are retried at the next poll.
        report.problem = Some(format!(
            "{} snapshot file(s) could not be read (retrying): {first}",
            problems.len()
        ));
    }
    Ok(report)
}
