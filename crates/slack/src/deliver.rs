//! The reply flow, once a command is acknowledged:
//!
//! 1. The pipeline's placeholder ("Analyzing...") is posted with
//!    `chat.postMessage` while the job runs ([`Deliverer::placeholder`]).
//! 2. The final reply replaces it with `chat.update`; a reply without a
//!    placeholder (`/listfuncs`, `/savefunc`) is posted with
//!    `chat.postMessage`. Files (figures, CSV, full output) follow with
//!    `files.getUploadURLExternal` + `files.completeUploadExternal` into the
//!    same channel (and thread).
//! 3. Usage errors and refusals are ephemeral: `chat.postEphemeral`, and a
//!    placeholder already shown is deleted (`chat.update` cannot turn a
//!    message ephemeral).
//! 4. When the bot cannot post in the channel (`not_in_channel`,
//!    `channel_not_found`: private channels, DMs between others), the
//!    `response_url` takes over: the placeholder and refusals as ephemeral
//!    responses, the result as an `in_channel` response (two of the five
//!    posts a `response_url` allows). Files cannot be shared there; the
//!    message says how to fix that (invite the bot).
//! 5. A call that still fails after its retries ([`crate::api`]: up to
//!    five minutes for replies) is logged and reported to the user through
//!    the `response_url`.
//! 6. A delivery still retrying after [`NOTICE_AFTER`] (Slack's Web API
//!    down or failing) is announced once, through the `response_url`, which
//!    Slack serves from other hosts: the reply follows when Slack is back
//!    ([`Deliverer::patiently`]). A post that may have been taken (sent,
//!    then no answer in time) is never sent again ([`crate::api`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tradebox_core::reply::{Reply, Visibility};

use crate::api::{Api, ApiError, Posted};
use crate::blocks::{render, Rendered, MAX_BLOCKS};
use crate::payload::Incoming;

/// What became of the placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// Not shown (no job ran, or posting it failed).
    None,
    /// A channel message, to update.
    Posted(Posted),
    /// An ephemeral `response_url` message (the bot cannot post here).
    ViaResponseUrl,
}

/// How long a delivery may take before the user is told it is delayed.
pub const NOTICE_AFTER: Duration = Duration::from_secs(10);

/// Whether the user of one request was told that its reply is delayed
/// (shared by the placeholder's and the reply's deliveries).
#[derive(Debug, Clone, Default)]
pub struct Delay(Arc<AtomicBool>);

/// Posts replies for one workspace.
#[derive(Clone)]
pub struct Deliverer {
    pub api: Api,
    /// The bot's user id and name, to tell users whom to invite.
    pub bot_user_id: String,
    pub bot_name: String,
}

impl Deliverer {
    /// Shows the placeholder of a request.
    pub async fn placeholder(&self, to: &Incoming, reply: &Reply) -> Placeholder {
        let rendered = render(reply);
        match self
            .api
            .post_message(&to.channel, to.thread_ts.as_deref(), &rendered)
            .await
        {
            Ok(posted) => Placeholder::Posted(posted),
            Err(e) if e.is_channel_access() => match &to.response_url {
                Some(url) => match self.api.respond(url, &rendered, false).await {
                    Ok(()) => Placeholder::ViaResponseUrl,
                    Err(e) => {
                        tracing::warn!(channel = %to.channel, "placeholder not shown: {e}");
                        Placeholder::None
                    }
                },
                None => Placeholder::None,
            },
            Err(e) => {
                tracing::warn!(channel = %to.channel, "placeholder not shown: {e}");
                Placeholder::None
            }
        }
    }

