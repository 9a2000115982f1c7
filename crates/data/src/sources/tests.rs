//! Syncing each kind of source from real files: the original
//! `trade_cache.db` schema written by another connection, CSV files dropped
//! into an inbox, snapshot files half written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::*;
use crate::home::Home;

fn fixture_db() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cex-reporter/trade_cache.db")
}

/// A copy of the fixture database, as the collector would keep it.
fn source_db(dir: &Path) -> PathBuf {
    let path = dir.join("trade_cache.db");
    std::fs::copy(fixture_db(), &path).unwrap();
    path
}

/// Appends `n` trades the way cex-reporter does (its own connection).
fn append(path: &Path, from: u32, n: u32) {
    let conn = Connection::open(path).unwrap();
    for i in from..from + n {
        conn.execute(
            "INSERT INTO trades (trade_id, exchange, account_name, timestamp, symbol, side,
             amount, price, fee, fee_currency, cached_at)
             VALUES (?1, 'kraken', 'MM9', ?2, 'ALKIMI', 'buy', 10.5, 0.05, 0.01, 'USD',
                     '2025-10-18T00:00:00.000000')",
            rusqlite::params![
                format!("new-{i}"),
                format!("2025-10-17T{:02}:00:00.000000", i % 24)
            ],
        )
        .unwrap();
    }
}

fn count(path: &Path) -> u64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM trades", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64
}

fn store_in(dir: &Path) -> Store {
    Store::open(&dir.join("home/tradebox.db")).unwrap()
}

#[test]
fn cex_reporter_imports_only_new_rows_then_catches_replacement_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_db(dir.path());
    let mut store = store_in(dir.path());
    let config = SourceConfig::new("cex", Kind::CexReporter, &src);

    let first = sync(&mut store, &config).unwrap();
    assert!(first.full);
    assert_eq!(first.added, count(&src));
    assert_eq!(store.trade_count().unwrap(), count(&src));

    append(&src, 0, 10);
    let second = sync(&mut store, &config).unwrap();
    assert!(!second.full);
    assert_eq!(
        (second.read, second.added),
        (10, 10),
        "only the new rows are read"
    );
    assert_eq!(sync(&mut store, &config).unwrap().read, 0);
    assert_eq!(store.trade_count().unwrap(), count(&src));

    // Replaced by a new file (another inode) holding the same rows and more.
    let copy = dir.path().join("copy.db");
    std::fs::copy(&src, &copy).unwrap();
    append(&copy, 10, 5);
    std::fs::rename(&copy, &src).unwrap();
    let replaced = sync(&mut store, &config).unwrap();
    assert!(replaced.full, "a new file is read whole");
    assert_eq!(replaced.added, 5);
    assert_eq!(store.trade_count().unwrap(), count(&src));

    // Truncated and written again: its largest rowid falls below the mark.
    let conn = Connection::open(&src).unwrap();
    conn.execute_batch("DELETE FROM trades WHERE rowid > 100; DELETE FROM sqlite_sequence;")
        .unwrap();
    drop(conn);
    let truncated = sync(&mut store, &config).unwrap();
    assert!(truncated.full);
    assert_eq!(truncated.added, 0);
    let states = load_states(&store).unwrap();
    assert_eq!(states[0].high_water, 100);
    assert!(states[0].reconciled_at.is_some());
}

#[test]
fn a_bad_source_row_is_skipped_and_named_the_rest_imported() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_db(dir.path());
    let mut store = store_in(dir.path());
    let config = SourceConfig::new("cex", Kind::CexReporter, &src);
    sync(&mut store, &config).unwrap();
    append(&src, 0, 3);
    Connection::open(&src)
        .unwrap()
        .execute(
            "UPDATE trades SET side = 'sideways' WHERE trade_id = 'new-1'",
            [],
        )
        .unwrap();
    append(&src, 3, 2);
    let report = sync(&mut store, &config).unwrap();
    assert_eq!(report.added, 4);
    assert_eq!(report.rejected.len(), 1);
    assert!(
        report.rejected[0].contains("column 'side'"),
        "{:?}",
        report.rejected
    );
    let st = &load_states(&store).unwrap()[0];
    assert_eq!(st.rejected_total, 1);
    assert_eq!(
        sync(&mut store, &config).unwrap().read,
        0,
        "the bad row is not read again"
    );
}

