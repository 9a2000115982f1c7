//! Following sources end to end: `tradebox serve` follows a copy of the
//! original `trade_cache.db` while another process appends to it, and every
//! appended trade shows up exactly once in `load_trades`; `tradebox data
//! sync --follow` killed with -9 again and again while the writer goes on
//! leaves a store that, synced once more, holds every source row once and a
//! snapshot that holds the store; `doctor` reports each source.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, fixtures, post_json, serve};
use rusqlite::Connection;
use serde_json::json;

/// A home whose tradebox.toml follows a copy of the fixture database.
fn home_following() -> (tempfile::TempDir, PathBuf) {
    let home = tempfile::TempDir::new().unwrap();
    let src = home.path().join("collector/trade_cache.db");
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    std::fs::copy(fixtures().join("trade_cache.db"), &src).unwrap();
    std::fs::write(
        home.path().join("tradebox.toml"),
        "[[data.sources]]\nid = \"cex\"\nkind = \"cex-reporter\"\n\
         path = \"collector/trade_cache.db\"\npoll_seconds = 1\n\
         [rate_limit]\nexecutions = 1000\n",
    )
    .unwrap();
    (home, src)
}

/// Appends trades as the collector does: its own connection, a commit per
/// batch, some trades older than the newest ones (late trades).
fn append(src: &Path, from: u32, n: u32) {
    let conn = Connection::open(src).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for i in from..from + n {
        let day = if i % 3 == 0 { 1 } else { 16 }; // every third trade is late
        tx.execute(
            "INSERT INTO trades (trade_id, exchange, account_name, timestamp, symbol, side,
             amount, price, fee, fee_currency, cached_at)
             VALUES (?1, 'kraken', 'MM9', ?2, 'ALKIMI', 'buy', 10.5, 0.05, 0.01, 'USD',
                     '2025-10-18T00:00:00.000000')",
            rusqlite::params![
                format!("follow-{i}"),
                format!("2025-10-{day:02}T{:02}:{:02}:00.000000", i % 24, i % 60)
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// Runs the binary on `home` (with the shared runtime) and returns its output.
fn tb(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .env("TRADEBOX_HOME", home)
        .env("TRADEBOX_RUNTIME", common::runtime_dir())
        .args(args)
        .output()
        .unwrap()
}

fn source_count(src: &Path) -> u64 {
    Connection::open(src)
        .unwrap()
        .query_row("SELECT count(*) FROM trades", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64
}

#[test]
fn serve_follows_a_database_another_process_keeps_writing() {
    let (home, src) = home_following();
    let server = serve(home.path(), &[], &[]);
    let writer = {
        let src = src.clone();
        std::thread::spawn(move || {
            for batch in 0..10 {
                append(&src, batch * 7, 7);
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    writer.join().unwrap();
    let want = source_count(&src);
    let code = "df = load_trades(days=None)\n\
                new = df[df['trade_id'].str.startswith('follow-', na=False)]\n\
                dupes = int(df.duplicated(['exchange', 'account_name', 'trade_id', 'timestamp']).sum())\n\
                result = f'{len(df)} {len(new)} {dupes}'";
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let (status, v) = post_json(&server, "/api/v1/run", &json!({ "code": code }));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["success"], true, "{v}");
        let counts = v["result"].as_str().unwrap_or("").to_string();
        if counts.starts_with(&format!("{want} ")) || Instant::now() > deadline {
            break (counts, v);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let (counts, v) = seen;
    // Every source row, the 70 appended among them, none twice.
    assert_eq!(counts, format!("{want} 70 0"), "{v}\n{}", server.stderr());
    // The answer says which data it is based on.
    assert!(
        v["data_as_of"]["snapshot"].as_u64().unwrap_or(0) >= 2,
        "{v}"
    );

    // The source's state is on record.
    let out = tb(home.path(), &["data", "sources", "--json"]);
    let states: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(states[0]["id"], "cex", "{states}");
    assert_eq!(states[0]["error"], serde_json::Value::Null, "{states}");
    assert!(
        states[0]["lag_seconds"].as_f64().unwrap() < 30.0,
        "{states}"
    );
}

fn store_counts(home: &Path) -> (u64, u64) {
    let conn = Connection::open(home.join("tradebox.db")).unwrap();
    let all = conn
        .query_row("SELECT count(*) FROM trades", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64;
    let distinct = conn
        .query_row(
            "SELECT count(*) FROM (SELECT DISTINCT exchange, account_name, trade_id, timestamp FROM trades)",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as u64;
    (all, distinct)
}

#[test]
fn a_follower_killed_at_any_moment_resumes_without_loss_or_duplicates() {
    let (home, src) = home_following();
    let spawn = || {
        Command::new(bin())
            .env("TRADEBOX_HOME", home.path())
            .args(["--quiet", "data", "sync", "--follow"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Kill -9 at moments spread over a sync and a publication (each a few
    // tens of milliseconds here), while the writer keeps appending.
    for (round, wait_ms) in [40u64, 90, 160, 250, 420, 700, 1100, 1500]
        .into_iter()
        .enumerate()
    {
        let mut follower = spawn();
        append(&src, 1000 + round as u32 * 40, 40);
        std::thread::sleep(Duration::from_millis(wait_ms));
        follower.kill().unwrap();
        follower.wait().unwrap();
    }
    let out = tb(home.path(), &["data", "sync"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (all, distinct) = store_counts(home.path());
    assert_eq!(all, source_count(&src), "every source row is in the store");
    assert_eq!(all, distinct, "none twice");
    // The snapshot holds what the store holds (a publication cut short is redone).
    let current = home.path().join("snapshot/current/manifest.json");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(current).unwrap()).unwrap();
    assert_eq!(manifest["trades"], json!(all), "{manifest}");
    // And its segments, merged by the sandbox's reader, hold every trade.
    let out = tb(
        home.path(),
        &[
            "run",
            "--json",
            "-c",
            "result = len(load_trades(days=None))",
        ],
    );
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["result"], json!(all.to_string()), "{run}");
    // The store passes SQLite's own check.
    let check: String = Connection::open(home.path().join("tradebox.db"))
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn data_sync_names_unknown_sources_and_a_home_without_any() {
    let (home, _src) = home_following();
    let out = tb(home.path(), &["data", "sync", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no source \"nope\"; configured: cex"), "{err}");

    let empty = tempfile::TempDir::new().unwrap();
    let out = tb(empty.path(), &["data", "sync"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no sources are configured"), "{err}");

    std::fs::write(
        empty.path().join("tradebox.toml"),
        "[[data.sources]]\nid = \"x\"\nkind = \"csv-inbox\"\npath = \"in\"\npoll_seconds = 0\n",
    )
    .unwrap();
    let out = tb(empty.path(), &["data", "sync"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("poll_seconds must be from 1 to 3600"), "{err}");
}

#[test]
fn doctor_reports_each_source_and_fails_on_one_that_fails() {
    let (home, src) = home_following();
    let out = tb(home.path(), &["data", "sync"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tb(home.path(), &["doctor", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    let source = &report["data"]["sources"][0];
    assert_eq!(
        (&source["id"], &source["error"]),
        (&json!("cex"), &json!(null))
    );
    assert_eq!(source["added_total"], json!(source_count(&src)));
    assert_eq!(
        report["data"]["snapshot"]["trades"],
        json!(source_count(&src))
    );

    // The collector's file replaced by something that is not SQLite.
    std::fs::write(
        &src,
        "not a database at all, but long enough to be read as one",
    )
    .unwrap();
    let out = tb(home.path(), &["data", "sync"]);
    assert!(!out.status.success());
    let out = tb(home.path(), &["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("source cex") && text.contains("FAIL"),
        "{text}"
    );
    assert!(text.contains("a data source needs attention"), "{text}");
}
