//! Where tradebox keeps its files: `$TRADEBOX_HOME` (the store database, the
//! snapshot versions, and uploads while they are imported).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The layout of a tradebox home directory, and the shared trade store it
/// mirrors, if any.
#[derive(Clone)]
pub struct Home {
    root: PathBuf,
    /// `postgres://...` of the shared trade store ([`crate::shared`]); its
    /// password never shows in `Debug`.
    shared: Option<String>,
    /// How mirroring the shared store goes, shared by every clone.
    mirror: std::sync::Arc<crate::shared::MirrorHealth>,
}

impl std::fmt::Debug for Home {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Home")
            .field("root", &self.root)
            .field("shared", &self.shared.as_ref().map(|_| "<postgres>"))
            .finish()
    }
}

/// A folder left without its lock file for this long was made by a process
/// that died before it could lock it.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home {
            root: root.into(),
            shared: None,
            mirror: Default::default(),
        }
    }

    /// This home with its trades kept in the shared store at `url`
    /// (PostgreSQL): imports write there, and the home's own SQLite store is
    /// a mirror of it.
    pub fn with_shared_store(mut self, url: Option<String>) -> Home {
        self.shared = url;
        self
    }

    /// The connection string of the shared trade store, if the home has one.
    pub fn shared_store(&self) -> Option<&str> {
        self.shared.as_deref()
    }

    /// How the follower's mirroring of the shared store goes (for
    /// readiness), the same for every clone of this home.
    pub fn mirror_health(&self) -> &crate::shared::MirrorHealth {
        &self.mirror
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite trade store (with a shared store: its mirror).
    pub fn store_path(&self) -> PathBuf {
        self.root.join("tradebox.db")
    }

    /// The folder of exported snapshot versions (`vNNNNNN/`, `current`).
    pub fn snapshot_root(&self) -> PathBuf {
        self.root.join("snapshot")
    }

    /// The folder of uploads being imported: one `upload-*/` folder each,
    /// locked by the process importing it.
    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// A private folder for one upload while it is imported. It is removed
    /// when dropped; one left by a killed process goes at the next
    /// [`Home::sweep_uploads`], which this also runs.
    pub fn upload_folder(&self) -> std::io::Result<UploadFolder> {
        let parent = self.uploads_dir();
        std::fs::create_dir_all(&parent)?;
        self.sweep_uploads();
        let dir = tempfile::Builder::new()
            .prefix("upload-")
            .tempdir_in(&parent)?;
        let lock = File::create(dir.path().join(".lock"))?;
        lock.lock()?;
        Ok(UploadFolder { dir, _lock: lock })
    }

    /// Removes the upload folders whose importer is gone (their lock is
    /// free); the number removed. Folders in use are left alone, so any
    /// number of processes may share the home.
    pub fn sweep_uploads(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(self.uploads_dir()) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let dir = entry.path();
            let abandoned = match File::open(dir.join(".lock")) {
                // Free: its importer has ended without removing it.
                Ok(lock) => lock.try_lock().is_ok(),
                // Not locked yet: being made now, or its maker died first.
                Err(_) => entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > UNLOCKED_GRACE),
            };
            if abandoned && std::fs::remove_dir_all(&dir).is_ok() {
                tracing::info!("removed {}, left by an interrupted upload", dir.display());
                removed += 1;
            }
        }
        removed
    }
}

/// See [`Home::upload_folder`].
#[derive(Debug)]
pub struct UploadFolder {
    dir: tempfile::TempDir,
    _lock: File,
}

impl UploadFolder {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_folders_in_use_are_kept_and_abandoned_ones_swept() {
        let root = tempfile::TempDir::new().unwrap();
        let home = Home::new(root.path());
        assert_eq!(home.sweep_uploads(), 0, "no uploads folder yet");

        let live = home.upload_folder().unwrap();
        std::fs::write(live.path().join("a.csv"), "x").unwrap();
        // A folder whose importer was killed: its lock file is there, free.
        let dead = home.uploads_dir().join("upload-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(".lock"), "").unwrap();
        std::fs::write(dead.join("b.csv"), "y").unwrap();
        // One being made right now, not locked yet: kept.
        let young = home.uploads_dir().join("upload-young");
        std::fs::create_dir(&young).unwrap();

        assert_eq!(home.sweep_uploads(), 1);
        assert!(!dead.exists());
        assert!(young.exists());
        assert!(live.path().join("a.csv").exists(), "in use, kept");

        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists(), "removed when done");
    }
}
