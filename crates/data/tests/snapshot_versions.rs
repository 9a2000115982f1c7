//! Snapshot publication: sorted Arrow output of the fixture (and of the
//! original data when `TRADEBOX_FIXTURES` names it), atomic `current`
//! switch, pruning, and a reader of an old version that keeps working while
//! new versions are published.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use arrow_array::{Array, TimestampMicrosecondArray};
use tradebox_data::import::{import_paths, CsvOptions};
use tradebox_data::progress::NoProgress;
use tradebox_data::{snapshot, Home, Store};

/// The repository's fixture (written by tests/fixtures/generate.py).
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cex-reporter")
}

/// The fixture's answers, computed by its generator.
fn expected() -> serde_json::Value {
    let path = fixtures().join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The real-data tier: the cex-reporter folder `TRADEBOX_FIXTURES` names;
/// without it, said once on stderr.
fn real_fixtures() -> Option<PathBuf> {
    match std::env::var_os("TRADEBOX_FIXTURES") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write;
                // Straight to the stream: the test harness captures eprintln!.
                let _ = writeln!(
                    std::io::stderr(),
                    "real-data tier skipped: TRADEBOX_FIXTURES is not set"
                );
            });
            None
        }
    }
}

fn read_all(file: std::fs::File) -> Vec<i64> {
    let reader = arrow_ipc::reader::FileReader::try_new(file, None).unwrap();
    let mut ts = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        assert_eq!(batch.schema().as_ref(), &snapshot::trades_schema());
        let col = batch
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        ts.extend(col.values().iter().copied());
    }
    ts
}

#[test]
fn old_readers_survive_new_versions() {
    let e = expected();
    old_readers_survive(
        &fixtures(),
        e["trades"]["count"].as_u64().unwrap(),
        e["snapshots"]["count"].as_u64().unwrap(),
    );
}

#[test]
fn old_readers_survive_new_versions_of_real_data() {
    if let Some(real) = real_fixtures() {
        old_readers_survive(&real, 3970, 21);
    }
}

/// Imports `f`, publishes it, and keeps reading version 1 after four more.
fn old_readers_survive(f: &Path, trades: u64, snapshots: u64) {
    let dir = tempfile::TempDir::new().unwrap();
    let home = Home::new(dir.path());
    let mut store = Store::open(&home.store_path()).unwrap();
    import_paths(
        &mut store,
        &[f.join("trade_cache.db"), f.join("snapshots")],
        &CsvOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let root = home.snapshot_root();
    let m1 = snapshot::export(&store, &root).unwrap();
    assert_eq!(
        (m1.version, m1.trades, m1.snapshots),
        (1, trades, snapshots)
    );

    let (current, manifest) = snapshot::current(&root).unwrap().unwrap();
    assert_eq!(manifest, m1);
    assert_eq!(manifest.segments.len(), 1, "an export is one base segment");
    let old = std::fs::File::open(current.join(&manifest.segments[0].file)).unwrap();

    for v in 2..=5 {
        assert_eq!(snapshot::export(&store, &root).unwrap().version, v);
    }
    let (current, manifest) = snapshot::current(&root).unwrap().unwrap();
    assert_eq!(manifest.version, 5);
    assert_eq!(current.file_name().unwrap(), "v000005");
    let mut kept: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('v'))
        .collect();
    kept.sort();
    assert_eq!(kept, ["v000003", "v000004", "v000005"]);
    assert!(!snapshot::version_dir(&root, 1).exists());

    // v1 is gone from disk, yet its open reader still reads every row.
    let ts = read_all(old);
    assert_eq!(ts.len() as u64, trades);
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "sorted by timestamp");
    assert_eq!(Some(ts[ts.len() - 1]), manifest.last_trade_us);
    assert_eq!(
        read_all(std::fs::File::open(current.join(&manifest.segments[0].file)).unwrap()),
        ts
    );
}

#[test]
fn balances_keep_every_digit() {
    let e = expected();
    let latest = &e["snapshots"]["latest"];
    let assets: Vec<&str> = latest["balances"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert!(!assets.is_empty());
    balances_digits(
        &fixtures(),
        e["snapshots"]["count"].as_u64().unwrap() as usize,
        latest["date"].as_str().unwrap(),
        &assets,
    );
}

#[test]
fn balances_of_real_data_keep_every_digit() {
    if let Some(real) = real_fixtures() {
        balances_digits(&real, 21, "2025-11-29", &["USDT", "ALKIMI"]);
    }
}

/// Imports the snapshots of `f`; the newest of the `count` exported, dated
/// `last_date`, holds every asset's number with the digits of its file.
fn balances_digits(f: &Path, count: usize, last_date: &str, assets: &[&str]) {
    let dir = tempfile::TempDir::new().unwrap();
    let home = Home::new(dir.path());
    let mut store = Store::open(&home.store_path()).unwrap();
    let snaps = f.join("snapshots");
    import_paths(
        &mut store,
        std::slice::from_ref(&snaps),
        &CsvOptions::default(),
        &NoProgress,
    )
    .unwrap();
    snapshot::export(&store, &home.snapshot_root()).unwrap();
    let (current, _) = snapshot::current(&home.snapshot_root()).unwrap().unwrap();
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(current.join("snapshots.json")).unwrap())
            .unwrap();
    let exported = exported.as_array().unwrap();
    assert_eq!(exported.len(), count);
    let last = &exported[count - 1];
    let original =
        std::fs::read_to_string(snaps.join(format!("snapshot_{last_date}.json"))).unwrap();
    // Compare the text of the numbers, not parsed floats.
    for asset in assets {
        let value = &last["balances"][asset];
        assert!(value.is_number(), "{asset}: {last}");
        let text = value.to_string();
        assert!(original.contains(&text), "{asset} {text} not in {original}");
    }
    assert_eq!(last["date"], last_date);
}
