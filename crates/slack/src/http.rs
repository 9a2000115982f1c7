//! HTTP mode: Slack posts slash commands to `/slack/commands`, button
//! presses to `/slack/interactivity` and (if subscribed) events to
//! `/slack/events`, on the same listener as the console.
//!
//! Every request is authenticated by Slack's v0 signature before anything
//! in it is parsed ([`verify`]): HMAC-SHA256 of `v0:{timestamp}:{body}` with
//! the signing secret, compared in constant time (slack-morphism's
//! `SlackEventSignatureVerifier`), and a timestamp more than 5 minutes
//! away from now is refused (replays). Bodies are capped at [`MAX_BODY`].
//! A valid request is acknowledged with an empty 200 at once; the work runs
//! in its own task. A retried delivery (`X-Slack-Retry-Num`) carries the
//! same `trigger_id` and is acknowledged without running again. The quick
//! answer and the deduplication are the accept path's (`accept`);
//! this module checks, decodes and answers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use slack_morphism::signature_verifier::SlackEventSignatureVerifier;
use slack_morphism::SlackSigningSecret;

use crate::accept::{Accepted, Acceptor};
use crate::payload::{Incoming, PayloadError};

/// The largest request body taken (a `block_actions` payload carries the
/// whole message the button is in: up to about 50 KB).
pub const MAX_BODY: usize = 1 << 20;

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("the request body is not UTF-8")]
    NotUtf8,
    #[error("no signing secret is configured")]
    NoSecret,
    #[error("bad signature")]
    Bad,
    #[error("stale or invalid timestamp: {0}")]
    Timestamp(String),
}

/// Checks Slack's v0 signature of a request (headers and raw body).
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or(SignatureError::Missing(name))
    };
    let signature = header("x-slack-signature")?;
    let timestamp = header("x-slack-request-timestamp")?;
    let body = std::str::from_utf8(body).map_err(|_| SignatureError::NotUtf8)?;
    let verifier = SlackEventSignatureVerifier::new(&SlackSigningSecret::new(secret.to_string()));
    use slack_morphism::signature_verifier::SlackEventSignatureVerifierError as E;
    verifier
        .verify(signature, body, timestamp)
        .map_err(|e| match e {
            E::IncorrectOrExpiredTimestampError(t) => SignatureError::Timestamp(t.message),
            E::AbsentSignatureError(_) => SignatureError::Missing("x-slack-signature"),
            E::WrongSignatureError(_) | E::CryptoInitError(_) => SignatureError::Bad,
        })
}

/// What the routes share: where deliveries go, and the secret they are
/// signed with.
#[derive(Clone)]
struct Door {
    accept: Arc<Acceptor>,
    signing_secret: Arc<str>,
}

/// The HTTP-mode routes, handing deliveries to `accept`; an empty
/// `signing_secret` refuses every request.
pub(crate) fn router(accept: Arc<Acceptor>, signing_secret: String) -> Router {
    Router::new()
        .route("/slack/commands", post(commands))
        .route("/slack/interactivity", post(interactivity))
        .route("/slack/events", post(events))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Door {
            accept,
            signing_secret: signing_secret.into(),
        })
}

/// The signature check every route starts with; `Some` is the answer to
/// give instead of handling the request.
fn refuse(door: &Door, path: &str, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    if let Err(e) = verify(&door.signing_secret, headers, body) {
        tracing::warn!(path, "refused a Slack request: {e}");
        return Some((StatusCode::UNAUTHORIZED, format!("{e}\n")).into_response());
    }
    if let Some(retry) = headers
        .get("x-slack-retry-num")
        .and_then(|v| v.to_str().ok())
    {
        let reason = headers
            .get("x-slack-retry-reason")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info!(path, retry, reason, "Slack retried a delivery");
    }
    None
}

