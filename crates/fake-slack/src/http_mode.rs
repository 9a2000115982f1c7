//! HTTP mode: slash commands and button presses POSTed to the app's
//! `/slack/commands` and `/slack/interactivity`, signed with Slack's v0
//! signature ([`signature`]), badly signed, stale or unsigned on request
//! ([`Sign`]), optionally marked as Slack's retries (`X-Slack-Retry-Num`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};

use crate::payloads::{block_actions, command_envelope};
use crate::state::{Message, SlashCommand, SIGNING_SECRET};
use crate::{FakeError, FakeSlack};

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
impl FakeSlack {
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

/// The v0 signature of a request body at `ts`.
pub fn signature(secret: &str, ts: u64, body: &str) -> String {
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
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
}
