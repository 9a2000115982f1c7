//! `tradebox serve` replicas sharing one PostgreSQL store (a throwaway
//! cluster): what one saves the others run; the rate limit and running
//! places are exact across them; an import through one is served by all;
//! every command has its audit row in the shared store, and nothing of it
//! lands in the homes' SQLite files. The database stopped (commands refused
//! at once, served again without restarting the replicas) and restarted
//! under load (none run twice, none lost, an audit row each). Slack: a
//! command retried against the other replica (HTTP mode behind a load
//! balancer) runs once; in Socket Mode every replica's connections get
//! their share, an envelope delivered on every connection runs once, and
//! one left unacknowledged by a replica that died runs once elsewhere. TLS:
//! served over `verify-full`. The stores' own contract tests (crates/core,
//! crates/data) run every case on both backends; this is the binary's
//! wiring of `[store] url`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tradebox_db::testing::PgCluster;
use tradebox_fake_slack::{self as fake, FakeSlack, Sign, SlashCommand};

use common::http;

fn post(server: &common::Server, path: &str, body: &Value) -> common::Answer {
    http(
        &server.base,
        "POST",
        path,
        &[
            ("Authorization", &format!("Bearer {}", server.token)),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

/// A GET of `path` on `server`, with its token.
fn get(server: &common::Server, path: &str) -> common::Answer {
    http(
        &server.base,
        "GET",
        path,
        &[("Authorization", &format!("Bearer {}", server.token))],
        b"",
    )
}

fn command(server: &common::Server, user: &str, text: &str) -> Value {
    let a = post(
        server,
        "/api/v1/commands",
        &json!({"user": user, "channel": "C1", "text": text}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()
}

/// The text of a reply's blocks, joined.
fn text_of(reply: &Value) -> String {
    reply["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn three_replicas_share_one_postgres_store() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    let env = [
        ("TRADEBOX_STORE_URL", url.as_str()),
        ("TRADEBOX_DATA_AS_OF", "latest"),
        ("TRADEBOX_RATE_LIMIT_EXECUTIONS", "3"),
        ("TRADEBOX_RATE_LIMIT_WINDOW_SECONDS", "600"),
        ("TRADEBOX_VALIDATOR_ENABLED", "no"),
    ];
    // A holds the fixture (imported into the shared store); B and C
    // nothing: they mirror the shared trades when they start.
    let (home_a, home_b, home_c) = (
        shared_fixture_home(&url),
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    );
    let a = common::serve(home_a.path(), &env, &["--no-demo"]);
    let b = common::serve(home_b.path(), &env, &["--no-demo"]);
    let c = common::serve(home_c.path(), &env, &["--no-demo"]);

    // Saved on A, listed on B, run on C.
    let saved = command(
        &a,
        "U1",
        "/savefunc shared_count | trades | result = len(load_trades(days=None))",
    );
    assert_eq!(saved["error"], false, "{saved}");
    let listed = command(&b, "U2", "/listfuncs");
    assert!(text_of(&listed).contains("shared_count"), "{listed}");
    let ran = command(&c, "U1", "/runfunc shared_count");
    assert_eq!(ran["error"], false, "{ran}");
    let expected = common::trade_count().to_string();
    assert!(text_of(&ran).contains(&expected), "{ran}");

    // The rate limit (3 per user) holds across both: U1 ran once already.
    let mut allowed = 0;
    for i in 0..6 {
        let server = if i % 2 == 0 { &a } else { &b };
        let reply = command(server, "U1", "/analyze result = 1");
        if reply["error"] == false {
            allowed += 1;
        } else {
            assert!(reply.to_string().contains("Rate limit exceeded"), "{reply}");
        }
    }
    assert_eq!(
        allowed, 2,
        "3 per user across both replicas, one used by /runfunc"
    );

    // Deleted on B, gone on A.
    let deleted = command(&b, "U1", "/delfunc shared_count");
    assert_eq!(deleted["error"], false, "{deleted}");
    let gone = command(&a, "U1", "/runfunc shared_count");
    assert_eq!(gone["error"], true, "{gone}");

    // Every command has its row in the shared audit trail, whichever
    // replica took it; the homes' own files have none.
    let audit = get(&a, "/api/v1/audit?limit=100").json();
    let rows = audit["entries"].as_array().unwrap().clone();
    let actions: Vec<&str> = rows.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "savefunc").count(),
        1,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "delfunc").count(),
        1,
        "{actions:?}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r["outcome"] == "refused_rate_limit")
            .count(),
        4,
        "{actions:?}"
    );
    // Each row names the replica that wrote it.
    let by = |action: &str| {
        rows.iter()
            .find(|r| r["action"] == action)
            .and_then(|r| r["replica"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (saved_by, deleted_by) = (by("savefunc"), by("delfunc"));
    assert!(
        saved_by.contains(&format!(":{}", a.child.id())),
        "{saved_by}"
    );
    assert!(
        deleted_by.contains(&format!(":{}", b.child.id())),
        "{deleted_by}"
    );
    for home in [&home_a, &home_b, &home_c] {
        let conn = rusqlite::Connection::open(home.path().join("tradebox.db")).unwrap();
        let has: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('saved_functions', 'audit_log')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(has, 0, "the home's file holds no shared table");
    }

    // The database stops: refused at once with a clear message, not hung.
    cluster.stop().unwrap();
    let started = Instant::now();
    let down = post(
        &a,
        "/api/v1/commands",
        &json!({"user": "U3", "text": "/listfuncs"}),
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(down.text().contains("store unavailable"), "{}", down.text());
    let ready = http(&a.base, "GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["checks"]["store"]["ok"], false);

    // Back: served again without restarting the replicas.
    cluster.restart().unwrap();
    let saved = command(&b, "U3", "/savefunc after | x | result = 2");
    assert_eq!(saved["error"], false, "{saved}");
    let listed = command(&a, "U3", "/listfuncs");
    assert!(text_of(&listed).contains("after"), "{listed}");
    assert_eq!(http(&a.base, "GET", "/readyz", &[], b"").status, 200);
}

#[test]
fn a_slack_delivery_retried_against_the_other_replica_runs_once() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    let slack = FakeSlack::start().unwrap();
    let api = slack.api_url();
    let env = [
        ("TRADEBOX_STORE_URL", url.as_str()),
        ("TRADEBOX_DATA_AS_OF", "latest"),
        ("SLACK_BOT_TOKEN", fake::BOT_TOKEN),
        ("SLACK_SIGNING_SECRET", fake::SIGNING_SECRET),
        ("SLACK_API_URL", api.as_str()),
    ];
    let home = shared_fixture_home(&url);
    let (a, b) = (
        common::serve(home.path(), &env, &["--no-demo"]),
        common::serve(home.path(), &env, &["--no-demo"]),
    );
    let analyze = SlashCommand::new("/analyze", "result = 6 * 7");
    let first = slack
        .block_on(slack.http_command(&a.base, &analyze, Sign::Good, None))
        .unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    // Slack retries (its first answer seemed late); the load balancer sends
    // the retry to the other replica, which acknowledges it only.
    let retry = slack
        .block_on(slack.http_command(&b.base, &analyze, Sign::Good, Some((1, &first.trigger_id))))
        .unwrap();
    assert_eq!(retry.status, 200, "{}", retry.body);
    slack
        .block_on(slack.wait_for("the answer", Duration::from_secs(60), |v| {
            v.messages()
                .iter()
                .find(|m| m.all_text().contains("Analysis complete: 42"))
                .cloned()
        }))
        .unwrap();
    // A new command (its own trigger) runs on B as usual.
    let other = slack
        .block_on(slack.http_command(
            &b.base,
            &SlashCommand::new("/analyze", "result = 7 * 8"),
            Sign::Good,
            None,
        ))
        .unwrap();
    assert_eq!(other.status, 200);
    slack
        .block_on(
            slack.wait_for("the second answer", Duration::from_secs(60), |v| {
                v.messages()
                    .iter()
                    .find(|m| m.all_text().contains("Analysis complete: 56"))
                    .cloned()
            }),
        )
        .unwrap();
    let answers = slack
        .messages()
        .iter()
        .filter(|m| !m.deleted && m.all_text().contains("Analysis complete: 42"))
        .count();
    assert_eq!(answers, 1, "{:#?}", slack.messages());
    let audit = get(&a, "/api/v1/audit?action=analyze").json();
    assert_eq!(audit["count"], 2, "{audit}");
}

#[test]
fn thirty_commands_at_once_over_three_replicas_run_ten() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    // The default limit: 10 executions per user per minute.
    let env = [
        ("TRADEBOX_STORE_URL", url.as_str()),
        ("TRADEBOX_VALIDATOR_ENABLED", "no"),
    ];
    let home = shared_fixture_home(&url);
    let servers: Vec<common::Server> = (0..3)
        .map(|_| common::serve(home.path(), &env, &["--no-demo"]))
        .collect();
    let barrier = std::sync::Barrier::new(30);
    let replies: Vec<Value> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..30)
            .map(|i| {
                let (server, barrier) = (&servers[i % 3], &barrier);
                s.spawn(move || {
                    barrier.wait();
                    command(server, "UBURST", "/analyze result = 1")
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let ran = replies.iter().filter(|r| r["error"] == false).count();
    assert_eq!(ran, 10, "{replies:#?}");
    for r in replies.iter().filter(|r| r["error"] == true) {
        let text = r.to_string();
        assert!(
            text.contains("Rate limit exceeded. Max 10 executions per 60s. Try again in "),
            "{text}"
        );
    }
}

/// A fresh home whose fixture trades and snapshots were imported into the
/// shared store at `url` (and mirrored into the home).
fn shared_fixture_home(url: &str) -> tempfile::TempDir {
    let home = tempfile::TempDir::new().unwrap();
    let data = common::fixtures();
    let (db, snaps) = (data.join("trade_cache.db"), data.join("snapshots"));
    let (code, out) = cli(
        home.path(),
        url,
        &[
            "data",
            "import",
            db.to_str().unwrap(),
            snaps.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    home
}

/// Runs the CLI on `home` with the store at `url` (`""`: the home's file):
/// (exit code, stdout and stderr).
fn cli(home: &std::path::Path, url: &str, args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(common::bin());
    cmd.env("TRADEBOX_HOME", home)
        .env_remove("TRADEBOX_STORE_URL")
        .env_remove("DATABASE_URL")
        .args(args);
    if !url.is_empty() {
        cmd.env("TRADEBOX_STORE_URL", url);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn store_migrate_and_check() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    let home = tempfile::TempDir::new().unwrap();
    let h = home.path();

    let (code, out) = cli(h, &url, &["store", "check"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("schema audit") && out.contains("not made yet"),
        "{out}"
    );
    assert!(
        out.starts_with("store postgres://tradebox@127.0.0.1:"),
        "{out}"
    );

    let (code, out) = cli(h, &url, &["store", "migrate"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(h, &url, &["doctor", "--store", "--json"]);
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["schemas"].as_array().unwrap().len(), 6);
    // The shared trades' generation, and no replica served them yet.
    assert_eq!(report["trades"]["generation"], 0, "{report}");
    assert_eq!(report["trades"]["replicas"], json!([]), "{report}");
    assert!(report["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["version"] == s["this_build"]));
    assert!(
        report["clock_skew_ms"].as_i64().unwrap().abs() < 1000,
        "{report}"
    );

    // A schema made by a newer build: refused, and said so.
    let newer = url.clone();
    std::thread::spawn(move || {
        let mut c =
            tradebox_db::pg::postgres::Client::connect(&newer, tradebox_db::pg::postgres::NoTls)
                .unwrap();
        c.batch_execute("UPDATE tradebox_schema SET version = 99 WHERE component = 'audit'")
            .unwrap();
    })
    .join()
    .unwrap();
    let (code, out) = cli(h, &url, &["store", "check"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("v99, newer than this build's"), "{out}");

    // The database down: a clear failure, at once.
    cluster.stop().unwrap();
    let started = Instant::now();
    let (code, out) = cli(h, &url, &["store", "check"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("FAIL store unavailable"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let (code, out) = cli(h, &url, &["store", "migrate"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("store unavailable"), "{out}");
}

#[test]
fn store_copy_moves_a_home_into_postgres() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    let home = tempfile::TempDir::new().unwrap();
    let h = home.path();
    for (name, code) in [
        ("weekly", "result = 1"),
        ("weekly", "result = 2"),
        ("gone", "x = 1"),
    ] {
        let (code_, out) = cli(h, "", &["func", "save", name, "-d", "a test", "-c", code]);
        assert_eq!(code_, 0, "{out}");
    }
    let (code, out) = cli(h, "", &["func", "delete", "gone"]);
    assert_eq!(code, 0, "{out}");
    let data = common::fixtures();
    let (db, snaps) = (data.join("trade_cache.db"), data.join("snapshots"));
    let (code, out) = cli(
        h,
        "",
        &[
            "data",
            "import",
            db.to_str().unwrap(),
            snaps.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");

    let (code, out) = cli(h, "", &["store", "copy", "--to", &url]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("functions   2 (1 live, 1 deleted), 4 versions"),
        "{out}"
    );
    let snapshots = common::expected()["snapshots"]["count"].as_u64().unwrap();
    assert!(
        out.contains(&format!(
            "trades      {}, {snapshots} balance snapshots",
            common::trade_count()
        )),
        "{out}"
    );
    assert!(out.contains("counts      match"), "{out}");
    // The trades are the shared store's now, and the home's file is its
    // mirror (not refused as trades of its own).
    let (code, out) = cli(h, &url, &["data", "info", "--json"]);
    assert_eq!(code, 0, "{out}");
    let info: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["trades"], common::trade_count(), "{info}");
    let (code, out) = cli(h, &url, &["data", "snapshot"]);
    assert_eq!(code, 0, "{out}");

    // The copy serves: its history, its audit trail.
    let (code, out) = cli(h, &url, &["func", "history", "weekly"]);
    assert_eq!(code, 0, "{out}");
    let saves: Vec<&str> = out
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("save"))
        .collect();
    assert_eq!(saves.len(), 2, "{out}");
    let (code, out) = cli(h, &url, &["audit", "--json"]);
    assert_eq!(code, 0, "{out}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 4, "{out}");

    // Never into a store that holds something.
    let (code, out) = cli(h, "", &["store", "copy", "--to", &url]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("not empty") || out.contains("already holds"),
        "{out}"
    );
    let (code, out) = cli(h, "", &["store", "copy", "--to", "mysql://x/y"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("--to must be sqlite:PATH or postgres://"),
        "{out}"
    );
}

#[test]
fn a_replica_killed_mid_job_frees_its_running_place_by_lease_expiry() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    let env = [
        ("TRADEBOX_STORE_URL", url.as_str()),
        ("TRADEBOX_VALIDATOR_ENABLED", "no"),
        ("TRADEBOX_POOL_PER_USER_RUNNING", "1"),
    ];
    let home = shared_fixture_home(&url);
    // One running place per user, across both replicas.
    let mut a = common::serve(home.path(), &env, &["--no-demo"]);
    let b = common::serve(home.path(), &env, &["--no-demo"]);
    // The long job, sent without waiting for its answer (A dies before it).
    let body =
        json!({"user": "U9", "channel": "C1", "text": "/analyze import time; time.sleep(25)"})
            .to_string();
    let mut stream = std::net::TcpStream::connect(a.base.trim_start_matches("http://")).unwrap();
    std::io::Write::write_all(
        &mut stream,
        format!(
            "POST /api/v1/commands HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            a.base.trim_start_matches("http://"),
            a.token,
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    // The job runs on A (its worker busy), holding U9's place.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = get(&a, "/metrics");
        if m.text().lines().any(|l| l == "tradebox_workers_busy 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the job never started on A");
        std::thread::sleep(Duration::from_millis(100));
    }
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    // On B, U9 waits for the dead replica's lease to expire, then runs.
    let reply = command(&b, "U9", "/analyze result = 9");
    let waited = killed.elapsed();
    assert_eq!(reply["error"], false, "{reply}");
    assert!(
        waited > Duration::from_secs(3) && waited < Duration::from_secs(25),
        "{waited:?}: the place came free by expiry, not at once and not never"
    );
    // Another user never waited for it.
    let started = Instant::now();
    assert_eq!(command(&b, "U8", "/analyze result = 8")["error"], false);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// `result = len(load_trades(days=None))` on `server`, as a number.
fn count_on(server: &common::Server) -> Option<u64> {
    let a = post(
        server,
        "/api/v1/run",
        &json!({"code": "result = len(load_trades(days=None))"}),
    );
    if a.status != 200 {
        return None;
    }
    a.json()["result"].as_str()?.parse().ok()
}

#[test]
fn an_import_through_one_replica_is_served_by_all_three() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    let env = [
        ("TRADEBOX_STORE_URL", url.as_str()),
        ("TRADEBOX_DATA_AS_OF", "latest"),
        ("TRADEBOX_RATE_LIMIT_EXECUTIONS", "1000"),
        ("TRADEBOX_VALIDATOR_ENABLED", "no"),
    ];
    let homes = [
        shared_fixture_home(&url),
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    ];
    let servers: Vec<common::Server> = homes
        .iter()
        .map(|h| common::serve(h.path(), &env, &["--no-demo"]))
        .collect();
    let before = common::trade_count();
    for s in &servers {
        assert_eq!(count_on(s), Some(before));
    }

    // Two new trades uploaded through the console API of replica A.
    let csv = "timestamp,exchange,account,symbol,side,amount,price\n\
               2025-10-20T01:02:03,kraken,desk,BTC,buy,1,100\n\
               2025-10-20T01:02:04,kraken,desk,ETH,sell,2,50\n";
    let a = &servers[0];
    let answer = http(
        &a.base,
        "POST",
        "/api/v1/data/import?name=more.csv",
        &[("Authorization", &format!("Bearer {}", a.token))],
        csv.as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let uploaded = Instant::now();

    // Every replica answers with them: the others by the notification.
    // (Given far longer than the 5 s it should take: the benchmark
    // measures the lag.)
    for (i, s) in servers.iter().enumerate() {
        loop {
            if count_on(s) == Some(before + 2) {
                eprintln!(
                    "replica {i} serves the import after {:?}",
                    uploaded.elapsed()
                );
                break;
            }
            assert!(
                uploaded.elapsed() < Duration::from_secs(60),
                "replica {i} never served the import"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Each replica says its mirror keeps up.
    for s in &servers {
        let ready = http(&s.base, "GET", "/readyz", &[], b"").json();
        assert_eq!(ready["checks"]["mirror"]["ok"], true, "{ready}");
    }

    // Each replica's file is a mirror; the trades are in the shared store.
    let (code, out) = cli(homes[2].path(), &url, &["data", "info", "--json"]);
    assert_eq!(code, 0, "{out}");
    let info: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["trades"], before + 2, "{info}");
    assert!(
        info["store"].as_str().unwrap().starts_with("postgres "),
        "{info}"
    );
    // The registry names every replica, each at the generation of the
    // import (it may take a turn of their followers to record it).
    let generation = |out: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("replica "))
            .map(str::to_string)
            .collect()
    };
    loop {
        let (code, out) = cli(homes[2].path(), &url, &["store", "check"]);
        assert_eq!(code, 0, "{out}");
        let lines = generation(&out);
        if lines.len() == 3 && lines.iter().all(|l| l.ends_with(": current")) {
            break;
        }
        assert!(uploaded.elapsed() < Duration::from_secs(60), "{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn postgres_restarting_under_load_loses_no_command_and_runs_none_twice() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    let env = [
        ("TRADEBOX_STORE_URL", url.as_str()),
        ("TRADEBOX_RATE_LIMIT_EXECUTIONS", "100000"),
        ("TRADEBOX_VALIDATOR_ENABLED", "no"),
    ];
    let home = shared_fixture_home(&url);
    let servers = [
        common::serve(home.path(), &env, &["--no-demo"]),
        common::serve(home.path(), &env, &["--no-demo"]),
    ];
    const USERS: usize = 4;
    let (stop, next) = (AtomicBool::new(false), AtomicU64::new(0));
    // (user, the command's number, whether it ran, when it was answered)
    let answers = Mutex::new(Vec::new());
    let (mut stopped_at, mut started_at) = (Instant::now(), Instant::now());
    std::thread::scope(|s| {
        for u in 0..USERS {
            let (stop, next, answers, servers) = (&stop, &next, &answers, &servers);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let server = &servers[(n % 2) as usize];
                    let text = format!("/analyze result = {n}");
                    // Every command is answered: a dropped connection or a
                    // 5xx fails here.
                    let reply = command(server, &format!("L{u}"), &text);
                    let ran = reply["error"] == false;
                    let shown = reply.to_string();
                    if ran {
                        assert!(
                            shown.contains(&format!("Analysis complete: {n}")),
                            "{reply}"
                        );
                    } else {
                        // Refused only because the store is unavailable,
                        // and the user is told to try again.
                        assert!(shown.contains("try again"), "{reply}");
                    }
                    answers
                        .lock()
                        .unwrap()
                        .push((format!("L{u}"), n, ran, Instant::now()));
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        stopped_at = Instant::now();
        cluster.stop_clean().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        cluster.restart().unwrap();
        started_at = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
    });
    let answers = answers.into_inner().unwrap();
    let refused = answers.iter().filter(|a| !a.2).count();
    let ran_after = answers.iter().filter(|a| a.2 && a.3 > started_at).count();
    let ran_before = answers.iter().filter(|a| a.2 && a.3 < stopped_at).count();
    eprintln!(
        "{} commands: {ran_before} ran before the stop, {refused} refused, {ran_after} ran after the restart",
        answers.len()
    );
    assert!(refused > 0, "the outage was never seen");
    assert!(ran_before > 0 && ran_after > 0, "served before and after");

    // Every command has its audit row (rows the store could not take while
    // it was down were kept and written since), and no command ran twice.
    let audit = |user: &str| -> Vec<Value> {
        let a = get(
            &servers[0],
            &format!("/api/v1/audit?action=analyze&user={user}&limit=5000"),
        );
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()["entries"].as_array().unwrap().clone()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for u in 0..USERS {
        let user = format!("L{u}");
        let mine: Vec<_> = answers.iter().filter(|a| a.0 == user).collect();
        let rows = loop {
            let rows = audit(&user);
            if rows.len() >= mine.len() || Instant::now() > deadline {
                break rows;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(rows.len(), mine.len(), "{user}: one audit row per command");
        let mut ran_rows: Vec<String> = rows
            .iter()
            .filter(|r| r["outcome"] == "ok")
            .map(|r| r["code"].as_str().unwrap().to_string())
            .collect();
        let mut ran: Vec<String> = mine
            .iter()
            .filter(|a| a.2)
            .map(|a| format!("result = {}", a.1))
            .collect();
        ran_rows.sort();
        ran.sort();
        assert_eq!(ran_rows, ran, "{user}: each command that ran, once");
    }
}

#[test]
fn a_store_reached_over_verified_tls_serves_and_says_so() {
    let cluster = PgCluster::start_tls().unwrap();
    // A database of its own, then the URL that checks the server's
    // certificate against the cluster's CA and name.
    let plain = cluster.database().unwrap();
    let base = plain.split('?').next().unwrap();
    let url = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        cluster.ca_file().display()
    );
    let home = shared_fixture_home(&url);
    let (code, out) = cli(home.path(), &url, &["store", "check", "--json"]);
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let tls = report["tls"].as_str().unwrap();
    assert!(
        tls.starts_with("TLSv1.") && tls.ends_with("(sslmode=verify-full)"),
        "{report}"
    );
    // Served over it: a command, and an import another replica follows.
    let env = [
        ("TRADEBOX_STORE_URL", url.as_str()),
        ("TRADEBOX_VALIDATOR_ENABLED", "no"),
    ];
    let second = tempfile::TempDir::new().unwrap();
    let (a, b) = (
        common::serve(home.path(), &env, &["--no-demo"]),
        common::serve(second.path(), &env, &["--no-demo"]),
    );
    let reply = command(&a, "U1", "/analyze result = 6 * 7");
    assert_eq!(reply["error"], false, "{reply}");
    let before = common::trade_count();
    assert_eq!(count_on(&b), Some(before));
    let csv = "timestamp,exchange,account,symbol,side,amount,price\n\
               2025-10-20T01:02:03,kraken,desk,BTC,buy,1,100\n";
    let answer = http(
        &a.base,
        "POST",
        "/api/v1/data/import?name=more.csv",
        &[("Authorization", &format!("Bearer {}", a.token))],
        csv.as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let started = Instant::now();
    while count_on(&b) != Some(before + 1) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "B never served it"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A certificate check that fails refuses to start, saying why.
    let wrong = format!("{base}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
    let (code, out) = cli(home.path(), &wrong, &["store", "check"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("sslrootcert=/nonexistent/ca.pem"), "{out}");
}

/// The audit rows of `/analyze` with `code`, through `server`.
fn analyze_rows(server: &common::Server, code: &str) -> Vec<Value> {
    let a = get(server, "/api/v1/audit?action=analyze&limit=5000");
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["code"] == code)
        .cloned()
        .collect()
}

#[test]
fn socket_mode_spreads_over_replicas_and_runs_every_envelope_once() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    let slack = FakeSlack::start().unwrap();
    let api = slack.api_url();
    let env = [
        ("TRADEBOX_STORE_URL", url.as_str()),
        ("TRADEBOX_DATA_AS_OF", "latest"),
        ("TRADEBOX_RATE_LIMIT_EXECUTIONS", "1000"),
        ("TRADEBOX_VALIDATOR_ENABLED", "no"),
        ("SLACK_BOT_TOKEN", fake::BOT_TOKEN),
        ("SLACK_APP_TOKEN", fake::APP_TOKEN),
        ("SLACK_API_URL", api.as_str()),
    ];
    let homes = [
        shared_fixture_home(&url),
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    ];
    let mut servers: Vec<common::Server> = homes
        .iter()
        .map(|h| common::serve(h.path(), &env, &["--no-demo"]))
        .collect();
    // Each replica opens its own connection to the one app.
    slack
        .block_on(slack.wait_for_sockets(3, Duration::from_secs(60)))
        .unwrap();
    let answered = |n: u64| {
        slack
            .block_on(
                slack.wait_for("an answer", Duration::from_secs(60), move |v| {
                    v.messages()
                        .iter()
                        .find(|m| m.all_text().contains(&format!("Analysis complete: {n}")))
                        .cloned()
                }),
            )
            .unwrap_or_else(|e| panic!("{e}: {:#?}", slack.messages()));
    };
    let answers_of = |n: u64| {
        slack
            .messages()
            .iter()
            .filter(|m| !m.deleted && m.all_text().contains(&format!("Analysis complete: {n}")))
            .count()
    };
    let send_all = |ns: &[u64]| {
        let commands: Vec<SlashCommand> = ns
            .iter()
            .map(|n| SlashCommand::new("/analyze", &format!("result = {n}")))
            .collect();
        // At once, each from a thread of its own.
        std::thread::scope(|s| {
            let sent: Vec<_> = commands
                .iter()
                .map(|c| {
                    let slack = &slack;
                    s.spawn(move || {
                        slack
                            .block_on(slack.send_command(c, Duration::from_secs(60)))
                            .unwrap()
                    })
                })
                .collect();
            sent.into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        })
    };

    // Spread: six commands, two on each replica's connection.
    let first: Vec<u64> = (1001..=1006).collect();
    send_all(&first);
    let mut ran_by = std::collections::BTreeSet::new();
    for &n in &first {
        answered(n);
        let rows = analyze_rows(&servers[0], &format!("result = {n}"));
        assert_eq!(rows.len(), 1, "{n}: {rows:?}");
        ran_by.insert(rows[0]["replica"].as_str().unwrap().to_string());
    }
    assert_eq!(ran_by.len(), 3, "every replica took its share: {ran_by:?}");

    // The same envelope on every connection, so on every replica: it
    // runs once.
    let sockets = slack.live_sockets();
    slack.duplicate_deliveries(1);
    let ack = send_all(&[2002]).remove(0);
    answered(2002);
    let started = Instant::now();
    while slack
        .acks()
        .iter()
        .filter(|a| a.envelope_id == ack.envelope_id)
        .count()
        < sockets
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not acknowledged on every connection"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(answers_of(2002), 1, "{:#?}", slack.messages());
    assert_eq!(analyze_rows(&servers[0], "result = 2002").len(), 1);

    // A replica that stops answering (stopped, then killed with -9) holds
    // an envelope it never acknowledged: Slack delivers it again on
    // another connection, where it runs, once.
    let pid = servers[0].child.id().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(stopped.success());
    // One envelope per open connection: round robin gives A's its share.
    let sockets = slack.live_sockets() as u64;
    eprintln!("{sockets} connections open");
    let third: Vec<u64> = (3001..=3000 + sockets).collect();
    let acks = std::thread::scope(|s| {
        let sent = s.spawn(|| send_all(&third));
        std::thread::sleep(Duration::from_secs(2));
        servers[0].child.kill().unwrap();
        servers[0].child.wait().unwrap();
        sent.join().unwrap()
    });
    assert!(
        acks.iter().any(|a| a.deliveries >= 2),
        "one envelope was delivered again: {acks:?}"
    );
    for &n in &third {
        answered(n);
    }
    std::thread::sleep(Duration::from_secs(2));
    for &n in &third {
        assert_eq!(answers_of(n), 1, "{n}");
        assert_eq!(
            analyze_rows(&servers[1], &format!("result = {n}")).len(),
            1,
            "{n}"
        );
    }
}
