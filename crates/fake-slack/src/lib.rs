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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The bot token the fake accepts.
pub const BOT_TOKEN: &str = "xoxb-fake-0000-bot-token";
/// The app-level token the fake accepts (Socket Mode).
pub const APP_TOKEN: &str = "xapp-1-fake-0000-app-token";
/// The signing secret of HTTP-mode requests.
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const TEAM_ID: &str = "T0FAKE";
pub const TEAM: &str = "Fake Trading Desk";
pub const BOT_USER_ID: &str = "U0BOT";
pub const BOT_NAME: &str = "tradebox";
pub const BOT_ID: &str = "B0BOT";
pub const APP_ID: &str = "A0FAKE";
/// The scopes `auth.test` reports unless told otherwise.
pub const DEFAULT_SCOPES: &str = "commands,chat:write,files:write,files:read";
/// The user and channel of [`SlashCommand::new`].
pub const USER: &str = "U0ALICE";
pub const CHANNEL: &str = "C0GENERAL";

/// What went wrong talking to the fake.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    #[error("{0}")]
    Other(String),
}

/// A failure the next call of a method gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// HTTP 429 with `Retry-After: secs`.
    RateLimited { retry_after: u64 },
    /// HTTP 500.
    ServerError,
    /// HTTP 200 with `{"ok": false, "error": code}`.
    Error(String),
}

/// One recorded Web API call (or upload, or `response_url` post).
#[derive(Debug, Clone)]
pub struct Call {
    /// `chat.postMessage`, ..., `upload`, `response_url`.
    pub method: String,
    /// Query and body parameters merged (JSON bodies as they are).
    pub params: Value,
    pub token: Option<String>,
    pub at: Instant,
    /// `None` when answered `ok`, else what was answered.
    pub failed: Option<String>,
}

/// A message in a channel, as posted and updated.
#[derive(Debug, Clone)]
pub struct Message {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub text: String,
    pub blocks: Value,
    /// Earlier versions (text and blocks) before each `chat.update`.
    pub history: Vec<Value>,
    pub deleted: bool,
}

impl Message {
    /// Every string in the message (text and blocks), for searching.
    pub fn all_text(&self) -> String {
        let mut out = self.text.clone();
        collect_strings(&self.blocks, &mut out);
        out
    }
}

/// An ephemeral message (`chat.postEphemeral`).
#[derive(Debug, Clone)]
pub struct Ephemeral {
    pub channel: String,
    pub user: String,
    pub text: String,
    pub blocks: Value,
}

/// A post to a `response_url`.
#[derive(Debug, Clone)]
pub struct ResponsePost {
    /// The trigger id of the delivery the URL belongs to.
    pub trigger_id: String,
    pub body: Value,
}

impl ResponsePost {
    pub fn in_channel(&self) -> bool {
        self.body["response_type"] == "in_channel"
    }

    pub fn all_text(&self) -> String {
        let mut out = String::new();
        collect_strings(&self.body, &mut out);
        out
    }
}

/// A file shared with `files.completeUploadExternal`.
#[derive(Debug, Clone)]
pub struct SharedFile {
    pub id: String,
    pub filename: String,
    pub title: String,
    pub bytes: Vec<u8>,
    pub channel: Option<String>,
    pub thread_ts: Option<String>,
}

/// An acknowledgement received over Socket Mode.
#[derive(Debug, Clone)]
pub struct Ack {
    pub envelope_id: String,
    /// From sending the envelope (its last delivery) to its ack.
    pub latency: Duration,
    /// The ack's `payload`, if it had one.
    pub payload: Option<Value>,
    /// How many times the envelope was delivered before this ack.
    pub deliveries: u32,
    pub trigger_id: String,
}

/// A slash command to send.
#[derive(Debug, Clone)]
pub struct SlashCommand {
    pub command: String,
    pub text: String,
    pub user: String,
    pub channel: String,
}

impl SlashCommand {
    /// `/command text` from [`USER`] in [`CHANNEL`].
    pub fn new(command: &str, text: &str) -> SlashCommand {
        SlashCommand {
            command: command.to_string(),
            text: text.to_string(),
            user: USER.to_string(),
            channel: CHANNEL.to_string(),
        }
    }

