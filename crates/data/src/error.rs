//! Typed errors of the data layer, split into "the input is wrong" (the user
//! can fix it; the CLI exits 2) and "the environment failed" (exit 1).

use std::path::PathBuf;

/// Everything that can go wrong in the data layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: no such file or directory")]
    NotFound { path: PathBuf },

    #[error("{path}: the file is empty")]
    EmptyFile { path: PathBuf },

    #[error(
        "{path}: not a SQLite database, a CSV file, a snapshot JSON file or a snapshots directory"
    )]
    UnknownFormat { path: PathBuf },

    #[error("{path}: SQLite database has no `trades` table")]
    NoTradesTable { path: PathBuf },

    #[error("{path}: the `trades` table lacks the column(s) {columns}")]
    MissingColumns { path: PathBuf, columns: String },

    #[error("{path}: row id {row_id}, column '{column}': {reason}")]
    SqliteRow {
        path: PathBuf,
        row_id: i64,
        column: &'static str,
        reason: String,
    },

    #[error("{path}: no snapshot_YYYY-MM-DD.json files in this directory")]
    NoSnapshots { path: PathBuf },

    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },

    #[error("{path}: the header lacks the required column(s) {missing} (found: {found}); see `tradebox data import --help` for accepted names")]
    CsvHeader {
        path: PathBuf,
        missing: String,
        found: String,
    },

    #[error("{path}, line {line}, column '{column}': {reason}")]
    CsvRow {
        path: PathBuf,
        line: u64,
        column: String,
        reason: String,
    },

    #[error("{path}, line {line}: {reason}")]
    CsvRecord {
        path: PathBuf,
        line: u64,
        reason: String,
    },

    #[error("{0}")]
    InvalidArgument(String),

    /// The store file failed: locked, read-only, or another SQLite error.
    #[error(transparent)]
    Db(#[from] tradebox_db::DbError),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("snapshot export: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),

    #[error("no data snapshot at {path}; import data first (`tradebox data import` or `tradebox data demo`)")]
    NoSnapshot { path: PathBuf },

    /// An import was committed but its snapshot could not be published
    /// ([`crate::import_and_publish`]); `imports` says what was imported.
    #[error("exporting the snapshot to {}: {source}", root.display())]
    Publish {
        root: PathBuf,
        imports: Vec<crate::import::ImportReport>,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// True when the input (a file, an argument) is at fault rather than the
    /// machine: the CLI maps these to exit code 2.
    pub fn is_input_error(&self) -> bool {
        if let Error::Publish { source, .. } = self {
            return source.is_input_error();
        }
        matches!(
            self,
            Error::NotFound { .. }
                | Error::EmptyFile { .. }
                | Error::UnknownFormat { .. }
                | Error::NoTradesTable { .. }
                | Error::MissingColumns { .. }
                | Error::SqliteRow { .. }
                | Error::NoSnapshots { .. }
                | Error::Invalid { .. }
                | Error::CsvHeader { .. }
                | Error::CsvRow { .. }
                | Error::CsvRecord { .. }
                | Error::InvalidArgument(_)
        )
    }

    /// True when another process held the store's lock (an import is
    /// running): retrying later may work.
    pub fn is_locked(&self) -> bool {
        match self {
            Error::Db(e) => e.is_locked(),
            Error::Publish { source, .. } => source.is_locked(),
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound { path }
        } else {
            Error::Io { path, source }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