    /// Posts the final reply (see the module documentation).
    pub async fn finish(&self, to: &Incoming, reply: &Reply, placeholder: Placeholder) {
        let rendered = render(reply);
        if rendered.ephemeral {
            if let Placeholder::Posted(at) = &placeholder {
                if let Err(e) = self.api.delete(at).await {
                    tracing::warn!(channel = %at.channel, "placeholder not removed: {e}");
                }
            }
            if !rendered.uploads.is_empty() {
                tracing::warn!("an ephemeral reply came with files; they are not uploaded");
            }
            self.ephemeral(to, &rendered).await;
            return;
        }
        let outcome = match placeholder {
            Placeholder::Posted(at) => match self.api.update(&at, &rendered).await {
                Ok(()) => Ok(Some(at)),
                Err(e) if is_gone(&e) => {
                    tracing::info!("the placeholder is gone ({e}); posting a new message");
                    self.post_in_channel(to, rendered.clone()).await
                }
                Err(e) => Err(e),
            },
            Placeholder::ViaResponseUrl => self.via_response_url(to, rendered.clone()).await,
            Placeholder::None => self.post_in_channel(to, rendered.clone()).await,
        };
        match outcome {
            Ok(Some(posted)) if !rendered.uploads.is_empty() => {
                if let Err(e) = self
                    .api
                    .upload(&posted.channel, to.thread_ts.as_deref(), &rendered.uploads)
                    .await
                {
                    tracing::error!(channel = %to.channel, "files not uploaded: {e}");
                    self.report(
                        to,
                        &format!("The files of this result could not be uploaded: {e}"),
                    )
                    .await;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(channel = %to.channel, user = %to.user, "reply not posted: {e}");
                self.report(to, &format!("tradebox could not post the result here: {e}"))
                    .await;
            }
        }
    }

    /// `chat.postMessage`, or the `response_url` when the bot cannot post.
    async fn post_in_channel(
        &self,
        to: &Incoming,
        rendered: Rendered,
    ) -> Result<Option<Posted>, ApiError> {
        match self
            .api
            .post_message(&to.channel, to.thread_ts.as_deref(), &rendered)
            .await
        {
            Ok(posted) => Ok(Some(posted)),
            Err(e) if e.is_channel_access() && to.response_url.is_some() => {
                tracing::info!(channel = %to.channel, "{e}: answering through the response_url");
                self.via_response_url(to, rendered).await
            }
            Err(e) => Err(e),
        }
    }

    /// The result as an `in_channel` response, with a note when files
    /// could not come along.
    async fn via_response_url(
        &self,
        to: &Incoming,
        mut rendered: Rendered,
    ) -> Result<Option<Posted>, ApiError> {
        let Some(url) = &to.response_url else {
            return Err(ApiError::Invalid {
                method: "response_url".into(),
                detail: "the request came without a response_url".into(),
            });
        };
        if !rendered.uploads.is_empty() {
            let names: Vec<&str> = rendered
                .uploads
                .iter()
                .map(|u| u.filename.as_str())
                .collect();
            let note = format!(
                ":warning: {} not attached: tradebox cannot upload files here. Invite <@{}> \
                 to this channel (`/invite @{}`) and run it again.",
                names.join(", "),
                self.bot_user_id,
                self.bot_name,
            );
            push_context(&mut rendered.blocks, &note);
        }
        self.api.respond(url, &rendered, true).await.map(|()| None)
    }

    /// An ephemeral message: `chat.postEphemeral`, else the `response_url`.
    async fn ephemeral(&self, to: &Incoming, rendered: &Rendered) {
        let first = self
            .api
            .post_ephemeral(&to.channel, &to.user, to.thread_ts.as_deref(), rendered)
            .await;
        let Err(e) = first else { return };
        match &to.response_url {
            Some(url) => {
                if let Err(e2) = self.api.respond(url, rendered, false).await {
                    tracing::error!(user = %to.user, "ephemeral reply not delivered: {e}; then {e2}");
                }
            }
            None => tracing::error!(user = %to.user, "ephemeral reply not delivered: {e}"),
        }
    }

    /// Runs `posting`; when it takes longer than [`NOTICE_AFTER`], tells
    /// the user once per request (`delay`), through the `response_url`,
    /// that the reply will follow.
    pub async fn patiently<T>(
        &self,
        to: &Incoming,
        delay: &Delay,
        posting: impl Future<Output = T>,
    ) -> T {
        let mut posting = std::pin::pin!(posting);
        tokio::select! {
            out = &mut posting => return out,
            () = tokio::time::sleep(NOTICE_AFTER) => {}
        }
        if delay.0.swap(true, Ordering::SeqCst) {
            return posting.await;
        }
        let (out, ()) = tokio::join!(posting, self.notice_delay(to));
        out
    }

    async fn notice_delay(&self, to: &Incoming) {
        let Some(url) = &to.response_url else {
            return;
        };
        tracing::warn!(channel = %to.channel, "Slack's Web API is not answering; the reply waits");
        let reply = Reply::text(
            Visibility::Ephemeral,
            ":hourglass_flowing_sand: Slack is not answering tradebox right now: the reply will be \
             posted here as soon as it is back.",
        );
        if let Err(e) = self.api.respond(url, &render(&reply), false).await {
            tracing::warn!(user = %to.user, "could not say that the reply is delayed: {e}");
        }
    }

    /// Tells the user (only) that something failed.
    async fn report(&self, to: &Incoming, message: &str) {
        let reply = Reply::refusal(message);
        let rendered = render(&reply);
        match &to.response_url {
            Some(url) => {
                if let Err(e) = self.api.respond(url, &rendered, false).await {
                    tracing::error!(user = %to.user, "could not report a failure: {e}");
                }
            }
            None => self.ephemeral(to, &rendered).await,
        }
    }
}

/// The message to update no longer exists or cannot be edited.
fn is_gone(e: &ApiError) -> bool {
    matches!(
        e.code(),
        Some("message_not_found" | "cant_update_message" | "edit_window_closed")
    )
}

/// Appends a context line when the message has room for one more block.
fn push_context(blocks: &mut Value, text: &str) {
    if let Value::Array(list) = blocks {
        if list.len() < MAX_BLOCKS {
            list.push(json!({
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": text}],
            }));
        }
    }
}
