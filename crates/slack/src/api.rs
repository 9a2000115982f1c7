//! The Web API calls tradebox makes, on slack-morphism's hyper client, with
//! one retry policy for all of them:
//!
//! - HTTP 429: wait what `Retry-After` says (1 s when absent), then retry;
//!   a wait longer than [`RetryPolicy::max_retry_after`] is not taken and
//!   the call fails with [`ApiError::RateLimited`];
//! - 5xx, network errors, timeouts, and Slack's own transient errors
//!   (`internal_error`, `fatal_error`, `service_unavailable`,
//!   `request_timeout`): exponential backoff with jitter, at most
//!   [`RetryPolicy::attempts`] attempts and [`RetryPolicy::patience`] in
//!   all;
//! - anything else (`not_in_channel`, `invalid_auth`, a 4xx) fails at once;
//! - a call that posts something new (`chat.postMessage`, ...) and got no
//!   answer in time is not sent again: Slack may have taken it, and a
//!   second one would show twice.
//!
//! Replies to users are posted patiently ([`RetryPolicy::replies`]: up to
//! five minutes), so that an outage of Slack's Web API delays a result
//! instead of losing it; checks at start-up give up within seconds.
//!
//! slack-morphism's own rate controller retries 429s only, so it is not
//! enabled: the loop here covers 429, 5xx and network errors alike.
//!
//! Messages are sent with slack-morphism's generic `http_post` and the
//! blocks as rendered JSON ([`crate::blocks`]), not through its typed block
//! model, so what is sent is exactly what was rendered and checked. Two
//! things slack-morphism cannot do are done here with plain hyper on the
//! same TLS set-up: reading the `x-oauth-scopes` header of `auth.test`
//! (slack-morphism drops response headers) and posting to a `response_url`
//! with `response_type` (its webhook request type has no such field; the
//! connector's `http_post_uri` is used with a JSON value instead).
//!
//! The connector accepts `http://` as well as `https://` so that the Web
//! API and the upload URLs can point at the fake Slack server over
//! loopback (slack-morphism's default connector is `https_only`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use slack_morphism::api::{
    SlackApiAppsConnectionOpenRequest, SlackApiFilesComplete,
    SlackApiFilesCompleteUploadExternalRequest, SlackApiFilesGetUploadUrlExternalRequest,
    SlackApiFilesUploadViaUrlRequest,
};
use slack_morphism::errors::SlackClientError;
use slack_morphism::hyper_tokio::SlackClientHyperConnector;
use slack_morphism::{
    ClientResult, SlackApiToken, SlackApiTokenValue, SlackClient, SlackClientApiCallContext,
    SlackClientHttpConnector,
};

use crate::blocks::{Rendered, Upload};
pub use crate::error::ApiError;
use crate::error::Error;

/// slack-morphism's connector over hyper-rustls (HTTP or HTTPS).
pub type Connector = SlackClientHyperConnector<HttpsConnector<HttpConnector>>;
/// slack-morphism's client on that connector.
pub type Client = SlackClient<Connector>;

/// The bot scopes tradebox needs: slash commands, posting and updating
/// messages (and ephemeral ones), uploading and sharing files.
pub const REQUIRED_SCOPES: &[&str] = &["commands", "chat:write", "files:write", "files:read"];

/// Slack's error codes that mean "try again".
const TRANSIENT_CODES: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "ratelimited",
];

/// How Web API calls are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all (the first included).
    pub attempts: u32,
    /// The first backoff; doubled after each failure.
    pub base: Duration,
    /// The longest backoff between two attempts.
    pub max_backoff: Duration,
    /// The longest `Retry-After` that is waited for.
    pub max_retry_after: Duration,
    /// One attempt's time limit (connect, send, answer).
    pub call_timeout: Duration,
    /// How long one call may take in all, its waits included: no retry
    /// is begun that would end later.
    pub patience: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(120),
            call_timeout: Duration::from_secs(20),
            patience: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// For posting replies: backoff up to 15 s between attempts, for up to
    /// five minutes in all.
    pub fn replies() -> RetryPolicy {
        RetryPolicy {
            attempts: 100,
            max_backoff: Duration::from_secs(15),
            patience: Duration::from_secs(300),
            ..RetryPolicy::default()
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        let capped = exp.min(self.max_backoff);
        // Up to 20% jitter so that retries from many tasks spread out.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        capped + capped.mul_f64(f64::from(nanos % 200) / 1000.0)
    }
}

