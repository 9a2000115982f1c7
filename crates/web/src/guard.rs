//! The guard in front of every route of the console and the API, applied
//! inside [`crate::router`] so that routers merged beside it (Slack's) are
//! not affected. In order:
//!
//! 1. **Host** (DNS rebinding): the `Host` header must be one of
//!    [`crate::ConsoleOptions::allowed_hosts`] (ASCII case ignored), else 403.
//! 2. **Token**: `Authorization: Bearer T` (the API), or the session cookie
//!    (the console's pages and fetches), or, on a `GET`, `?token=T`, which
//!    sets the cookie (HttpOnly, SameSite=Strict) and redirects to the same
//!    path without the token, as Jupyter does. Missing or wrong: 401. Every
//!    comparison is constant time ([`subtle`]). The cookie holds the token
//!    hex-encoded; its name carries the port, so consoles on different
//!    ports of one host do not overwrite each other's cookie.
//! 3. **CSRF**: a state-changing request (anything but GET, HEAD, OPTIONS)
//!    authenticated by the cookie must carry `X-CSRF-Token` with the token
//!    the page was served with (`<meta name="csrf-token">`), and an `Origin`
//!    (when sent) of the same host; else 403 with `"csrf": true`. Requests
//!    with a Bearer token need none: browsers never add that header by
//!    themselves.
//! 4. **Body size**: a `Content-Length` above the limit is answered 413
//!    before the handler runs; bodies without one are cut at the limit by
//!    [`axum::extract::DefaultBodyLimit`] and answered 413 by the extractors.
//!
//! The probes (`GET /healthz`, `GET /readyz`, see [`crate::health`]) pass
//! all four: an orchestrator asks them with its own `Host` and no token.
//!
//! Every answer gets `nosniff`, `no-referrer`, a strict Content Security
//! Policy (scripts from this server only, no inline script), no framing,
//! and `Cache-Control: no-store` unless the handler chose otherwise. No
//! `Access-Control-Allow-Origin` is ever sent. The token is never logged:
//! the request log has the path without the query.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::AppState;

/// How a request proved it holds the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer` (API clients).
    Bearer,
    /// The session cookie (the console in a browser).
    Cookie,
}

/// The header the console sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What the guard needs to know, fixed when the router is built.
pub struct Secrets {
    token: Vec<u8>,
    /// The cookie value: the token, hex-encoded (cookie-safe whatever the
    /// token's characters).
    cookie_value: Vec<u8>,
    csrf: String,
    allowed_hosts: Vec<String>,
}

impl Secrets {
    pub fn new(token: &str, allowed_hosts: &[String]) -> Secrets {
        Secrets {
            token: token.as_bytes().to_vec(),
            cookie_value: hex(token.as_bytes()).into_bytes(),
            csrf: random_hex(32),
            allowed_hosts: allowed_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
        }
    }

    /// The CSRF token pages are served with.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    fn token_matches(&self, presented: &[u8]) -> bool {
        // An empty configured token matches nothing.
        !self.token.is_empty() && bool::from(self.token.as_slice().ct_eq(presented))
    }

    fn cookie_matches(&self, presented: &[u8]) -> bool {
        !self.token.is_empty() && bool::from(self.cookie_value.as_slice().ct_eq(presented))
    }

    fn csrf_matches(&self, presented: &[u8]) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented))
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        self.allowed_hosts.contains(&host)
    }
}

/// The middleware; see the module documentation.
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut response = match check(&state, &mut req) {
        Ok(()) => next.run(req).await,
        Err(refusal) => *refusal,
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), "console request");
    secure_headers(response.headers_mut());
    response
}

/// The checks; `Err` is the answer to send instead of running the handler.
fn check(state: &AppState, req: &mut Request) -> Result<(), Box<Response>> {
    if crate::health::is_probe(req.method(), req.uri().path()) {
        return Ok(());
    }
    let secrets = &state.secrets;
    let host = request_host(req);
    let Some(host) = host.filter(|h| secrets.host_allowed(h)) else {
        return Err(Box::new(
            ApiError::Forbidden(
                "this Host header is not allowed: open the console by the address `tradebox serve` printed (protection against DNS rebinding)".into(),
            )
            .into_response(),
        ));
    };
    let cookie_name = cookie_name(&host);
    let via = authenticate(secrets, req.headers(), &cookie_name);
    // A `?token=` login: set the cookie and drop the token from the address.
    if let Some(presented) = query_param(req.uri().query().unwrap_or(""), "token") {
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            if !secrets.token_matches(presented.as_bytes()) {
                return Err(Box::new(unauthorized(req)));
            }
            return Err(Box::new(login_redirect(req, &cookie_name, secrets)));
        }
    }
    let via = match via {
        Auth::Ok(via) => via,
        Auth::Bad | Auth::Missing => return Err(Box::new(unauthorized(req))),
    };
    if via == Via::Cookie && !is_safe(req.method()) {
        check_csrf(secrets, req.headers(), &host)?;
    }
    if let Some(length) = content_length(req.headers()) {
        if length > state.options.max_body_bytes as u64 {
            return Err(Box::new(
                ApiError::PayloadTooLarge {
                    limit: state.options.max_body_bytes,
                }
                .into_response(),
            ));
        }
    }
    req.extensions_mut().insert(via);
    Ok(())
}

enum Auth {
    Ok(Via),
    Bad,
    Missing,
}

