//! The one error type of the database layer, and the one place where
//! SQLite's result codes and PostgreSQL's failures become errors a user can
//! act on.

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

    /// The store's server cannot be reached, or stopped answering, or a
    /// lock was held past the statement timeout: nothing was changed.
    #[error("store unavailable ({target}: {detail}); nothing was changed, try again")]
    Unavailable { target: String, detail: String },

    /// The connection settings cannot be used.
    #[error("store settings: {detail}")]
    Config { detail: String },

    /// Anything else PostgreSQL reported.
    #[error("store {target}: {detail}")]
    Postgres {
        target: String,
        detail: String,
        #[source]
        source: postgres::Error,
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

    /// Maps a PostgreSQL failure on the store `target` (host, port,
    /// database): a broken or refused connection and lock or statement
    /// timeouts become [`DbError::Unavailable`], a full disk
    /// [`DbError::Full`], the rest [`DbError::Postgres`] with the server's
    /// message.
    pub fn from_postgres(target: &str, e: postgres::Error) -> DbError {
        use postgres::error::SqlState;
        let target = target.to_string();
        let Some(db) = e.as_db_error() else {
            // No server answer: the connection failed or broke.
            let detail = match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            };
            return DbError::Unavailable { target, detail };
        };
        let code = db.code();
        if [
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code)
        {
            return DbError::Unavailable {
                target,
                detail: db.message().to_string(),
            };
        }
        if *code == SqlState::DISK_FULL {
            return DbError::Full {
                path: PathBuf::from(target),
            };
        }
        let detail = db.message().to_string();
        DbError::Postgres {
            target,
            detail,
            source: e,
        }
    }

    /// True when another connection held the lock, or the server could
    /// not answer now: retrying later may work.
    pub fn is_locked(&self) -> bool {
        matches!(self, DbError::Locked { .. } | DbError::Unavailable { .. })
    }

    /// The store file the error is about (none for a server).
    pub fn path(&self) -> Option<&Path> {
        match self {
            DbError::Locked { path }
            | DbError::Full { path }
            | DbError::ReadOnly { path, .. }
            | DbError::Sqlite { path, .. } => Some(path),
            DbError::Unavailable { .. } | DbError::Config { .. } | DbError::Postgres { .. } => None,
        }
    }
}
