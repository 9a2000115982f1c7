//! The one error type of the database layer, and the one place where
//! SQLite's result codes become errors a user can act on.

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

/// A failure of the store file itself (not of a request).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Another connection held the lock for longer than the busy timeout.
    #[error(
        "store {path} is locked by another process; nothing was changed, try again in a moment"
    )]
    Locked { path: PathBuf },

    /// The file, or its folder, cannot be written.
    #[error("store {path} is read-only ({detail}); nothing was changed")]
    ReadOnly { path: PathBuf, detail: String },

    /// The disk (or the store's quota) is full.
    #[error("store {path}: the disk is full; nothing was changed (free some space and try again)")]
    Full { path: PathBuf },

    /// Anything else SQLite reported.
    #[error("store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl DbError {
    /// Maps a SQLite failure on the store at `path`: busy and locked become
    /// [`DbError::Locked`], a full disk [`DbError::Full`], read-only
    /// [`DbError::ReadOnly`], the rest
    /// [`DbError::Sqlite`].
    pub fn from_sqlite(path: &Path, e: rusqlite::Error) -> DbError {
        let path = path.to_path_buf();
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => DbError::Locked { path },
            Some(ErrorCode::DiskFull) => DbError::Full { path },
            Some(ErrorCode::ReadOnly) => DbError::ReadOnly {
                path,
                detail: "the file or its folder cannot be written".into(),
            },
            _ => DbError::Sqlite { path, source: e },
        }
    }

    /// True when another connection held the lock: retrying later may work.
    pub fn is_locked(&self) -> bool {
        matches!(self, DbError::Locked { .. })
    }

    /// The store file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DbError::Locked { path }
            | DbError::Full { path }
            | DbError::ReadOnly { path, .. }
            | DbError::Sqlite { path, .. } => path,
        }
    }
}
