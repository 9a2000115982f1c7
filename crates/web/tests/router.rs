//! The router in process: the guard (token, cookie login, Host, CSRF, body
//! cap, headers), JSON errors, and the endpoints that need no sandbox, on a
//! real pipeline over real SQLite files in a fresh home. (With the sandbox:
//! crates/cli/tests/console_api.rs and console_e2e.rs, through `tradebox
//! serve`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;
use tradebox_core::audit::AuditLog;
use tradebox_core::config::{PermissionsSection, RateLimitSection};
use tradebox_core::functions::FunctionStore;
use tradebox_core::permissions::Permissions;
use tradebox_core::pipeline::{Pipeline, Settings};
use tradebox_core::ratelimit::RateLimiter;
use tradebox_core::store::StoreError;
use tradebox_data::{Home, Store};
use tradebox_web::{router, ConsoleOptions};

const TOKEN: &str = "s3cret-token-0123456789";
const HOST: &str = "127.0.0.1:8765";

struct App {
    router: Router,
    home: tempfile::TempDir,
}

/// A console on a fresh home: a pipeline without a sandbox pool (functions,
/// audit, data), console user `alice` (admin).
fn app() -> App {
    app_with(|_| {})
}

fn app_with(tweak: impl FnOnce(&mut ConsoleOptions)) -> App {
    app_over(|db| AuditLog::open(db).unwrap(), tweak)
}

