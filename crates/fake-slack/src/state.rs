//! What the fake knows: the names and tokens of its workspace, the public
//! record types tests read back (calls, messages, ephemerals, `response_url`
//! posts, shared files, acks) and send ([`SlashCommand`]), and the state
//! the servers share ([`Shared`]: one [`Data`] under a mutex, and a
//! notification for every change).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::Full;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify};

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
    /// HTTP 503.
    Unavailable,
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

/// What a socket's task is told to do.
pub(crate) enum WsCommand {
    Send(String),
    /// Close the TCP connection without a closing handshake.
    Drop,
    /// Send, then drop at once: nothing the app answers to this frame
    /// (its ack) is read.
    SendThenDrop(String),
}

/// An envelope not acknowledged yet.
pub(crate) struct Pending {
    pub(crate) envelope: Value,
    pub(crate) trigger_id: String,
    pub(crate) conn: Option<u64>,
    pub(crate) sent_at: Instant,
    pub(crate) deliveries: u32,
    pub(crate) waiter: Option<oneshot::Sender<Ack>>,
}

/// Everything recorded and every switch, under one mutex.
#[derive(Default)]
pub(crate) struct Data {
    pub(crate) calls: Vec<Call>,
    pub(crate) failures: HashMap<String, VecDeque<Failure>>,
    pub(crate) messages: Vec<Message>,
    pub(crate) ephemerals: Vec<Ephemeral>,
    pub(crate) responses: Vec<ResponsePost>,
    /// response_url id -> trigger id.
    pub(crate) response_urls: HashMap<u64, String>,
    pub(crate) uploads: HashMap<String, (String, usize, Option<Vec<u8>>)>,
    pub(crate) files: Vec<SharedFile>,
    pub(crate) denied: HashMap<String, String>,
    pub(crate) scopes: Option<String>,
    pub(crate) next: u64,
    pub(crate) sockets: BTreeMap<u64, mpsc::UnboundedSender<WsCommand>>,
    pub(crate) round_robin: u64,
    pub(crate) pending: BTreeMap<String, Pending>,
    pub(crate) acks: Vec<Ack>,
    pub(crate) opens: u32,
    pub(crate) connects: u32,
    pub(crate) drop_after_delivery: u32,
    /// Envelopes still to be delivered on two connections at once.
    pub(crate) duplicate: u32,
    /// Every Web API method answers 503 until then.
    pub(crate) outage_until: Option<Instant>,
}

impl Data {
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub(crate) fn next_ts(&mut self) -> String {
        let n = self.next_id();
        format!("1700000000.{n:06}")
    }
}

/// The state the servers, the sockets and [`crate::FakeSlack`] share.
pub(crate) struct Shared {
    pub(crate) data: Mutex<Data>,
    pub(crate) changed: Notify,
    pub(crate) http_base: String,
    pub(crate) ws_base: String,
    pub(crate) client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Data> {
        match self.data.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn touch(&self) {
        self.changed.notify_waiters();
    }
}

/// Appends every string in `v`, each after a newline.
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
