//! The Web API at `/api/{method}`: bearer tokens checked, every call
//! recorded (failed ones too), queued failures answered first (429 with
//! `Retry-After`, 500, `ok: false`), denied channels refused, and the
//! methods tradebox uses answered as Slack does; plus the upload URLs
//! `files.getUploadURLExternal` hands out (`/upload/{id}`) and the
//! `response_url`s of deliveries (`/response/{id}`, five posts each).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use serde_json::{json, Value};

use crate::state::{
    Call, Data, Ephemeral, Failure, Message, ResponsePost, Shared, SharedFile, APP_ID, APP_TOKEN,
    BOT_ID, BOT_NAME, BOT_TOKEN, BOT_USER_ID, DEFAULT_SCOPES, TEAM, TEAM_ID,
};

/// The routes of the HTTP server.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/{method}", any(web_api))
        .route("/upload/{id}", post(upload))
        .route("/response/{id}", post(response_url))
        .with_state(shared)
}

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
/// An outage touches the Web API methods only (`web_api`), not uploads or
/// `response_url`s, which Slack serves from other hosts.
fn record(
    shared: &Shared,
    method: &str,
    web_api: bool,
    params: Value,
    token: Option<String>,
) -> Option<Response> {
    let mut data = shared.lock();
    let down = web_api && data.outage_until.is_some_and(|t| Instant::now() < t);
    let failure = if down {
        Some(Failure::Unavailable)
    } else {
        data.failures.get_mut(method).and_then(VecDeque::pop_front)
    };
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
        Some(Failure::Unavailable) => (
            Some((StatusCode::SERVICE_UNAVAILABLE, "service unavailable").into_response()),
            Some("503".to_string()),
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
    let answer = record(&shared, &method, true, params.clone(), token.clone());
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
    if let Some(answer) = record(&shared, "upload", false, params, None) {
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
    if let Some(answer) = record(&shared, "response_url", false, params.clone(), None) {
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
