//! The console's own routes: its four pages (one HTML shell, rendered by
//! `assets/console.js`), the command endpoint that streams the placeholder
//! and then the final reply, the session endpoint that hands a page a
//! fresh CSRF token, and the conversation (`GET` to show it again after a
//! page switch or a reload, `DELETE` to clear it; see `conversation.rs`).
//!
//! `POST /console/command` answers `application/x-ndjson`, one JSON object
//! per line: `{"event":"placeholder","reply":R}` when the command runs code
//! (shown at once), then `{"event":"reply","reply":R}` (replacing it). `R`
//! is the reply model with each file's bytes as base64 `data`.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use tradebox_core::pipeline::{Input, Request};
use tradebox_core::reply::Reply;

use crate::api::source;
use crate::conversation::{Entry, Sent};
use crate::error::ApiError;
use crate::guard::Via;
use crate::json::{reply_json, ApiJson};
use crate::AppState;

/// The pages of the console.
#[derive(Debug, Clone, Copy)]
pub enum Page {
    Console,
    Functions,
    Audit,
    Data,
}

impl Page {
    fn name(self) -> &'static str {
        match self {
            Page::Console => "console",
            Page::Functions => "functions",
            Page::Audit => "audit",
            Page::Data => "data",
        }
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML shell of a page.
pub fn page(state: &AppState, page: Page) -> Response {
    let html = crate::assets::INDEX_HTML
        .replace("{{PAGE}}", page.name())
        .replace("{{CSRF}}", &escape_html(state.secrets.csrf()))
        .replace("{{USER}}", &escape_html(&state.options.user))
        .replace("{{VERSION}}", env!("CARGO_PKG_VERSION"));
    Html(html).into_response()
}

/// `GET /console/session`: who the console runs as, and the CSRF token
/// (for a page open across a server restart).
pub async fn session(State(state): State<AppState>) -> Response {
    Json(json!({
        "user": state.options.user,
        "csrf": state.secrets.csrf(),
    }))
    .into_response()
}

/// A command typed in the console, or a button pressed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    action_id: Option<String>,
    #[serde(default)]
    value: Option<String>,
    /// The pressed button's text, as the conversation shows it.
    #[serde(default)]
    label: Option<String>,
    /// Keep the exchange in the user's conversation (the console page does;
    /// a run from the Functions page does not).
    #[serde(default)]
    keep: bool,
}

fn event(name: &str, reply: &Reply) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "event": name, "reply": reply_json(reply) }))
        .unwrap_or_else(|e| {
            format!("{{\"event\":\"error\",\"error\":\"the reply could not be encoded: {e}\"}}")
                .into_bytes()
        });
    line.push(b'\n');
    Bytes::from(line)
}

/// `GET /console/conversation`: the console user's kept exchanges, oldest
/// first: `{"entries": [{"at", "sent": {"kind": "text", "text"} or
/// {"kind": "button", "label", "action_id", "value"}, "reply"}]}`.
pub async fn conversation(State(state): State<AppState>) -> Response {
    Json(json!({ "entries": state.conversations.list(&state.options.user) })).into_response()
}

/// `DELETE /console/conversation`: forgets the console user's conversation.
pub async fn clear_conversation(State(state): State<AppState>) -> StatusCode {
    state.conversations.clear(&state.options.user);
    StatusCode::NO_CONTENT
}

/// `POST /console/command`: runs the command as the console user and
/// streams the placeholder, then the reply (NDJSON).
pub async fn command(
    State(state): State<AppState>,
    Extension(via): Extension<Via>,
    ApiJson(body): ApiJson<CommandBody>,
) -> Result<Response, ApiError> {
    let value = body.value.unwrap_or_default();
    let (input, sent) = match (body.text, body.action_id) {
        (Some(text), None) if !text.trim().is_empty() => {
            (Input::Line(text.clone()), Sent::Text { text })
        }
        (None, Some(action_id)) if !action_id.trim().is_empty() => (
            Input::Action {
                value: value.clone(),
                action_id: action_id.clone(),
            },
            Sent::Button {
                label: body.label.unwrap_or_else(|| "a button".into()),
                action_id,
                value,
            },
        ),
        _ => {
            return Err(ApiError::bad_request(
                "send either a non-empty `text` (a command line) or an `action_id` (a button)",
            ))
        }
    };
    let req = Request {
        user: state.options.user.clone(),
        channel: None,
        source: source(via),
        input,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let pipeline = state.pipeline.clone();
    let keep = body.keep.then(|| state.clone());
    let at = tradebox_data::timestamp::format_rfc3339(tradebox_data::timestamp::now());
    // The command runs to its end (and is audited, and kept in the
    // conversation) even if the page goes away.
    tokio::spawn(async move {
        let early = tx.clone();
        let reply = pipeline
            .handle(&req, move |p| {
                let _ = early.send(event("placeholder", &p));
            })
            .await;
        let _ = tx.send(event("reply", &reply));
        if let Some(state) = keep {
            let entry = Entry::new(at, sent, reply_json(&reply));
            state.conversations.push(&req.user, entry);
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<Bytes, Infallible>(line), rx))
    });
    let mut response = (StatusCode::OK, Body::from_stream(stream)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html(r#"<script>"x" & 'y'</script>"#),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn events_are_one_line_each() {
        let line = event("placeholder", &Reply::placeholder("Analyzing"));
        assert!(line.ends_with(b"\n"));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
        assert_eq!(v["event"], "placeholder");
        assert_eq!(v["reply"]["blocks"][0]["type"], "text");
    }
}