/// Whether a call of `method` posts something new each time it is taken
/// (a second one would show twice), unlike updates, deletes and checks.
fn posts_anew(method: &str) -> bool {
    matches!(
        method,
        "chat.postMessage" | "chat.postEphemeral" | "response_url" | "files.completeUploadExternal"
    )
}

/// One attempt's failure, classified.
enum Failure {
    /// Not worth retrying.
    Permanent(ApiError),
    /// Wait this long (from `Retry-After`), then retry.
    RetryAfter(Duration),
    /// Back off, then retry; the text says why.
    Transient(String),
}

fn classify(method: &str, err: SlackClientError) -> Failure {
    match err {
        SlackClientError::ApiError(e) if TRANSIENT_CODES.contains(&e.code.as_str()) => {
            Failure::Transient(format!("Slack answered {}", e.code))
        }
        SlackClientError::ApiError(e) => Failure::Permanent(ApiError::Slack {
            method: method.to_string(),
            code: e.code,
        }),
        SlackClientError::RateLimitError(e) => {
            Failure::RetryAfter(e.retry_after.unwrap_or(Duration::from_secs(1)))
        }
        SlackClientError::HttpError(e) if e.status_code.is_server_error() => {
            Failure::Transient(format!("HTTP {}", e.status_code))
        }
        SlackClientError::HttpError(e) => Failure::Permanent(ApiError::Invalid {
            method: method.to_string(),
            detail: format!("HTTP {}", e.status_code),
        }),
        SlackClientError::HttpProtocolError(e) => Failure::Transient(format!(
            "network error: {}",
            e.cause
                .as_ref()
                .map_or_else(|| "unknown".to_string(), |c| error_chain(c.as_ref()))
        )),
        SlackClientError::EndOfStream(_) => Failure::Transient("connection closed".into()),
        SlackClientError::SystemError(e) => Failure::Transient(format!(
            "{}{}",
            e.message.unwrap_or_default(),
            e.cause
                .as_ref()
                .map_or_else(String::new, |c| format!(" {}", error_chain(c.as_ref())))
        )),
        other => Failure::Permanent(ApiError::Invalid {
            method: method.to_string(),
            detail: other.to_string(),
        }),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Who the bot token belongs to (`auth.test`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    /// The bot user's name, e.g. `tradebox`.
    pub user: String,
    pub team_id: String,
    pub team: String,
    pub bot_id: Option<String>,
    /// The workspace URL.
    pub url: String,
    /// The token's scopes (the `x-oauth-scopes` header), when Slack sent them.
    pub scopes: Option<Vec<String>>,
}

impl Identity {
    /// [`REQUIRED_SCOPES`] the token lacks (empty when unknown).
    pub fn missing_scopes(&self) -> Vec<&'static str> {
        match &self.scopes {
            Some(have) => REQUIRED_SCOPES
                .iter()
                .filter(|s| !have.iter().any(|h| h == *s))
                .copied()
                .collect(),
            None => Vec::new(),
        }
    }
}

/// Where a message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
}

type RawClient = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The Web API with the bot token.
#[derive(Clone)]
pub struct Api {
    client: Arc<Client>,
    raw: RawClient,
    token: SlackApiToken,
    api_url: String,
    retry: RetryPolicy,
}

/// Installs rustls' `ring` provider for the whole process (slack-morphism's
/// HTTPS and WebSocket clients need a process-wide default, and panic on the
/// first TLS call without one). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// hyper-rustls with the system's roots, HTTP or HTTPS.
fn https_connector(api_url: &str) -> Result<HttpsConnector<HttpConnector>, Error> {
    install_crypto_provider();
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b,
        Err(e) if api_url.starts_with("http://") => {
            tracing::debug!("no system CA certificates ({e}); plain HTTP only");
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
        Err(e) => {
            return Err(Error::Config(format!(
                "cannot load the system's CA certificates to reach Slack over HTTPS: {e} \
                 (install the ca-certificates package)"
            )))
        }
    };
    Ok(builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build())
}

