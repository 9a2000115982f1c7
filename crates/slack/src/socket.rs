//! Socket Mode on slack-morphism's listener.
//!
//! slack-morphism opens `apps.connections.open` WebSockets (two by default,
//! so one keeps serving while the other reconnects), answers pings,
//! reconnects after a `disconnect` envelope (Slack's periodic refresh), a
//! closed or reset socket, or missed pongs, and acknowledges an envelope
//! when its callback returns. The callbacks here therefore only hand the
//! delivery to the accept path (`accept`, which spawns it) and
//! return at once. Slack's `hello`s are counted, so that the app can wait
//! for the first (`SocketMode::wait_for_hello`).
//!
//! Two workarounds:
//!
//! - slack-morphism sends a slash command's callback result as the ack's
//!   `payload`, and an empty payload (`{}`) may be shown to the user. The
//!   command callback therefore returns a marker error (`Ack::Bare`) that
//!   the error handler turns into "success": slack-morphism then sends a
//!   bare `{"envelope_id": ...}` ack.
//! - When slack-morphism cannot decode an envelope (a field its types
//!   require is missing, a shape it does not know), it acknowledges it and
//!   passes the raw JSON to the error handler; the handler decodes the
//!   button press leniently ([`crate::payload`]) and takes it, so no press
//!   is lost to a change on Slack's side.
//!
//! While shutting down, deliveries are refused without an ack
//! (`Ack::Refuse`): Slack delivers them to another connection.
//!
//! A limit: slack-morphism opens its WebSocket with tokio-tungstenite's
//! `connect_async`, which leaves Nagle's algorithm on, and offers no way to
//! set `TCP_NODELAY`. In a burst, the first ack leaves at once and the
//! next ones wait for the peer's (delayed) TCP ACK, about 40 ms on Linux:
//! `benches/slack.sh` measures a p99 of about 43 ms for 50 concurrent
//! commands, within the 100 ms target and far from Slack's 3 s window.

use std::sync::Arc;
use std::time::Duration;

use slack_morphism::errors::{SlackClientError, SlackClientProtocolError};
use slack_morphism::events::{SlackInteractionEvent, SlackInteractionResponse};
use slack_morphism::listener::{
    HttpStatusCode, SlackClientEventsListenerEnvironment, SlackClientEventsUserState,
};
use slack_morphism::prelude::{
    SlackCommandEvent, SlackCommandEventResponse, SlackPushEventCallback,
};
use slack_morphism::{
    SlackApiToken, SlackApiTokenValue, SlackClientSocketModeConfig, SlackClientSocketModeListener,
    SlackSocketModeListenerCallbacks, UserCallbackResult,
};
use tokio::sync::watch;

use crate::accept::{Accepted, Acceptor};
use crate::api::{Api, Client, Connector};
use crate::error::Error;
use crate::payload::{Incoming, PayloadError};

/// Seconds between reconnection attempts when `apps.connections.open`
/// fails (slack-morphism's default is 30).
const RECONNECT_SECONDS: u64 = 5;
/// Pings every 10 s; a connection without a pong for 3 pings is replaced.
const PING_SECONDS: u64 = 10;
const PING_FAILURES: u64 = 3;

/// The marker errors a callback returns to steer the acknowledgement.
#[derive(Debug, thiserror::Error)]
enum Ack {
    /// Taken: acknowledge without a payload.
    #[error("acknowledged")]
    Bare,
    /// Shutting down: do not acknowledge.
    #[error("shutting down: not acknowledged")]
    Refuse,
}

/// The user state slack-morphism hands to every callback.
#[derive(Clone)]
struct State {
    accept: Arc<Acceptor>,
    /// Slack's `hello`s received so far.
    hellos: watch::Sender<u64>,
}

/// A running Socket Mode listener.
pub(crate) struct SocketMode {
    listener: SlackClientSocketModeListener<Connector>,
    hellos: watch::Receiver<u64>,
}

impl SocketMode {
    /// Opens `connections` WebSockets with `app_token` and hands every
    /// delivery to `accept`.
    pub(crate) async fn start(
        accept: Arc<Acceptor>,
        api: &Api,
        app_token: &str,
        connections: u32,
    ) -> Result<SocketMode, Error> {
        let (hellos, hellos_rx) = watch::channel(0u64);
        let environment = Arc::new(
            SlackClientEventsListenerEnvironment::new(api.client())
                .with_error_handler(on_error)
                .with_user_state(State { accept, hellos }),
        );
        let callbacks = SlackSocketModeListenerCallbacks::new()
            .with_hello_events(on_hello)
            .with_command_events(on_command)
            .with_interaction_events(on_interaction)
            .with_push_events(on_push);
        let config = SlackClientSocketModeConfig::new()
            .with_max_connections_count(connections.max(1))
            .with_reconnect_timeout_in_seconds(RECONNECT_SECONDS)
            .with_ping_interval_in_seconds(PING_SECONDS)
            .with_ping_failure_threshold_times(PING_FAILURES)
            .with_initial_backoff_in_seconds(1);
        let listener = SlackClientSocketModeListener::new(&config, environment, callbacks);
        let token = SlackApiToken::new(SlackApiTokenValue(app_token.to_string()));
        listener
            .listen_for(&token)
            .await
            .map_err(|e| Error::Config(format!("Socket Mode could not start: {e}")))?;
        listener.start().await;
        Ok(SocketMode {
            listener,
            hellos: hellos_rx,
        })
    }