fn authenticate(secrets: &Secrets, headers: &HeaderMap, cookie_name: &str) -> Auth {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.as_bytes();
        let token = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "));
        return match token {
            Some(t) if secrets.token_matches(trim_ascii(t)) => Auth::Ok(Via::Bearer),
            _ => Auth::Bad,
        };
    }
    let mut seen = false;
    for value in cookies(headers, cookie_name) {
        seen = true;
        if secrets.cookie_matches(value.as_bytes()) {
            return Auth::Ok(Via::Cookie);
        }
    }
    if seen {
        Auth::Bad
    } else {
        Auth::Missing
    }
}

fn check_csrf(secrets: &Secrets, headers: &HeaderMap, host: &str) -> Result<(), Box<Response>> {
    let refuse = |message: &str| {
        let body = json!({ "error": message, "csrf": true });
        Err(Box::new(
            (StatusCode::FORBIDDEN, axum::Json(body)).into_response(),
        ))
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes() == b"cross-site" || site.as_bytes() == b"same-site" {
            return refuse("cross-site request refused (CSRF protection)");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
        let host = host.to_ascii_lowercase();
        if origin != format!("http://{host}") && origin != format!("https://{host}") {
            return refuse("request from another origin refused (CSRF protection)");
        }
    }
    match headers.get(CSRF_HEADER) {
        Some(v) if secrets.csrf_matches(v.as_bytes()) => Ok(()),
        Some(_) => refuse("the CSRF token is stale or wrong: reload the page"),
        None => refuse("missing X-CSRF-Token header (CSRF protection): the console sends it; API clients use Authorization: Bearer"),
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The Host of the request: the header (HTTP/1.1), else the URI authority (HTTP/2).
fn request_host(req: &Request) -> Option<String> {
    match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok().map(str::to_string),
        None => req.uri().authority().map(|a| a.as_str().to_string()),
    }
}

/// `tradebox_token_PORT`, or `tradebox_token` when the Host has no port.
fn cookie_name(host: &str) -> String {
    let port = match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.starts_with('[') || name.ends_with(']')) =>
        {
            Some(port)
        }
        _ => None,
    };
    match port {
        Some(port) => format!("tradebox_token_{port}"),
        None => "tradebox_token".to_string(),
    }
}

/// The values of the cookies named `name`, from every `Cookie` header.
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

/// The decoded value of the first `name=` pair of a query string.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// `%XX` and `+` decoding (invalid escapes are kept as they are).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// 303 to the same path without `token`, setting the session cookie.
fn login_redirect(req: &Request, cookie_name: &str, secrets: &Secrets) -> Response {
    let path = req.uri().path();
    // `//host` would be read as another site: never redirect there.
    let path = if path.starts_with("//") || path.starts_with("/\\") {
        "/"
    } else {
        path
    };
    let rest: Vec<&str> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && percent_decode(key) != "token"
        })
        .collect();
    let location = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    let cookie = format!(
        "{cookie_name}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000",
        String::from_utf8_lossy(&secrets.cookie_value)
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    } else {
        headers.insert(header::LOCATION, HeaderValue::from_static("/"));
    }
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, v);
    }
    response
}

/// 401: a short page for a browser asking for a page, JSON for the rest.
fn unauthorized(req: &Request) -> Response {
    let wants_html = req.method() == Method::GET
        && !req.uri().path().starts_with("/api/")
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
    if !wants_html {
        return ApiError::Unauthorized.into_response();
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Html(crate::assets::UNAUTHORIZED_PAGE),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tradebox\""),
    );
    response
}

/// The Content Security Policy of every answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

fn secure_headers(headers: &mut HeaderMap) {
    let fixed = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, CSP),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes from the OS, hex-encoded.
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    if let Err(e) = getrandom::fill(&mut bytes) {
        // No randomness from the OS: a process-unique fallback, still secret
        // enough for CSRF (the cookie is SameSite=Strict besides).
        tracing::warn!("no OS randomness for the CSRF token: {e}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = format!("{now}:{}:{:p}", std::process::id(), &bytes);
        bytes = seed.into_bytes();
    }
    hex(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_names_carry_the_port() {
        assert_eq!(cookie_name("127.0.0.1:8765"), "tradebox_token_8765");
        assert_eq!(cookie_name("[::1]:9000"), "tradebox_token_9000");
        assert_eq!(cookie_name("localhost"), "tradebox_token");
        assert_eq!(cookie_name("[::1]"), "tradebox_token");
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_param("a=1&token=ab%2Fc+d", "token").as_deref(),
            Some("ab/c d")
        );
        assert_eq!(query_param("a=1", "token"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn secrets_compare() {
        let s = Secrets::new("abc", &["127.0.0.1:1".into()]);
        assert!(s.token_matches(b"abc"));
        assert!(!s.token_matches(b"abd"));
        assert!(!s.token_matches(b"ab"));
        assert!(s.cookie_matches(b"616263"));
        assert!(s.host_allowed("127.0.0.1:1"));
        assert!(!s.host_allowed("evil.example:1"));
        let empty = Secrets::new("", &[]);
        assert!(!empty.token_matches(b""));
        assert!(!empty.cookie_matches(b""));
        assert_eq!(s.csrf().len(), 64);
        assert_ne!(s.csrf(), Secrets::new("abc", &[]).csrf());
    }
}
