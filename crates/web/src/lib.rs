//! The web console and JSON HTTP API of tradebox.
//!
//! [`router`] gives an axum router with the console's pages (`/`,
//! `/functions`, `/audit`, `/data`), its assets (`/assets/*`), its command
//! stream (`/console/*`), the API (`/api/v1/*`) and the metrics
//! (`/metrics`). Every route sits behind the guard of [`guard`] (Host
//! check, token, CSRF, body cap, security headers), applied inside this
//! router so that routers merged beside it (Slack's `/slack/*`) keep their
//! own rules; only the probes `/healthz` and `/readyz` ([`health`]) answer
//! without it. The router sets no fallback,
//! so it merges with others freely. The API's operations are registered in
//! one place that records them ([`api_operations`]); the OpenAPI document
//! is checked against that record.
//!
//! Commands go through the one [`Pipeline`] as the console user (the
//! console; audit source `console`) or as the user named in the request
//! (`POST /api/v1/commands`; source `api`). The front end is vanilla
//! JavaScript rendering the reply model like Slack messages, with a
//! CodeMirror 6 editor vendored as one file (see `assets/README.md`).

mod api;
mod assets;
mod console;
mod conversation;
mod data;
mod error;
mod guard;
mod health;
mod json;
mod openapi;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::routing::{any, get, post, MethodFilter, MethodRouter};
use axum::Router;
use tradebox_core::pipeline::Pipeline;
use tradebox_data::Home;

pub use console::escape_html;
pub use error::ApiError;
pub use guard::{Via, CSP, CSRF_HEADER};
pub use openapi::document as openapi_document;

/// The request body limit when none is configured: 8 MiB.
pub const DEFAULT_MAX_BODY: usize = 8 << 20;

/// How the console is served.
#[derive(Clone)]
pub struct ConsoleOptions {
    /// The secret every request must prove it holds.
    pub token: String,
    /// The exact `Host` header values accepted (e.g. `127.0.0.1:8765`,
    /// `localhost:8765`, `[::1]:8765`); others are answered 403.
    pub allowed_hosts: Vec<String>,
    /// Who commands typed in the console run as.
    pub user: String,
    /// Request bodies above this many bytes are answered 413.
    pub max_body_bytes: usize,
}

impl ConsoleOptions {
    /// Options with the default body limit.
    pub fn new(
        token: impl Into<String>,
        allowed_hosts: Vec<String>,
        user: impl Into<String>,
    ) -> Self {
        ConsoleOptions {
            token: token.into(),
            allowed_hosts,
            user: user.into(),
            max_body_bytes: DEFAULT_MAX_BODY,
        }
    }
}

/// Never prints the token.
impl std::fmt::Debug for ConsoleOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleOptions")
            .field("token", &"<redacted>")
            .field("allowed_hosts", &self.allowed_hosts)
            .field("user", &self.user)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Inner>);

pub(crate) struct Inner {
    pub pipeline: Arc<Pipeline>,
    pub home: Home,
    pub options: ConsoleOptions,
    pub secrets: guard::Secrets,
    pub import_lock: tokio::sync::Mutex<()>,
    pub conversations: conversation::Conversations,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The console and the API; see the crate documentation.
pub fn router(pipeline: Arc<Pipeline>, home: Home, options: ConsoleOptions) -> Router {
    if options.token.is_empty() {
        tracing::error!("the console token is empty: every request will be refused");
    }
    let max_body = options.max_body_bytes;
    let state = AppState(Arc::new(Inner {
        secrets: guard::Secrets::new(&options.token, &options.allowed_hosts),
        pipeline,
        home,
        options,
        import_lock: tokio::sync::Mutex::new(()),
        conversations: conversation::Conversations::default(),
    }));
    let page = |p: console::Page| {
        get(move |State(state): State<AppState>| async move { console::page(&state, p) })
    };
    let pages = Router::new()
        .route("/", page(console::Page::Console))
        .route("/functions", page(console::Page::Functions))
        .route("/audit", page(console::Page::Audit))
        .route("/data", page(console::Page::Data))
        .route("/assets/{name}", get(assets::asset))
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/console/command", post(console::command))
        .route("/console/session", get(console::session))
        .route(
            "/console/conversation",
            get(console::conversation).delete(console::clear_conversation),
        );
    api_routes()
        .add_to(pages)
        .route("/api/v1", any(api::not_found))
        .route("/api/v1/{*rest}", any(api::not_found))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(move |mut req: Request, next: Next| {
            req.extensions_mut().insert(json::BodyLimit(max_body));
            async move { next.run(req).await }
        }))
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .with_state(state)
}

/// The methods the API's operations answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ApiMethod {
    Get,
    Post,
}

impl ApiMethod {
    /// The method as the OpenAPI document writes it.
    fn as_str(self) -> &'static str {
        match self {
            ApiMethod::Get => "get",
            ApiMethod::Post => "post",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            ApiMethod::Get => MethodFilter::GET,
            ApiMethod::Post => MethodFilter::POST,
        }
    }
}

/// The operations of `/api/v1`, registered through [`ApiRoutes::route`],
/// which records each `(path, method)` as it registers it. The record is
/// what the OpenAPI document is checked against ([`api_operations`],
/// `openapi.rs`'s tests), so that no route is served without being
/// described, nor described without being served.
struct ApiRoutes {
    routes: BTreeMap<&'static str, MethodRouter<AppState>>,
    operations: Vec<(&'static str, ApiMethod)>,
}

impl ApiRoutes {
    fn new() -> ApiRoutes {
        ApiRoutes {
            routes: BTreeMap::new(),
            operations: Vec::new(),
        }
    }

    /// Registers `method path` answered by `handler`; the path's other
    /// methods are answered with a JSON 405.
    fn route<H, T>(mut self, method: ApiMethod, path: &'static str, handler: H) -> ApiRoutes
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let methods = self
            .routes
            .remove(path)
            .unwrap_or_else(|| MethodRouter::new().fallback(api::wrong_method));
        self.routes
            .insert(path, methods.on(method.filter(), handler));
        self.operations.push((path, method));
        self
    }

    /// `router` with these routes added.
    fn add_to(self, mut router: Router<AppState>) -> Router<AppState> {
        for (path, methods) in self.routes {
            router = router.route(path, methods);
        }
        router
    }
}

/// Every operation of the HTTP API as [`router`] registers it: `(path,
/// method)`, the method in lower case as the OpenAPI document writes it.
pub fn api_operations() -> Vec<(&'static str, &'static str)> {
    api_routes()
        .operations
        .iter()
        .map(|(path, method)| (*path, method.as_str()))
        .collect()
}

/// The API's operations: the one place they are registered.
fn api_routes() -> ApiRoutes {
    use ApiMethod::{Get, Post};
    ApiRoutes::new()
        .route(Post, "/api/v1/run", api::run)
        .route(Post, "/api/v1/commands", api::commands)
        .route(Get, "/api/v1/functions", api::functions)
        .route(Get, "/api/v1/functions/{name}", api::function)
        .route(Get, "/api/v1/audit", api::audit)
        .route(Get, "/api/v1/data", data::info)
        .route(Post, "/api/v1/data/import", data::import)
        .route(Get, "/api/v1/openapi.json", api::openapi)
}
