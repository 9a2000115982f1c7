//! What the function store, the audit trail and the rate limiter share
//! about storage: the error type, and how their backends run transactions.
//!
//! # Backends
//!
//! Each of the three is a front ([`crate::functions::FunctionStore`],
//! [`crate::audit::AuditLog`], [`crate::ratelimit::RateLimiter`]) that holds
//! the rules, over a backend trait that holds the SQL
//! ([`crate::functions::FunctionBackend`], [`crate::audit::AuditBackend`],
//! [`crate::ratelimit::RateLimitBackend`]). The SQLite implementations live
//! beside each front (`sqlite.rs`), on the connection plumbing of
//! `tradebox_db`, and so do the PostgreSQL ones (`pg.rs`); the fronts, with
//! their rules, are the same over both. [`StoreUrl`] says which one a
//! deployment uses (`[store] url`).
//!
//! Backends whose rules span several statements (the function store, the
//! rate limiter) expose *rows* traits, called inside one transaction the
//! backend opens; the front runs its rules there. A transaction closure may
//! be called again if a backend retries a transaction (it only records its
//! result for the front).

use std::path::PathBuf;

/// Where the function store, the audit trail and the rate limiter live:
/// `sqlite:PATH` or `postgres://user:password@host:port/database` (also
/// `postgresql://`). The trades stay in the home's SQLite file either way.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

/// Never shows the password.
impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl StoreUrl {
    /// Reads a `[store] url` value; the error is a phrase for the key.
    pub fn parse(url: &str) -> Result<StoreUrl, String> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(
                    "must name a file after sqlite: (sqlite:/srv/tradebox/tradebox.db)".into(),
                );
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(url.to_string()));
        }
        Err(format!(
            "must be sqlite:PATH or postgres://user:password@host:port/database, not {:?}",
            redact(url)
        ))
    }

    /// The URL with its password replaced by `***`, for logs and `config show`.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
            StoreUrl::Postgres(url) => redact(url),
        }
    }
}

/// `url` with the password of its authority (`user:password@`) replaced by
/// `***`, and a `password=` parameter's value too.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let start = scheme_end + 3 + colon + 1;
                let end = scheme_end + 3 + at;
                out.replace_range(start..end, "***");
            }
        }
    }
    if let Some(i) = out.find("password=") {
        let start = i + "password=".len();
        let end = out[start..]
            .find(['&', ' '])
            .map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "***");
    }
    out
}

/// What [`inspect`] found of a store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreReport {
    /// Where it is, password masked.
    pub target: String,
    /// Each shared component's schema: (name, version found, version this
    /// build uses). PostgreSQL only (SQLite files are made and migrated by
    /// whoever opens them).
    pub schemas: Vec<(&'static str, i32, i32)>,
    /// The database server's clock minus this machine's, in milliseconds
    /// (PostgreSQL only): replicas stamp times with their own clocks, so a
    /// large skew shifts the rate limit's window and the audit's order.
    pub clock_skew_ms: Option<i64>,
    /// How the connection is secured (PostgreSQL only): the TLS version the
    /// server reports, or `none`, and the `sslmode` asked for.
    pub tls: Option<String>,
}

impl StoreReport {
    /// Components whose schema is older than this build's (the next start
    /// migrates them) or newer (another build migrated them: this one
    /// should not run against it).
    pub fn outdated(&self) -> Vec<&'static str> {
        self.schemas
            .iter()
            .filter(|(_, found, wanted)| found != wanted)
            .map(|(name, _, _)| *name)
            .collect()
    }
}