    pub fn user(mut self, user: &str) -> SlashCommand {
        self.user = user.to_string();
        self
    }

    pub fn channel(mut self, channel: &str) -> SlashCommand {
        self.channel = channel.to_string();
        self
    }
}

/// How an HTTP-mode request is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// A valid v0 signature with [`SIGNING_SECRET`] and the current time.
    Good,
    /// Signed with another secret.
    Bad,
    /// Validly signed, but 6 minutes old.
    Stale,
    /// No signature headers at all.
    Missing,
}

/// The app's answer to an HTTP-mode request.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
    pub latency: Duration,
    pub trigger_id: String,
}

enum WsCommand {
    Send(String),
    /// Close the TCP connection without a closing handshake.
    Drop,
    /// Send, then drop at once: nothing the app answers to this frame
    /// (its ack) is read.
    SendThenDrop(String),
}

struct Pending {
    envelope: Value,
    trigger_id: String,
    conn: Option<u64>,
    sent_at: Instant,
    deliveries: u32,
    waiter: Option<oneshot::Sender<Ack>>,
}

#[derive(Default)]
struct Data {
    calls: Vec<Call>,
    failures: HashMap<String, VecDeque<Failure>>,
    messages: Vec<Message>,
    ephemerals: Vec<Ephemeral>,
    responses: Vec<ResponsePost>,
    /// response_url id -> trigger id.
    response_urls: HashMap<u64, String>,
    uploads: HashMap<String, (String, usize, Option<Vec<u8>>)>,
    files: Vec<SharedFile>,
    denied: HashMap<String, String>,
    scopes: Option<String>,
    next: u64,
    sockets: BTreeMap<u64, mpsc::UnboundedSender<WsCommand>>,
    round_robin: u64,
    pending: BTreeMap<String, Pending>,
    acks: Vec<Ack>,
    opens: u32,
    connects: u32,
    drop_after_delivery: u32,
}

impl Data {
    fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn next_ts(&mut self) -> String {
        let n = self.next_id();
        format!("1700000000.{n:06}")
    }
}

struct Shared {
    data: Mutex<Data>,
    changed: Notify,
    http_base: String,
    ws_base: String,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Data> {
        match self.data.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn touch(&self) {
        self.changed.notify_waiters();
    }
}

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
        let app = Router::new()
            .route("/api/{method}", any(web_api))
            .route("/upload/{id}", post(upload))
            .route("/response/{id}", post(response_url))
            .with_state(Arc::clone(&shared));
        runtime.spawn(async move {
            if let Err(e) = axum::serve(http, app).await {
                eprintln!("fake slack: HTTP server stopped: {e}");
            }
        });
        runtime.spawn(accept_sockets(ws, Arc::clone(&shared)));
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

    // ---- Socket Mode -----------------------------------------------------

    /// Waits until at least `n` sockets are open.
    pub async fn wait_for_sockets(&self, n: usize, limit: Duration) -> Result<(), FakeError> {
        self.wait_for("open sockets", limit, move |v| {
            (v.data.sockets.len() >= n).then_some(())
        })
        .await
    }

    /// Sends a slash command over Socket Mode and waits for its ack.
    pub async fn send_command(
        &self,
        cmd: &SlashCommand,
        limit: Duration,
    ) -> Result<Ack, FakeError> {
        let (envelope, trigger_id) = {
            let mut data = self.shared.lock();
            command_envelope(&mut data, &self.shared.http_base, cmd)
        };
        self.send_envelope(envelope, trigger_id, limit).await
    }

    /// Presses the button `action_id` in `message` (as `user`) over
    /// Socket Mode and waits for the ack; the payload is built as Slack
    /// builds it, with the message and its blocks.
    pub async fn click(
        &self,
        message: &Message,
        action_id: &str,
        user: &str,
        limit: Duration,
    ) -> Result<Ack, FakeError> {
        self.click_edited(message, action_id, user, |_| {}, limit)
            .await
    }

