//! Slack settings from the environment: tokens are never read from
//! `tradebox.toml` (see [`tradebox_core::config`]).
//!
//! - `SLACK_BOT_TOKEN` (`xoxb-…`): required for Slack at all; without it
//!   tradebox runs without Slack.
//! - `SLACK_APP_TOKEN` (`xapp-…`, scope `connections:write`): Socket Mode,
//!   the default (no public URL needed).
//! - `SLACK_SIGNING_SECRET`: HTTP mode, when there is no app token: Slack
//!   posts to `/slack/commands` and `/slack/interactivity`.
//! - `SLACK_API_URL`: the Web API base URL; overrides `[slack] api_url`
//!   (itself overridden by `TRADEBOX_SLACK_API_URL`); the tests point it at
//!   the fake Slack server.

use crate::api::RetryPolicy;
use crate::error::Error;

/// How Slack reaches tradebox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A WebSocket opened by tradebox (`SLACK_APP_TOKEN`).
    SocketMode,
    /// Signed HTTP requests to `/slack/*` (`SLACK_SIGNING_SECRET`).
    Http,
}

/// Everything the Slack front end needs.
#[derive(Clone)]
pub struct SlackSettings {
    pub bot_token: String,
    pub app_token: Option<String>,
    pub signing_secret: Option<String>,
    /// The Web API base URL, e.g. `https://slack.com/api/`.
    pub api_url: String,
    /// Retries of Web API calls: checks and the Socket Mode connection.
    pub retry: RetryPolicy,
    /// Retries of the calls that post replies ([`RetryPolicy::replies`]).
    pub reply_retry: RetryPolicy,
    /// Socket Mode: parallel connections (Slack spreads envelopes over
    /// them; one keeps working while another reconnects).
    pub socket_connections: u32,
}

impl std::fmt::Debug for SlackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token.
        f.debug_struct("SlackSettings")
            .field("mode", &self.mode())
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl SlackSettings {
    /// `None` when Slack is not configured (no `SLACK_BOT_TOKEN`); `Err`
    /// when it is half-configured, saying what to set.
    pub fn from_env(
        config: &tradebox_core::config::SlackSection,
    ) -> Result<Option<SlackSettings>, Error> {
        SlackSettings::from_vars(config, |name| std::env::var(name).ok())
    }

    /// [`SlackSettings::from_env`] with the variables from `var`.
    pub fn from_vars(
        config: &tradebox_core::config::SlackSection,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<SlackSettings>, Error> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let bot = get("SLACK_BOT_TOKEN");
        let app = get("SLACK_APP_TOKEN");
        let secret = get("SLACK_SIGNING_SECRET");
        let Some(bot) = bot else {
            return match (&app, &secret) {
                (None, None) => Ok(None),
                (Some(_), _) => Err(Error::Config(
                    "SLACK_APP_TOKEN is set but SLACK_BOT_TOKEN is not: set SLACK_BOT_TOKEN to \
                     the app's Bot User OAuth Token (xoxb-..., under OAuth & Permissions)"
                        .into(),
                )),
                (None, Some(_)) => Err(Error::Config(
                    "SLACK_SIGNING_SECRET is set but SLACK_BOT_TOKEN is not: set SLACK_BOT_TOKEN \
                     to the app's Bot User OAuth Token (xoxb-..., under OAuth & Permissions)"
                        .into(),
                )),
            };
        };
        check_token(&bot, "SLACK_BOT_TOKEN", "xoxb-", "the Bot User OAuth Token")?;
        if let Some(app) = &app {
            check_token(
                app,
                "SLACK_APP_TOKEN",
                "xapp-",
                "an App-Level Token with the connections:write scope",
            )?;
        }
        if app.is_none() && secret.is_none() {
            return Err(Error::Config(
                "SLACK_BOT_TOKEN is set but Slack cannot reach tradebox: set SLACK_APP_TOKEN \
                 (xapp-..., Socket Mode, no public URL needed) or SLACK_SIGNING_SECRET (HTTP \
                 endpoints /slack/commands and /slack/interactivity, under Basic Information)"
                    .into(),
            ));
        }
        if let Some(secret) = &secret {
            if secret.chars().any(char::is_whitespace) || secret.len() < 16 {
                return Err(Error::Config(
                    "SLACK_SIGNING_SECRET does not look like a signing secret (32 hex \
                     characters under Basic Information > App Credentials)"
                        .into(),
                ));
            }
        }
        let api_url = match get("SLACK_API_URL") {
            Some(url) => url,
            None => config.api_url.clone(),
        };
        let api_url = check_api_url(&api_url)?;
        Ok(Some(SlackSettings {
            bot_token: bot,
            app_token: app,
            signing_secret: secret,
            api_url,
            retry: RetryPolicy::default(),
            reply_retry: RetryPolicy::replies(),
            socket_connections: 2,
        }))
    }

    /// Socket Mode when an app token is set, else HTTP.
    pub fn mode(&self) -> Mode {
        if self.app_token.is_some() {
            Mode::SocketMode
        } else {
            Mode::Http
        }
    }
}

