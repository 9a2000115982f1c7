//! Snapshot publication: sorted Arrow output of the real fixture, atomic
//! `current` switch, pruning, and a reader of an old version that keeps
//! working while new versions are published.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use arrow_array::{Array, TimestampMicrosecondArray};
use indicatif::ProgressBar;
use tradebox_data::import::{import_paths, CsvOptions};
use tradebox_data::{snapshot, Home, Store};

fn fixtures() -> PathBuf {
    std::env::var_os("TRADEBOX_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cex-reporter"),
        PathBuf::from,
    )
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
    let dir = tempfile::TempDir::new().unwrap();
    let home = Home::new(dir.path());
    let mut store = Store::open(&home.store_path()).unwrap();
    let f = fixtures();
    import_paths(
        &mut store,
        &[f.join("trade_cache.db"), f.join("snapshots")],
        &CsvOptions::default(),
        &ProgressBar::hidden(),
    )
    .unwrap();
    let root = home.snapshot_root();
    let m1 = snapshot::export(&store, &root).unwrap();
    assert_eq!((m1.version, m1.trades, m1.snapshots), (1, 3970, 21));

    let (current, manifest) = snapshot::current(&root).unwrap().unwrap();
    assert_eq!(manifest, m1);
    let old = std::fs::File::open(current.join("trades.arrow")).unwrap();

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
    assert_eq!(ts.len(), 3970);
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "sorted by timestamp");
    assert_eq!(Some(ts[ts.len() - 1]), manifest.last_trade_us);
    assert_eq!(
        read_all(std::fs::File::open(current.join("trades.arrow")).unwrap()),
        ts
    );
}

#[test]
fn balances_keep_every_digit() {
    let dir = tempfile::TempDir::new().unwrap();
    let home = Home::new(dir.path());
    let mut store = Store::open(&home.store_path()).unwrap();
    let snaps = fixtures().join("snapshots");
    import_paths(
        &mut store,
        std::slice::from_ref(&snaps),
        &CsvOptions::default(),
        &ProgressBar::hidden(),
    )
    .unwrap();
    snapshot::export(&store, &home.snapshot_root()).unwrap();
    let (current, _) = snapshot::current(&home.snapshot_root()).unwrap().unwrap();
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(current.join("snapshots.json")).unwrap())
            .unwrap();
    let last = &exported.as_array().unwrap()[20];
    let original = std::fs::read_to_string(snaps.join("snapshot_2025-11-29.json")).unwrap();
    // Compare the text of the numbers, not parsed floats.
    for asset in ["USDT", "ALKIMI"] {
        let text = last["balances"][asset].to_string();
        assert!(original.contains(&text), "{asset} {text} not in {original}");
    }
    assert_eq!(last["date"], "2025-11-29");
}