    /// [`FakeSlack::click`] with the `block_actions` payload changed by
    /// `edit` first (a field Slack might add, rename or drop).
    pub async fn click_edited(
        &self,
        message: &Message,
        action_id: &str,
        user: &str,
        edit: impl FnOnce(&mut Value),
        limit: Duration,
    ) -> Result<Ack, FakeError> {
        let (envelope, trigger_id) = {
            let mut data = self.shared.lock();
            let mut payload =
                block_actions(&mut data, &self.shared.http_base, message, action_id, user)?;
            edit(&mut payload);
            let trigger_id = payload["trigger_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let id = format!("env-{}", data.next_id());
            (
                json!({
                    "envelope_id": id,
                    "type": "interactive",
                    "accepts_response_payload": false,
                    "retry_attempt": 0,
                    "retry_reason": "",
                    "payload": payload,
                }),
                trigger_id,
            )
        };
        self.send_envelope(envelope, trigger_id, limit).await
    }

    async fn send_envelope(
        &self,
        envelope: Value,
        trigger_id: String,
        limit: Duration,
    ) -> Result<Ack, FakeError> {
        let shared = Arc::clone(&self.shared);
        self.on_runtime(async move {
            let id = envelope["envelope_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let (tx, rx) = oneshot::channel();
            {
                let mut data = shared.lock();
                data.pending.insert(
                    id.clone(),
                    Pending {
                        envelope,
                        trigger_id,
                        conn: None,
                        sent_at: Instant::now(),
                        deliveries: 0,
                        waiter: Some(tx),
                    },
                );
                deliver_pending(&mut data);
            }
            match tokio::time::timeout(limit, rx).await {
                Ok(Ok(ack)) => Ok(ack),
                _ => Err(FakeError::Timeout(limit, format!("the ack of {id}"))),
            }
        })
        .await
    }

    // ---- HTTP mode -------------------------------------------------------

    /// POSTs a slash command to `{app}/slack/commands`, signed as `sign`
    /// (with `X-Slack-Retry-Num` when `retry` is set, reusing
    /// `trigger_id` when given).
    pub async fn http_command(
        &self,
        app: &str,
        cmd: &SlashCommand,
        sign: Sign,
        retry: Option<(u32, &str)>,
    ) -> Result<HttpAnswer, FakeError> {
        let (body, trigger_id) = {
            let mut data = self.shared.lock();
            let (envelope, trigger_id) = command_envelope(&mut data, &self.shared.http_base, cmd);
            let fields: Vec<(String, String)> = envelope["payload"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let mut fields = fields;
            if let Some((_, trigger)) = retry.filter(|(_, t)| !t.is_empty()) {
                for (k, v) in &mut fields {
                    if k == "trigger_id" {
                        *v = trigger.to_string();
                    }
                }
            }
            let trigger_id = retry
                .map(|(_, t)| t.to_string())
                .filter(|t| !t.is_empty())
                .unwrap_or(trigger_id);
            (
                serde_urlencoded::to_string(&fields)
                    .map_err(|e| FakeError::Other(e.to_string()))?,
                trigger_id,
            )
        };
        let url = format!("{}/slack/commands", app.trim_end_matches('/'));
        self.signed_post(url, body, sign, retry.map(|(n, _)| n), trigger_id)
            .await
    }

    /// POSTs a button press to `{app}/slack/interactivity`, signed as `sign`.
    pub async fn http_click(
        &self,
        app: &str,
        message: &Message,
        action_id: &str,
        user: &str,
        sign: Sign,
    ) -> Result<HttpAnswer, FakeError> {
        let (body, trigger_id) = {
            let mut data = self.shared.lock();
            let payload =
                block_actions(&mut data, &self.shared.http_base, message, action_id, user)?;
            let trigger_id = payload["trigger_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (
                serde_urlencoded::to_string([("payload", payload.to_string())])
                    .map_err(|e| FakeError::Other(e.to_string()))?,
                trigger_id,
            )
        };
        let url = format!("{}/slack/interactivity", app.trim_end_matches('/'));
        self.signed_post(url, body, sign, None, trigger_id).await
    }

    async fn signed_post(
        &self,
        url: String,
        body: String,
        sign: Sign,
        retry: Option<u32>,
        trigger_id: String,
    ) -> Result<HttpAnswer, FakeError> {
        let shared = Arc::clone(&self.shared);
        self.on_runtime(async move {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let (secret, ts) = match sign {
                Sign::Bad => ("not-the-signing-secret-0000000000", now),
                Sign::Stale => (SIGNING_SECRET, now.saturating_sub(360)),
                Sign::Good | Sign::Missing => (SIGNING_SECRET, now),
            };
            let mut request = hyper::Request::post(&url)
                .header("content-type", "application/x-www-form-urlencoded");
            if sign != Sign::Missing {
                request = request
                    .header("x-slack-request-timestamp", ts.to_string())
                    .header("x-slack-signature", signature(secret, ts, &body));
            }
            if let Some(n) = retry {
                request = request
                    .header("x-slack-retry-num", n.to_string())
                    .header("x-slack-retry-reason", "http_timeout");
            }
            let request = request
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| FakeError::Other(e.to_string()))?;
            let started = Instant::now();
            let response = shared
                .client
                .request(request)
                .await
                .map_err(|e| FakeError::Other(format!("POST {url}: {e}")))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| FakeError::Other(e.to_string()))?
                .to_bytes();
            Ok(HttpAnswer {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
                latency: started.elapsed(),
                trigger_id,
            })
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

/// The v0 signature of a request body at `ts`.
pub fn signature(secret: &str, ts: u64, body: &str) -> String {
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn collect_strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push('\n');
            out.push_str(s);
        }
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// A `slash_commands` envelope and its trigger id.
fn command_envelope(data: &mut Data, http_base: &str, cmd: &SlashCommand) -> (Value, String) {
    let n = data.next_id();
    let trigger_id = format!("{n}.4242.trigger{n:06}");
    let response = data.next_id();
    data.response_urls.insert(response, trigger_id.clone());
    let payload = json!({
        "token": "verification-token-unused",
        "team_id": TEAM_ID,
        "team_domain": "fake-desk",
        "channel_id": cmd.channel,
        "channel_name": "general",
        "user_id": cmd.user,
        "user_name": cmd.user.to_lowercase(),
        "command": cmd.command,
        "text": cmd.text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": format!("{http_base}/response/{response}"),
        "trigger_id": trigger_id,
    });
    (
        json!({
            "envelope_id": format!("env-{n}"),
            "type": "slash_commands",
            "accepts_response_payload": true,
            "payload": payload,
        }),
        trigger_id,
    )
}

/// The button `action_id` in a message's blocks.
fn find_button(blocks: &Value, action_id: &str) -> Option<(Value, String)> {
    for block in blocks.as_array()? {
        let block_id = block["block_id"].as_str().unwrap_or("b").to_string();
        let mut candidates: Vec<&Value> = Vec::new();
        if block["accessory"].is_object() {
            candidates.push(&block["accessory"]);
        }
        if let Some(elements) = block["elements"].as_array() {
            candidates.extend(elements.iter());
        }
        for el in candidates {
            if el["type"] == "button" && el["action_id"] == action_id {
                return Some((el.clone(), block_id));
            }
        }
    }
    None
}

/// A `block_actions` payload for pressing `action_id` in `message`.
fn block_actions(
    data: &mut Data,
    http_base: &str,
    message: &Message,
    action_id: &str,
    user: &str,
) -> Result<Value, FakeError> {
    let (button, block_id) = find_button(&message.blocks, action_id).ok_or_else(|| {
        FakeError::Other(format!(
            "no button {action_id} in message {} ({})",
            message.ts, message.blocks
        ))
    })?;
    let n = data.next_id();
    let trigger_id = format!("{n}.4242.trigger{n:06}");
    let response = data.next_id();
    data.response_urls.insert(response, trigger_id.clone());
    let mut container = json!({
        "type": "message",
        "message_ts": message.ts,
        "channel_id": message.channel,
        "is_ephemeral": false,
    });
    let mut msg = json!({
        "type": "message",
        "subtype": "bot_message",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "app_id": APP_ID,
        "team": TEAM_ID,
        "ts": message.ts,
        "text": message.text,
        "blocks": message.blocks,
    });
    if let Some(thread) = &message.thread_ts {
        container["thread_ts"] = json!(thread);
        msg["thread_ts"] = json!(thread);
    }
    Ok(json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "token": "verification-token-unused",
        "container": container,
        "trigger_id": trigger_id,
        "team": {"id": TEAM_ID, "domain": "fake-desk"},
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": message.channel, "name": "general"},
        "message": msg,
        "state": {"values": {}},
        "response_url": format!("{http_base}/response/{response}"),
        "actions": [{
            "action_id": action_id,
            "block_id": block_id,
            "text": button["text"],
            "value": button["value"],
            "type": "button",
            "action_ts": format!("1700000001.{n:06}"),
        }],
    }))
}

// ---- Socket Mode server ---------------------------------------------------

async fn accept_sockets(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        // Frames go out as written (no Nagle delay), as a server's should.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                serve_socket(ws, shared).await;
            }
        });
    }
}

