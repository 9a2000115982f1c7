//! End-to-end tests of `tradebox data ...` on the fixture data: imports,
//! idempotency, bad input (exit 2, one clear line, store unchanged), a locked
//! and a read-only store, demo data and `info`. The import of an original
//! data folder is also checked on real data when `TRADEBOX_FIXTURES` names
//! one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{fixtures, real_fixtures};

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

fn tradebox(home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("tradebox").unwrap();
    cmd.env("TRADEBOX_HOME", home).env_remove("RUST_LOG");
    cmd
}

/// Runs a command; returns (exit code, stdout, stderr).
fn run(home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tradebox(home).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn info(home: &Path) -> Value {
    let (code, out, err) = run(home, &["data", "info", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn import_fixture(home: &Path) {
    let f = fixtures();
    let (code, _, err) = run(
        home,
        &[
            "data",
            "import",
            f.join("trade_cache.db").to_str().unwrap(),
            f.join("snapshots").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
}

/// Counts per exchange of a `trade_cache.db`, straight from it with SQLite.
fn counts_by_exchange(db: &Path) -> serde_json::Map<String, Value> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT exchange, count(*) FROM trades GROUP BY exchange")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (k, Value::from(v))
        })
        .collect()
}

/// What importing a cex-reporter data folder must report.
struct Want<'a> {
    trades: u64,
    snapshots: u64,
    first_trade: &'a str,
    last_trade: &'a str,
}

/// Imports the folder `data` into a fresh home twice: everything is new the
/// first time and nothing the second, and the stored rows are the
/// original rows, column for column.
fn imports_unchanged_and_reimport_changes_nothing(data: &Path, want: &Want<'_>) {
    let home = TempDir::new().unwrap();
    let db = data.join("trade_cache.db");
    let snaps = data.join("snapshots");
    let args = [
        "data",
        "import",
        db.to_str().unwrap(),
        snaps.to_str().unwrap(),
    ];
    let (code, out, err) = run(home.path(), &args);
    assert_eq!(code, 0, "{err}");
    let n = want.trades;
    assert!(out.contains(&format!("{n} trades read, {n} new")), "{out}");
    let s = want.snapshots;
    assert!(
        out.contains(&format!("{s} snapshots read, {s} new")),
        "{out}"
    );
    assert!(out.contains("snapshot v1 published"), "{out}");

    let first = info(home.path());
    assert_eq!(first["trades"], n);
    assert_eq!(first["snapshots"], s);
    assert_eq!(first["by_exchange"], Value::Object(counts_by_exchange(&db)));
    assert_eq!(first["first_trade"], want.first_trade);
    assert_eq!(first["last_trade"], want.last_trade);
    assert_eq!(first["snapshot"]["version"], 1);
    assert_eq!(first["snapshot"]["trades"], n);

    let (code, out, _) = run(home.path(), &args);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("{n} trades read, 0 new")), "{out}");
    assert!(
        out.contains("nothing new; snapshot v1 stays current"),
        "{out}"
    );
    let second = info(home.path());
    assert_eq!(second["trades"], n);
    assert_eq!(second["snapshot"]["version"], 1);

    // The stored rows are the original rows, column for column.
    let store = rusqlite::Connection::open(home.path().join("tradebox.db")).unwrap();
    store
        .execute(&format!("ATTACH '{}' AS src", db.display()), [])
        .unwrap();
    let differing: i64 = store
        .query_row(
            "SELECT count(*) FROM (
               SELECT trade_id, exchange, account_name, timestamp, symbol, side, amount, price, fee, fee_currency, cached_at FROM src.trades
               EXCEPT
               SELECT trade_id, exchange, account_name, timestamp, symbol, side, amount, price, fee, fee_currency, cached_at FROM main.trades)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(differing, 0);
}

#[test]
fn fixture_imports_unchanged_and_reimport_changes_nothing() {
    let e = common::expected();
    let t = &e["trades"];
    imports_unchanged_and_reimport_changes_nothing(
        &fixtures(),
        &Want {
            trades: t["count"].as_u64().unwrap(),
            snapshots: e["snapshots"]["count"].as_u64().unwrap(),
            first_trade: t["first_timestamp"].as_str().unwrap(),
            last_trade: t["last_timestamp"].as_str().unwrap(),
        },
    );
}

