//! [`SlackApp`]: the Slack front end as `tradebox serve` runs it.
//!
//! Every delivery (slash command or Run button, from Socket Mode or HTTP)
//! goes through [`Inner::accept`], which is synchronous and quick: a
//! repeat of a delivery already taken is only acknowledged; anything else
//! is spawned as a task and acknowledged at once, whatever the sandbox is
//! doing. The task runs the pipeline and posts the reply
//! ([`crate::deliver`]). Shutdown stops taking deliveries, closes the
//! sockets, and waits for every task to post its reply.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio_util::task::TaskTracker;
use tradebox_core::audit::Source;
use tradebox_core::pipeline::{Pipeline, Request};
use tradebox_core::reply::Reply;

use crate::api::{Api, ApiError, Identity};
use crate::dedupe::Seen;
use crate::deliver::{Deliverer, Placeholder};
use crate::payload::Incoming;
use crate::settings::{Mode, SlackSettings};
use crate::socket::SocketMode;
use crate::Error;

/// How long [`SlackApp::start`] waits for Socket Mode's first `hello`.
const HELLO_WAIT: Duration = Duration::from_secs(20);

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// Taken: it runs now.
    Started,
    /// Taken before (a redelivery or a retry): acknowledged, not run again.
    Duplicate,
    /// Shutting down: not acknowledged, so that Slack can deliver it to
    /// another connection.
    Closed,
}

/// State shared by the transports and the running tasks.
pub(crate) struct Inner {
    pipeline: Arc<Pipeline>,
    deliver: Deliverer,
    seen: Mutex<Seen>,
    tasks: TaskTracker,
    accepting: AtomicBool,
    pub(crate) signing_secret: Option<String>,
    /// Socket Mode `hello`s received so far.
    hellos: watch::Sender<u64>,
}

impl Inner {
    /// Takes a delivery (see the module documentation).
    pub(crate) fn accept(self: &Arc<Self>, incoming: Incoming) -> Accepted {
        if !self.accepting.load(Ordering::SeqCst) {
            return Accepted::Closed;
        }
        let first = match self.seen.lock() {
            Ok(mut seen) => seen.first(&incoming.key, Instant::now()),
            Err(poisoned) => poisoned.into_inner().first(&incoming.key, Instant::now()),
        };
        if !first {
            tracing::info!(key = %incoming.key, "a delivery seen before: acknowledged, not run again");
            return Accepted::Duplicate;
        }
        let inner = Arc::clone(self);
        self.tasks.spawn(async move { inner.run(incoming).await });
        Accepted::Started
    }

    /// Runs one request through the pipeline and posts its reply.
    async fn run(&self, incoming: Incoming) {
        let request = Request {
            user: incoming.user.clone(),
            channel: Some(incoming.channel.clone()),
            source: Source::Slack,
            input: incoming.input.clone(),
        };
        let (tx, rx) = oneshot::channel::<Reply>();
        let placeholder = {
            let deliver = self.deliver.clone();
            let to = incoming.clone();
            tokio::spawn(async move {
                match rx.await {
                    Ok(reply) => deliver.placeholder(&to, &reply).await,
                    Err(_) => Placeholder::None,
                }
            })
        };
        let reply = self
            .pipeline
            .handle(&request, move |p: Reply| {
                let _ = tx.send(p);
            })
            .await;
        let placeholder = placeholder.await.unwrap_or(Placeholder::None);
        self.deliver.finish(&incoming, &reply, placeholder).await;
    }

    pub(crate) fn hello(&self) {
        self.hellos.send_modify(|n| *n += 1);
    }
}

/// The Slack front end: started by `tradebox serve` when Slack is
/// configured.
pub struct SlackApp {
    inner: Arc<Inner>,
    identity: Identity,
    mode: Mode,
    socket: Option<SocketMode>,
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
        let (hellos, mut hello_rx) = watch::channel(0u64);
        let inner = Arc::new(Inner {
            pipeline,
            deliver: Deliverer {
                api: api.clone(),
                bot_user_id: identity.user_id.clone(),
                bot_name: if identity.user.is_empty() {
                    "tradebox".into()
                } else {
                    identity.user.clone()
                },
            },
            seen: Mutex::new(Seen::default()),
            tasks: TaskTracker::new(),
            accepting: AtomicBool::new(true),
            signing_secret: settings.signing_secret.clone(),
            hellos,
        });
        let socket = match (&settings.app_token, mode) {
            (Some(app_token), Mode::SocketMode) => {
                check_app_token(&api, app_token).await?;
                let socket = SocketMode::start(
                    Arc::clone(&inner),
                    &api,
                    app_token,
                    settings.socket_connections,
                )
                .await?;
                match tokio::time::timeout(HELLO_WAIT, hello_rx.wait_for(|n| *n > 0)).await {
                    Ok(Ok(_)) => {}
                    _ => tracing::warn!(
                        "Socket Mode has not connected within {HELLO_WAIT:?}; still trying"
                    ),
                }
                Some(socket)
            }
            _ => None,
        };
        Ok(SlackApp {
            inner,
            identity,
            mode,
            socket,
        })
    }

    /// The HTTP-mode routes (`/slack/commands`, `/slack/interactivity`,
    /// `/slack/events`), signature-checked; `None` in Socket Mode.
    pub fn router(&self) -> Option<axum::Router> {
        match self.mode {
            Mode::Http => Some(crate::http::router(Arc::clone(&self.inner))),
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
        self.inner.tasks.len()
    }

    /// Stops taking new events, waits for running commands to finish and
    /// post their replies.
    pub async fn shutdown(self) {
        self.inner.accepting.store(false, Ordering::SeqCst);
        if let Some(socket) = &self.socket {
            socket.shutdown().await;
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// The Web API client and `auth.test` of the bot token.
async fn check_bot_token(settings: &SlackSettings) -> Result<(Api, Identity), Error> {
    crate::install_crypto_provider();
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
