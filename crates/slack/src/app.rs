//! [`SlackApp`]: the Slack front end as `tradebox serve` runs it, above
//! the transports: it checks the tokens (`auth.test`,
//! `apps.connections.open`), creates the [`Acceptor`] every delivery goes
//! through ([`crate::accept`]), starts Socket Mode ([`crate::socket`]) or
//! hands out the HTTP routes ([`crate::http`]), and shuts down: stops
//! taking deliveries, closes the sockets, and waits for every task to post
//! its reply. Nothing below refers back to this module.

use std::sync::Arc;
use std::time::Duration;

use tradebox_core::pipeline::Pipeline;

use crate::accept::Acceptor;
use crate::api::{install_crypto_provider, Api, Identity};
use crate::deliver::Deliverer;
use crate::error::{ApiError, Error};
use crate::http;
use crate::settings::{Mode, SlackSettings};
use crate::socket::SocketMode;

/// How long [`SlackApp::start`] waits for Socket Mode's first `hello`.
const HELLO_WAIT: Duration = Duration::from_secs(20);

/// The Slack front end: started by `tradebox serve` when Slack is
/// configured.
pub struct SlackApp {
    accept: Arc<Acceptor>,
    identity: Identity,
    mode: Mode,
    socket: Option<SocketMode>,
    /// For the HTTP routes' signature check.
    signing_secret: Option<String>,
}

impl SlackApp {
    /// Checks the bot token (`auth.test`) and, with an app token, checks it
    /// (`apps.connections.open`), starts Socket Mode and waits (up to 20 s)
    /// for Slack's `hello`.
    pub async fn start(
        pipeline: Arc<Pipeline>,
        settings: SlackSettings,
    ) -> Result<SlackApp, Error> {
        let (api, identity) = check_bot_token(&settings).await?;
        let missing = identity.missing_scopes();
        if !missing.is_empty() {
            tracing::warn!(
                "the bot token lacks the scopes {}: add them under OAuth & Permissions and \
                 reinstall the app (tradebox doctor lists them)",
                missing.join(", ")
            );
        }
        let mode = settings.mode();
        let accept = Acceptor::new(
            pipeline,
            Deliverer {
                api: api.with_retry(settings.reply_retry.clone()),
                bot_user_id: identity.user_id.clone(),
                bot_name: if identity.user.is_empty() {
                    "tradebox".into()
                } else {
                    identity.user.clone()
                },
            },
        );
        let socket = match (&settings.app_token, mode) {
            (Some(app_token), Mode::SocketMode) => {
                check_app_token(&api, app_token).await?;
                let socket = SocketMode::start(
                    Arc::clone(&accept),
                    &api,
                    app_token,
                    settings.socket_connections,
                )
                .await?;
                if !socket.wait_for_hello(HELLO_WAIT).await {
                    tracing::warn!(
                        "Socket Mode has not connected within {HELLO_WAIT:?}; still trying"
                    );
                }
                Some(socket)
            }
            _ => None,
        };
        Ok(SlackApp {
            accept,
            identity,
            mode,
            socket,
            signing_secret: settings.signing_secret,
        })
    }

    /// The HTTP-mode routes (`/slack/commands`, `/slack/interactivity`,
    /// `/slack/events`), signature-checked; `None` in Socket Mode.
    pub fn router(&self) -> Option<axum::Router> {
        match self.mode {
            Mode::Http => Some(http::router(
                Arc::clone(&self.accept),
                self.signing_secret.clone().unwrap_or_default(),
            )),
            Mode::SocketMode => None,
        }
    }

    /// A one-line description for the ready banner.
    pub fn describe(&self) -> String {
        let who = format!(
            "as @{} in {} ({})",
            self.identity.user, self.identity.team, self.identity.team_id
        );
        let missing = self.identity.missing_scopes();
        let warning = if missing.is_empty() {
            String::new()
        } else {
            format!("; MISSING SCOPES {}", missing.join(", "))
        };
        match self.mode {
            Mode::SocketMode => format!("Slack: Socket Mode {who}{warning}"),
            Mode::Http => format!(
                "Slack: HTTP endpoints /slack/commands and /slack/interactivity {who}{warning}"
            ),
        }
    }

    /// Checks the tokens as [`SlackApp::start`] does, without starting
    /// anything (for `tradebox doctor`): who the bot is and its scopes.
    pub async fn check(settings: &SlackSettings) -> Result<Identity, Error> {
        let (api, identity) = check_bot_token(settings).await?;
        if let Some(app_token) = &settings.app_token {
            check_app_token(&api, app_token).await?;
        }
        Ok(identity)
    }

    /// Who the bot is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Requests taken and still running or posting their reply.
    pub fn in_flight(&self) -> usize {
        self.accept.in_flight()
    }

    /// Stops taking new events, waits for running commands to finish and
    /// post their replies.
    pub async fn shutdown(self) {
        self.accept.stop();
        if let Some(socket) = &self.socket {
            socket.shutdown().await;
        }
        self.accept.drain().await;
    }
}

/// The Web API client and `auth.test` of the bot token.
async fn check_bot_token(settings: &SlackSettings) -> Result<(Api, Identity), Error> {
    install_crypto_provider();
    warn_plain_http(&settings.api_url);
    let api = Api::new(
        &settings.api_url,
        &settings.bot_token,
        settings.retry.clone(),
    )?;
    let identity = api
        .auth_test()
        .await
        .map_err(|e| token_error("SLACK_BOT_TOKEN", e))?;
    Ok((api, identity))
}

async fn check_app_token(api: &Api, app_token: &str) -> Result<(), Error> {
    api.check_app_token(app_token)
        .await
        .map_err(|e| token_error("SLACK_APP_TOKEN", e))
}

/// A refused token is a configuration error with advice; anything else
/// (Slack unreachable) is reported as it is.
fn token_error(what: &'static str, e: ApiError) -> Error {
    let advice = match what {
        "SLACK_APP_TOKEN" => {
            "use an App-Level Token (xapp-...) with the connections:write scope, from Basic \
             Information > App-Level Tokens, and enable Socket Mode"
        }
        _ => {
            "use the Bot User OAuth Token (xoxb-...) from OAuth & Permissions, after \
             installing the app to the workspace"
        }
    };
    match e.code() {
        Some(
            code @ ("invalid_auth"
            | "not_authed"
            | "account_inactive"
            | "token_revoked"
            | "token_expired"
            | "not_allowed_token_type"
            | "missing_scope"),
        ) => Error::Auth {
            what,
            code: code.to_string(),
            advice,
        },
        _ => Error::Api(e),
    }
}

fn warn_plain_http(api_url: &str) {
    let Ok(url) = url::Url::parse(api_url) else {
        return;
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        tracing::warn!(
            "the Slack API URL {api_url} is plain HTTP beyond loopback: tokens travel unencrypted"
        );
    }
}
