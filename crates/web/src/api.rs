//! The JSON HTTP API (`/api/v1/...`), also what the console's pages read.
//! Its document is [`crate::openapi`]; every error is `{"error": "..."}`.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use tradebox_core::audit::{Action, AuditFilter, Outcome, Source};
use tradebox_core::pipeline::{Input, Refusal, RefusalKind, Request};

use crate::error::ApiError;
use crate::guard::Via;
use crate::json::{number_param, reply_json, run_json, ApiJson, Params};
use crate::AppState;

/// The audit source of a request: the console in a browser, else the API.
pub fn source(via: Via) -> Source {
    match via {
        Via::Cookie => Source::Console,
        Via::Bearer => Source::Api,
    }
}

/// Runs blocking store work off the async threads.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("the request failed: {e}")))?
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    code: String,
    /// Seconds; may only shorten the configured limit.
    #[serde(default)]
    timeout: Option<f64>,
}

/// `POST /api/v1/run`.
pub async fn run(
    State(state): State<AppState>,
    Extension(via): Extension<Via>,
    ApiJson(body): ApiJson<RunBody>,
) -> Result<Response, ApiError> {
    if body.code.trim().is_empty() {
        return Err(ApiError::BadRequest {
            message: "code: is empty; send the Python code to run".into(),
            field: Some("code".into()),
        });
    }
    let timeout = match body.timeout {
        None => None,
        Some(t) if t.is_finite() && t > 0.0 && t <= 3600.0 => Some(Duration::from_secs_f64(t)),
        Some(t) => {
            return Err(ApiError::BadRequest {
                message: format!(
                    "timeout: {t} is out of range; give seconds, more than 0 and at most 3600"
                ),
                field: Some("timeout".into()),
            })
        }
    };
    let req = Request {
        user: state.options.user.clone(),
        channel: None,
        source: source(via),
        input: Input::Slash {
            command: "/analyze".into(),
            text: body.code.clone(),
        },
    };
    match state.pipeline.run_code(&req, &body.code, timeout).await {
        Ok(result) => Ok(Json(run_json(&result)).into_response()),
        Err(refusal) => refusal_response(refusal),
    }
}

/// A refusal of `run_code` as an HTTP answer. A validation refusal is a
/// failed result, as `tradebox run --json` gives it; the rest are errors
/// with the status that fits: 403 permissions, 429 rate limit or the user's
/// own jobs (with `Retry-After`), 503 the sandbox busy or unavailable.
pub(crate) fn refusal_response(refusal: Refusal) -> Result<Response, ApiError> {
    let message = refusal.message;
    Err(match refusal.kind {
        RefusalKind::Validation => {
            let detail = message
                .strip_prefix("Code validation failed:")
                .unwrap_or(&message)
                .trim();
            let body = json!({
                "success": false,
                "result": null,
                "output": "",
                "error": {"type": "ValidationError", "message": detail},
                "execution_time_ms": 0,
                "artifacts": [],
                "data_as_of": null,
            });
            return Ok(Json(body).into_response());
        }
        RefusalKind::Permission => ApiError::Forbidden(message),
        RefusalKind::RateLimit => ApiError::TooManyRequests {
            message,
            retry_after: refusal.retry_after_seconds,
        },
        RefusalKind::Busy => ApiError::TooManyRequests {
            message,
            retry_after: Some(1),
        },
        RefusalKind::Overloaded | RefusalKind::Unavailable => ApiError::Unavailable(message),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    user: String,
    #[serde(default)]
    channel: Option<String>,
    text: String,
}

/// Checks a user or channel name from a request body.
pub(crate) fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.chars().count() <= 64
        && value
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '<' | '>' | '|'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest {
            message: format!(
                "{field}: must be 1 to 64 characters without spaces, control characters, `<`, `>` or `|`"
            ),
            field: Some(field.into()),
        })
    }
}

/// `POST /api/v1/commands`: a slash command line as `user` typed it.
pub async fn commands(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CommandBody>,
) -> Result<Response, ApiError> {
    check_name("user", &body.user)?;
    if let Some(channel) = &body.channel {
        check_name("channel", channel)?;
    }
    if body.text.trim().is_empty() {
        return Err(ApiError::BadRequest {
            message: "text: is empty; send a command line such as `/analyze result = 1`".into(),
            field: Some("text".into()),
        });
    }
    let req = Request {
        user: body.user,
        channel: body.channel,
        source: Source::Api,
        input: Input::Line(body.text),
    };
    let reply = state.pipeline.handle(&req, |_| {}).await;
    Ok(Json(reply_json(&reply)).into_response())
}

