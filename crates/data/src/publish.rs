//! "Import, then publish if changed", once for every front end (`tradebox
//! data import`, the console's upload): the paths are imported into the
//! store of a home in one transaction, then a new snapshot version is
//! published (a delta of the new trades, or a full export when that is due)
//! when the import added anything or no version exists yet;
//! otherwise the current version stays. The sandbox pool follows
//! `snapshot/current` by itself.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::home::Home;
use crate::import::{self, CsvOptions, ImportReport};
use crate::progress::Progress;
use crate::shared::Shared;
use crate::snapshot::{self, Manifest, Mode};
use crate::store::Store;

/// What [`import_and_publish`] did.
#[derive(Debug, Clone)]
pub struct Imported {
    /// One report per path, in the order given.
    pub imports: Vec<ImportReport>,
    /// The snapshot version current afterwards.
    pub manifest: Manifest,
    /// Its folder.
    pub snapshot_dir: PathBuf,
    /// Whether the call exported that version (else it was current before).
    pub published: bool,
    /// How long the export took (zero when nothing was published).
    pub export_time: Duration,
}

impl Imported {
    /// Whether the import added any trade or snapshot.
    pub fn changed(&self) -> bool {
        self.imports.iter().any(|r| r.added > 0)
    }
}

/// Imports `paths` into the store of `home` (created if needed) in one
/// transaction, then publishes a new snapshot version if anything was added
/// or none exists. An error before the import is committed leaves the store
/// as it was; a failure to publish afterwards is [`Error::Publish`], which
/// carries the import's reports (the import is kept).
pub fn import_and_publish(
    home: &Home,
    paths: &[PathBuf],
    options: &CsvOptions,
    progress: &dyn Progress,
) -> Result<Imported> {
    if let Some(url) = home.shared_store() {
        return import_shared(home, url, paths, options, progress);
    }
    let mut store = Store::open(&home.store_path())?;
    let imports = import::import_paths(&mut store, paths, options, progress)?;
    let root = home.snapshot_root();
    let changed = imports.iter().any(|r| r.added > 0);
    let published = match snapshot::current(&root) {
        Ok(Some((_, m))) if !changed => Ok((m, false, Duration::ZERO)),
        Ok(_) => {
            snapshot::publish(&store, &root, Mode::Compacted).map(|p| (p.manifest, true, p.took))
        }
        Err(e) => Err(e),
    };
    finish(root, imports, published)
}

/// What an import whose trades were committed returns: the version current
/// after its publication, or [`Error::Publish`] with the import's reports.
fn finish(
    root: PathBuf,
    imports: Vec<ImportReport>,
    published: Result<(Manifest, bool, Duration)>,
) -> Result<Imported> {
    match published {
        Ok((manifest, published, export_time)) => Ok(Imported {
            snapshot_dir: snapshot::version_dir(&root, manifest.version),
            imports,
            manifest,
            published,
            export_time,
        }),
        Err(source) => Err(Error::Publish {
            root,
            imports,
            source: Box::new(source),
        }),
    }
}

/// [`import_and_publish`] for a home whose trades live in a shared store:
/// imported there (the other replicas are notified at commit), then the
/// home's mirror synced and published.
fn import_shared(
    home: &Home,
    url: &str,
    paths: &[PathBuf],
    options: &CsvOptions,
    progress: &dyn Progress,
) -> Result<Imported> {
    let mut shared = Shared::open(url)?;
    let imports = import::import_paths(&mut shared, paths, options, progress)?;
    let root = home.snapshot_root();
    let publish = || -> Result<(Manifest, bool, Duration)> {
        if let Some(p) = shared.sync_home(home)?.published {
            return Ok((p.manifest, true, p.took));
        }
        match snapshot::current(&root)? {
            Some((_, m)) => Ok((m, false, Duration::ZERO)),
            None => {
                let store = Store::open(&home.store_path())?;
                let p = snapshot::publish(&store, &root, Mode::Compacted)?;
                Ok((p.manifest, true, p.took))
            }
        }
    };
    let published = publish();
    finish(root, imports, published)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use tempfile::TempDir;

    #[test]
    fn publishes_only_what_changed() {
        let dir = TempDir::new().unwrap();
        let home = Home::new(dir.path());
        let csv = dir.path().join("trades.csv");
        std::fs::write(
            &csv,
            "timestamp,exchange,symbol,side,amount,price\n\
             2025-01-02T03:04:05,kraken,BTC,buy,1,100\n",
        )
        .unwrap();
        let paths = [csv.clone()];
        let options = CsvOptions::default();

        let first = import_and_publish(&home, &paths, &options, &NoProgress).unwrap();
        assert!(first.changed() && first.published);
        assert_eq!((first.manifest.version, first.manifest.trades), (1, 1));
        assert_eq!(
            first.snapshot_dir,
            snapshot::version_dir(&home.snapshot_root(), 1)
        );
        assert_eq!((first.imports[0].read, first.imports[0].added), (1, 1));

        // The same file again: nothing new, v1 stays current.
        let again = import_and_publish(&home, &paths, &options, &NoProgress).unwrap();
        assert!(!again.changed() && !again.published);
        assert_eq!(again.manifest.version, 1);
        assert_eq!(again.export_time, Duration::ZERO);

        // No snapshot at all: published even though nothing is new.
        std::fs::remove_dir_all(home.snapshot_root()).unwrap();
        let restored = import_and_publish(&home, &paths, &options, &NoProgress).unwrap();
        assert!(!restored.changed() && restored.published);

        // A bad path: nothing imported, the error is the importer's.
        let err = import_and_publish(&home, &[dir.path().join("nope.csv")], &options, &NoProgress)
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        assert!(err.is_input_error());
    }

    #[test]
    fn a_failed_publish_keeps_the_import_and_says_so() {
        let dir = TempDir::new().unwrap();
        let home = Home::new(dir.path());
        let csv = dir.path().join("trades.csv");
        std::fs::write(
            &csv,
            "timestamp,exchange,symbol,side,amount,price\n\
             2025-01-02T03:04:05,kraken,BTC,buy,1,100\n",
        )
        .unwrap();
        // A file where the snapshot folder should be.
        std::fs::write(home.snapshot_root(), "").unwrap();
        let err =
            import_and_publish(&home, &[csv], &CsvOptions::default(), &NoProgress).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!(
                "exporting the snapshot to {}: ",
                home.snapshot_root().display()
            )),
            "{shown}"
        );
        match err {
            Error::Publish { imports, .. } => assert_eq!(imports[0].added, 1),
            other => panic!("{other:?}"),
        }
        let store = Store::open(&home.store_path()).unwrap();
        assert_eq!(store.trade_count().unwrap(), 1, "the import was kept");
    }
}