async fn serve_socket(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    shared: Arc<Shared>,
) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<WsCommand>();
    let id = {
        let mut data = shared.lock();
        let id = data.next_id();
        data.sockets.insert(id, tx.clone());
        data.connects += 1;
        let hello = json!({
            "type": "hello",
            "num_connections": data.sockets.len(),
            "debug_info": {"host": "fake-slack", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": APP_ID},
        });
        let _ = tx.send(WsCommand::Send(hello.to_string()));
        deliver_pending(&mut data);
        id
    };
    shared.touch();
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                Some(WsCommand::Send(text)) => {
                    if sink.send(WsMessage::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(WsCommand::SendThenDrop(text)) => {
                    let _ = sink.send(WsMessage::Text(text.into())).await;
                    break;
                }
                Some(WsCommand::Drop) | None => break,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => on_ack(&shared, text.as_str()),
                Some(Ok(WsMessage::Ping(_))) => {
                    // tungstenite queued the pong; send it now.
                    if sink.flush().await.is_err() {
                        break;
                    }
                }
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    // Dropping both halves closes the TCP connection without a handshake.
    drop(sink);
    drop(stream);
    {
        let mut data = shared.lock();
        data.sockets.remove(&id);
        for p in data.pending.values_mut() {
            if p.conn == Some(id) {
                p.conn = None;
            }
        }
        deliver_pending(&mut data);
    }
    shared.touch();
}

/// Sends every undelivered envelope to an open socket (round robin).
fn deliver_pending(data: &mut Data) {
    let ids: Vec<String> = data
        .pending
        .iter()
        .filter(|(_, p)| p.conn.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    for id in ids {
        let conns: Vec<u64> = data.sockets.keys().copied().collect();
        if conns.is_empty() {
            return;
        }
        data.round_robin = data.round_robin.wrapping_add(1);
        let conn = conns[(data.round_robin as usize) % conns.len()];
        let drop_now = data.drop_after_delivery > 0;
        if drop_now {
            data.drop_after_delivery -= 1;
        }
        let Some(tx) = data.sockets.get(&conn).cloned() else {
            continue;
        };
        let Some(p) = data.pending.get_mut(&id) else {
            continue;
        };
        if p.deliveries > 0 {
            p.envelope["retry_attempt"] = json!(p.deliveries);
            p.envelope["retry_reason"] = json!("timeout");
        }
        p.deliveries += 1;
        p.conn = Some(conn);
        p.sent_at = Instant::now();
        let frame = p.envelope.to_string();
        let _ = tx.send(if drop_now {
            WsCommand::SendThenDrop(frame)
        } else {
            WsCommand::Send(frame)
        });
    }
}

fn on_ack(shared: &Shared, text: &str) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Some(id) = frame["envelope_id"].as_str() else {
        return;
    };
    {
        let mut data = shared.lock();
        let now = Instant::now();
        let (latency, deliveries, trigger_id, waiter) = match data.pending.remove(id) {
            Some(mut p) => (
                now.duration_since(p.sent_at),
                p.deliveries,
                p.trigger_id.clone(),
                p.waiter.take(),
            ),
            None => (Duration::ZERO, 0, String::new(), None),
        };
        let ack = Ack {
            envelope_id: id.to_string(),
            latency,
            payload: frame.get("payload").cloned(),
            deliveries,
            trigger_id,
        };
        data.acks.push(ack.clone());
        if let Some(w) = waiter {
            let _ = w.send(ack);
        }
    }
    shared.touch();
}

// ---- Web API ---------------------------------------------------------------

fn params_of(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Value {
    let mut params = serde_json::Map::new();
    if let Some(q) = query {
        if let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(q) {
            for (k, v) in pairs {
                params.insert(k, Value::String(v));
            }
        }
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/json") {
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
            params.extend(m);
        }
    } else if let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
        for (k, v) in pairs {
            // Form fields may carry JSON (blocks=[...]).
            let value = match serde_json::from_str::<Value>(&v) {
                Ok(j @ (Value::Array(_) | Value::Object(_))) => j,
                _ => Value::String(v),
            };
            params.insert(k, value);
        }
    }
    Value::Object(params)
}

fn bearer(headers: &HeaderMap, params: &Value) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| params["token"].as_str().map(str::to_string))
}

