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
//! `tradebox_db`; another database implements the same three traits and the
//! fronts, with their rules, stay as they are.
//!
//! Backends whose rules span several statements (the function store, the
//! rate limiter) expose *rows* traits, called inside one transaction the
//! backend opens; the front runs its rules there. A transaction closure may
//! be called again if a backend retries a transaction (it only records its
//! result for the front).

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
