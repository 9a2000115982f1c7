//! A fake Slack for tests and benchmarks, speaking Slack's wire protocols
//! over loopback only:
//!
//! - the Web API methods tradebox uses, at `http://127.0.0.1:PORT/api/`:
//!   `auth.test` (with the `x-oauth-scopes` header), `apps.connections.open`,
//!   `chat.postMessage`, `chat.update`, `chat.delete`, `chat.postEphemeral`,
//!   `files.getUploadURLExternal`, the upload URL it hands out, and
//!   `files.completeUploadExternal`; bearer tokens are checked;
//! - `response_url`s (`/response/N`), one per delivered command or action;
//! - the Socket Mode WebSocket (`ws://127.0.0.1:PORT2/link`): `hello` on
//!   connect, envelopes (`slash_commands`, `interactive`) spread over the
//!   open connections, acks matched to envelopes, unacknowledged envelopes
//!   redelivered on the next connection (as Slack does), `disconnect`
//!   (refresh) and dropped sockets;
//! - HTTP mode: slash commands and button presses signed with the v0
//!   signature (or deliberately badly) and POSTed to the app.
//!
//! Every Web API call is recorded (failed ones too), and failures can be
//! queued per method: HTTP 429 with `Retry-After`, HTTP 500, or an
//! `ok: false` error such as `not_in_channel`. Channels can be made
//! unreachable for the bot ([`FakeSlack::deny_channel`]).
//!
//! The server runs on its own Tokio runtime, so it serves while a test
//! thread blocks. Its `async` methods can be awaited from any runtime (they
//! run on the fake's own); [`FakeSlack::block_on`] runs one from plain
//! synchronous code.
//!
//! This file is the control and inspection surface ([`FakeSlack`]: start,
//! switches, what happened, [`FakeSlack::wait_for`]); the rest is split by
//! concern:
//!
//! - `state`: the workspace's names and tokens, the public record types,
//!   the state the servers share;
//! - `socket_mode`: the Socket Mode server and [`FakeSlack::send_command`],
//!   [`FakeSlack::click`];
//! - `web_api`: the Web API methods, recording and failures, uploads,
//!   `response_url`s;
//! - `http_mode`: v0 signatures and [`FakeSlack::http_command`],
//!   [`FakeSlack::http_click`];
//! - `payloads`: the slash command and `block_actions` payloads both modes
//!   send.

mod http_mode;
mod payloads;
mod socket_mode;
mod state;
mod web_api;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Notify;

pub use http_mode::{signature, HttpAnswer, Sign};
pub use state::{
    Ack, Call, Ephemeral, Failure, FakeError, Message, ResponsePost, SharedFile, SlashCommand,
    APP_ID, APP_TOKEN, BOT_ID, BOT_NAME, BOT_TOKEN, BOT_USER_ID, CHANNEL, DEFAULT_SCOPES,
    SIGNING_SECRET, TEAM, TEAM_ID, USER,
};
use state::{Data, Shared, WsCommand};

/// The fake Slack (stopped on drop).
pub struct FakeSlack {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    shared: Arc<Shared>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl FakeSlack {
    /// Starts the fake on 127.0.0.1 (two free ports).
    pub fn start() -> Result<FakeSlack, FakeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-slack")
            .enable_all()
            .build()
            .map_err(|e| FakeError::Other(format!("runtime: {e}")))?;
        let handle = runtime.handle().clone();
        // Bound with std and handed to Tokio: start() may be called from
        // inside another runtime, where block_on is not allowed.
        let bind = || -> std::io::Result<std::net::TcpListener> {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.set_nonblocking(true)?;
            Ok(l)
        };
        let (http, ws) = (
            bind().map_err(|e| FakeError::Other(format!("bind: {e}")))?,
            bind().map_err(|e| FakeError::Other(format!("bind: {e}")))?,
        );
        let (http_addr, ws_addr) = (
            http.local_addr()
                .map_err(|e| FakeError::Other(e.to_string()))?,
            ws.local_addr()
                .map_err(|e| FakeError::Other(e.to_string()))?,
        );
        let (http, ws) = {
            let _guard = runtime.enter();
            (
                tokio::net::TcpListener::from_std(http)
                    .map_err(|e| FakeError::Other(e.to_string()))?,
                tokio::net::TcpListener::from_std(ws)
                    .map_err(|e| FakeError::Other(e.to_string()))?,
            )
        };
        let client = {
            let _guard = runtime.enter();
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http()
        };
        let shared = Arc::new(Shared {
            data: Mutex::new(Data::default()),
            changed: Notify::new(),
            http_base: format!("http://{http_addr}"),
            ws_base: format!("ws://{ws_addr}"),
            client,
        });
        let app = web_api::router(Arc::clone(&shared));
        runtime.spawn(async move {
            if let Err(e) = axum::serve(http, app).await {
                eprintln!("fake slack: HTTP server stopped: {e}");
            }
        });
        runtime.spawn(socket_mode::accept_sockets(ws, Arc::clone(&shared)));
        Ok(FakeSlack {
            runtime: Some(runtime),
            handle,
            shared,
        })
    }

    /// The Web API base URL, for `SLACK_API_URL`.
    pub fn api_url(&self) -> String {
        format!("{}/api/", self.shared.http_base)
    }

