//! Faults, each asserting the state it leaves: a disk that fills under
//! `$TRADEBOX_HOME` (a small tmpfs, mounted in a user and mount namespace
//! of the test's own, so no root is needed) refuses the import with a
//! clear message, keeps the store and the snapshot whole, and works again
//! once space returns; an import that fits while its snapshot does not is
//! kept, the old snapshot served, and `data snapshot` publishes it later;
//! a store another process keeps locked makes `serve` refuse requests
//! within a bound (never hang) and serve them again once it is free;
//! `serve` killed -9 in the middle of an upload, a save, a delete and a job
//! leaves no sandbox process, a whole store and an all-or-nothing upload,
//! and starts again with its snapshot caught up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CSV of `n` trades.
fn big_csv(path: &Path, n: usize) {
    let mut text = String::from("timestamp,exchange,symbol,side,amount,price,trade_id\n");
    for i in 0..n {
        text.push_str(&format!(
            "2025-0{}-{:02}T{:02}:{:02}:{:02},kraken,BTC,buy,{}.5,100,fill-{i}\n",
            1 + i % 9,
            1 + i % 28,
            i % 24,
            i % 60,
            (i / 60) % 60,
            i % 97
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// Runs `steps` (shell) in a user and mount namespace of its own, with a
/// tmpfs of `mib` MiB mounted on `home` and `TRADEBOX_HOME` set to it; `$TB`
/// is the binary. What the steps must keep goes to files outside the tmpfs.
fn in_namespace(home: &Path, mib: u32, steps: &str) {
    let script = format!(
        "set -u\nmount -t tmpfs -o size={mib}m tmpfs \"{home}\" || exit 90\n\
         export TRADEBOX_HOME=\"{home}\" TB=\"{bin}\"\n{steps}",
        home = home.display(),
        bin = common::bin(),
    );
    let status = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .status()
        .expect("unshare (util-linux) runs");
    assert!(status.success(), "the namespace script failed: {status}");
}

/// A folder for the steps' files, its `home` (the tmpfs's mount point), a
/// CSV of 50,000 trades and the fixture's database.
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let outer = tempfile::TempDir::new().unwrap();
    let home = outer.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let csv = outer.path().join("big.csv");
    big_csv(&csv, 50_000);
    (outer, home, csv, common::fixtures().join("trade_cache.db"))
}

/// A file the namespace's steps wrote into `dir` ("" when there is none).
fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// `data info --json` as the steps saved it in `dir`.
fn info(dir: &Path, name: &str) -> serde_json::Value {
    let text = read(dir, name);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"))
}

/// A listing of the snapshot root holds no staging folder.
fn no_half_written_version(listing: &str) {
    assert!(
        !listing.lines().any(|l| l.starts_with(".tmp-")),
        "a half-written version was left: {listing}"
    );
}

#[test]
fn a_full_disk_refuses_the_import_keeps_everything_whole_and_recovers() {
    let (outer, home, csv, db) = setup();
    let steps = format!(
        r#""$TB" -q data import "{db}" >"{o}/fixture.out" 2>"{o}/fixture.err"; echo $? >"{o}/fixture.rc"
"$TB" -q data import "{csv}" >"{o}/full.out" 2>"{o}/full.err"; echo $? >"{o}/full.rc"
"$TB" data info --json >"{o}/info_full.json" 2>"{o}/info_full.err"
ls -a "$TRADEBOX_HOME/snapshot" >"{o}/snapshot_full.ls"
mount -o remount,size=256m "$TRADEBOX_HOME"
"$TB" -q data import "{csv}" >"{o}/again.out" 2>"{o}/again.err"; echo $? >"{o}/again.rc"
"$TB" data info --json >"{o}/info_again.json" 2>"{o}/info_again.err"
"#,
        db = db.display(),
        csv = csv.display(),
        o = outer.path().display(),
    );
    // Everything runs in one namespace, where the tmpfs exists.
    in_namespace(&home, 4, &steps);
    let read = |name: &str| read(outer.path(), name);
    let info = |name: &str| info(outer.path(), name);

    assert_eq!(read("fixture.rc").trim(), "0", "{}", read("fixture.err"));
    let fixture_trades = common::trade_count();

    // Refused, and said so plainly.
    assert_ne!(
        read("full.rc").trim(),
        "0",
        "the import cannot fit in 4 MiB"
    );
    let err = read("full.err");
    assert!(
        err.contains("the disk is full") || err.contains("No space left on device"),
        "no word of the full disk: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // Each cause said once.
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.matches("os error 28").count() <= 1, "{err}");
    // Nothing of it kept: the store and the snapshot hold the fixture.
    let full = info("info_full.json");
    assert_eq!(full["trades"], fixture_trades, "{full}");
    assert_eq!(full["snapshot"]["trades"], fixture_trades, "{full}");
    no_half_written_version(&read("snapshot_full.ls"));

    // Space is back: the same import goes through.
    assert_eq!(read("again.rc").trim(), "0", "{}", read("again.err"));
    let again = info("info_again.json");
    assert_eq!(again["trades"], fixture_trades + 50_000, "{again}");
    assert_eq!(again["snapshot"]["trades"], again["trades"], "{again}");
}

#[test]
fn an_import_that_fits_but_whose_snapshot_does_not_is_kept_and_published_later() {
    let (outer, home, csv, db) = setup();
    let steps = format!(
        r#""$TB" -q data import "{db}" >/dev/null 2>"{o}/fixture.err" || exit 91
"$TB" -q data import "{csv}" >"{o}/full.out" 2>"{o}/full.err"; echo $? >"{o}/full.rc"
"$TB" data info --json >"{o}/info_full.json"
ls -a "$TRADEBOX_HOME/snapshot" >"{o}/snapshot_full.ls"
mount -o remount,size=256m "$TRADEBOX_HOME"
"$TB" -q data snapshot >"{o}/repair.out" 2>"{o}/repair.err"; echo $? >"{o}/repair.rc"
"$TB" data info --json >"{o}/info_again.json"
"#,
        db = db.display(),
        csv = csv.display(),
        o = outer.path().display(),
    );
    // 16 MiB: room for the store's new rows, not for the snapshot's too.
    in_namespace(&home, 16, &steps);
    let read = |name: &str| read(outer.path(), name);
    let info = |name: &str| info(outer.path(), name);
    let fixture_trades = common::trade_count();

    assert_eq!(read("full.rc").trim(), "1");
    assert!(
        read("full.out").contains("50000 new"),
        "{}",
        read("full.out")
    );
    let err = read("full.err");
    assert!(
        err.contains("the import is kept") && err.contains("No space left on device"),
        "{err}"
    );
    assert!(
        err.contains("tradebox data snapshot"),
        "says how to mend: {err}"
    );
    // The store has the import; the snapshot is the old one, whole.
    let full = info("info_full.json");
    assert_eq!(full["trades"], fixture_trades + 50_000, "{full}");
    assert_eq!(full["snapshot"]["trades"], fixture_trades, "{full}");
    no_half_written_version(&read("snapshot_full.ls"));

    // Space is back: `data snapshot` publishes what the store holds.
    assert_eq!(read("repair.rc").trim(), "0", "{}", read("repair.err"));
    let again = info("info_again.json");
    assert_eq!(again["snapshot"]["trades"], again["trades"], "{again}");
}

#[test]
fn a_store_locked_by_another_process_delays_or_refuses_within_a_bound_never_hangs() {
    use std::time::{Duration, Instant};
    let home = common::fixture_home();
    std::fs::write(
        home.path().join("tradebox.toml"),
        "[rate_limit]\nexecutions = 1000\n",
    )
    .unwrap();
    let server = common::serve(home.path(), &[], &[]);
    let run = || {
        let started = Instant::now();
        let (status, v) = common::post_json(
            &server,
            "/api/v1/run",
            &serde_json::json!({"code": "result = len(load_trades(days=None))"}),
        );
        (status, v, started.elapsed())
    };
    let (status, v, _) = run();
    assert_eq!(
        (status, &v["success"]),
        (200, &serde_json::json!(true)),
        "{v}"
    );

    // Another process takes the store's write lock and keeps it.
    let holder = rusqlite::Connection::open(home.path().join("tradebox.db")).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let refused = |(status, v, took): (u16, serde_json::Value, Duration)| {
        assert!(took < Duration::from_secs(10), "waited {took:?}: {v}");
        assert_eq!(status, 503, "refused while the store is locked: {v}");
        let text = v.to_string();
        assert!(text.contains("locked"), "says why: {text}");
    };
    // One after another (the audit rows of the refusals wait in memory,
    // written by a background task that keeps trying)...
    for _ in 0..3 {
        refused(run());
    }
    // ... and many at once: each waits for the lock once, not once for
    // every request before it. Beside them, a command that writes (a save)
    // and the pages that only read answer within the same bound; reads are
    // served (a locked store still reads).
    let auth = format!("Bearer {}", server.token);
    let get = |path: &str| {
        let started = Instant::now();
        let answer = common::http(
            &server.base,
            "GET",
            path,
            &[("Authorization", auth.as_str())],
            &[],
        );
        (answer.status, answer.text(), started.elapsed())
    };
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..6).map(|_| s.spawn(run)).collect();
        let save = s.spawn(|| {
            let started = Instant::now();
            let (status, v) = common::post_json(
                &server,
                "/api/v1/commands",
                &serde_json::json!({"user": "U1", "text": "/savefunc n | one | result = 1"}),
            );
            (status, v.to_string(), started.elapsed())
        });
        let reads: Vec<_> = ["/api/v1/functions", "/api/v1/audit", "/api/v1/data"]
            .into_iter()
            .map(|path| (path, s.spawn(move || get(path))))
            .collect();
        for one in runs {
            refused(one.join().unwrap());
        }
        let (status, text, took) = save.join().unwrap();
        eprintln!("save: {status} {took:?} {text}");
        assert!(
            took < Duration::from_secs(10),
            "save waited {took:?}: {text}"
        );
        assert!(
            text.contains("locked"),
            "the save says why: {status} {text}"
        );
        for (path, read) in reads {
            let (status, text, took) = read.join().unwrap();
            eprintln!("{path}: {status} {took:?}");
            assert!(took < Duration::from_secs(10), "{path} waited {took:?}");
            assert_eq!(status, 200, "{path} reads a locked store: {text}");
        }
    });
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);

    // Served again at once, and the store is whole.
    let (status, v, _) = run();
    assert_eq!(
        (status, &v["success"]),
        (200, &serde_json::json!(true)),
        "{v}"
    );
    assert_eq!(v["result"], common::trade_count().to_string(), "{v}");
    let ok: String = rusqlite::Connection::open(home.path().join("tradebox.db"))
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