fn slack_error(code: &str) -> Response {
    axum::Json(json!({"ok": false, "error": code})).into_response()
}

/// Records a call; returns the queued failure's answer, if any.
fn record(shared: &Shared, method: &str, params: Value, token: Option<String>) -> Option<Response> {
    let mut data = shared.lock();
    let failure = data.failures.get_mut(method).and_then(VecDeque::pop_front);
    let (answer, failed) = match failure {
        None => (None, None),
        Some(Failure::RateLimited { retry_after }) => (
            Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", retry_after.to_string())],
                    axum::Json(json!({"ok": false, "error": "ratelimited"})),
                )
                    .into_response(),
            ),
            Some(format!("429 retry-after {retry_after}")),
        ),
        Some(Failure::ServerError) => (
            Some((StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()),
            Some("500".to_string()),
        ),
        Some(Failure::Error(code)) => (Some(slack_error(&code)), Some(code)),
    };
    data.calls.push(Call {
        method: method.to_string(),
        params,
        token,
        at: Instant::now(),
        failed,
    });
    answer
}

/// Marks the last call of `method` as failed with `code` (for answers the
/// method itself gives, such as `not_in_channel`).
fn mark_failed(data: &mut Data, method: &str, code: &str) {
    if let Some(call) = data.calls.iter_mut().rev().find(|c| c.method == method) {
        call.failed = Some(code.to_string());
    }
}