impl Api {
    /// A client for the Web API at `api_url` (no final `/`).
    pub fn new(api_url: &str, bot_token: &str, retry: RetryPolicy) -> Result<Api, Error> {
        let https = https_connector(api_url)?;
        let connector = SlackClientHyperConnector::with_connector(https.clone())
            .with_slack_api_url(api_url.trim_end_matches('/'));
        let raw = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
        Ok(Api {
            client: Arc::new(SlackClient::new(connector)),
            raw,
            token: SlackApiToken::new(SlackApiTokenValue(bot_token.to_string())),
            api_url: api_url.trim_end_matches('/').to_string(),
            retry,
        })
    }

    /// slack-morphism's client (for the Socket Mode listener).
    pub fn client(&self) -> Arc<Client> {
        Arc::clone(&self.client)
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The same client with another retry policy.
    pub fn with_retry(&self, retry: RetryPolicy) -> Api {
        Api {
            retry,
            ..self.clone()
        }
    }

    /// Runs one call under the retry policy.
    async fn call<T, F, Fut>(&self, method: &str, attempt: F) -> Result<T, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let started = tokio::time::Instant::now();
        let mut failures = 0u32;
        loop {
            let outcome = match tokio::time::timeout(self.retry.call_timeout, attempt()).await {
                Ok(outcome) => outcome,
                // Sent, maybe taken, and not answered: trying again could
                // post the message twice.
                Err(_) if posts_anew(method) => {
                    return Err(ApiError::GaveUp {
                        method: method.to_string(),
                        attempts: failures + 1,
                        last: format!(
                            "no answer within {:?}; not sent again, it may have been posted",
                            self.retry.call_timeout
                        ),
                    })
                }
                Err(_) => Err(Failure::Transient(format!(
                    "no answer within {:?}",
                    self.retry.call_timeout
                ))),
            };
            let failure = match outcome {
                Ok(value) => return Ok(value),
                Err(f) => f,
            };
            failures += 1;
            let (wait, why) = match failure {
                Failure::Permanent(e) => return Err(e),
                Failure::RetryAfter(wait) if wait > self.retry.max_retry_after => {
                    return Err(ApiError::RateLimited {
                        method: method.to_string(),
                        retry_after: wait,
                    })
                }
                Failure::RetryAfter(wait) => (wait, format!("rate limited for {wait:?}")),
                Failure::Transient(why) => (self.retry.backoff(failures), why),
            };
            let out_of_time = started.elapsed() + wait > self.retry.patience;
            if failures >= self.retry.attempts || out_of_time {
                return Err(ApiError::GaveUp {
                    method: method.to_string(),
                    attempts: failures,
                    last: why,
                });
            }
            tracing::warn!(method, attempt = failures, "{why}; retrying in {wait:?}");
            tokio::time::sleep(wait).await;
        }
    }

    /// POSTs a JSON body to a Web API method with the bot token.
    pub async fn post(&self, method: &str, body: &Value) -> Result<Value, ApiError> {
        self.call(method, || async {
            let session = self.client.open_session(&self.token);
            session
                .http_session_api
                .http_post::<Value, Value>(method, body, None)
                .await
                .map_err(|e| classify(method, e))
        })
        .await
    }

    /// `chat.postMessage`.
    pub async fn post_message(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        message: &Rendered,
    ) -> Result<Posted, ApiError> {
        let mut body = json!({
            "channel": channel,
            "text": message.text,
            "blocks": message.blocks,
            "unfurl_links": false,
            "unfurl_media": false,
        });
        if let Some(ts) = thread_ts {
            body["thread_ts"] = json!(ts);
        }
        let answer = self.post("chat.postMessage", &body).await?;
        posted("chat.postMessage", &answer, channel, "ts")
    }

    /// `chat.update` of a message the bot posted.
    pub async fn update(&self, at: &Posted, message: &Rendered) -> Result<(), ApiError> {
        let body = json!({
            "channel": at.channel,
            "ts": at.ts,
            "text": message.text,
            "blocks": message.blocks,
        });
        self.post("chat.update", &body).await.map(drop)
    }

