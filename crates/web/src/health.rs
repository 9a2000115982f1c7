//! Probes and metrics for whoever runs the service: `GET /healthz` (the
//! process answers), `GET /readyz` (it can serve: a sandbox worker is up,
//! the store answers a read, the workers serve the published snapshot or
//! are moving to it), both let through by the guard without the token or
//! a known `Host`, so a load balancer or an orchestrator can ask; and
//! `GET /metrics`, the Prometheus text of [`tradebox_core::metrics`],
//! behind the guard like every other route.
//!
//! The probes say no more than which check failed and a short reason:
//! no user, code, path or token.

use std::path::Path;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tradebox_core::executor::ExecutorStatus;
use tradebox_core::metrics::SnapshotGauges;

use crate::AppState;

/// How long the workers may keep serving an older version after a newer
/// one was published before the service counts as not ready: they move
/// one at a time, between jobs, which takes seconds unless something is
/// wrong.
pub const SNAPSHOT_GRACE: Duration = Duration::from_secs(60);

/// Whether a request is one of the probes, which the guard lets through.
pub(crate) fn is_probe(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD) && matches!(path, "/healthz" | "/readyz")
}

pub(crate) async fn healthz() -> Response {
    plain(StatusCode::OK, "ok\n".into())
}

fn plain(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The published snapshot and when `current` last moved.
fn published(root: &Path) -> Result<Option<(u64, Option<SystemTime>)>, String> {
    match tradebox_data::snapshot::current(root) {
        Ok(Some((_, manifest))) => {
            let at = std::fs::symlink_metadata(root.join("current"))
                .and_then(|m| m.modified())
                .ok();
            Ok(Some((manifest.version, at)))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Seconds since `at` while `served` (the oldest version a worker serves)
/// is behind `version`; 0 once it is not.
fn lag(version: u64, at: Option<SystemTime>, served: Option<u64>) -> f64 {
    if served.is_some_and(|s| s >= version) {
        return 0.0;
    }
    at.and_then(|t| t.elapsed().ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The oldest version the workers that are up serve (a worker without
/// data counts as version 0).
fn oldest_served(status: &ExecutorStatus) -> Option<u64> {
    status.versions.iter().map(|v| v.unwrap_or(0)).min()
}

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

fn check(name: &'static str, result: Result<String, String>) -> Check {
    match result {
        Ok(detail) => Check {
            name,
            ok: true,
            detail,
        },
        Err(detail) => Check {
            name,
            ok: false,
            detail,
        },
    }
}

/// Every check, run off the async threads (the store read blocks).
fn readiness(state: &AppState) -> Vec<Check> {
    let mut checks = checks(
        state.pipeline.executor_status().as_ref(),
        state.pipeline.runs_code(),
        state.pipeline.check_store().map_err(|e| e.to_string()),
        published(&state.home.snapshot_root()),
    );
    // With a shared trade store: whether this replica's mirror keeps up.
    if let Some(mirror) = state.home.mirror_health().check() {
        checks.push(check("mirror", mirror));
    }
    checks
}

/// The checks from what was found: the executor's state, whether there is
/// one, the store's answer and the published snapshot.
fn checks(
    status: Option<&ExecutorStatus>,
    runs_code: bool,
    store: Result<(), String>,
    published: Result<Option<(u64, Option<SystemTime>)>, String>,
) -> Vec<Check> {
    let pool = match (status, runs_code) {
        (_, false) => Err("no sandbox pool runs here".to_string()),
        (None, true) => Ok("a sandbox pool runs here".to_string()),
        (Some(s), true) if s.up == 0 => Err(format!("none of {} workers is up", s.workers)),
        (Some(s), true) => Ok(format!("{} of {} workers up", s.up, s.workers)),
    };
    let store = store
        .map(|()| "answers".to_string())
        .map_err(|e| format!("store unavailable: {e}"));
    let snapshot = match published {
        Err(e) => Err(format!("the published snapshot cannot be read: {e}")),
        Ok(None) => Ok("none published".to_string()),
        Ok(Some((version, at))) => match status.and_then(oldest_served) {
            None => Ok(format!("v{version} published")),
            Some(s) if s >= version => Ok(format!("v{version} served")),
            Some(s) => {
                let lag = lag(version, at, Some(s));
                let text = format!("v{s} served, v{version} published {lag:.0} s ago");
                if lag > SNAPSHOT_GRACE.as_secs_f64() {
                    Err(text)
                } else {
                    Ok(text)
                }
            }
        },
    };
    vec![
        check("pool", pool),
        check("store", store),
        check("snapshot", snapshot),
    ]
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let checks = match tokio::task::spawn_blocking(move || readiness(&state)).await {
        Ok(checks) => checks,
        Err(_) => {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "{\"ready\":false}\n".into(),
            )
        }
    };
    let ready = checks.iter().all(|c| c.ok);
    let body = json!({
        "ready": ready,
        "checks": checks
            .iter()
            .map(|c| (c.name.to_string(), json!({"ok": c.ok, "detail": c.detail})))
            .collect::<serde_json::Map<_, _>>(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = plain(status, format!("{body}\n"));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `GET /metrics` (behind the guard).
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let text = tokio::task::spawn_blocking(move || {
        let status = state.pipeline.executor_status();
        let snapshot = match published(&state.home.snapshot_root()) {
            Ok(Some((version, at))) => SnapshotGauges {
                published: Some(version),
                lag_seconds: lag(version, at, status.as_ref().and_then(oldest_served)),
            },
            _ => SnapshotGauges::default(),
        };
        state.pipeline.metrics().render(status.as_ref(), &snapshot)
    })
    .await
    .unwrap_or_default();
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_only_while_a_worker_is_behind() {
        let long_ago = SystemTime::now() - Duration::from_secs(100);
        assert_eq!(lag(5, Some(long_ago), Some(5)), 0.0);
        assert_eq!(lag(5, Some(long_ago), Some(6)), 0.0);
        let l = lag(5, Some(long_ago), Some(4));
        assert!((99.0..200.0).contains(&l), "{l}");
        assert!(lag(5, Some(long_ago), None) >= 99.0);
        assert_eq!(lag(5, None, Some(4)), 0.0);
    }

    fn verdicts(checks: &[Check]) -> Vec<(&'static str, bool, String)> {
        checks
            .iter()
            .map(|c| (c.name, c.ok, c.detail.clone()))
            .collect()
    }

    #[test]
    fn each_check_fails_on_its_own() {
        let status = |up, versions| ExecutorStatus {
            workers: 3,
            up,
            versions,
            ..ExecutorStatus::default()
        };
        let now = Some(SystemTime::now());
        let long_ago = Some(SystemTime::now() - SNAPSHOT_GRACE - Duration::from_secs(5));
        let all_up = status(3, vec![Some(4), Some(4), Some(4)]);
        let ok = checks(Some(&all_up), true, Ok(()), Ok(Some((4, now))));
        assert!(ok.iter().all(|c| c.ok), "{:?}", verdicts(&ok));
        assert_eq!(ok[0].detail, "3 of 3 workers up");
        assert_eq!(ok[2].detail, "v4 served");

        let none_up = checks(Some(&status(0, vec![])), true, Ok(()), Ok(Some((4, now))));
        assert_eq!(
            verdicts(&none_up)[0],
            ("pool", false, "none of 3 workers is up".into())
        );
        let gone = checks(Some(&all_up), true, Err("locked".into()), Ok(None));
        assert_eq!(
            verdicts(&gone)[1],
            ("store", false, "store unavailable: locked".into())
        );
        assert_eq!(
            verdicts(&gone)[2],
            ("snapshot", true, "none published".into())
        );
        // Behind the published version: fine while the workers move to it,
        // not once the grace has passed.
        let behind = status(3, vec![Some(4), Some(3), Some(4)]);
        let moving = checks(Some(&behind), true, Ok(()), Ok(Some((4, now))));
        assert!(moving[2].ok, "{:?}", verdicts(&moving));
        let stuck = checks(Some(&behind), true, Ok(()), Ok(Some((4, long_ago))));
        assert!(!stuck[2].ok);
        assert!(
            stuck[2].detail.starts_with("v3 served, v4 published "),
            "{}",
            stuck[2].detail
        );
        let unreadable = checks(Some(&all_up), true, Ok(()), Err("bad manifest".into()));
        assert!(!unreadable[2].ok);
        let no_pool = checks(None, false, Ok(()), Ok(None));
        assert_eq!(
            verdicts(&no_pool)[0],
            ("pool", false, "no sandbox pool runs here".into())
        );
    }

    #[test]
    fn the_oldest_version_served_counts_a_worker_without_data_as_zero() {
        let s = |versions| ExecutorStatus {
            versions,
            ..ExecutorStatus::default()
        };
        assert_eq!(oldest_served(&s(vec![Some(3), Some(2)])), Some(2));
        assert_eq!(oldest_served(&s(vec![Some(3), None])), Some(0));
        assert_eq!(oldest_served(&s(vec![])), None);
    }
}