async fn web_api(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    http_method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = params_of(&headers, query.as_deref(), &body);
    let token = bearer(&headers, &params);
    let answer = record(&shared, &method, params.clone(), token.clone());
    let response = match answer {
        Some(a) => a,
        None => answer_method(&shared, &method, &http_method, &params, token.as_deref()),
    };
    shared.touch();
    response
}

fn answer_method(
    shared: &Shared,
    method: &str,
    http_method: &Method,
    p: &Value,
    token: Option<&str>,
) -> Response {
    let mut data = shared.lock();
    let expected = if method == "apps.connections.open" {
        APP_TOKEN
    } else {
        BOT_TOKEN
    };
    match token {
        None => {
            mark_failed(&mut data, method, "not_authed");
            return slack_error("not_authed");
        }
        Some(t) if t != expected => {
            let code = if method == "apps.connections.open" && t == BOT_TOKEN {
                "not_allowed_token_type"
            } else {
                "invalid_auth"
            };
            mark_failed(&mut data, method, code);
            return slack_error(code);
        }
        Some(_) => {}
    }
    let text = |k: &str| p[k].as_str().unwrap_or_default().to_string();
    let channel = text("channel");
    let denied = |data: &Data, ch: &str| data.denied.get(ch).cloned();
    match method {
        "auth.test" => {
            let scopes = data
                .scopes
                .clone()
                .unwrap_or_else(|| DEFAULT_SCOPES.to_string());
            (
                [("x-oauth-scopes", scopes)],
                axum::Json(json!({
                    "ok": true,
                    "url": "https://fake-desk.slack.com/",
                    "team": TEAM,
                    "user": BOT_NAME,
                    "team_id": TEAM_ID,
                    "user_id": BOT_USER_ID,
                    "bot_id": BOT_ID,
                    "is_enterprise_install": false,
                })),
            )
                .into_response()
        }
        "apps.connections.open" => {
            data.opens += 1;
            let n = data.next_id();
            axum::Json(json!({"ok": true, "url": format!("{}/link/?ticket={n}&app_id={APP_ID}", shared.ws_base)}))
                .into_response()
        }
        "chat.postMessage" => {
            if let Some(code) = denied(&data, &channel) {
                mark_failed(&mut data, method, &code);
                return slack_error(&code);
            }
            if channel.is_empty() {
                mark_failed(&mut data, method, "channel_not_found");
                return slack_error("channel_not_found");
            }
            let ts = data.next_ts();
            let message = Message {
                channel: channel.clone(),
                ts: ts.clone(),
                thread_ts: p["thread_ts"].as_str().map(str::to_string),
                text: text("text"),
                blocks: p.get("blocks").cloned().unwrap_or(json!([])),
                history: Vec::new(),
                deleted: false,
            };
            data.messages.push(message);
            axum::Json(json!({"ok": true, "channel": channel, "ts": ts, "message": {"ts": ts, "text": text("text")}}))
                .into_response()
        }
        "chat.update" => {
            let ts = text("ts");
            let found = data
                .messages
                .iter_mut()
                .find(|m| m.channel == channel && m.ts == ts && !m.deleted);
            match found {
                Some(m) => {
                    m.history.push(json!({"text": m.text, "blocks": m.blocks}));
                    m.text = text("text");
                    m.blocks = p.get("blocks").cloned().unwrap_or(json!([]));
                    axum::Json(json!({"ok": true, "channel": channel, "ts": ts})).into_response()
                }
                None => {
                    mark_failed(&mut data, method, "message_not_found");
                    slack_error("message_not_found")
                }
            }
        }
        "chat.delete" => {
            let ts = text("ts");
            match data
                .messages
                .iter_mut()
                .find(|m| m.channel == channel && m.ts == ts && !m.deleted)
            {
                Some(m) => {
                    m.deleted = true;
                    axum::Json(json!({"ok": true, "channel": channel, "ts": ts})).into_response()
                }
                None => {
                    mark_failed(&mut data, method, "message_not_found");
                    slack_error("message_not_found")
                }
            }
        }
        "chat.postEphemeral" => {
            if let Some(code) = denied(&data, &channel) {
                mark_failed(&mut data, method, &code);
                return slack_error(&code);
            }
            data.ephemerals.push(Ephemeral {
                channel,
                user: text("user"),
                text: text("text"),
                blocks: p.get("blocks").cloned().unwrap_or(json!([])),
            });
            let ts = data.next_ts();
            axum::Json(json!({"ok": true, "message_ts": ts})).into_response()
        }
        "files.getUploadURLExternal" => {
            if http_method != Method::GET && http_method != Method::POST {
                return slack_error("method_not_supported");
            }
            let length: usize = match p["length"].as_str().and_then(|l| l.parse().ok()) {
                Some(l) if l > 0 => l,
                _ => {
                    mark_failed(&mut data, method, "invalid_arguments");
                    return slack_error("invalid_arguments");
                }
            };
            let n = data.next_id();
            let id = format!("F{n:08}");
            data.uploads
                .insert(id.clone(), (text("filename"), length, None));
            axum::Json(json!({"ok": true, "upload_url": format!("{}/upload/{id}", shared.http_base), "file_id": id}))
                .into_response()
        }
        "files.completeUploadExternal" => {
            let channel = text("channel_id");
            if let Some(code) = denied(&data, &channel) {
                mark_failed(&mut data, method, &code);
                return slack_error(&code);
            }
            let files = p["files"].as_array().cloned().unwrap_or_default();
            let mut shared_files = Vec::new();
            for f in &files {
                let id = f["id"].as_str().unwrap_or_default().to_string();
                match data.uploads.get(&id) {
                    Some((filename, _, Some(bytes))) => shared_files.push(SharedFile {
                        id: id.clone(),
                        filename: filename.clone(),
                        title: f["title"].as_str().unwrap_or(filename).to_string(),
                        bytes: bytes.clone(),
                        channel: (!channel.is_empty()).then(|| channel.clone()),
                        thread_ts: p["thread_ts"].as_str().map(str::to_string),
                    }),
                    _ => {
                        mark_failed(&mut data, method, "file_not_found");
                        return slack_error("file_not_found");
                    }
                }
            }
            let listed: Vec<Value> = shared_files
                .iter()
                .map(|f| json!({"id": f.id, "title": f.title}))
                .collect();
            data.files.extend(shared_files);
            axum::Json(json!({"ok": true, "files": listed})).into_response()
        }
        _ => {
            mark_failed(&mut data, method, "unknown_method");
            slack_error("unknown_method")
        }
    }
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = json!({
        "file_id": id,
        "bytes": body.len(),
        "content_type": headers.get("content-type").and_then(|v| v.to_str().ok()),
    });
    if let Some(answer) = record(&shared, "upload", params, None) {
        shared.touch();
        return answer;
    }
    let response = {
        let mut data = shared.lock();
        match data.uploads.get_mut(&id) {
            Some(entry) if entry.1 == body.len() => {
                entry.2 = Some(body.to_vec());
                (StatusCode::OK, format!("OK - {}", body.len())).into_response()
            }
            Some(entry) => {
                let expected = entry.1;
                mark_failed(&mut data, "upload", "length mismatch");
                (
                    StatusCode::BAD_REQUEST,
                    format!("expected {expected} bytes, got {}", body.len()),
                )
                    .into_response()
            }
            None => {
                mark_failed(&mut data, "upload", "unknown file");
                (StatusCode::NOT_FOUND, "unknown upload").into_response()
            }
        }
    };
    shared.touch();
    response
}

