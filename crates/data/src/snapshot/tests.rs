//! Segments, deltas, compaction and pruning, on real stores and folders.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use arrow_array::{Array, LargeStringArray, TimestampMicrosecondArray};
use tempfile::TempDir;

use super::*;
use crate::model::{Side, Trade};

const DAY: i64 = 86_400_000_000;
const T0: i64 = 1_767_225_600_000_000; // 2026-01-01

fn trade(id: &str, ts: i64) -> Trade {
    Trade {
        trade_id: Some(id.into()),
        exchange: "kraken".into(),
        account_name: "main".into(),
        timestamp: ts,
        symbol: "BTC".into(),
        side: Side::Buy,
        amount: 1.0,
        price: 100.0,
        fee: 0.1,
        fee_currency: None,
    }
}

fn add(store: &mut Store, trades: &[(&str, i64)]) {
    store
        .write(|w| {
            for (id, ts) in trades {
                assert!(w.insert_trade(&trade(id, *ts), None)?);
            }
            Ok(())
        })
        .unwrap();
}

/// `n` trades a day apart from `T0`, named `{prefix}{i}`.
fn days(prefix: &str, n: usize) -> Vec<(String, i64)> {
    (0..n)
        .map(|i| (format!("{prefix}{i}"), T0 + i as i64 * DAY))
        .collect()
}

fn add_owned(store: &mut Store, trades: &[(String, i64)]) {
    let borrowed: Vec<(&str, i64)> = trades.iter().map(|(i, t)| (i.as_str(), *t)).collect();
    add(store, &borrowed);
}

/// Every trade of a version as (timestamp, trade_id), merged as readers
/// merge: a stable sort by timestamp of the segments in order.
fn merged(dir: &Path) -> Vec<(i64, String)> {
    let m = manifest(dir).unwrap();
    let mut all = Vec::new();
    for s in &m.segments {
        let file = std::fs::File::open(dir.join(&s.file)).unwrap();
        let mut rows = Vec::new();
        for batch in arrow_ipc::reader::FileReader::try_new(file, None).unwrap() {
            let batch = batch.unwrap();
            assert_eq!(batch.schema().as_ref(), &trades_schema());
            let ts = batch.column(0).as_any();
            let ts = ts.downcast_ref::<TimestampMicrosecondArray>().unwrap();
            let ids = batch.column(9).as_any();
            let ids = ids.downcast_ref::<LargeStringArray>().unwrap();
            for i in 0..batch.num_rows() {
                rows.push((ts.value(i), ids.value(i).to_string()));
            }
        }
        assert_eq!(rows.len() as u64, s.rows, "{}", s.file);
        assert!(rows.windows(2).all(|w| w[0].0 <= w[1].0), "sorted");
        assert_eq!(rows.first().map(|r| r.0), Some(s.first_trade_us));
        assert_eq!(rows.iter().map(|r| r.0).max(), Some(s.last_trade_us));
        all.extend(rows);
    }
    all.sort_by_key(|r| r.0);
    assert_eq!(all.len() as u64, m.trades);
    all
}

