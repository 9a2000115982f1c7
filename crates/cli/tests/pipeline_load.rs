//! The command pipeline under load and under a crash: many users running
//! one function at once (use counts, rate limits and audit rows exact), and
//! a `kill -9` in the middle of saving (nothing half-written, nothing lost
//! that was acknowledged).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tradebox_core::audit::{Action, AuditFilter, AuditLog, Outcome, Source};
use tradebox_core::config::PermissionsSection;
use tradebox_core::functions::FunctionStore;
use tradebox_core::permissions::Permissions;
use tradebox_core::pipeline::{Input, Pipeline, Request, Settings};
use tradebox_core::ratelimit::RateLimiter;
use tradebox_sandbox::Pool;

fn fresh_home() -> TempDir {
    let home = TempDir::new().unwrap();
    let db = common::fixtures().join("trade_cache.db");
    common::tradebox(home.path(), &["data", "import", db.to_str().unwrap()]);
    home
}

#[test]
fn hundred_parallel_runs_from_ten_users_are_counted_exactly() {
    let home = fresh_home();
    let db = home.path().join("tradebox.db");
    let functions = FunctionStore::open(&db).unwrap();
    functions
        .save("busy", "counts its runs", "result = 1 + 1", "U0", false)
        .unwrap();
    let pool = Pool::start(common::config_for(home.path(), 2)).unwrap();
    let settings = Settings {
        timeout: Duration::from_secs(30),
        memory_mib: 1024,
        output_limit: 1 << 20,
        as_of: None,
        validator: Some(tradebox_validate::Rules::default()),
        per_user_running: 2,
        per_user_waiting: 10,
        max_code_bytes: 20_000,
    };
    let pipeline = Arc::new(Pipeline::new(
        Some(Arc::new(pool)),
        functions,
        AuditLog::open(&db).unwrap(),
        RateLimiter::open(&db, 10, Duration::from_secs(60)).unwrap(),
        Permissions::new(&PermissionsSection::default()),
        settings,
    ));
    // Ten users, eleven requests each, all at once: ten run, one is refused.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let replies = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..110 {
            let pipeline = Arc::clone(&pipeline);
            tasks.spawn(async move {
                let request = Request {
                    user: format!("U{}", i % 10),
                    channel: Some("C1".into()),
                    source: Source::Slack,
                    input: Input::Slash {
                        command: "/runfunc".into(),
                        text: "busy".into(),
                    },
                };
                let reply = pipeline.handle(&request, |_| {}).await;
                (request.user, reply)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            out.push(r.unwrap());
        }
        out
    });
    let ok = replies.iter().filter(|(_, r)| !r.error).count();
    let limited: Vec<_> = replies
        .iter()
        .filter(|(_, r)| r.fallback.contains("Rate limit exceeded"))
        .collect();
    assert_eq!((ok, limited.len()), (100, 10), "{replies:#?}");
    for u in 0..10 {
        let user = format!("U{u}");
        assert_eq!(
            limited.iter().filter(|(who, _)| *who == user).count(),
            1,
            "{user}"
        );
    }
    for (_, r) in replies.iter().filter(|(_, r)| !r.error) {
        assert!(r.to_text().contains("\n2\n"), "{}", r.to_text());
    }
    let f = pipeline.functions().get("busy").unwrap().unwrap();
    assert_eq!(f.use_count, 100);
    let audit = pipeline.audit();
    let count = |outcome: Outcome| {
        audit
            .query(&AuditFilter {
                action: Some(Action::Runfunc),
                outcome: Some(outcome),
                ..AuditFilter::default()
            })
            .unwrap()
            .len()
    };
    assert_eq!(count(Outcome::Ok), 100);
    assert_eq!(count(Outcome::RefusedRateLimit), 10);
    assert_eq!(audit.count().unwrap(), 110);
}