fn acknowledge(accepted: Accepted) -> Response {
    match accepted {
        Accepted::Started | Accepted::Duplicate => StatusCode::OK.into_response(),
        Accepted::Closed => (
            StatusCode::SERVICE_UNAVAILABLE,
            "tradebox is shutting down; try again in a moment\n",
        )
            .into_response(),
    }
}

fn bad_payload(e: &PayloadError) -> Response {
    (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
}

async fn commands(State(door): State<Door>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(answer) = refuse(&door, "/slack/commands", &headers, &body) {
        return answer;
    }
    match Incoming::from_command_form(&body) {
        Ok(incoming) => acknowledge(door.accept.accept(incoming)),
        Err(e) => bad_payload(&e),
    }
}

async fn interactivity(State(door): State<Door>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(answer) = refuse(&door, "/slack/interactivity", &headers, &body) {
        return answer;
    }
    match Incoming::from_interaction_form(&body) {
        Ok(incoming) => acknowledge(door.accept.accept(incoming)),
        Err(PayloadError::Ignored(what)) => {
            tracing::debug!("ignored {what}");
            StatusCode::OK.into_response()
        }
        Err(e) => bad_payload(&e),
    }
}

/// Events API: answers the URL verification challenge; tradebox
/// subscribes to no events, so anything else is acknowledged and ignored.
async fn events(State(door): State<Door>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(answer) = refuse(&door, "/slack/events", &headers, &body) {
        return answer;
    }
    let event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_payload(&PayloadError::Decode(e.to_string())),
    };
    if event["type"] == "url_verification" {
        let challenge = event["challenge"].as_str().unwrap_or_default().to_string();
        return axum::Json(serde_json::json!({ "challenge": challenge })).into_response();
    }
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tradebox_fake_slack::signature;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn headers(ts: u64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-slack-request-timestamp", ts.to_string().parse().unwrap());
        h.insert("x-slack-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn good_bad_stale_missing_and_tampered() {
        let body = "command=%2Fanalyze&text=result+%3D+1";
        let ts = now();
        assert_eq!(
            verify(
                SECRET,
                &headers(ts, &signature(SECRET, ts, body)),
                body.as_bytes()
            ),
            Ok(())
        );
        // Another secret, a changed body, a replay from 6 minutes ago, one
        // from the future.
        let other = signature("another-secret-0000000000000000", ts, body);
        assert_eq!(
            verify(SECRET, &headers(ts, &other), body.as_bytes()),
            Err(SignatureError::Bad)
        );
        let tampered = "command=%2Fanalyze&text=result+%3D+2";
        assert_eq!(
            verify(
                SECRET,
                &headers(ts, &signature(SECRET, ts, body)),
                tampered.as_bytes()
            ),
            Err(SignatureError::Bad)
        );
        for stale in [ts - 360, ts + 360] {
            let r = verify(
                SECRET,
                &headers(stale, &signature(SECRET, stale, body)),
                body.as_bytes(),
            );
            assert!(matches!(r, Err(SignatureError::Timestamp(_))), "{r:?}");
        }
        // Just inside the window.
        let recent = ts - 290;
        assert_eq!(
            verify(
                SECRET,
                &headers(recent, &signature(SECRET, recent, body)),
                body.as_bytes()
            ),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, &HeaderMap::new(), body.as_bytes()),
            Err(SignatureError::Missing("x-slack-signature"))
        );
        let mut only_sig = HeaderMap::new();
        only_sig.insert("x-slack-signature", "v0=00".parse().unwrap());
        assert_eq!(
            verify(SECRET, &only_sig, body.as_bytes()),
            Err(SignatureError::Missing("x-slack-request-timestamp"))
        );
        assert_eq!(
            verify(SECRET, &headers(ts, "v0=00"), &[0xff, 0xfe]),
            Err(SignatureError::NotUtf8)
        );
        assert_eq!(
            verify("", &headers(ts, "v0=00"), b"x"),
            Err(SignatureError::NoSecret)
        );
    }
}