/// The real-data tier: the original trade_cache.db and its snapshots
/// import without edits.
#[test]
fn real_data_imports_unchanged_and_reimport_changes_nothing() {
    let Some(data) = real_fixtures() else { return };
    imports_unchanged_and_reimport_changes_nothing(
        &data,
        &Want {
            trades: 3970,
            snapshots: 21,
            first_trade: "2025-10-07T09:06:51.478000",
            last_trade: "2025-11-29T16:38:41",
        },
    );
}

/// A row without a trade id (the original schema allows NULL) is in the
/// store once, however often its file is imported.
#[test]
fn rows_without_a_trade_id_are_imported_once() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("trade_cache.db");
    let src = rusqlite::Connection::open(&db).unwrap();
    src.execute_batch(
        "CREATE TABLE trades (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             trade_id TEXT,
             exchange TEXT NOT NULL,
             account_name TEXT NOT NULL,
             timestamp TEXT NOT NULL,
             symbol TEXT NOT NULL,
             side TEXT NOT NULL,
             amount REAL NOT NULL,
             price REAL NOT NULL,
             fee REAL NOT NULL,
             fee_currency TEXT,
             cached_at TEXT NOT NULL,
             UNIQUE(exchange, account_name, trade_id, timestamp, symbol, side, amount, price)
         );
         INSERT INTO trades (trade_id, exchange, account_name, timestamp, symbol, side,
                             amount, price, fee, fee_currency, cached_at)
         VALUES (NULL, 'kraken', 'MM2', '2025-09-08T09:15:00', 'ALKIMI', 'buy',
                 1250.5, 0.04, 0.0, NULL, '2025-09-10T20:07:22.731111');",
    )
    .unwrap();
    drop(src);
    let home = TempDir::new().unwrap();
    for _ in 0..2 {
        let (code, _, err) = run(home.path(), &["data", "import", db.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(info(home.path())["trades"], 1);
}

#[test]
fn csv_import_with_aliases_is_idempotent() {
    let home = TempDir::new().unwrap();
    let csv = home.path().join("kraken.csv");
    std::fs::write(
        &csv,
        "Time;Pair;Type;Qty;Price;Commission;Commission Asset\n\
         2025-10-01T10:00:00Z;ALKIMI;BUY;1000;0.05;0.05;USD\n\
         1759312800000;ALKIMI;sell;500;0.051;0;USD\n",
    )
    .unwrap();
    let path = csv.to_str().unwrap();
    // No exchange column: the option supplies it.
    let (code, _, err) = run(home.path(), &["data", "import", path]);
    assert_eq!(code, 2);
    assert!(
        err.contains("lacks the required column(s) exchange, symbol"),
        "{err}"
    );

    let args = [
        "data",
        "import",
        "--exchange",
        "kraken",
        "--account",
        "MM2",
        path,
    ];
    let (code, _, err) = run(
        home.path(),
        &["data", "import", "--exchange", "kraken", path],
    );
    assert_eq!(code, 2, "Pair is not an accepted symbol alias: {err}");
    std::fs::write(
        &csv,
        std::fs::read_to_string(&csv)
            .unwrap()
            .replacen("Pair", "Symbol", 1),
    )
    .unwrap();
    let (code, out, err) = run(home.path(), &args);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 trades read, 2 new"), "{out}");
    let (_, out, _) = run(home.path(), &args);
    assert!(out.contains("2 trades read, 0 new"), "{out}");
    let i = info(home.path());
    assert_eq!(i["accounts"][0]["exchange"], "kraken");
    assert_eq!(i["accounts"][0]["account_name"], "MM2");
    assert_eq!(i["first_trade"], "2025-10-01T10:00:00");
    assert_eq!(i["last_trade"], "2025-10-01T10:00:00");
}

/// Every bad input: exit 2, one line on stderr naming the problem, store unchanged.
#[test]
fn bad_input_is_one_clear_line_and_changes_nothing() {
    let home = TempDir::new().unwrap();
    import_fixture(home.path());
    let before = info(home.path());
    let dir = TempDir::new().unwrap();
    let p = |name: &str| dir.path().join(name);

    let good_csv = p("good.csv");
    std::fs::write(
        &good_csv,
        "timestamp,exchange,symbol,side,qty,price\n2025-12-01T00:00:00,mexc,ALKIMI,buy,1,0.05\n",
    )
    .unwrap();
    let bad_csv = p("bad.csv");
    std::fs::write(
        &bad_csv,
        "timestamp,exchange,symbol,side,qty,price\n\
         2025-12-01T00:00:00,mexc,ALKIMI,buy,1,0.05\n\
         2025-12-01T00:00:01,mexc,ALKIMI,sell,2,0.05\n\
         2025-12-01T00:00:02,mexc,ALKIMI,sell,two,0.05\n",
    )
    .unwrap();
    std::fs::write(p("garbage.db"), [0u8, 159, 146, 150, 1, 2, 3, 255]).unwrap();
    std::fs::write(p("empty.csv"), "").unwrap();
    let no_trades = rusqlite::Connection::open(p("other.db")).unwrap();
    no_trades.execute("CREATE TABLE t (x)", []).unwrap();
    drop(no_trades);
    std::fs::create_dir(p("nosnaps")).unwrap();
    std::fs::write(p("nosnaps/readme.txt"), "x").unwrap();
    std::fs::create_dir(p("brokensnaps")).unwrap();
    std::fs::write(
        p("brokensnaps/snapshot_2025-12-01.json"),
        "{\"date\": \"2025-12-01\",\n \"timestamp\": \"2025-12-01T00:00:00\",\n \"balances\": {\"USDT\": 1,,}}",
    )
    .unwrap();

    let cases: Vec<(Vec<PathBuf>, String)> = vec![
        (
            vec![good_csv.clone(), bad_csv.clone()],
            format!(
                "{}, line 4, column 'qty': \"two\" is not a number",
                bad_csv.display()
            ),
        ),
        (
            vec![p("garbage.db")],
            "not a SQLite database, a CSV file".into(),
        ),
        (
            vec![p("other.db")],
            "SQLite database has no `trades` table".into(),
        ),
        (
            vec![p("missing.db")],
            "missing.db: no such file or directory".into(),
        ),
        (vec![p("empty.csv")], "empty.csv: the file is empty".into()),
        (
            vec![p("nosnaps")],
            "no snapshot_YYYY-MM-DD.json files in this directory".into(),
        ),
        (
            vec![p("brokensnaps")],
            "snapshot_2025-12-01.json: invalid JSON at line 3, column".into(),
        ),
    ];
    for (paths, want) in cases {
        let mut args = vec!["data".to_string(), "import".to_string()];
        args.extend(paths.iter().map(|p| p.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = run(home.path(), &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: want {want:?}, got {err:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(info(home.path()), before, "{args:?} changed the store");
    }
}

#[test]
fn locked_store_fails_cleanly() {
    let home = TempDir::new().unwrap();
    import_fixture(home.path());
    let before = info(home.path());
    let holder = rusqlite::Connection::open(home.path().join("tradebox.db")).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let csv = home.path().join("one.csv");
    std::fs::write(
        &csv,
        "timestamp,exchange,symbol,side,amount,price\n2025-12-01,mexc,ALKIMI,buy,1,0.05\n",
    )
    .unwrap();
    let (code, _, err) = run(home.path(), &["data", "import", csv.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is locked by another process"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    assert_eq!(info(home.path()), before);
    let check = rusqlite::Connection::open(home.path().join("tradebox.db")).unwrap();
    let ok: String = check
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

/// Root ignores file modes, so as root the command runs as `nobody` through
/// setpriv(1); as any other user the modes alone make the store read-only.
#[test]
fn read_only_store_fails_cleanly() {
    use std::os::unix::fs::PermissionsExt;
    let home = TempDir::new().unwrap();
    import_fixture(home.path());
    let db = home.path().join("tradebox.db");
    let csv = home.path().join("one.csv");
    std::fs::write(
        &csv,
        "timestamp,exchange,symbol,side,amount,price\n2025-12-01,mexc,ALKIMI,buy,1,0.05\n",
    )
    .unwrap();
    let bytes_before = std::fs::read(&db).unwrap();
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    mode(&csv, 0o644);
    mode(&db, 0o444);
    mode(home.path(), 0o555);
    let bin = assert_cmd::cargo::cargo_bin("tradebox");
    let as_root = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    let mut cmd = if as_root.unwrap_or(false) {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    let out = cmd
        .env("TRADEBOX_HOME", home.path())
        .args(["data", "import", csv.to_str().unwrap()])
        .output()
        .unwrap();
    mode(home.path(), 0o755);
    mode(&db, 0o644);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is read-only"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), bytes_before, "store changed");
    assert_eq!(info(home.path())["trades"], common::trade_count());
}

#[test]
fn demo_is_deterministic_and_guards_existing_data() {
    let a = TempDir::new().unwrap();
    let b = TempDir::new().unwrap();
    let args = [
        "data",
        "demo",
        "--rows",
        "20000",
        "--days",
        "30",
        "--seed",
        "7",
        "--end",
        "2026-01-01T00:00:00Z",
    ];
    for home in [&a, &b] {
        let (code, out, err) = run(home.path(), &args);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("generated 20000 demo trades and 31 daily balance snapshots"),
            "{out}"
        );
    }
    let (ia, ib) = (info(a.path()), info(b.path()));
    assert_eq!(ia["accounts"], ib["accounts"]);
    assert_eq!(ia["trades"], 20000);
    assert_eq!(ia["last_trade"], "2026-01-01T00:00:00");
    assert!(ia["by_exchange"].as_object().unwrap().len() >= 4);
    assert!(ia["accounts"].as_array().unwrap().len() >= 10);

    let (code, _, err) = run(a.path(), &args);
    assert_eq!(code, 2);
    assert!(
        err.contains("already holds 20000 trades; pass --replace"),
        "{err}"
    );
    let mut replace = args.to_vec();
    replace[7] = "8";
    replace.push("--replace");
    let (code, _, err) = run(a.path(), &replace);
    assert_eq!(code, 0, "{err}");
    let ic = info(a.path());
    assert_eq!(ic["trades"], 20000);
    assert_ne!(ic["accounts"], ia["accounts"]);
    assert_eq!(ic["snapshot"]["version"], 2);

    let (code, _, err) = run(a.path(), &["data", "demo", "--rows", "0"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(a.path(), &["data", "demo", "--replace", "--end", "someday"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--end: \"someday\" is not a timestamp"),
        "{err}"
    );
}

#[test]
fn every_command_has_help_with_an_example() {
    let home = TempDir::new().unwrap();
    for cmd in [
        vec!["--help"],
        vec!["data", "import", "--help"],
        vec!["data", "demo", "--help"],
        vec!["data", "info", "--help"],
        vec!["data", "snapshot", "--help"],
    ] {
        let (code, out, _) = run(home.path(), &cmd);
        assert_eq!(code, 0);
        assert!(out.contains("Example"), "{cmd:?}: {out}");
    }
    let (_, out, _) = run(home.path(), &["data", "import", "--help"]);
    assert!(out.contains("qty"), "the CSV aliases are documented: {out}");
}

#[test]
fn a_commands_own_options_come_before_the_global_ones() {
    let home = TempDir::new().unwrap();
    for (cmd, own) in [
        (vec!["data", "import", "--help"], "--account"),
        (vec!["data", "demo", "--help"], "--rows"),
        (vec!["run", "--help"], "--no-validate"),
    ] {
        let (code, out, _) = run(home.path(), &cmd);
        assert_eq!(code, 0, "{cmd:?}");
        let at = |needle: &str| {
            out.find(needle)
                .unwrap_or_else(|| panic!("{cmd:?}: no {needle:?} in {out}"))
        };
        let global = at("Global options:");
        assert!(at(own) < global, "{cmd:?}: {own} after the globals: {out}");
        for flag in ["--verbose", "--log-format", "--quiet", "--home"] {
            assert!(
                at(flag) > global,
                "{cmd:?}: {flag} among the command's own: {out}"
            );
        }
    }
}

#[test]
fn empty_store_info_and_json_logs() {
    let home = TempDir::new().unwrap();
    let (code, out, _) = run(home.path(), &["data", "info"]);
    assert_eq!(code, 0);
    assert!(out.contains("the store is empty"), "{out}");
    assert!(
        !home.path().join("tradebox.db").exists(),
        "info must not create a store"
    );

    import_fixture(home.path());
    let (code, _, err) = run(
        home.path(),
        &["-v", "--log-format", "json", "data", "snapshot"],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "snapshot published" && l["fields"]["version"] == 2),
        "{err}"
    );
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let home = TempDir::new().unwrap();
    import_fixture(home.path());
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("tradebox"))
        .env("TRADEBOX_HOME", home.path())
        .args(["data", "info"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away, as with `| head -0`
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}