    /// The address of the HTTP server.
    pub fn http_addr(&self) -> SocketAddr {
        self.shared
            .http_base
            .trim_start_matches("http://")
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Runs a future on the fake's runtime from synchronous code (not from
    /// inside an async context).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }

    /// Runs `f` on the fake's runtime; awaitable from any runtime.
    async fn on_runtime<T, F>(&self, f: F) -> Result<T, FakeError>
    where
        F: Future<Output = Result<T, FakeError>> + Send + 'static,
        T: Send + 'static,
    {
        self.handle
            .spawn(f)
            .await
            .map_err(|e| FakeError::Other(format!("fake task failed: {e}")))?
    }

    // ---- switches --------------------------------------------------------

    /// The next calls of `method` fail, one failure each, in order.
    pub fn fail(&self, method: &str, failures: &[Failure]) {
        self.shared
            .lock()
            .failures
            .entry(method.to_string())
            .or_default()
            .extend(failures.iter().cloned());
    }

    /// Every Web API method answers 503 for `length` from now (uploads and
    /// `response_url`s, on other hosts at Slack, still work).
    pub fn outage(&self, length: Duration) {
        self.shared.lock().outage_until = Some(Instant::now() + length);
    }

    /// The bot cannot post in `channel`: calls naming it answer `code`
    /// (`not_in_channel`, `channel_not_found`).
    pub fn deny_channel(&self, channel: &str, code: &str) {
        self.shared
            .lock()
            .denied
            .insert(channel.to_string(), code.to_string());
    }

    /// The scopes `auth.test` reports (comma-separated).
    pub fn set_scopes(&self, scopes: &str) {
        self.shared.lock().scopes = Some(scopes.to_string());
    }

    /// The next `n` envelopes are each followed at once by a dropped
    /// socket, before the app can acknowledge them; Slack then redelivers
    /// them on the next connection.
    pub fn drop_after_delivery(&self, n: u32) {
        self.shared.lock().drop_after_delivery += n;
    }

    /// The next `n` envelopes are each delivered on every open connection
    /// at once, as Slack may deliver one again elsewhere when its
    /// acknowledgement seems late: with several replicas, each of them gets
    /// the same command.
    pub fn duplicate_deliveries(&self, n: u32) {
        self.shared.lock().duplicate += n;
    }

    /// Drops every open socket (no closing handshake).
    pub fn drop_sockets(&self) {
        let data = self.shared.lock();
        for tx in data.sockets.values() {
            let _ = tx.send(WsCommand::Drop);
        }
    }

    /// Sends Slack's `disconnect` envelope (`refresh_requested`, ...) on
    /// every socket; Slack closes them 10 s later, the fake after `grace`.
    pub fn disconnect(&self, reason: &str, grace: Duration) {
        let frame = json!({
            "type": "disconnect",
            "reason": reason,
            "debug_info": {"host": "fake-slack"},
        })
        .to_string();
        let senders: Vec<_> = self.shared.lock().sockets.values().cloned().collect();
        for tx in &senders {
            let _ = tx.send(WsCommand::Send(frame.clone()));
        }
        self.handle.spawn(async move {
            tokio::time::sleep(grace).await;
            for tx in senders {
                let _ = tx.send(WsCommand::Drop);
            }
        });
    }

    // ---- what happened ---------------------------------------------------

    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// Calls of one method.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    pub fn messages(&self) -> Vec<Message> {
        self.shared.lock().messages.clone()
    }

    pub fn ephemerals(&self) -> Vec<Ephemeral> {
        self.shared.lock().ephemerals.clone()
    }

    pub fn responses(&self) -> Vec<ResponsePost> {
        self.shared.lock().responses.clone()
    }

    pub fn files(&self) -> Vec<SharedFile> {
        self.shared.lock().files.clone()
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.shared.lock().acks.clone()
    }

    /// `apps.connections.open` calls answered so far.
    pub fn connections_opened(&self) -> u32 {
        self.shared.lock().opens
    }

    /// WebSocket connections made so far.
    pub fn sockets_connected(&self) -> u32 {
        self.shared.lock().connects
    }

    /// Sockets open now.
    pub fn live_sockets(&self) -> usize {
        self.shared.lock().sockets.len()
    }

    /// Waits until `check` finds something in the recorded state.
    pub async fn wait_for<T, F>(
        &self,
        what: &str,
        limit: Duration,
        check: F,
    ) -> Result<T, FakeError>
    where
        F: Fn(&FakeView<'_>) -> Option<T> + Send + 'static,
        T: Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let what = what.to_string();
        self.on_runtime(async move {
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                let notified = shared.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                {
                    let data = shared.lock();
                    if let Some(found) = check(&FakeView { data: &data }) {
                        return Ok(found);
                    }
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Err(FakeError::Timeout(limit, what));
                }
            }
        })
        .await
    }
}

/// A read-only view of the recorded state, for [`FakeSlack::wait_for`].
pub struct FakeView<'a> {
    data: &'a Data,
}

impl FakeView<'_> {
    pub fn calls(&self) -> &[Call] {
        &self.data.calls
    }
    pub fn messages(&self) -> &[Message] {
        &self.data.messages
    }
    pub fn ephemerals(&self) -> &[Ephemeral] {
        &self.data.ephemerals
    }
    pub fn responses(&self) -> &[ResponsePost] {
        &self.data.responses
    }
    pub fn files(&self) -> &[SharedFile] {
        &self.data.files
    }
    pub fn acks(&self) -> &[Ack] {
        &self.data.acks
    }
    pub fn live_sockets(&self) -> usize {
        self.data.sockets.len()
    }
    pub fn sockets_connected(&self) -> u32 {
        self.data.connects
    }
}
