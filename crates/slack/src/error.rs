//! The crate's two error types: [`Error`] (setting up or talking to Slack)
//! and [`ApiError`] (a Web API call that did not succeed after its
//! retries). They depend on nothing else in the crate, so that every module
//! can use them without a cycle.

use std::time::Duration;

/// What can go wrong setting up or talking to Slack.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A missing or malformed setting; the message says what to set.
    #[error("{0}")]
    Config(String),
    /// Slack refused a token (`invalid_auth`, `not_authed`, ...).
    #[error("{what} was refused by Slack ({code}); {advice}")]
    Auth {
        what: &'static str,
        code: String,
        advice: &'static str,
    },
    /// A Web API call failed after its retries.
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// A Web API call that did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Slack answered `ok: false` with this code.
    #[error("{method}: Slack answered {code}")]
    Slack { method: String, code: String },
    /// Slack asked to wait longer than tradebox waits.
    #[error("{method}: rate limited by Slack, retry after {retry_after:?}")]
    RateLimited {
        method: String,
        retry_after: Duration,
    },
    /// 5xx, network errors or timeouts on every attempt.
    #[error("{method}: failed {attempts} times, last: {last}")]
    GaveUp {
        method: String,
        attempts: u32,
        last: String,
    },
    /// An answer that cannot be used (a 4xx, a body that does not decode).
    #[error("{method}: {detail}")]
    Invalid { method: String, detail: String },
}

impl ApiError {
    /// Slack's error code (`not_in_channel`, ...), when Slack gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Slack { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the bot cannot post in the channel (not a member, a DM or
    /// private channel it cannot see, an archived channel).
    pub fn is_channel_access(&self) -> bool {
        matches!(
            self.code(),
            Some(
                "not_in_channel"
                    | "channel_not_found"
                    | "is_archived"
                    | "restricted_action"
                    | "cant_post_in_channel"
                    | "missing_scope"
            )
        )
    }
}
