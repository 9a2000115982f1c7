//! Slack front end of tradebox.
//!
//! - [`SlackSettings`]: the tokens from the environment (Socket Mode with
//!   `SLACK_APP_TOKEN`, or HTTP endpoints with `SLACK_SIGNING_SECRET`).
//! - [`SlackApp`]: checks the bot token (`auth.test`), receives slash
//!   commands and Run buttons over Socket Mode ([`socket`]) or signed HTTP
//!   requests ([`http`]), acknowledges each at once, runs it through the
//!   [`tradebox_core::pipeline::Pipeline`] and posts the reply
//!   ([`deliver`]: placeholder, `chat.update`, ephemeral refusals,
//!   `response_url` fallback, file uploads).
//! - [`api`]: the Web API calls, on slack-morphism, with retries (429
//!   `Retry-After`, 5xx and network errors with backoff).
//! - [`blocks`]: Block Kit rendering of replies within Slack's limits.

pub mod api;
mod app;
pub mod blocks;
mod dedupe;
pub mod deliver;
pub mod http;
pub mod payload;
mod settings;
pub mod socket;

pub use api::{Identity, RetryPolicy, REQUIRED_SCOPES};
pub use app::SlackApp;
pub use blocks::{escape_mrkdwn, render, Rendered, Upload};
pub use settings::{Mode, SlackSettings};

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
    Api(#[from] api::ApiError),
}

/// Installs rustls' `ring` provider for the whole process (slack-morphism's
/// HTTPS and WebSocket clients need a process-wide default, and panic on the
/// first TLS call without one). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
