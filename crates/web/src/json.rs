//! JSON in and out: the body extractor whose errors name the field
//! (`{"error":"missing field `code`","field":"code"}`), query parameters
//! checked one by one, and the JSON forms of replies and execution results
//! (files and artifacts carried inline as base64 `data`).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tradebox_core::reply::Reply;
use tradebox_sandbox::ExecResult;

use crate::error::ApiError;

/// The body limit in force, put in the request by the guard (for messages).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body; rejections are [`ApiError`]s that name the field.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(kind) = req.headers().get(header::CONTENT_TYPE) {
            let kind = kind.to_str().unwrap_or("").to_ascii_lowercase();
            let essence = kind.split(';').next().unwrap_or("").trim().to_string();
            if !(essence == "application/json" || essence.ends_with("+json")) {
                return Err(ApiError::UnsupportedMediaType(essence));
            }
        }
        let bytes = body_bytes(req, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// The whole body, or 413 past the limit.
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map_or(crate::DEFAULT_MAX_BODY, |l| l.0);
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::bad_request(format!(
                "could not read the request body: {}",
                e.body_text()
            ))
        }
    })
}

/// Parses a JSON document into `T`, with errors naming the field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty; send a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = without_position(&inner.to_string());
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(format!(
                "the body is not valid JSON: {message} (line {}, column {})",
                inner.line(),
                inner.column()
            ));
        }
        let field = if path == "." {
            missing_field(&message)
        } else {
            Some(path)
        };
        let message = match &field {
            Some(f)
                if !message.starts_with("missing field")
                    && !message.starts_with("unknown field") =>
            {
                format!("{f}: {message}")
            }
            _ => message,
        };
        ApiError::BadRequest { message, field }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not valid JSON: {}",
            without_position(&e.to_string())
        ))
    })?;
    Ok(value)
}

/// serde_json's message without its ` at line L column C` suffix.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => message[..i].to_string(),
        _ => message.to_string(),
    }
}

/// `x` from "missing field `x`".
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next().map(str::to_string)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A reply as JSON: the serde form of [`Reply`], each file with its bytes
/// as base64 `data`.
pub fn reply_json(reply: &Reply) -> Value {
    let mut value = match serde_json::to_value(reply) {
        Ok(v) => v,
        Err(e) => return json!({ "error": format!("the reply could not be encoded: {e}") }),
    };
    if let Some(files) = value.get_mut("files").and_then(Value::as_array_mut) {
        for (json, file) in files.iter_mut().zip(&reply.files) {
            json["data"] = Value::String(b64(&file.bytes));
        }
    }
    value
}

/// An execution result with the fields of `tradebox run --json`; artifacts
/// carry their bytes as base64 `data` instead of a `path`.
pub fn run_json(result: &ExecResult) -> Value {
    // The supervisor passed only valid base64, with its decoded size.
    let artifacts: Vec<Value> = result
        .artifacts
        .iter()
        .map(|a| {
            json!({
                "kind": a.kind,
                "name": a.name,
                "mime": a.mime,
                "size": a.size,
                "truncated": a.truncated,
                "data": a.data_b64,
            })
        })
        .collect();
    json!({
        "success": result.success,
        "result": result.result,
        "output": result.output,
        "error": result.error,
        "execution_time_ms": result.execution_time_ms,
        "artifacts": artifacts,
        "data_as_of": result.data_as_of,
    })
}

/// The query string of a request; [`Params::get`] gives a parameter's
/// percent-decoded value as sent (not trimmed), `None` when it is absent or
/// empty: an empty value counts as absent (the OpenAPI document's
/// `allowEmptyValue`).
pub struct Params(String);

impl Params {
    pub fn new(query: Option<String>) -> Params {
        Params(query.unwrap_or_default())
    }

    pub fn get(&self, name: &str) -> Option<String> {
        crate::guard::query_param(&self.0, name).filter(|v| !v.is_empty())
    }
}

/// Parses an optional whole-number query parameter within `range`: ASCII
/// digits only (no sign, no spaces), as the document's `integer` says.
pub fn number_param(
    name: &str,
    value: Option<&str>,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ApiError> {
    let Some(text) = value.filter(|t| !t.is_empty()) else {
        return Ok(default);
    };
    let digits = text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<usize>() {
        Ok(n) if digits && range.contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest {
            message: format!(
                "{name}: expected a whole number from {} to {}, got {text:?}",
                range.start(),
                range.end()
            ),
            field: Some(name.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        code: String,
        timeout: Option<f64>,
    }

    fn err(text: &str) -> (String, Option<String>) {
        match parse::<Body>(text.as_bytes()) {
            Err(ApiError::BadRequest { message, field }) => (message, field),
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            err("{}"),
            ("missing field `code`".into(), Some("code".into()))
        );
        let (message, field) = err(r#"{"code": "x", "timeout": "soon"}"#);
        assert_eq!(field.as_deref(), Some("timeout"));
        assert!(
            message.starts_with("timeout: invalid type: string \"soon\""),
            "{message}"
        );
        let (message, _) = err(r#"{"code": "x", "tiemout": 1}"#);
        assert!(message.contains("unknown field `tiemout`"), "{message}");
        let (message, field) = err(r#"{"code": "x""#);
        assert!(
            message.starts_with("the body is not valid JSON"),
            "{message}"
        );
        assert_eq!(field, None);
        let (message, _) = err("  ");
        assert!(message.contains("empty"));
        let (message, _) = err(r#"{"code": "x"} trailing"#);
        assert!(
            message.starts_with("the body is not valid JSON"),
            "{message}"
        );
    }

    #[test]
    fn number_params() {
        assert_eq!(number_param("limit", None, 5, 1..=10).ok(), Some(5));
        assert_eq!(number_param("limit", Some("7"), 5, 1..=10).ok(), Some(7));
        assert!(number_param("limit", Some("0"), 5, 1..=10).is_err());
        assert!(number_param("limit", Some("x"), 5, 1..=10).is_err());
        assert_eq!(number_param("limit", Some(""), 5, 1..=10).ok(), Some(5));
        assert_eq!(number_param("limit", Some("007"), 5, 1..=10).ok(), Some(7));
        for signed in ["+7", " 7", "7 ", "-0", "1e1"] {
            assert!(
                number_param("limit", Some(signed), 5, 1..=10).is_err(),
                "{signed}"
            );
        }
    }

    #[test]
    fn query_values_are_taken_as_sent() {
        let params = Params::new(Some("q=+a%20&user=&outcome=%09&x".into()));
        assert_eq!(params.get("q").as_deref(), Some(" a "));
        assert_eq!(params.get("user"), None);
        assert_eq!(params.get("outcome").as_deref(), Some("\t"));
        assert_eq!(params.get("x"), None);
        assert_eq!(params.get("absent"), None);
    }
}
