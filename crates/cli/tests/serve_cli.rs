//! `tradebox serve` as a user starts it: a fresh home gets demo data, the
//! ready line carries a working token, a fixed `TRADEBOX_TOKEN` is
//! honoured, bad set-ups are refused with exit code 2 before anything slow
//! happens, and SIGTERM lets a running job answer before the process exits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{http, post_json, serve, Server};
use serde_json::json;

fn run_ok(server: &Server, code: &str) -> serde_json::Value {
    let (status, v) = post_json(server, "/api/v1/run", &json!({ "code": code }));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["success"], true, "{v}");
    v
}

#[test]
fn a_fresh_home_gets_demo_data_and_a_kept_token() {
    let home = tempfile::TempDir::new().unwrap();
    let server = serve(home.path(), &[], &[]);
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    let kept = std::fs::read_to_string(home.path().join("console-token")).unwrap();
    assert_eq!(kept.trim(), server.token);
    // The default demo history (200,000 trades) ends now: the last week
    // has trades on several exchanges.
    let v = run_ok(&server, "len(load_trades(days=None))");
    assert_eq!(v["result"], "200000", "{v}");
    let v = run_ok(
        &server,
        "df = load_trades(days=7)\nresult = int(df['exchange'].nunique() >= 3 and len(df) > 1000)",
    );
    assert_eq!(v["result"], "1", "{v}");
    drop(server);

    // A second start reuses the store (no new demo) and the token.
    let again = serve(home.path(), &[], &[]);
    assert_eq!(again.token, kept.trim());
    let v = run_ok(&again, "len(load_trades(days=None))");
    assert_eq!(v["result"], "200000", "{v}");
}

#[test]
fn a_fixed_token_from_the_environment_is_honoured() {
    let home = common::fixture_home();
    let token = "automation-token-0123456789";
    let server = serve(home.path(), &[("TRADEBOX_TOKEN", token)], &["--no-demo"]);
    assert_eq!(server.token, token);
    assert!(!home.path().join("console-token").exists());
    // The fixture, not demo data.
    let v = run_ok(&server, "len(load_trades(days=None))");
    assert_eq!(v["result"], common::trade_count().to_string(), "{v}");
    // Any other token is refused.
    let answer = http(
        &server.base,
        "POST",
        "/api/v1/run",
        &[("Authorization", "Bearer automation-token-0123456780")],
        br#"{"code": "1"}"#,
    );
    assert_eq!(answer.status, 401);
}

fn serve_fails(home: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(common::bin());
    cmd.env("TRADEBOX_HOME", home)
        .env("TRADEBOX_RUNTIME", common::runtime_dir())
        .env_remove("SLACK_BOT_TOKEN")
        .env_remove("SLACK_APP_TOKEN")
        .env_remove("SLACK_SIGNING_SECRET")
        .env_remove("TRADEBOX_TOKEN")
        .args(["--quiet", "serve", "--workers", "1"])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "no ready line: {out:?}");
    // Refused before the slow parts (runtime, demo data, pool).
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn bad_setups_are_refused_with_one_line_and_exit_code_2() {
    let home = tempfile::TempDir::new().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let e = serve_fails(home.path(), &[], &["--listen", &addr]);
    assert!(
        e.contains("cannot listen on") && e.contains("--listen"),
        "{e}"
    );

    let e = serve_fails(
        home.path(),
        &[("TRADEBOX_TOKEN", "short")],
        &["--listen", "127.0.0.1:0"],
    );
    assert!(e.contains("TRADEBOX_TOKEN"), "{e}");

    let e = serve_fails(
        home.path(),
        &[("SLACK_BOT_TOKEN", "xoxb-1")],
        &["--listen", "127.0.0.1:0"],
    );
    assert!(
        e.contains("SLACK_APP_TOKEN") || e.contains("SLACK_SIGNING_SECRET"),
        "{e}"
    );

    std::fs::write(
        home.path().join("tradebox.toml"),
        "[console]\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let e = serve_fails(home.path(), &[], &[]);
    assert!(e.contains("tradebox.toml") && e.contains("listen"), "{e}");
    // Nothing was half-made: no store, no token.
    assert!(!home.path().join("console-token").exists());
    assert!(!home.path().join("tradebox.db").exists());
}

#[test]
fn sigterm_lets_a_running_job_answer_then_exits() {
    let home = common::fixture_home();
    let mut server = serve(home.path(), &[], &["--no-demo"]);
    let (base, token) = (server.base.clone(), server.token.clone());
    let job = std::thread::spawn(move || {
        let auth = format!("Bearer {token}");
        let answer = http(
            &base,
            "POST",
            "/api/v1/run",
            &[("Authorization", &auth), ("Content-Type", "application/json")],
            json!({ "code": "import datetime\nt = datetime.datetime.now()\nwhile (datetime.datetime.now() - t).total_seconds() < 3:\n    pass\nresult = 'finished'" })
                .to_string()
                .as_bytes(),
        );
        (answer.status, answer.text())
    });
    std::thread::sleep(Duration::from_millis(1000));
    let status = server.terminate(Duration::from_secs(20));
    let (code, body) = job.join().unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"], "finished", "{v}");
    assert!(status.success(), "{status}: {}", server.stderr());
    assert!(server.stderr().contains("SIGTERM"), "{}", server.stderr());
}
