//! Faults, each asserting the state it leaves: a disk that fills under
//! `$TRADEBOX_HOME` (a small tmpfs, mounted in a user and mount namespace
//! of the test's own, so no root is needed) refuses the import with a
//! clear message, keeps the store and the snapshot whole, and works again
//! once space returns; an import that fits while its snapshot does not is
//! kept, the old snapshot served, and `data snapshot` publishes it later.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
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

#[test]
fn a_full_disk_refuses_the_import_keeps_everything_whole_and_recovers() {
    let outer = tempfile::TempDir::new().unwrap();
    let home = outer.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let csv = outer.path().join("big.csv");
    big_csv(&csv, 50_000);
    let db = common::fixtures().join("trade_cache.db");
    let out = |name: &str| outer.path().join(name);
    // Everything runs in one namespace, where the tmpfs exists.
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=4m tmpfs "{home}" || exit 90
export TRADEBOX_HOME="{home}"
"{bin}" -q data import "{db}" >"{o}/fixture.out" 2>"{o}/fixture.err"; echo $? >"{o}/fixture.rc"
"{bin}" -q data import "{csv}" >"{o}/full.out" 2>"{o}/full.err"; echo $? >"{o}/full.rc"
"{bin}" data info --json >"{o}/info_full.json" 2>"{o}/info_full.err"
ls -a "{home}/snapshot" >"{o}/snapshot_full.ls"
mount -o remount,size=256m "{home}"
"{bin}" -q data import "{csv}" >"{o}/again.out" 2>"{o}/again.err"; echo $? >"{o}/again.rc"
"{bin}" data info --json >"{o}/info_again.json" 2>"{o}/info_again.err"
"#,
        home = home.display(),
        bin = common::bin(),
        db = db.display(),
        csv = csv.display(),
        o = outer.path().display(),
    );
    let status = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .status()
        .expect("unshare (util-linux) runs");
    assert!(status.success(), "the namespace script failed: {status}");
    let read = |name: &str| std::fs::read_to_string(out(name)).unwrap_or_default();
    let info = |name: &str| -> serde_json::Value {
        serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}: {}", read(name)))
    };

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
    let listing = read("snapshot_full.ls");
    assert!(
        !listing.lines().any(|l| l.starts_with(".tmp-")),
        "a half-written version was left: {listing}"
    );

    // Space is back: the same import goes through.
    assert_eq!(read("again.rc").trim(), "0", "{}", read("again.err"));
    let again = info("info_again.json");
    assert_eq!(again["trades"], fixture_trades + 50_000, "{again}");
    assert_eq!(again["snapshot"]["trades"], again["trades"], "{again}");
}

#[test]
fn an_import_that_fits_but_whose_snapshot_does_not_is_kept_and_published_later() {
    let outer = tempfile::TempDir::new().unwrap();
    let home = outer.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let csv = outer.path().join("big.csv");
    big_csv(&csv, 50_000);
    let db = common::fixtures().join("trade_cache.db");
    // 16 MiB: room for the store's new rows, not for the snapshot's too.
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=16m tmpfs "{home}" || exit 90
export TRADEBOX_HOME="{home}"
"{bin}" -q data import "{db}" >/dev/null 2>"{o}/fixture.err" || exit 91
"{bin}" -q data import "{csv}" >"{o}/full.out" 2>"{o}/full.err"; echo $? >"{o}/full.rc"
"{bin}" data info --json >"{o}/info_full.json"
ls -a "{home}/snapshot" >"{o}/snapshot_full.ls"
mount -o remount,size=256m "{home}"
"{bin}" -q data snapshot >"{o}/repair.out" 2>"{o}/repair.err"; echo $? >"{o}/repair.rc"
"{bin}" data info --json >"{o}/info_again.json"
"#,
        home = home.display(),
        bin = common::bin(),
        db = db.display(),
        csv = csv.display(),
        o = outer.path().display(),
    );
    let status = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .status()
        .expect("unshare (util-linux) runs");
    assert!(status.success(), "the namespace script failed: {status}");
    let read = |name: &str| std::fs::read_to_string(outer.path().join(name)).unwrap_or_default();
    let info = |name: &str| -> serde_json::Value {
        serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}: {}", read(name)))
    };
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
    let listing = read("snapshot_full.ls");
    assert!(
        !listing.lines().any(|l| l.starts_with(".tmp-")),
        "a half-written version was left: {listing}"
    );

    // Space is back: `data snapshot` publishes what the store holds.
    assert_eq!(read("repair.rc").trim(), "0", "{}", read("repair.err"));
    let again = info("info_again.json");
    assert_eq!(again["snapshot"]["trades"], again["trades"], "{again}");
}