    /// `chat.delete` of a message the bot posted.
    pub async fn delete(&self, at: &Posted) -> Result<(), ApiError> {
        let body = json!({"channel": at.channel, "ts": at.ts});
        self.post("chat.delete", &body).await.map(drop)
    }

    /// `chat.postEphemeral`: only `user` sees it.
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        thread_ts: Option<&str>,
        message: &Rendered,
    ) -> Result<(), ApiError> {
        let mut body = json!({
            "channel": channel,
            "user": user,
            "text": message.text,
            "blocks": message.blocks,
        });
        if let Some(ts) = thread_ts {
            body["thread_ts"] = json!(ts);
        }
        self.post("chat.postEphemeral", &body).await.map(drop)
    }

    /// Posts to a `response_url` (no token; Slack allows 5 posts in 30
    /// minutes per URL). `in_channel` makes the message visible to all.
    pub async fn respond(
        &self,
        response_url: &url::Url,
        message: &Rendered,
        in_channel: bool,
    ) -> Result<(), ApiError> {
        let body = json!({
            "response_type": if in_channel { "in_channel" } else { "ephemeral" },
            "text": message.text,
            "blocks": message.blocks,
        });
        let method = "response_url";
        self.call(method, || async {
            let span = tracing::debug_span!("Slack response_url");
            let context = SlackClientApiCallContext {
                rate_control_params: None,
                token: None,
                tracing_span: &span,
                is_sensitive_url: true,
            };
            let answer: ClientResult<Value> = self
                .client
                .http_api
                .connector
                .http_post_uri(response_url.clone(), &body, context)
                .await;
            answer.map_err(|e| classify(method, e))
        })
        .await
        .map(drop)
    }

    /// Uploads files into a channel (and thread): `files.getUploadURLExternal`
    /// and the upload for each, then one `files.completeUploadExternal`.
    pub async fn upload(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        files: &[Upload],
    ) -> Result<Vec<String>, ApiError> {
        let mut done = Vec::new();
        for file in files.iter().filter(|f| !f.bytes.is_empty()) {
            let method = "files.getUploadURLExternal";
            let target = self
                .call(method, || async {
                    let session = self.client.open_session(&self.token);
                    session
                        .get_upload_url_external(&SlackApiFilesGetUploadUrlExternalRequest::new(
                            file.filename.clone(),
                            file.bytes.len(),
                        ))
                        .await
                        .map_err(|e| classify(method, e))
                })
                .await?;
            let method = "upload";
            self.call(method, || async {
                let session = self.client.open_session(&self.token);
                session
                    .files_upload_via_url(&SlackApiFilesUploadViaUrlRequest::new(
                        target.upload_url.clone(),
                        file.bytes.clone(),
                        file.mime.clone(),
                    ))
                    .await
                    .map_err(|e| classify(method, e))
            })
            .await?;
            done.push(
                SlackApiFilesComplete::new(target.file_id.clone()).with_title(file.title.clone()),
            );
        }
        if done.is_empty() {
            return Ok(Vec::new());
        }
        let ids = done.iter().map(|f| f.id.0.clone()).collect();
        let mut request = SlackApiFilesCompleteUploadExternalRequest::new(done)
            .with_channel_id(channel.to_string().into());
        if let Some(ts) = thread_ts {
            request = request.with_thread_ts(ts.to_string().into());
        }
        let method = "files.completeUploadExternal";
        self.call(method, || async {
            let session = self.client.open_session(&self.token);
            session
                .files_complete_upload_external(&request)
                .await
                .map_err(|e| classify(method, e))
        })
        .await?;
        Ok(ids)
    }

    /// `auth.test` with the bot token: who it is, and its scopes.
    pub async fn auth_test(&self) -> Result<Identity, ApiError> {
        let token = self.token.token_value.0.clone();
        let (answer, scopes) = self.raw_post("auth.test", &token).await?;
        let text = |k: &str| answer[k].as_str().unwrap_or_default().to_string();
        Ok(Identity {
            user_id: text("user_id"),
            user: text("user"),
            team_id: text("team_id"),
            team: text("team"),
            bot_id: answer["bot_id"].as_str().map(str::to_string),
            url: text("url"),
            scopes,
        })
    }

    /// `apps.connections.open` with an app-level token: checks that Socket
    /// Mode can connect (the URL is not used).
    pub async fn check_app_token(&self, app_token: &str) -> Result<(), ApiError> {
        let token = SlackApiToken::new(SlackApiTokenValue(app_token.to_string()));
        let method = "apps.connections.open";
        self.call(method, || async {
            let session = self.client.open_session(&token);
            session
                .apps_connections_open(&SlackApiAppsConnectionOpenRequest::new())
                .await
                .map_err(|e| classify(method, e))
        })
        .await
        .map(drop)
    }

    /// A POST with plain hyper, keeping the `x-oauth-scopes` header.
    async fn raw_post(
        &self,
        method: &str,
        token: &str,
    ) -> Result<(Value, Option<Vec<String>>), ApiError> {
        let uri = format!("{}/{method}", self.api_url);
        self.call(method, || async {
            let request = hyper::Request::post(&uri)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::new()))
                .map_err(|e| {
                    Failure::Permanent(ApiError::Invalid {
                        method: method.to_string(),
                        detail: e.to_string(),
                    })
                })?;
            let response =
                self.raw.request(request).await.map_err(|e| {
                    Failure::Transient(format!("network error: {}", error_chain(&e)))
                })?;
            let status = response.status();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let retry_after = header("retry-after");
            let scopes = header("x-oauth-scopes").map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            });
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| Failure::Transient(format!("network error: {e}")))?
                .to_bytes();
            if status == hyper::StatusCode::TOO_MANY_REQUESTS {
                let secs = retry_after.and_then(|s| s.trim().parse().ok()).unwrap_or(1);
                return Err(Failure::RetryAfter(Duration::from_secs(secs)));
            }
            if status.is_server_error() {
                return Err(Failure::Transient(format!("HTTP {status}")));
            }
            let answer: Value = serde_json::from_slice(&body).map_err(|_| {
                Failure::Permanent(ApiError::Invalid {
                    method: method.to_string(),
                    detail: format!("HTTP {status} with a body that is not JSON"),
                })
            })?;
            if answer["ok"] != json!(true) {
                let code = answer["error"]
                    .as_str()
                    .unwrap_or("unknown_error")
                    .to_string();
                if TRANSIENT_CODES.contains(&code.as_str()) {
                    return Err(Failure::Transient(format!("Slack answered {code}")));
                }
                return Err(Failure::Permanent(ApiError::Slack {
                    method: method.to_string(),
                    code,
                }));
            }
            Ok((answer, scopes))
        })
        .await
    }
}