/// Reads a store without changing it: whether it answers, its schema
/// versions and its clock.
pub fn inspect(url: &StoreUrl) -> Result<StoreReport, StoreError> {
    match url {
        StoreUrl::Sqlite(path) => {
            // A read of the file (created if missing, as every command does).
            tradebox_db::Db::open(path)?
                .read(|c| c.run(|conn| conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))))?;
            Ok(StoreReport {
                target: url.redacted(),
                schemas: Vec::new(),
                clock_skew_ms: None,
                tls: None,
            })
        }
        StoreUrl::Postgres(pg) => {
            let db = tradebox_db::PgDb::open(pg)?;
            let components = [
                (
                    crate::functions::pg::COMPONENT,
                    crate::functions::pg::VERSION,
                ),
                (crate::audit::pg::COMPONENT, crate::audit::pg::VERSION),
                (
                    crate::ratelimit::pg::COMPONENT,
                    crate::ratelimit::pg::VERSION,
                ),
                (
                    crate::deliveries::pg::COMPONENT,
                    crate::deliveries::pg::VERSION,
                ),
                (crate::leases::pg::COMPONENT, crate::leases::pg::VERSION),
                (
                    tradebox_data::shared::COMPONENT,
                    tradebox_data::shared::VERSION,
                ),
            ];
            let before = tradebox_data::timestamp::now();
            let (server_us, schemas) = db.read(|c| {
                let server: i64 = c
                    .query_one(
                        "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT",
                        &[],
                    )?
                    .get(0);
                let mut schemas = Vec::new();
                for (name, wanted) in components {
                    let found = c.run(|tx| tradebox_db::pg::schema_version(tx, name))?;
                    schemas.push((name, found, wanted));
                }
                Ok::<_, StoreError>((server, schemas))
            })?;
            let after = tradebox_data::timestamp::now();
            let midpoint = before + (after - before) / 2;
            let encryption = db.read(|c| {
                c.query_one(
                    "SELECT coalesce((SELECT version FROM pg_stat_ssl
                                      WHERE pid = pg_backend_pid() AND ssl), 'none')",
                    &[],
                )
                .map(|r| r.get::<_, String>(0))
            })?;
            Ok(StoreReport {
                target: url.redacted(),
                schemas,
                clock_skew_ms: Some((server_us - midpoint) / 1000),
                tls: Some(format!("{encryption} (sslmode={})", db.sslmode())),
            })
        }
    }
}

/// Everything that can go wrong in the function store, the audit trail and
/// the rate limiter.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no function named `{name}`")]
    NotFound { name: String },

    #[error("function `{name}` belongs to {owner}; only its creator or an admin can change it")]
    NotOwner { name: String, owner: String },

    #[error("a function named `{name}` already exists; choose another name")]
    NameTaken { name: String },

    #[error("{0}")]
    Invalid(String),

    /// The database failed (locked, read-only, anything else).
    #[error(transparent)]
    Db(#[from] tradebox_db::DbError),

    /// A backend broke its contract (a bug, not the request's fault).
    #[error("store: {0}")]
    Backend(String),
}

impl StoreError {
    /// True when the request is at fault (unknown name, not the owner, name
    /// taken, invalid input) rather than the machine.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound { .. }
                | StoreError::NotOwner { .. }
                | StoreError::NameTaken { .. }
                | StoreError::Invalid(_)
        )
    }

    /// True when another connection held the lock: nothing changed, and
    /// retrying later may work.
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Db(e) if e.is_locked())
    }
}

/// The error for a backend that returned from a transaction without
/// running its body.
pub(crate) fn body_not_run() -> StoreError {
    StoreError::Backend("the transaction body was never run".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_are_read_and_shown_without_their_password() {
        assert_eq!(
            StoreUrl::parse("sqlite:/srv/t.db").unwrap(),
            StoreUrl::Sqlite("/srv/t.db".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///srv/t.db").unwrap(),
            StoreUrl::Sqlite("/srv/t.db".into())
        );
        let pg = StoreUrl::parse("postgres://desk:s3cr@t@db.internal:5432/tradebox").unwrap();
        assert_eq!(
            pg.redacted(),
            "postgres://desk:***@db.internal:5432/tradebox"
        );
        assert_eq!(format!("{pg:?}"), pg.redacted());
        assert_eq!(
            redact("postgresql://db/x?user=desk&password=hunter2&sslmode=disable"),
            "postgresql://db/x?user=desk&password=***&sslmode=disable"
        );
        assert_eq!(redact("postgres://desk@db/x"), "postgres://desk@db/x");
        for bad in ["", "sqlite:", "mysql://u:pw@h/db", "/srv/t.db"] {
            let e = StoreUrl::parse(bad).unwrap_err();
            assert!(e.starts_with("must "), "{bad}: {e}");
        }
        assert!(!StoreUrl::parse("mysql://u:pw@h/db")
            .unwrap_err()
            .contains("pw"));
    }
}