/// [`app_with`], its audit trail made by `audit` from the store's path.
fn app_over(
    audit: impl FnOnce(&std::path::Path) -> AuditLog,
    tweak: impl FnOnce(&mut ConsoleOptions),
) -> App {
    let home = tempfile::TempDir::new().unwrap();
    let db = home.path().join("tradebox.db");
    Store::open(&db).unwrap();
    let pipeline = Pipeline::new(
        None,
        FunctionStore::open(&db).unwrap(),
        audit(&db),
        RateLimiter::from_config(&db, &RateLimitSection::default()).unwrap(),
        Permissions::new(&PermissionsSection::default()).with_admin("alice"),
        Settings {
            timeout: std::time::Duration::from_secs(30),
            memory_mib: 1024,
            output_limit: 1 << 20,
            as_of: None,
            validator: Some(tradebox_validate::Rules::default()),
            per_user_running: 2,
            per_user_waiting: 8,
            max_code_bytes: 20_000,
        },
    );
    let mut options =
        ConsoleOptions::new(TOKEN, vec![HOST.into(), "localhost:8765".into()], "alice");
    tweak(&mut options);
    App {
        router: router(Arc::new(pipeline), Home::new(home.path()), options),
        home,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

async fn send(app: &App, req: Request<Body>) -> Answer {
    let response = app.router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

fn get(path: &str) -> axum::http::request::Builder {
    Request::get(path).header(header::HOST, HOST)
}

fn bearer(builder: axum::http::request::Builder) -> axum::http::request::Builder {
    builder.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
}

fn post_json(path: &str, body: &Value) -> Request<Body> {
    bearer(Request::post(path).header(header::HOST, HOST))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn cookie() -> String {
    let hex: String = TOKEN.bytes().map(|b| format!("{b:02x}")).collect();
    format!("tradebox_token_8765={hex}")
}

/// The CSRF token of a page, as the browser would read it.
async fn csrf_of_page(app: &App) -> String {
    let page = send(
        app,
        get("/")
            .header(header::COOKIE, cookie())
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    let start = html.find("name=\"csrf-token\" content=\"").unwrap() + 27;
    html[start..start + 64].to_string()
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_everywhere() {
    let app = app();
    for path in [
        "/",
        "/functions",
        "/assets/console.js",
        "/api/v1/functions",
        "/api/v1/openapi.json",
        "/api/v1/nope",
        "/metrics",
    ] {
        let a = send(&app, get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(a.json()["error"].as_str().unwrap().contains("token"));
        assert_eq!(
            a.header("www-authenticate").unwrap(),
            "Bearer realm=\"tradebox\""
        );
    }
    let wrong = [
        (header::AUTHORIZATION, "Bearer nope".to_string()),
        (header::AUTHORIZATION, format!("Basic {TOKEN}")),
        (header::AUTHORIZATION, format!("Bearer {TOKEN}x")),
        (header::COOKIE, "tradebox_token_8765=00".to_string()),
        (
            header::COOKIE,
            format!("tradebox_token_9999={}", &cookie()[20..]),
        ),
    ];
    for (name, value) in wrong {
        let a = send(
            &app,
            get("/api/v1/functions")
                .header(name.clone(), value.clone())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{name}: {value}");
    }
    // A POST with a bad token is refused before its body is read.
    let a = send(
        &app,
        Request::post("/api/v1/run")
            .header(header::HOST, HOST)
            .header(header::AUTHORIZATION, "Bearer wrong")
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // A browser asking for a page gets a page that says what to do.
    let a = send(
        &app,
        get("/")
            .header(header::ACCEPT, "text/html")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.text().contains("?token="));
}

#[tokio::test]
async fn an_empty_configured_token_opens_nothing() {
    let app = app_with(|o| o.token.clear());
    for auth in ["Bearer ", "Bearer"] {
        let a = send(
            &app,
            get("/api/v1/functions")
                .header(header::AUTHORIZATION, auth)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    let a = send(&app, get("/?token=").body(Body::empty()).unwrap()).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_wrong_host_is_403_even_with_the_token() {
    let app = app();
    for host in [
        "evil.example:8765",
        "127.0.0.1:8766",
        "127.0.0.1",
        "localhost",
    ] {
        let a = send(
            &app,
            bearer(Request::get("/api/v1/functions").header(header::HOST, host))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{host}");
        assert!(a.json()["error"].as_str().unwrap().contains("Host"));
    }
    // No Host at all.
    let a = send(
        &app,
        bearer(Request::get("/api/v1/functions"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Every listed host works, in any case.
    for host in [HOST, "LOCALHOST:8765"] {
        let a = send(
            &app,
            bearer(Request::get("/api/v1/functions").header(header::HOST, host))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn token_in_the_address_sets_the_cookie_and_is_dropped() {
    let app = app();
    let a = send(
        &app,
        get(&format!("/audit?outcome=ok&token={TOKEN}&limit=5"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.header("location").unwrap(), "/audit?outcome=ok&limit=5");
    let set = a.header("set-cookie").unwrap();
    assert!(set.starts_with(&cookie()), "{set}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(
        !set.contains(TOKEN),
        "the cookie does not hold the token in clear"
    );
    // The cookie then opens pages and API reads.
    for path in ["/", "/audit", "/api/v1/functions"] {
        let a = send(
            &app,
            get(path)
                .header(header::COOKIE, format!("other=1; {}", cookie()))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
    }
    // Never a redirect to another site.
    let a = send(
        &app,
        get(&format!("//evil.example/?token={TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.header("location").as_deref(), Some("/"));
    // A wrong token in the address is refused and sets nothing.
    let a = send(&app, get("/?token=wrong").body(Body::empty()).unwrap()).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.header("set-cookie").is_none());
}

#[tokio::test]
async fn cookie_requests_that_change_state_need_the_csrf_token() {
    let app = app();
    let csrf = csrf_of_page(&app).await;
    let command = |extra: &[(&str, &str)]| {
        let mut b = Request::post("/console/command")
            .header(header::HOST, HOST)
            .header(header::COOKIE, cookie())
            .header(header::CONTENT_TYPE, "application/json");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(Body::from(r#"{"text": "/tradebox help"}"#)).unwrap()
    };
    let a = send(&app, command(&[])).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["csrf"], true);
    let a = send(&app, command(&[("x-csrf-token", "0".repeat(64).as_str())])).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = send(
        &app,
        command(&[
            ("x-csrf-token", csrf.as_str()),
            ("origin", "http://evil.example:8765"),
        ]),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "another origin");
    let a = send(
        &app,
        command(&[
            ("x-csrf-token", csrf.as_str()),
            ("sec-fetch-site", "cross-site"),
        ]),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "cross-site");
    let a = send(
        &app,
        command(&[
            ("x-csrf-token", csrf.as_str()),
            ("origin", "http://127.0.0.1:8765"),
            ("sec-fetch-site", "same-origin"),
        ]),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.header("content-type").unwrap(), "application/x-ndjson");
    // No code runs for help: one event, the reply.
    let lines: Vec<Value> = a
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["event"], "reply");
    assert!(lines[0]["reply"]["blocks"][0]["text"]
        .as_str()
        .unwrap()
        .contains("/analyze"));
    // The session endpoint gives the same token (for a page open across a restart).
    let a = send(
        &app,
        get("/console/session")
            .header(header::COOKIE, cookie())
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.json()["csrf"], csrf);
    assert_eq!(a.json()["user"], "alice");
    // Bearer requests need no CSRF token.
    let a = send(
        &app,
        post_json(
            "/api/v1/commands",
            &json!({"user": "U1", "text": "/tradebox help"}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_json_is_400_naming_the_field() {
    let app = app();
    let cases = [
        ("/api/v1/run", "{}", "missing field `code`", Some("code")),
        (
            "/api/v1/run",
            r#"{"code": "result = 1", "timeout": "soon"}"#,
            "timeout: invalid type: string \"soon\"",
            Some("timeout"),
        ),
        (
            "/api/v1/run",
            r#"{"code": "result = 1", "timeout": -1}"#,
            "timeout: -1 is out of range",
            Some("timeout"),
        ),
        (
            "/api/v1/run",
            r#"{"code": "result = 1", "tiemout": 3}"#,
            "unknown field `tiemout`, expected `code` or `timeout`",
            Some("tiemout"),
        ),
        (
            "/api/v1/run",
            r#"{"code": "  "}"#,
            "code: is empty",
            Some("code"),
        ),
        (
            "/api/v1/run",
            r#"{"code": "x""#,
            "the body is not valid JSON",
            None,
        ),
        ("/api/v1/run", "", "the request body is empty", None),
        (
            "/api/v1/commands",
            r#"{"text": "/listfuncs"}"#,
            "missing field `user`",
            Some("user"),
        ),
        (
            "/api/v1/commands",
            r#"{"user": "a b", "text": "/listfuncs"}"#,
            "user: must be",
            Some("user"),
        ),
        (
            "/api/v1/commands",
            r#"{"user": "U1", "text": 5}"#,
            "text: invalid type: integer `5`, expected a string",
            Some("text"),
        ),
    ];
    for (path, body, message, field) in cases {
        let a = send(
            &app,
            bearer(Request::post(path).header(header::HOST, HOST))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path} {body}");
        let v = a.json();
        assert!(
            v["error"].as_str().unwrap().starts_with(message),
            "{path} {body}: {v}"
        );
        assert_eq!(v["field"].as_str(), field, "{path} {body}: {v}");
    }
    // Form posts are not JSON.
    let a = send(
        &app,
        bearer(Request::post("/api/v1/run").header(header::HOST, HOST))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("code=1"))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(a.json()["error"]
        .as_str()
        .unwrap()
        .contains("application/json"));
    // Bad query parameters name themselves too; values are taken as sent.
    for (path, field) in [
        ("/api/v1/audit?outcome=great", "outcome"),
        ("/api/v1/audit?outcome=%20ok", "outcome"),
        ("/api/v1/audit?action=fly", "action"),
        ("/api/v1/audit?limit=0", "limit"),
        ("/api/v1/audit?limit=%205", "limit"),
        ("/api/v1/audit?limit=%2B5", "limit"),
        ("/api/v1/functions?limit=lots", "limit"),
        ("/api/v1/functions?offset=1000001", "offset"),
    ] {
        let a = send(&app, bearer(get(path)).body(Body::empty()).unwrap()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(a.json()["field"], field, "{path}");
    }
    // An empty value is as if the parameter were absent.
    for path in [
        "/api/v1/audit?user=&outcome=&action=&limit=",
        "/api/v1/functions?q=&limit=&offset=1000000",
    ] {
        let a = send(&app, bearer(get(path)).body(Body::empty()).unwrap()).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text());
    }
}

/// The document against the router from outside: every operation it
/// describes is served (neither 404 "no such endpoint" nor 405), every other
/// method of its paths is 405, and it describes what the router registers.
#[tokio::test]
async fn the_document_describes_what_the_router_serves() {
    let app = app();
    let doc = tradebox_web::openapi_document();
    let mut described = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{name}", "nope");
        for method in ["get", "post", "put", "delete", "patch"] {
            let request = bearer(
                Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&concrete)
                    .header(header::HOST, HOST),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
            let a = send(&app, request).await;
            if item.get(method).is_some() {
                described.push((path.clone(), method.to_string()));
                assert_ne!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert!(
                    !a.text().contains("no such endpoint"),
                    "{method} {path}: {}",
                    a.text()
                );
            } else {
                assert_eq!(
                    a.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}: {}",
                    a.text()
                );
            }
        }
    }
    let mut registered: Vec<(String, String)> = tradebox_web::api_operations()
        .into_iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect();
    described.sort();
    registered.sort();
    assert_eq!(described, registered);
}

#[tokio::test]
async fn oversized_bodies_are_413_with_a_json_error() {
    let app = app_with(|o| o.max_body_bytes = 1024);
    let big = format!(r#"{{"code": "{}"}}"#, "x".repeat(4096));
    // With a Content-Length: refused before the handler.
    let a = send(
        &app,
        post_json("/api/v1/run", &serde_json::from_str(&big).unwrap()),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.json()["error"].as_str().unwrap().contains("1024 bytes"));
    // Streamed without a length: cut at the limit by the extractor.
    let chunks: Vec<Result<String, std::io::Error>> = (0..8).map(|_| Ok("x".repeat(512))).collect();
    let a = send(
        &app,
        bearer(Request::post("/api/v1/data/import?name=big.csv").header(header::HOST, HOST))
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text());
    assert!(a.json()["error"].as_str().unwrap().contains("1024 bytes"));
}

#[tokio::test]
async fn every_answer_has_the_security_headers_and_no_cors() {
    let app = app();
    for req in [
        get("/").header(header::COOKIE, cookie()),
        get("/assets/console.js").header(header::COOKIE, cookie()),
        bearer(get("/api/v1/functions")).header(header::ORIGIN, "http://evil.example"),
        get("/api/v1/functions"),
        Request::get("/").header(header::HOST, "evil.example"),
    ] {
        let a = send(&app, req.body(Body::empty()).unwrap()).await;
        let csp = a.header("content-security-policy").unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-eval"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(a.header("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(a.header("referrer-policy").unwrap(), "no-referrer");
        assert!(a.header("access-control-allow-origin").is_none());
    }
    // A CORS preflight gets nothing that allows it.
    let a = send(
        &app,
        Request::options("/api/v1/run")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, "http://evil.example")
            .header("access-control-request-method", "POST")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(a.header("access-control-allow-origin").is_none());
    assert!(a.header("access-control-allow-methods").is_none());
}

#[tokio::test]
async fn pages_and_assets() {
    let app = app_with(|o| o.user = "a&<b>".into());
    for (path, page) in [
        ("/", "console"),
        ("/functions", "functions"),
        ("/audit", "audit"),
        ("/data", "data"),
    ] {
        let a = send(
            &app,
            get(path)
                .header(header::COOKIE, cookie())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.header("content-type").unwrap().starts_with("text/html"));
        let html = a.text();
        assert!(html.contains(&format!("data-page=\"{page}\"")));
        assert!(html.contains("a&amp;&lt;b&gt;") && !html.contains("a&<b>"));
        assert!(!html.contains("{{"), "every placeholder filled");
    }
    let a = send(
        &app,
        get("/assets/codemirror.js")
            .header(header::COOKIE, cookie())
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(a.text().contains("TradeboxEditor"));
    let etag = a.header("etag").unwrap();
    let a = send(
        &app,
        get("/assets/codemirror.js")
            .header(header::COOKIE, cookie())
            .header(header::IF_NONE_MATCH, &etag)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_MODIFIED);
    let a = send(
        &app,
        bearer(get("/assets/../Cargo.toml"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_ne!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_endpoints_and_methods_answer_json() {
    let app = app();
    let a = send(
        &app,
        bearer(get("/api/v1/nope")).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.json()["error"].as_str().unwrap().contains("openapi.json"));
    let a = send(
        &app,
        bearer(get("/api/v1/run")).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(a.json()["error"].as_str().unwrap().contains("GET"));
    let a = send(
        &app,
        bearer(get("/api/v1/openapi.json"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let doc = a.json();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/api/v1/run"]["post"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn run_without_a_sandbox_is_503() {
    let app = app();
    let a = send(
        &app,
        post_json("/api/v1/run", &json!({"code": "result = 1"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    assert!(a.json()["error"].as_str().unwrap().contains("sandbox"));
    assert_eq!(a.header("retry-after").unwrap(), "1");
    // The validator refuses first, as `tradebox run --json` reports it.
    let a = send(
        &app,
        post_json("/api/v1/run", &json!({"code": "import os"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(v["success"], false);
    assert_eq!(v["error"]["type"], "ValidationError");
    assert!(v["error"]["message"].as_str().unwrap().contains("os"));
    for field in ["result", "output", "execution_time_ms", "artifacts"] {
        assert!(v.get(field).is_some(), "{field}");
    }
}

#[tokio::test]
async fn commands_functions_and_audit_through_the_api() {
    let app = app();
    let save = |user: &str, code: &str| {
        post_json(
            "/api/v1/commands",
            &json!({"user": user, "channel": "C1", "text": format!("/savefunc weekly | Weekly *volume* | {code}")}),
        )
    };
    let a = send(&app, save("U1", "result = 1")).await;
    assert_eq!(a.status, StatusCode::OK);
    let reply = a.json();
    assert_eq!(reply["visibility"], "in_channel");
    assert_eq!(reply["error"], false);
    assert!(reply["blocks"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Saved Function"));
    assert_eq!(reply["files"], json!([]));
    send(&app, save("U1", "result = 2")).await;
    // Another user may not overwrite it: a refusal is still a 200 reply.
    let a = send(&app, save("U2", "result = 3")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["error"], true);
    assert_eq!(a.json()["visibility"], "ephemeral");

    let list = send(
        &app,
        bearer(get("/api/v1/functions"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let list = list.json();
    assert_eq!(list["total"], 1);
    assert_eq!(list["functions"][0]["name"], "weekly");
    assert_eq!(list["functions"][0]["version"], 2);
    assert_eq!(list["stats"]["total_functions"], 1);
    let found = send(
        &app,
        bearer(get("/api/v1/functions?q=VOLUME"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(found.json()["total"], 1);
    let none = send(
        &app,
        bearer(get("/api/v1/functions?q=zzz"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(none.json()["functions"], json!([]));

    let detail = send(
        &app,
        bearer(get("/api/v1/functions/weekly"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let detail = detail.json();
    assert_eq!(detail["function"]["code"], "result = 2");
    assert_eq!(detail["history"].as_array().unwrap().len(), 2);
    assert_eq!(detail["history"][0]["code"], "result = 1");
    let missing = send(
        &app,
        bearer(get("/api/v1/functions/nope"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let a = send(
        &app,
        post_json(
            "/api/v1/commands",
            &json!({"user": "U1", "text": "/delfunc weekly"}),
        ),
    )
    .await;
    assert!(a.json()["blocks"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Deleted"));
    let detail = send(
        &app,
        bearer(get("/api/v1/functions/weekly"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(detail.json()["deleted"], true);
    assert_eq!(detail.json()["history"].as_array().unwrap().len(), 3);

    let audit = send(
        &app,
        bearer(get("/api/v1/audit")).body(Body::empty()).unwrap(),
    )
    .await;
    let audit = audit.json();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{audit}");
    assert!(entries.iter().all(|e| e["source"] == "api"));
    assert_eq!(entries[0]["action"], "delfunc");
    assert_eq!(entries[3]["channel"], "C1");
    assert!(audit["outcomes"]
        .as_array()
        .unwrap()
        .contains(&json!("refused_permission")));
    let refused = send(
        &app,
        bearer(get("/api/v1/audit?outcome=refused_permission&user=U2"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let refused = refused.json();
    assert_eq!(refused["count"], 1);
    assert_eq!(refused["entries"][0]["user_id"], "U2");
    let limited = send(
        &app,
        bearer(get("/api/v1/audit?limit=2"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(limited.json()["count"], 2);
    let by_action = send(
        &app,
        bearer(get("/api/v1/audit?action=savefunc"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(by_action.json()["count"], 3);
}

#[tokio::test]
async fn data_info_and_import() {
    let app = app();
    let info = send(
        &app,
        bearer(get("/api/v1/data")).body(Body::empty()).unwrap(),
    )
    .await;
    let info = info.json();
    assert_eq!(info["trades"], 0);
    assert_eq!(info["snapshot"], Value::Null);

    let csv = "timestamp,exchange,account,symbol,side,amount,price\n\
               2025-11-01T10:00:00Z,kraken,MM1,ALKIMI,buy,10,0.05\n\
               2025-11-02T10:00:00Z,mexc,MM2,ALKIMI,sell,5,0.06\n";
    let import = |name: &str, body: &str| {
        bearer(Request::post(format!("/api/v1/data/import?name={name}")).header(header::HOST, HOST))
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let a = send(&app, import("../../trades%20one.csv", csv)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let r = a.json();
    assert_eq!(r["name"], "trades_one.csv");
    assert_eq!(
        (r["read"].as_u64(), r["added"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(r["published"], true);
    assert_eq!(r["snapshot"]["version"], 1);
    assert!(app.home.path().join("snapshot/current").exists());
    // The same rows again: nothing new, no new snapshot.
    let r = send(&app, import("again.csv", csv)).await.json();
    assert_eq!(
        (r["added"].as_u64(), r["published"].as_bool()),
        (Some(0), Some(false))
    );
    // A bad row: 400 naming the file (not the temporary path), nothing kept.
    let a = send(
        &app,
        import(
            "bad.csv",
            "timestamp,exchange,symbol,side,amount,price\nyesterday,kraken,ALKIMI,buy,1,1\n",
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let error = a.json()["error"].as_str().unwrap().to_string();
    assert!(error.starts_with("bad.csv, line 2"), "{error}");
    assert!(!error.contains("upload-"), "{error}");
    // Every upload's private folder is gone once it is imported.
    let uploads = std::fs::read_dir(app.home.path().join("uploads"))
        .unwrap()
        .count();
    assert_eq!(uploads, 0, "upload folders left behind");
    let a = send(&app, import("x.csv", "")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = send(&app, import("", csv)).await;
    assert_eq!(a.json()["field"], "name");

    let info = send(
        &app,
        bearer(get("/api/v1/data")).body(Body::empty()).unwrap(),
    )
    .await;
    let info = info.json();
    assert_eq!(info["trades"], 2);
    assert_eq!(info["by_exchange"], json!({"kraken": 1, "mexc": 1}));
    assert_eq!(info["snapshot"]["version"], 1);
    // Imports are audited, failures included.
    let audit = send(
        &app,
        bearer(get("/api/v1/audit?action=import"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let audit = audit.json();
    assert_eq!(audit["count"], 3, "{audit}");
    assert_eq!(audit["entries"][0]["outcome"], "error");
    assert!(audit["entries"][0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("bad.csv, line 2"));
    assert!(audit["entries"][2]["detail"]
        .as_str()
        .unwrap()
        .contains("2 trades read, 2 new; snapshot v1 published"));
}

#[tokio::test]
async fn the_console_keeps_its_conversation_until_cleared() {
    let app = app();
    let conversation = |app: &App| {
        let req = bearer(get("/console/conversation"))
            .body(Body::empty())
            .unwrap();
        let app_router = app.router.clone();
        async move {
            let response = app_router.oneshot(req).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&body).unwrap()["entries"].clone()
        }
    };
    assert_eq!(conversation(&app).await, json!([]));

    // Kept: what the console page sends; not kept: a run from elsewhere.
    let a = send(
        &app,
        post_json(
            "/console/command",
            &json!({"text": "/tradebox help", "keep": true}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = send(
        &app,
        post_json("/console/command", &json!({"text": "/listfuncs"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = send(
        &app,
        post_json(
            "/console/command",
            &json!({"action_id": "run_func_nothing", "value": "nothing", "label": "Run", "keep": true}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    // The reply is kept once the command has ended (it runs on its own task).
    let mut entries = conversation(&app).await;
    for _ in 0..100 {
        if entries.as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        entries = conversation(&app).await;
    }
    let entries = entries.as_array().unwrap().clone();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(
        entries[0]["sent"],
        json!({"kind": "text", "text": "/tradebox help"})
    );
    assert!(entries[0]["reply"]["blocks"]
        .as_array()
        .is_some_and(|b| !b.is_empty()));
    assert!(entries[0]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        entries[1]["sent"],
        json!({"kind": "button", "label": "Run", "action_id": "run_func_nothing", "value": "nothing"})
    );

    // Clearing is a change of state: a cookie needs the CSRF token.
    let clear = |extra: Option<&str>| {
        let mut b = Request::delete("/console/conversation")
            .header(header::HOST, HOST)
            .header(header::COOKIE, cookie());
        if let Some(csrf) = extra {
            b = b.header("x-csrf-token", csrf);
        }
        b.body(Body::empty()).unwrap()
    };
    assert_eq!(send(&app, clear(None)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(conversation(&app).await.as_array().unwrap().len(), 2);
    let csrf = csrf_of_page(&app).await;
    assert_eq!(
        send(&app, clear(Some(&csrf))).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(conversation(&app).await, json!([]));
}

#[tokio::test]
async fn the_probes_answer_without_the_token_or_a_known_host() {
    let app = app();
    let probe = |path: &str| {
        Request::get(path)
            .header(header::HOST, "10.1.2.3:8765") // as an orchestrator asks
            .body(Body::empty())
            .unwrap()
    };
    let a = send(&app, probe("/healthz")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.text(), "ok\n");
    // This console runs no sandbox pool: not ready, and it says why; the
    // store answers and no snapshot is published.
    let a = send(&app, probe("/readyz")).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    let v = a.json();
    assert_eq!(v["ready"], false);
    assert_eq!(v["checks"]["pool"]["ok"], false);
    assert_eq!(v["checks"]["store"]["ok"], true, "{v}");
    assert_eq!(v["checks"]["snapshot"]["ok"], true, "{v}");
    assert_eq!(v["checks"]["snapshot"]["detail"], "none published");
    // Only GET and HEAD pass unguarded; nothing else near them does.
    for req in [
        Request::post("/readyz").header(header::HOST, HOST),
        get("/healthz/x"),
        get("/readyz/"),
    ] {
        let a = send(&app, req.body(Body::empty()).unwrap()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    // They carry the security headers too.
    let a = send(&app, probe("/healthz")).await;
    assert_eq!(a.header("x-content-type-options").unwrap(), "nosniff");
}

/// An audit store whose every call fails, as a store does when its disk
/// or server is gone.
struct Gone;

impl tradebox_core::audit::AuditBackend for Gone {
    fn append(
        &self,
        _: &tradebox_core::audit::AuditEntry,
        _: tradebox_data::timestamp::Micros,
    ) -> Result<i64, StoreError> {
        Err(StoreError::Backend("the disk is gone".into()))
    }
    fn append_once(
        &self,
        _: &tradebox_core::audit::AuditEntry,
        _: tradebox_data::timestamp::Micros,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Backend("the disk is gone".into()))
    }
    fn append_releasing(
        &self,
        _: &tradebox_core::audit::AuditEntry,
        _: tradebox_data::timestamp::Micros,
        _: &str,
    ) -> Result<(i64, bool), StoreError> {
        Err(StoreError::Backend("the disk is gone".into()))
    }
    fn query(
        &self,
        _: &tradebox_core::audit::AuditFilter,
    ) -> Result<Vec<tradebox_core::audit::AuditRecord>, StoreError> {
        Err(StoreError::Backend("the disk is gone".into()))
    }
    fn prune(&self, _: tradebox_data::timestamp::Micros) -> Result<u64, StoreError> {
        Err(StoreError::Backend("the disk is gone".into()))
    }
    fn count(&self) -> Result<u64, StoreError> {
        Err(StoreError::Backend("the disk is gone".into()))
    }
    fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Backend("the disk is gone".into()))
    }
}

#[tokio::test]
async fn readiness_fails_when_the_store_does_not_answer() {
    let app = app_over(|_| AuditLog::new(Arc::new(Gone)), |_| {});
    let a = send(
        &app,
        Request::get("/readyz")
            .header(header::HOST, HOST)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    let v = a.json();
    assert_eq!(v["checks"]["store"]["ok"], false, "{v}");
    assert_eq!(
        v["checks"]["store"]["detail"],
        "store unavailable: store: the disk is gone"
    );
}

#[tokio::test]
async fn metrics_count_commands_behind_the_token() {
    let app = app();
    let save = post_json(
        "/api/v1/commands",
        &json!({"user": "U1", "channel": "C1", "text": "/savefunc weekly | w | result = 1"}),
    );
    assert_eq!(send(&app, save).await.status, StatusCode::OK);
    let a = send(&app, bearer(get("/metrics")).body(Body::empty()).unwrap()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.header("content-type").unwrap(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = a.text();
    for want in [
        "tradebox_commands_total{action=\"savefunc\",source=\"api\",outcome=\"ok\"} 1",
        "tradebox_workers 0",
        "tradebox_snapshot_published_version 0",
    ] {
        assert!(text.lines().any(|l| l == want), "{want} missing:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
    // The wrong host is refused here as on every guarded route.
    let a = send(
        &app,
        bearer(Request::get("/metrics").header(header::HOST, "evil.example:8765"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}
