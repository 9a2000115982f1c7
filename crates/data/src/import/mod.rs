//! Importers: recognise what a path holds and load it into the store.
//!
//! A path may be an original `trade_cache.db` (or any SQLite file with a
//! `trades` table of the same columns), a CSV export with a header, one
//! `snapshot_YYYY-MM-DD.json` file, or a directory of them. All paths of one
//! call are imported in a single transaction: any error leaves the store as
//! it was.

pub(crate) mod csv;
pub(crate) mod snapshots;
pub(crate) mod sqlite;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use self::csv::{CsvOptions, COLUMN_ALIASES};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::store::Target;

/// What a path to import holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Sqlite,
    Csv,
    SnapshotFile,
    SnapshotDir,
}

impl SourceKind {
    pub fn describe(self) -> &'static str {
        match self {
            SourceKind::Sqlite => "SQLite trade database",
            SourceKind::Csv => "CSV trades",
            SourceKind::SnapshotFile => "balance snapshot",
            SourceKind::SnapshotDir => "balance snapshots directory",
        }
    }
}

/// What one path contributed.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub path: PathBuf,
    pub kind: SourceKind,
    /// Trades or snapshots read from the source.
    pub read: u64,
    /// How many of them were new to the store.
    pub added: u64,
}

/// Tells what `path` holds from its type and first bytes.
pub fn detect(path: &Path) -> Result<SourceKind> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Ok(SourceKind::SnapshotDir);
    }
    if meta.len() == 0 {
        return Err(Error::EmptyFile { path: path.into() });
    }
    let mut head = [0u8; 512];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| Error::io(path, e))?;
    let head = &head[..n];
    if head.starts_with(b"SQLite format 3\0") {
        return Ok(SourceKind::Sqlite);
    }
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let is_text = !text.contains(&0) && (std::str::from_utf8(text).is_ok() || n == head.len());
    if !is_text {
        return Err(Error::UnknownFormat { path: path.into() });
    }
    let first = text.iter().find(|b| !b.is_ascii_whitespace());
    let json_ext = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if json_ext || first == Some(&b'{') {
        Ok(SourceKind::SnapshotFile)
    } else {
        Ok(SourceKind::Csv)
    }
}

/// Imports every path in one transaction and reports per path; `progress`
/// has a stage per SQLite or CSV source and is finished at the end.
pub fn import_paths(
    store: &mut impl Target,
    paths: &[PathBuf],
    csv_options: &CsvOptions,
    progress: &dyn Progress,
) -> Result<Vec<ImportReport>> {
    // Detect everything first so that a wrong path fails before any work.
    let kinds = paths
        .iter()
        .map(|p| detect(p))
        .collect::<Result<Vec<_>>>()?;
    let reports = store.write(|w| {
        let mut reports = Vec::with_capacity(paths.len());
        for (path, kind) in paths.iter().zip(kinds) {
            let (read, added) = match kind {
                SourceKind::Sqlite => sqlite::import(w, path, progress)?,
                SourceKind::Csv => csv::import(w, path, csv_options, progress)?,
                SourceKind::SnapshotFile => snapshots::import_file(w, path)?,
                SourceKind::SnapshotDir => snapshots::import_dir(w, path)?,
            };
            reports.push(ImportReport {
                path: path.clone(),
                kind,
                read,
                added,
            });
        }
        Ok(reports)
    });
    progress.finish();
    reports
}