#[test]
fn a_source_that_is_gone_locked_or_not_sqlite_fails_without_touching_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_db(dir.path());
    let mut store = store_in(dir.path());
    let config = SourceConfig::new("cex", Kind::CexReporter, &src);
    sync(&mut store, &config).unwrap();
    let before = store.trade_count().unwrap();

    // Locked: a writer holding an exclusive lock.
    append(&src, 0, 2);
    let holder = Connection::open(&src).unwrap();
    holder
        .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE;")
        .unwrap();
    let started = std::time::Instant::now();
    let err = sync(&mut store, &config).unwrap_err().to_string();
    assert!(err.contains("locked"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a locked source is not waited for long"
    );
    drop(holder);
    assert_eq!(store.trade_count().unwrap(), before);

    // Replaced by something that is not a database.
    std::fs::write(
        dir.path().join("junk"),
        b"this is not sqlite at all, just text\n",
    )
    .unwrap();
    std::fs::rename(dir.path().join("junk"), &src).unwrap();
    let err = sync(&mut store, &config).unwrap_err().to_string();
    assert!(err.contains("not a SQLite database"), "{err}");

    std::fs::remove_file(&src).unwrap();
    let err = sync(&mut store, &config).unwrap_err().to_string();
    assert!(err.contains("no such file"), "{err}");
    assert_eq!(store.trade_count().unwrap(), before);
}

fn inbox(dir: &Path) -> (PathBuf, SourceConfig) {
    let path = dir.join("inbox");
    std::fs::create_dir_all(&path).unwrap();
    let mut config = SourceConfig::new("drop", Kind::CsvInbox, &path);
    config.settle_seconds = 0;
    (path, config)
}

const GOOD: &str = "timestamp,exchange,account,symbol,side,amount,price,fee,trade_id
2025-10-20T10:00:00,kraken,MM1,ALKIMI,buy,10,0.05,0.01,c-1
2025-10-20T11:00:00,kraken,MM1,ALKIMI,sell,5,0.06,0.01,c-2
";

#[test]
fn the_inbox_imports_good_files_once_and_sets_bad_ones_aside_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (path, config) = inbox(dir.path());
    let mut store = store_in(dir.path());
    std::fs::write(path.join("good.csv"), GOOD).unwrap();
    std::fs::write(
        path.join("bad.csv"),
        "timestamp,exchange,account,symbol,side,amount,price\n\
         2025-10-20T10:00:00,kraken,MM1,ALKIMI,buy,10,0.05\n\
         2025-10-20T11:00:00,kraken,MM1,ALKIMI,buy,ten,0.05\n",
    )
    .unwrap();
    std::fs::write(path.join("coming.csv.part"), GOOD).unwrap();
    std::fs::write(path.join(".hidden.csv"), GOOD).unwrap();

    let report = sync(&mut store, &config).unwrap();
    assert_eq!(report.added, 2);
    assert_eq!(report.files, ["good.csv"]);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(store.trade_count().unwrap(), 2, "nothing of the bad file");
    assert!(path.join("done/good.csv").exists());
    assert!(path.join("failed/bad.csv").exists());
    let why = std::fs::read_to_string(path.join("failed/bad.csv.error.txt")).unwrap();
    assert!(why.contains("line 3") && why.contains("amount"), "{why}");
    assert!(path.join("coming.csv.part").exists() && path.join(".hidden.csv").exists());

    // The same file dropped again, under another name: not imported twice.
    std::fs::write(path.join("again.csv"), GOOD).unwrap();
    let again = sync(&mut store, &config).unwrap();
    assert_eq!(again.added, 0);
    assert_eq!(again.files, ["again.csv (already imported)"]);
    assert!(path.join("done/again.csv").exists());
    // And under the same name: moved beside the first.
    std::fs::write(path.join("good.csv"), GOOD).unwrap();
    sync(&mut store, &config).unwrap();
    assert!(path.join("done/good.1.csv").exists());
    assert_eq!(store.trade_count().unwrap(), 2);
}

#[test]
fn the_inbox_waits_for_a_file_to_settle() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut config) = inbox(dir.path());
    config.settle_seconds = 3600;
    let mut store = store_in(dir.path());
    std::fs::write(path.join("writing.csv"), &GOOD[..40]).unwrap();
    assert_eq!(sync(&mut store, &config).unwrap().files.len(), 0);
    assert!(path.join("writing.csv").exists());
    config.settle_seconds = 0;
    std::fs::write(path.join("writing.csv"), GOOD).unwrap();
    assert_eq!(sync(&mut store, &config).unwrap().added, 2);
}