/// The store's trades in the order a full export writes them.
fn expected(store: &Store) -> Vec<(i64, String)> {
    let mut stmt = store
        .conn()
        .prepare("SELECT timestamp, trade_id FROM trades ORDER BY id")
        .unwrap();
    let mut rows: Vec<(i64, String)> = stmt
        .query_map([], |r| {
            let ts: String = r.get(0)?;
            Ok((crate::timestamp::parse(&ts).unwrap(), r.get(1)?))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    rows.sort_by_key(|r| r.0);
    rows
}

fn setup() -> (TempDir, Store, PathBuf) {
    let dir = TempDir::new().unwrap();
    let store = Store::open(&dir.path().join("store.db")).unwrap();
    let root = dir.path().join("snapshot");
    (dir, store, root)
}

fn ino(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn a_delta_holds_only_the_new_trades_late_ones_included() {
    let (_dir, mut store, root) = setup();
    add_owned(&mut store, &days("base", 100));
    let first = publish(&store, &root, Mode::Delta).unwrap();
    assert_eq!(first.written, Written::Full { rows: 100 });
    assert_eq!(first.manifest.segments.len(), 1);

    // New trades: one newer than all, one late (older than the base's
    // newest) and one tied with a base trade's timestamp.
    add(
        &mut store,
        &[
            ("new", T0 + 200 * DAY),
            ("late", T0 + 5 * DAY + 1),
            ("tie", T0 + 7 * DAY),
        ],
    );
    let second = publish(&store, &root, Mode::Delta).unwrap();
    assert_eq!(second.written, Written::Delta { rows: 3 });
    let m = &second.manifest;
    assert_eq!((m.version, m.trades, m.segments.len()), (2, 103, 2));
    assert_eq!(m.segments[1].rows, 3);
    assert_eq!(m.segments[1].first_trade_us, T0 + 5 * DAY + 1);
    assert_eq!(m.last_trade_us, Some(T0 + 200 * DAY));
    assert_eq!(m.first_trade_us, Some(T0));
    // The base is the same file, linked.
    let (v1, v2) = (version_dir(&root, 1), version_dir(&root, 2));
    assert_eq!(
        ino(&v1.join(&m.segments[0].file)),
        ino(&v2.join(&m.segments[0].file))
    );
    // Unchanged balance snapshots are linked too.
    assert_eq!(
        ino(&v1.join("snapshots.json")),
        ino(&v2.join("snapshots.json"))
    );

    let got = merged(&v2);
    assert_eq!(got, expected(&store));
    // A tie keeps store order: the base's trade first.
    let tie = got.iter().position(|r| r.1 == "tie").unwrap();
    assert_eq!(got[tie - 1], (T0 + 7 * DAY, "base7".to_string()));

    // Nothing new: a version with the same segments (and new snapshots).
    store
        .write(|w| {
            w.upsert_snapshot(&crate::store::BalanceSnapshot {
                date: "2026-01-02".into(),
                timestamp: "2026-01-02T00:00:00Z".into(),
                balances: serde_json::json!({"BTC": 1}),
            })
        })
        .unwrap();
    let third = publish(&store, &root, Mode::Delta).unwrap();
    assert_eq!(third.written, Written::Delta { rows: 0 });
    assert_eq!(third.manifest.segments, m.segments);
    assert_eq!(third.manifest.snapshots, 1);
    assert_ne!(
        ino(&v2.join("snapshots.json")),
        ino(&version_dir(&root, 3).join("snapshots.json"))
    );
}

#[test]
fn a_store_that_lost_trades_a_damaged_segment_or_format_one_is_exported_whole() {
    let (_dir, mut store, root) = setup();
    add_owned(&mut store, &days("a", 10));
    publish(&store, &root, Mode::Delta).unwrap();
    store.write(|w| w.clear()).unwrap();
    add_owned(&mut store, &days("b", 3));
    let p = publish(&store, &root, Mode::Delta).unwrap();
    assert_eq!(p.written, Written::Full { rows: 3 });
    assert_eq!(merged(&version_dir(&root, 2)), expected(&store));

    // A store replaced by another file: a different identity.
    let other = TempDir::new().unwrap();
    let mut fresh = Store::open(&other.path().join("store.db")).unwrap();
    add_owned(&mut fresh, &days("c", 20));
    let p = publish(&fresh, &root, Mode::Delta).unwrap();
    assert_eq!(
        (p.written, p.manifest.trades),
        (Written::Full { rows: 20 }, 20)
    );

    // A segment damaged on disk (cut short): never linked again.
    let (dir, m) = current(&root).unwrap().unwrap();
    let base = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(&m.segments[0].file))
        .unwrap();
    base.set_len(m.segments[0].bytes / 2).unwrap();
    add_owned(&mut fresh, &[("e".into(), T0)]);
    let p = publish(&fresh, &root, Mode::Delta).unwrap();
    assert_eq!(p.written, Written::Full { rows: 21 });
    assert_eq!(
        merged(&current(&root).unwrap().unwrap().0),
        expected(&fresh)
    );

    // A version written before segments existed.
    let (dir, _) = current(&root).unwrap().unwrap();
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        text.replace("\"format\": 2", "\"format\": 1"),
    )
    .unwrap();
    add_owned(&mut fresh, &[("d".into(), T0)]);
    let p = publish(&fresh, &root, Mode::Delta).unwrap();
    assert_eq!(p.written, Written::Full { rows: 22 });
}

#[test]
fn one_off_publication_compacts_at_once() {
    let (_dir, mut store, root) = setup();
    add_owned(&mut store, &days("base", 800));
    publish(&store, &root, Mode::Compacted).unwrap();
    // Deltas up to 1/8 of the base stay deltas; more than MAX_DELTAS are merged.
    for i in 0..=MAX_DELTAS {
        add_owned(&mut store, &[(format!("d{i}"), T0 + i as i64)]);
        let p = publish(&store, &root, Mode::Compacted).unwrap();
        if i < MAX_DELTAS {
            assert_eq!(p.written, Written::Delta { rows: 1 });
        } else {
            assert_eq!(p.written, Written::Merged { rows: 9 });
            assert_eq!(p.manifest.segments.len(), 2);
        }
    }
    // Past 1/8 of the base: a full export instead.
    add_owned(&mut store, &days("big", 100));
    let p = publish(&store, &root, Mode::Compacted).unwrap();
    assert_eq!(p.written, Written::Full { rows: 909 });
    assert_eq!(p.manifest.segments.len(), 1);
    assert_eq!(
        merged(&current(&root).unwrap().unwrap().0),
        expected(&store)
    );
}

#[test]
fn a_compaction_keeps_the_deltas_published_while_it_ran() {
    let (_dir, mut store, root) = setup();
    add_owned(&mut store, &days("base", 70));
    publish(&store, &root, Mode::Delta).unwrap();
    for i in 0..=MAX_DELTAS {
        add_owned(&mut store, &[(format!("d{i}"), T0 - i as i64)]); // late trades
        publish(&store, &root, Mode::Delta).unwrap();
    }
    let m = current(&root).unwrap().unwrap().1;
    assert_eq!(
        m.compaction(),
        Some(Compaction::Rebase),
        "9 of 70 is over 1/8"
    );

    let prepared = prepare(&store, &root).unwrap().unwrap();
    add_owned(&mut store, &[("during".into(), T0 + 1000 * DAY)]);
    publish(&store, &root, Mode::Delta).unwrap();
    let p = prepared.install(&root).unwrap().unwrap();
    assert_eq!(p.written, Written::Full { rows: 79 });
    let segs = &p.manifest.segments;
    assert_eq!(
        segs.len(),
        2,
        "the new base and the delta published meanwhile"
    );
    assert_eq!((segs[0].rows, segs[1].rows), (79, 1));
    let (dir, now) = current(&root).unwrap().unwrap();
    assert_eq!(now.max_id, m.max_id + 1);
    assert_eq!(merged(&dir), expected(&store));

    // A compaction that a full export overtook installs nothing.
    for i in 0..20 {
        add_owned(&mut store, &[(format!("e{i}"), T0 + i)]);
        publish(&store, &root, Mode::Delta).unwrap();
    }
    let prepared = prepare(&store, &root).unwrap().unwrap();
    let full = export(&store, &root).unwrap();
    assert!(prepared.install(&root).unwrap().is_none());
    assert_eq!(current(&root).unwrap().unwrap().1, full);
    assert_eq!(merged(&version_dir(&root, full.version)), expected(&store));
    // And nothing is due after a full export.
    assert!(compact(&store, &root).unwrap().is_none());
}

#[test]
fn pinned_versions_and_shared_segments_outlive_pruning() {
    let (_dir, mut store, root) = setup();
    add_owned(&mut store, &days("base", 50));
    publish(&store, &root, Mode::Delta).unwrap();
    let pin1 = pin(&version_dir(&root, 1)).unwrap();
    for i in 0..5 {
        add_owned(&mut store, &[(format!("d{i}"), T0 + i)]);
        publish(&store, &root, Mode::Delta).unwrap();
    }
    let names = |root: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('v'))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&root), ["v000001", "v000004", "v000005", "v000006"]);
    // The base of v1 lives on in v6, whatever happens to v1.
    let base = &manifest(&version_dir(&root, 1)).unwrap().segments[0].file;
    assert!(version_dir(&root, 6).join(base).exists());
    drop(pin1);
    add_owned(&mut store, &[("x".into(), T0)]);
    publish(&store, &root, Mode::Delta).unwrap();
    assert_eq!(names(&root), ["v000005", "v000006", "v000007"]);
    assert!(pin(&version_dir(&root, 1)).is_err(), "gone");
    assert_eq!(merged(&version_dir(&root, 7)), expected(&store));
}