/// `GET /api/v1/functions?q=&limit=&offset=`.
pub async fn functions(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::new(query);
    let limit = number_param("limit", params.get("limit").as_deref(), 100, 1..=500)?;
    let offset = number_param("offset", params.get("offset").as_deref(), 0, 0..=1_000_000)?;
    let query = params.get("q");
    let pipeline = state.pipeline.clone();
    let body = blocking(move || {
        let store = pipeline.functions();
        let (functions, total) = match &query {
            Some(q) => (store.search(q, limit, offset)?, store.search_count(q)?),
            None => (store.list(limit, offset)?, store.count()?),
        };
        let stats = store.stats()?;
        Ok(json!({
            "functions": functions,
            "total": total,
            "limit": limit,
            "offset": offset,
            "stats": {"total_functions": stats.total_functions, "total_uses": stats.total_uses},
        }))
    })
    .await?;
    Ok(Json(body).into_response())
}

/// `GET /api/v1/functions/{name}`: the function and its version history.
pub async fn function(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let pipeline = state.pipeline.clone();
    let body = blocking(move || {
        let store = pipeline.functions();
        let function = store.get(&name)?;
        let history = store.history(&name)?;
        if function.is_none() && history.is_empty() {
            return Err(ApiError::NotFound(format!("no function named `{name}`")));
        }
        Ok(json!({
            "function": function,
            "deleted": function.is_none(),
            "history": history,
        }))
    })
    .await?;
    Ok(Json(body).into_response())
}

/// `GET /api/v1/audit?user=&outcome=&action=&limit=`.
pub async fn audit(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::new(query);
    let get = |k: &str| params.get(k);
    let limit = number_param("limit", get("limit").as_deref(), 200, 1..=5000)?;
    let outcome = match get("outcome") {
        Some(o) if Outcome::NAMES.contains(&o.as_str()) => Some(Outcome::from(o.as_str())),
        Some(o) => {
            return Err(ApiError::BadRequest {
                message: format!(
                    "outcome: unknown value {o:?}; expected one of {}",
                    Outcome::NAMES.join(", ")
                ),
                field: Some("outcome".into()),
            })
        }
        None => None,
    };
    let action = match get("action") {
        Some(a) if Action::NAMES.contains(&a.as_str()) => Some(Action::from(a.as_str())),
        Some(a) => {
            return Err(ApiError::BadRequest {
                message: format!(
                    "action: unknown value {a:?}; expected one of {}",
                    Action::NAMES.join(", ")
                ),
                field: Some("action".into()),
            })
        }
        None => None,
    };
    let filter = AuditFilter {
        user: get("user"),
        outcome,
        action,
        limit: Some(limit),
        ..AuditFilter::default()
    };
    let pipeline = state.pipeline.clone();
    let body = blocking(move || {
        let entries = pipeline.audit().query(&filter)?;
        Ok(json!({
            "entries": entries,
            "count": entries.len(),
            "limit": limit,
            "outcomes": Outcome::NAMES,
            "actions": Action::NAMES,
        }))
    })
    .await?;
    Ok(Json(body).into_response())
}

/// Unknown `/api/v1/...` paths: a JSON 404 rather than an empty one.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::NotFound(format!(
        "no such endpoint: {}; see /api/v1/openapi.json",
        uri.path()
    ))
    .into_response()
}

/// A known endpoint asked with the wrong method: a JSON 405.
pub async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let body = json!({
        "error": format!("{} does not answer {method}; see /api/v1/openapi.json", uri.path())
    });
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Response {
    (StatusCode::OK, Json(crate::openapi::document())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_statuses() {
        let status = |kind, retry| {
            let refusal = Refusal {
                kind,
                message: "m".into(),
                retry_after_seconds: retry,
                excerpt: None,
            };
            match refusal_response(refusal) {
                Ok(r) => (r.status(), None),
                Err(e) => {
                    let retry = match &e {
                        ApiError::TooManyRequests { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    (e.status(), retry)
                }
            }
        };
        use RefusalKind::*;
        assert_eq!(status(Validation, None), (StatusCode::OK, None));
        assert_eq!(status(Permission, None), (StatusCode::FORBIDDEN, None));
        assert_eq!(
            status(RateLimit, Some(42)),
            (StatusCode::TOO_MANY_REQUESTS, Some(42))
        );
        assert_eq!(status(Busy, None), (StatusCode::TOO_MANY_REQUESTS, Some(1)));
        assert_eq!(
            status(Overloaded, None),
            (StatusCode::SERVICE_UNAVAILABLE, None)
        );
        assert_eq!(
            status(Unavailable, None),
            (StatusCode::SERVICE_UNAVAILABLE, None)
        );
    }
}