#[test]
fn a_file_imported_but_not_moved_before_a_crash_is_not_imported_again() {
    let dir = tempfile::tempdir().unwrap();
    let (path, config) = inbox(dir.path());
    let mut store = store_in(dir.path());
    std::fs::write(path.join("a.csv"), GOOD).unwrap();
    sync(&mut store, &config).unwrap();
    // As if the process died between the commit and the move.
    std::fs::rename(path.join("done/a.csv"), path.join("a.csv")).unwrap();
    let report = sync(&mut store, &config).unwrap();
    assert_eq!(report.added, 0);
    assert_eq!(store.trade_count().unwrap(), 2);
}

#[test]
fn a_half_written_snapshot_file_is_retried_until_whole() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("snaps");
    std::fs::create_dir_all(&folder).unwrap();
    let fixtures = fixture_db().with_file_name("snapshots");
    let name = "snapshot_2025-09-22.json";
    let whole = std::fs::read_to_string(fixtures.join(name)).unwrap();
    std::fs::write(folder.join(name), &whole[..whole.len() / 2]).unwrap();
    let mut config = SourceConfig::new("snaps", Kind::Snapshots, &folder);
    config.settle_seconds = 0;
    let mut store = store_in(dir.path());
    let report = sync(&mut store, &config).unwrap();
    assert_eq!(report.added, 0);
    assert!(
        report.problem.as_deref().unwrap_or("").contains(name),
        "{report:?}"
    );
    assert_eq!(store.counts().unwrap().1, 0);
    std::fs::write(folder.join(name), &whole).unwrap();
    let report = sync(&mut store, &config).unwrap();
    assert_eq!((report.added, report.problem), (1, None));
    assert_eq!(
        sync(&mut store, &config).unwrap().read,
        0,
        "a file is read once"
    );
}

#[test]
fn a_follower_pass_publishes_what_it_synced_and_records_failures() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_db(dir.path());
    let home = Home::new(dir.path().join("home"));
    let sources = [
        SourceConfig::new("cex", Kind::CexReporter, &src),
        SourceConfig::new("gone", Kind::CsvInbox, dir.path().join("nowhere")),
    ];
    let mut follower = Follower::new(home.clone(), &sources);
    let first = follower.pass(true).unwrap();
    assert_eq!(first.outcomes.len(), 2);
    let manifest = first.published.expect("a version is published").manifest;
    assert_eq!(manifest.trades, count(&src));
    let again = follower.pass(true).unwrap();
    assert!(
        again.published.is_none(),
        "nothing new, nothing published: {again:?}"
    );

    let store = Store::open(&home.store_path()).unwrap();
    let states = load_states(&store).unwrap();
    let gone = states.iter().find(|s| s.id == "gone").unwrap();
    assert!(gone.error.as_deref().unwrap_or("").contains("no such file"));
    assert_eq!(gone.failures, 2);
    let cex = states.iter().find(|s| s.id == "cex").unwrap();
    assert_eq!((cex.error.as_deref(), cex.failures), (None, 0));
    assert!(cex.synced_at.is_some() && cex.newest_trade.is_some());
    // A failing source is tried again later and later; a healthy one on time.
    assert!(follower.next_due() > std::time::Instant::now());
}

#[test]
fn source_tables_are_checked() {
    let mut c = SourceConfig::new("a b", Kind::CexReporter, "x.db");
    assert!(c.check().unwrap_err().contains("letters"));
    c.id = "ok".into();
    c.exchange = Some("kraken".into());
    assert!(c.check().unwrap_err().contains("csv-inbox"));
    c.exchange = None;
    c.poll_seconds = 0;
    assert!(c.check().unwrap_err().contains("poll_seconds"));
    c.poll_seconds = 2;
    assert_eq!(c.check(), Ok(()));
    assert_eq!(
        c.resolved(Path::new("/home/x")).path,
        Path::new("/home/x/x.db")
    );
}