async fn response_url(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = params_of(&headers, None, &body);
    if let Some(answer) = record(&shared, "response_url", params.clone(), None) {
        shared.touch();
        return answer;
    }
    let response = {
        let mut data = shared.lock();
        match data.response_urls.get(&id).cloned() {
            Some(trigger_id) => {
                let used = data
                    .responses
                    .iter()
                    .filter(|r| r.trigger_id == trigger_id)
                    .count();
                if used >= 5 {
                    mark_failed(&mut data, "response_url", "used_up");
                    (StatusCode::NOT_FOUND, "used_url").into_response()
                } else {
                    data.responses.push(ResponsePost {
                        trigger_id,
                        body: params,
                    });
                    axum::Json(json!({"ok": true})).into_response()
                }
            }
            None => {
                mark_failed(&mut data, "response_url", "unknown");
                (StatusCode::NOT_FOUND, "no_such_url").into_response()
            }
        }
    };
    shared.touch();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_a_known_vector() {
        // The vector slack-morphism's verifier is tested with.
        assert_eq!(
            signature("fa2c05deeef5a4077494e89f54394de0", 1531420618, "test-body"),
            "v0=baa91ef62d346e56607bbdd278a8acd570b91226854f15a382f43d33be42f666"
        );
    }

    #[test]
    fn buttons_are_found_in_accessories_and_actions() {
        let blocks = json!([
            {"type": "section", "block_id": "s1", "text": {"type": "mrkdwn", "text": "a"},
             "accessory": {"type": "button", "action_id": "run_func_a", "value": "a", "text": {"type": "plain_text", "text": "Run"}}},
            {"type": "actions", "block_id": "s2", "elements": [
                {"type": "button", "action_id": "run_func_b", "value": "b", "text": {"type": "plain_text", "text": "Run"}}]},
        ]);
        assert_eq!(
            find_button(&blocks, "run_func_a").map(|(_, b)| b),
            Some("s1".into())
        );
        assert_eq!(
            find_button(&blocks, "run_func_b").map(|(_, b)| b),
            Some("s2".into())
        );
        assert!(find_button(&blocks, "run_func_c").is_none());
    }
}