/// A loop of saves killed with SIGKILL at an arbitrary moment: the store
/// stays consistent, every version has its audit row, and every save that
/// was acknowledged is there.
#[test]
fn a_kill_mid_save_leaves_a_consistent_store() {
    let home = fresh_home();
    // Two functions saved again and again, alternately, by one process per
    // save; the shell prints each acknowledged save.
    let script = format!(
        "for i in $(seq 1 400); do '{bin}' -q func save f$((i % 2)) -d \"v$i\" -c \"result = $i\" >/dev/null && echo $i; done",
        bin = common::bin()
    );
    let child = std::process::Command::new("setsid")
        .args(["sh", "-c", &script])
        .env("TRADEBOX_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // Kill the whole session (the shell and the tradebox it is running).
    let pgid = child.id();
    let status = std::process::Command::new("kill")
        .args(["-9", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let acknowledged: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(
        acknowledged.len() >= 2,
        "too few saves before the kill: {acknowledged:?}"
    );

    let db = home.path().join("tradebox.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let functions = FunctionStore::open(&db).unwrap();
    let audit = AuditLog::open(&db).unwrap();
    let saves = audit
        .query(&AuditFilter {
            action: Some(Action::Savefunc),
            ..AuditFilter::default()
        })
        .unwrap();
    let mut versions_total = 0;
    for name in ["f0", "f1"] {
        let f = functions.get(name).unwrap().unwrap();
        let history = functions.history(name).unwrap();
        versions_total += history.len();
        // The row and its newest version agree.
        let last = history.last().unwrap();
        assert_eq!((last.version, &last.code), (f.version, &f.code), "{name}");
        assert_eq!(history.len() as u32, f.version, "{name}: no gaps");
        // Every version has exactly one audit row.
        let audited = saves
            .iter()
            .filter(|r| r.entry.function_name.as_deref() == Some(name))
            .count();
        assert_eq!(audited, history.len(), "{name}");
    }
    // Every acknowledged save is there (one more may have landed unacknowledged).
    let last_ack = *acknowledged.last().unwrap();
    assert!(
        versions_total == acknowledged.len() || versions_total == acknowledged.len() + 1,
        "{versions_total} versions, {} acknowledged",
        acknowledged.len()
    );
    let newest = functions
        .get(&format!("f{}", last_ack % 2))
        .unwrap()
        .unwrap();
    assert!(newest.code == format!("result = {last_ack}") || versions_total > acknowledged.len());
}

/// Fairness: a user whose jobs each run for seconds holds at most all but
/// one worker, so another user's job runs at once instead of waiting for
/// them (without the rule, two such jobs hold a two-worker pool).
#[test]
fn one_users_slow_jobs_leave_a_worker_for_another_user() {
    let home = fresh_home();
    let db = home.path().join("tradebox.db");
    let pool = Pool::start(common::config_for(home.path(), 2)).unwrap();
    let settings = Settings {
        timeout: Duration::from_secs(30),
        memory_mib: 1024,
        output_limit: 1 << 20,
        as_of: None,
        validator: None,
        per_user_running: 2,
        per_user_waiting: 10,
        max_code_bytes: 20_000,
    }
    .fair_for(2);
    let pipeline = Arc::new(Pipeline::new(
        Some(Arc::new(pool)),
        FunctionStore::open(&db).unwrap(),
        AuditLog::open(&db).unwrap(),
        RateLimiter::open(&db, 10, Duration::from_secs(60)).unwrap(),
        Permissions::new(&PermissionsSection::default()),
        settings,
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let request = |user: &str, code: &str| Request {
        user: user.into(),
        channel: Some("C1".into()),
        source: Source::Slack,
        input: Input::Slash {
            command: "/analyze".into(),
            text: code.into(),
        },
    };
    let slow_done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    runtime.block_on(async {
        for _ in 0..2 {
            let (pipeline, done) = (Arc::clone(&pipeline), Arc::clone(&slow_done));
            let slow = request("HOG", "import time\ntime.sleep(8)\nresult = 'slow'");
            tokio::spawn(async move {
                pipeline.handle(&slow, |_| {}).await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        // Both slow jobs are in: one running, one waiting for it.
        for _ in 0..100 {
            if pipeline.in_flight() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pipeline.in_flight(), 2);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reply = pipeline
            .handle(&request("DESK", "result = 6 * 7"), |_| {})
            .await;
        assert!(reply.fallback.ends_with("42"), "{reply:?}");
        assert_eq!(
            slow_done.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the other user's job waited for a slow job to end"
        );
    });
    drop(pipeline);
    runtime.shutdown_timeout(Duration::from_secs(1));
}