#[test]
fn a_follower_wakes_on_a_change_long_before_its_poll_and_not_on_its_own_reads() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_db(dir.path());
    let home = Home::new(dir.path().join("home"));
    let mut config = SourceConfig::new("cex", Kind::CexReporter, &src);
    config.poll_seconds = 3600;
    let rows = count(&src); // before the watch: this connection writes
    let (stop_tx, stop) = std::sync::mpsc::channel::<()>();
    let (seen_tx, seen) = std::sync::mpsc::channel::<u64>();
    let follower = std::thread::spawn(move || {
        let mut follower = Follower::new(home, &[config]);
        follower.run(&stop, |pass| {
            let added = pass.map_or(0, |p| {
                p.outcomes
                    .iter()
                    .map(|o| o.result.as_ref().map_or(0, |r| r.added))
                    .sum()
            });
            let _ = seen_tx.send(added);
        });
    });
    let wait = Duration::from_secs(10);
    assert_eq!(seen.recv_timeout(wait).unwrap(), rows, "the first pass");
    // Its own reads wake nothing: no pass for a second.
    assert!(seen.recv_timeout(Duration::from_secs(1)).is_err());
    for round in 0..3 {
        append(&src, round * 10, 10);
        // Polled hourly: only the notifications bring these passes. The
        // first may come on the writer's first change to the file, before
        // its commit, and find nothing yet; the rows come by the next one.
        let mut added = 0;
        while added < 10 {
            added += seen.recv_timeout(wait).unwrap();
        }
        assert_eq!(added, 10, "round {round}");
    }
    assert!(seen.recv_timeout(Duration::from_secs(1)).is_err());
    drop(stop_tx);
    follower.join().unwrap();
}

#[test]
fn the_inbox_settles_by_its_own_clock_when_the_wall_clock_jumps() {
    use std::time::SystemTime;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let mut store = store_in(dir.path());
    let mut config = SourceConfig::new("in", Kind::CsvInbox, &inbox);
    config.settle_seconds = 1;
    let header = "timestamp,exchange,symbol,side,amount,price\n";
    let row = |i: u32| format!("2025-01-02T03:04:{i:02},kraken,BTC,buy,1,100\n");
    let stamp = |path: &Path, t: SystemTime| {
        std::fs::File::options()
            .append(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    let hour = Duration::from_secs(3600);
    let mut seen = Sightings::default();

    // Dated an hour ahead (the clock was set back after it was written):
    // not taken at first sight, taken once unchanged for settle_seconds.
    let ahead = inbox.join("ahead.csv");
    std::fs::write(&ahead, format!("{header}{}", row(0))).unwrap();
    stamp(&ahead, SystemTime::now() + hour);
    assert_eq!(sync_seen(&mut store, &config, &mut seen).unwrap().added, 0);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(sync_seen(&mut store, &config, &mut seen).unwrap().added, 1);

    // Seen fresh, then still growing while the clock jumps an hour ahead:
    // not taken until it stops changing, then taken whole.
    let growing = inbox.join("growing.csv");
    std::fs::write(&growing, format!("{header}{}", row(1))).unwrap();
    assert_eq!(sync_seen(&mut store, &config, &mut seen).unwrap().added, 0);
    std::fs::write(&growing, format!("{header}{}{}", row(1), row(2))).unwrap();
    stamp(&growing, SystemTime::now() - hour);
    assert_eq!(sync_seen(&mut store, &config, &mut seen).unwrap().added, 0);
    let report = sync_seen(&mut store, &config, &mut seen).unwrap();
    assert_eq!(
        (report.read, report.added),
        (2, 2),
        "whole, once it stood still"
    );
    assert!(inbox.join("done/growing.csv").exists());
}

#[test]
fn a_follower_republishes_a_version_damaged_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_db(dir.path());
    let home = Home::new(dir.path().join("home"));
    let config = SourceConfig::new("cex", Kind::CexReporter, &src);
    let mut follower = Follower::new(home.clone(), &[config]);
    assert!(follower.pass(true).unwrap().published.is_some());
    assert!(
        follower.pass(true).unwrap().published.is_none(),
        "nothing new"
    );

    // The base cut short on disk (shared by every version linking it).
    let root = home.snapshot_root();
    let (current, m) = crate::snapshot::current(&root).unwrap().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(current.join(&m.segments[0].file))
        .unwrap()
        .set_len(100)
        .unwrap();
    let pass = follower.pass(true).unwrap();
    let published = pass.published.expect("published again");
    assert_eq!(
        published.written,
        crate::snapshot::Written::Full { rows: m.trades }
    );
    let (dir, now) = crate::snapshot::current(&root).unwrap().unwrap();
    assert!(crate::snapshot::intact(&dir, &now));
    assert_ne!(now.segments[0].file, m.segments[0].file);
}