#[test]
fn what_an_interrupted_writer_left_is_cleared_under_the_lock() {
    let (_dir, mut store, root) = setup();
    add_owned(&mut store, &days("a", 5));
    publish(&store, &root, Mode::Delta).unwrap();
    // A staging folder of the next version, a half-removed version, a
    // pending segment of a dead compaction and one of a live one.
    std::fs::create_dir(root.join(".tmp-v000002")).unwrap();
    std::fs::write(root.join(".tmp-v000002/trades-000002.arrow"), "half").unwrap();
    std::fs::create_dir(root.join(".trash-v000000")).unwrap();
    std::fs::write(root.join(".compact-1-1.arrow"), "dead").unwrap();
    let live = std::fs::File::create(root.join(".compact-2-2.arrow")).unwrap();
    live.lock().unwrap();
    add_owned(&mut store, &[("b".into(), T0)]);
    let p = publish(&store, &root, Mode::Delta).unwrap();
    assert_eq!(p.manifest.version, 2);
    assert_eq!(merged(&version_dir(&root, 2)), expected(&store));
    assert!(!root.join(".trash-v000000").exists());
    assert!(!root.join(".compact-1-1.arrow").exists());
    assert!(
        root.join(".compact-2-2.arrow").exists(),
        "still being written"
    );
}