fn posted(method: &str, answer: &Value, channel: &str, key: &str) -> Result<Posted, ApiError> {
    let ts = answer[key].as_str().ok_or_else(|| ApiError::Invalid {
        method: method.to_string(),
        detail: format!("the answer has no {key}"),
    })?;
    Ok(Posted {
        channel: answer["channel"].as_str().unwrap_or(channel).to_string(),
        ts: ts.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            ..RetryPolicy::default()
        };
        let first = p.backoff(1);
        assert!(first >= Duration::from_millis(100) && first < Duration::from_millis(121));
        let third = p.backoff(3);
        assert!(third >= Duration::from_millis(400) && third < Duration::from_millis(481));
        let many = p.backoff(30);
        assert!(many >= Duration::from_millis(500) && many < Duration::from_millis(601));
    }

    #[test]
    fn channel_access_errors() {
        let e = |code: &str| ApiError::Slack {
            method: "chat.postMessage".into(),
            code: code.into(),
        };
        assert!(e("not_in_channel").is_channel_access());
        assert!(e("channel_not_found").is_channel_access());
        assert!(!e("invalid_blocks").is_channel_access());
        let missing = Identity {
            user_id: "U".into(),
            user: "b".into(),
            team_id: "T".into(),
            team: "t".into(),
            bot_id: None,
            url: String::new(),
            scopes: Some(vec!["commands".into(), "chat:write".into()]),
        };
        assert_eq!(missing.missing_scopes(), ["files:write", "files:read"]);
    }
}
