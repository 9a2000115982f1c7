//! Slack front end of tradebox.
//!
//! - [`SlackSettings`]: the tokens from the environment (Socket Mode with
//!   `SLACK_APP_TOKEN`, or HTTP endpoints with `SLACK_SIGNING_SECRET`).
//! - [`SlackApp`]: checks the bot token (`auth.test`), receives slash
//!   commands and Run buttons over Socket Mode ([`socket`]) or signed HTTP
//!   requests ([`http`]), acknowledges each at once (the accept path,
//!   `accept`), runs it through the [`tradebox_core::pipeline::Pipeline`]
//!   and posts the reply ([`deliver`]: placeholder, `chat.update`,
//!   ephemeral refusals, `response_url` fallback, file uploads).
//! - [`api`]: the Web API calls, on slack-morphism, with retries (429
//!   `Retry-After`, 5xx and network errors with backoff).
//! - [`blocks`]: Block Kit rendering of replies within Slack's limits.
//!
//! Inside the crate, each module uses only modules on the lines below its
//! own, so there is no cycle (this file only declares and re-exports):
//!
//! ```text
//! app                             SlackApp: tokens, start, HTTP routes, shutdown
//! socket, http                    the two doors deliveries come in by
//! accept                          the accept path: dedupe, spawn, ack, drain
//! deliver, settings               posting replies; the settings
//! api                             Web API calls with retries
//! blocks, payload, dedupe, error  leaves
//! ```

mod accept;
pub mod api;
mod app;
pub mod blocks;
mod dedupe;
pub mod deliver;
mod error;
pub mod http;
pub mod payload;
mod settings;
pub mod socket;

pub use api::{install_crypto_provider, Identity, RetryPolicy, REQUIRED_SCOPES};
pub use app::SlackApp;
pub use blocks::{escape_mrkdwn, render, Rendered, Upload};
pub use error::Error;
pub use settings::{Mode, SlackSettings};