/// Every descendant of `pid` (its children, theirs, ...).
fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        for kid in common::procs::children_of(p) {
            all.push(kid);
            next.push(kid);
        }
    }
    all
}

#[test]
fn serve_killed_in_the_middle_of_everything_leaves_it_whole_and_starts_again() {
    use std::time::{Duration, Instant};
    let home = common::fixture_home();
    std::fs::write(
        home.path().join("tradebox.toml"),
        "[rate_limit]\nexecutions = 1000\n",
    )
    .unwrap();
    let store = home.path().join("tradebox.db");
    let count = |sql: &str| -> i64 {
        rusqlite::Connection::open(&store)
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    };
    let rows = 20_000;
    // Kill -9 at moments spread over an upload's import and publication,
    // a save, a delete and a job that sleeps.
    for (round, delay_ms) in [150u64, 500, 1200].into_iter().enumerate() {
        let tmp = tempfile::TempDir::new().unwrap();
        let tmpdir = tmp.path().to_str().unwrap();
        let mut server = common::serve(home.path(), &[("TMPDIR", tmpdir)], &[]);
        let before = count("SELECT count(*) FROM trades");
        let csv = home.path().join(format!("upload{round}.csv"));
        let mut text = String::from("timestamp,exchange,symbol,side,amount,price,trade_id\n");
        for i in 0..rows {
            text.push_str(&format!(
                "2025-03-{:02}T{:02}:{:02}:00,kraken,BTC,buy,1,100,r{round}-{i}\n",
                1 + i % 28,
                i % 24,
                i % 60
            ));
        }
        std::fs::write(&csv, &text).unwrap();
        let (base, auth) = (server.base.clone(), format!("Bearer {}", server.token));
        let busy: Vec<_> = [
            ("POST", format!("/api/v1/data/import?name=upload{round}.csv"), text.into_bytes()),
            (
                "POST",
                "/api/v1/run".into(),
                br#"{"code": "import time\ntime.sleep(20)\nresult = 1"}"#.to_vec(),
            ),
            (
                "POST",
                "/api/v1/commands".into(),
                format!(
                    r#"{{"user": "U1", "channel": "C1", "text": "/savefunc f{round} | round {round} | result = {round}"}}"#
                )
                .into_bytes(),
            ),
            (
                "POST",
                "/api/v1/commands".into(),
                r#"{"user": "U1", "channel": "C1", "text": "/delfunc f0"}"#.as_bytes().to_vec(),
            ),
        ]
        .into_iter()
        .map(|(method, path, body)| {
            let (base, auth) = (base.clone(), auth.clone());
            std::thread::spawn(move || {
                // The server dies under it: any answer, or none, will do.
                let _ = std::panic::catch_unwind(|| {
                    common::http(
                        &base,
                        method,
                        &path,
                        &[("Authorization", &auth), ("Content-Type", "application/json")],
                        &body,
                    )
                });
            })
        })
        .collect();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let pid = server.child.id();
        let sandbox = descendants(pid);
        assert!(!sandbox.is_empty(), "the pool's processes run under serve");
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        for t in busy {
            let _ = t.join();
        }
        // No sandbox process outlives its supervisor.
        let deadline = Instant::now() + Duration::from_secs(10);
        while sandbox
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
        {
            assert!(Instant::now() < deadline, "left running: {sandbox:?}");
            std::thread::sleep(Duration::from_millis(50));
        }

        // The store is whole, and the upload all or nothing.
        let ok: String = rusqlite::Connection::open(&store)
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let after = count("SELECT count(*) FROM trades");
        assert!(
            after == before || after == before + rows as i64,
            "round {round}: {before} then {after}"
        );

        // It starts again, catches its snapshot up, and the next command
        // works. Nothing the killed server was writing is left over.
        let server = common::serve(home.path(), &[("TMPDIR", tmpdir)], &[]);
        let left = |dir: &Path| -> Vec<_> {
            std::fs::read_dir(dir)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        };
        assert_eq!(left(tmp.path()), Vec::<PathBuf>::new(), "in TMPDIR");
        assert_eq!(left(&home.path().join("uploads")), Vec::<PathBuf>::new());
        let (status, v) = common::post_json(
            &server,
            "/api/v1/run",
            &serde_json::json!({"code": "result = len(load_trades(days=None))"}),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["result"], after.to_string(), "round {round}: {v}");
    }
}