    /// Waits up to `limit` for Slack's first `hello`; `false` if none came.
    pub(crate) async fn wait_for_hello(&self, limit: Duration) -> bool {
        let mut hellos = self.hellos.clone();
        tokio::time::timeout(limit, hellos.wait_for(|n| *n > 0))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// Closes every connection (no new deliveries).
    pub(crate) async fn shutdown(&self) {
        self.listener.shutdown().await;
    }
}

async fn state(states: &SlackClientEventsUserState) -> Option<State> {
    let storage = states.read().await;
    storage.get_user_state::<State>().cloned()
}

fn steer(accepted: Accepted) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(match accepted {
        Accepted::Started | Accepted::Duplicate => Ack::Bare,
        Accepted::Closed => Ack::Refuse,
    })
}

/// Slack's `hello` on a new connection. Generic because slack-morphism's
/// `SlackSocketModeHelloEvent` cannot be named from outside the crate (its
/// module path is shadowed); the type is inferred.
async fn on_hello<E: std::fmt::Debug>(
    event: E,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) {
    tracing::info!("Socket Mode connected: {event:?}");
    if let Some(state) = state(&states).await {
        state.hellos.send_modify(|n| *n += 1);
    }
}

async fn on_command(
    event: SlackCommandEvent,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<SlackCommandEventResponse> {
    let Some(state) = state(&states).await else {
        return Err(Box::new(Ack::Refuse));
    };
    Err(steer(state.accept.accept(Incoming::from_command(&event))))
}

async fn on_interaction(
    event: SlackInteractionEvent,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<SlackInteractionResponse> {
    let SlackInteractionEvent::BlockActions(actions) = &event else {
        return Ok(SlackInteractionResponse::Empty);
    };
    let Some(state) = state(&states).await else {
        return Err(Box::new(Ack::Refuse));
    };
    match Incoming::from_block_actions(actions) {
        Ok(incoming) => match state.accept.accept(incoming) {
            Accepted::Closed => Err(Box::new(Ack::Refuse)),
            Accepted::Started | Accepted::Duplicate => Ok(SlackInteractionResponse::Empty),
        },
        Err(e) => {
            tracing::warn!("a button press tradebox cannot use: {e}");
            Ok(SlackInteractionResponse::Empty)
        }
    }
}

async fn on_push(
    _event: SlackPushEventCallback,
    _client: Arc<Client>,
    _states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    Ok(())
}

/// slack-morphism's error handler: turns the marker errors into the ack
/// decision, rescues envelopes it could not decode, logs the rest.
fn on_error(
    err: Box<dyn std::error::Error + Send + Sync>,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> HttpStatusCode {
    if let Some(ack) = err.downcast_ref::<Ack>() {
        return match ack {
            Ack::Bare => HttpStatusCode::OK,
            Ack::Refuse => HttpStatusCode::SERVICE_UNAVAILABLE,
        };
    }
    let protocol = err
        .downcast_ref::<SlackClientProtocolError>()
        .or_else(|| match err.downcast_ref::<SlackClientError>() {
            Some(SlackClientError::ProtocolError(p)) => Some(p),
            _ => None,
        });
    if let Some(body) = protocol.and_then(|p| p.json_body.as_deref()) {
        rescue(body, &states);
        return HttpStatusCode::OK;
    }
    tracing::warn!("Slack Socket Mode: {err}");
    HttpStatusCode::OK
}

/// Takes a button press from an envelope slack-morphism could not decode.
fn rescue(body: &str, states: &SlackClientEventsUserState) {
    let envelope: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("Socket Mode sent a frame that is not JSON: {e}");
            return;
        }
    };
    if envelope["type"] != "interactive" {
        tracing::warn!(
            kind = %envelope["type"],
            "Socket Mode envelope slack-morphism could not decode; acknowledged and ignored"
        );
        return;
    }
    let payload = envelope["payload"].to_string();
    let accept = match states.try_read() {
        Ok(storage) => storage
            .get_user_state::<State>()
            .map(|s| Arc::clone(&s.accept)),
        Err(_) => None,
    };
    match (Incoming::from_interaction_json(&payload), accept) {
        (Ok(incoming), Some(accept)) => {
            tracing::info!("took a button press slack-morphism could not decode");
            let _ = accept.accept(incoming);
        }
        (Err(PayloadError::Ignored(what)), _) => tracing::debug!("ignored {what}"),
        (Err(e), _) => tracing::warn!("an interaction tradebox cannot use: {e}"),
        (Ok(_), None) => tracing::error!("Socket Mode state missing; a button press was dropped"),
    }
}
