//! The console's static files, embedded in the binary (no npm, no CDN at run
//! time): the page shell, its script and style sheet, and the vendored
//! CodeMirror bundle (`assets/vendor/`, built by `assets/build-editor.sh`).
//! Served at `/assets/NAME` with an ETag, revalidated on each load.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The page shell; `{{PAGE}}`, `{{CSRF}}`, `{{USER}}`, `{{VERSION}}` are filled in.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");

/// The answer to a browser without the token.
pub const UNAUTHORIZED_PAGE: &str = include_str!("../assets/unauthorized.html");

/// Name, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/console.css"),
    ),
    (
        "codemirror.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/codemirror.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../assets/favicon.svg"),
    ),
];

/// 64-bit FNV-1a, for ETags.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        FILES
            .iter()
            .map(|(_, _, bytes)| format!("\"{:016x}\"", fnv1a(bytes)))
            .collect()
    })
}

/// `GET /assets/{name}`.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(i) = FILES.iter().position(|(n, _, _)| *n == name) else {
        return ApiError::NotFound(format!("no asset named {name:?}")).into_response();
    };
    let (_, mime, bytes) = FILES[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, mime)], bytes).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_embedded_and_use_no_cdn() {
        for (name, _, bytes) in FILES {
            assert!(!bytes.is_empty(), "{name} is empty");
        }
        for text in [
            INDEX_HTML,
            UNAUTHORIZED_PAGE,
            include_str!("../assets/console.js"),
        ] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        assert!(INDEX_HTML.contains("{{CSRF}}"));
        assert!(!INDEX_HTML.contains("<script>"), "no inline script (CSP)");
        assert_ne!(etags()[0], etags()[1]);
    }
}
