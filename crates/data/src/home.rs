//! Where tradebox keeps its files: `$TRADEBOX_HOME` (the store database and
//! the snapshot versions).

use std::path::{Path, PathBuf};

/// The layout of a tradebox home directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite trade store.
    pub fn store_path(&self) -> PathBuf {
        self.root.join("tradebox.db")
    }

    /// The folder of exported snapshot versions (`vNNNNNN/`, `current`).
    pub fn snapshot_root(&self) -> PathBuf {
        self.root.join("snapshot")
    }
}