fn check_token(token: &str, name: &str, prefix: &str, what: &str) -> Result<(), Error> {
    if token.starts_with(prefix) && token.len() > prefix.len() {
        return Ok(());
    }
    let looks_like = match token.get(..5) {
        Some("xoxb-") => " (it looks like a bot token, xoxb-...)",
        Some("xapp-") => " (it looks like an app-level token, xapp-...)",
        Some("xoxp-") => " (it looks like a user token, xoxp-...)",
        _ => "",
    };
    Err(Error::Config(format!(
        "{name} must start with {prefix}{looks_like}: set it to {what}"
    )))
}

/// An `http(s)://host/...` URL, without a final `/` (slack-morphism adds
/// `/method`).
fn check_api_url(url: &str) -> Result<String, Error> {
    let parsed = url::Url::parse(url).map_err(|e| {
        Error::Config(format!(
            "the Slack API URL {url:?} is not a URL ({e}); set SLACK_API_URL to something \
             like https://slack.com/api/"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::Config(format!(
            "the Slack API URL {url:?} must be an http:// or https:// URL such as \
             https://slack.com/api/"
        )));
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::collections::HashMap;
    use tradebox_core::config::SlackSection;

    fn with(vars: &[(&str, &str)]) -> Result<Option<SlackSettings>, Error> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SlackSettings::from_vars(&SlackSection::default(), |n| vars.get(n).cloned())
    }

    fn message(r: Result<Option<SlackSettings>, Error>) -> String {
        r.expect_err("an error").to_string()
    }

    #[test]
    fn unconfigured_is_none_and_half_configured_says_what_to_set() {
        assert!(with(&[]).unwrap().is_none());
        assert!(with(&[("SLACK_BOT_TOKEN", "  ")]).unwrap().is_none());
        let m = message(with(&[("SLACK_BOT_TOKEN", "xoxb-1")]));
        assert!(
            m.contains("SLACK_APP_TOKEN") && m.contains("SLACK_SIGNING_SECRET"),
            "{m}"
        );
        let m = message(with(&[("SLACK_APP_TOKEN", "xapp-1")]));
        assert!(m.contains("set SLACK_BOT_TOKEN"), "{m}");
        let m = message(with(&[("SLACK_SIGNING_SECRET", "0123456789abcdef0123")]));
        assert!(m.contains("set SLACK_BOT_TOKEN"), "{m}");
    }

    #[test]
    fn swapped_tokens_are_named() {
        let m = message(with(&[
            ("SLACK_BOT_TOKEN", "xapp-1"),
            ("SLACK_APP_TOKEN", "xoxb-1"),
        ]));
        assert!(m.contains("SLACK_BOT_TOKEN must start with xoxb-"), "{m}");
        assert!(m.contains("looks like an app-level token"), "{m}");
        let m = message(with(&[
            ("SLACK_BOT_TOKEN", "xoxb-1"),
            ("SLACK_APP_TOKEN", "xoxb-2"),
        ]));
        assert!(m.contains("SLACK_APP_TOKEN must start with xapp-"), "{m}");
    }

    #[test]
    fn modes_and_api_url() {
        let s = with(&[("SLACK_BOT_TOKEN", "xoxb-1"), ("SLACK_APP_TOKEN", "xapp-1")])
            .unwrap()
            .unwrap();
        assert_eq!(s.mode(), Mode::SocketMode);
        assert_eq!(s.api_url, "https://slack.com/api");
        assert!(!format!("{s:?}").contains("xoxb"));
        let s = with(&[
            ("SLACK_BOT_TOKEN", "xoxb-1"),
            ("SLACK_SIGNING_SECRET", "8f742231b10e8888abcd99yyyzzz85a5"),
            ("SLACK_API_URL", "http://127.0.0.1:9/api/"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.mode(), Mode::Http);
        assert_eq!(s.api_url, "http://127.0.0.1:9/api");
        let m = message(with(&[
            ("SLACK_BOT_TOKEN", "xoxb-1"),
            ("SLACK_APP_TOKEN", "xapp-1"),
            ("SLACK_API_URL", "slack.com/api"),
        ]));
        assert!(m.contains("SLACK_API_URL"), "{m}");
        let m = message(with(&[
            ("SLACK_BOT_TOKEN", "xoxb-1"),
            ("SLACK_SIGNING_SECRET", "short"),
        ]));
        assert!(m.contains("signing secret"), "{m}");
    }
}
