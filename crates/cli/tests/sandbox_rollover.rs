//! Zygote roll-over: while versions are published under steady load, the
//! zygotes move to each in place (no cold restart), every request succeeds
//! and every answer matches the version its footer names; a version that
//! cannot be read is refused and the last good one served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tradebox_data::import::CsvOptions;
use tradebox_data::progress::NoProgress;
use tradebox_data::publish::import_and_publish;
use tradebox_data::{snapshot, Home};
use tradebox_sandbox::pool::{Job, Pool};

const COUNT: &str = "result = len(load_trades(days=None))";

/// Imports `n` new trades (named after `tag`) and publishes them; returns
/// the version and its trade count.
fn publish_trades(home: &Path, tag: &str, n: usize) -> (u64, u64) {
    let csv = home.join(format!("{tag}.csv"));
    let mut text = String::from("timestamp,exchange,symbol,side,amount,price,trade_id\n");
    for i in 0..n {
        text.push_str(&format!(
            "2025-06-01T00:00:{:02},kraken,BTC,buy,1,100,{tag}-{i}\n",
            i % 60
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let done = import_and_publish(
        &Home::new(home),
        &[csv],
        &CsvOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(done.published);
    (done.manifest.version, done.manifest.trades)
}

/// Runs `COUNT`; returns (trades counted, version named by the answer).
fn count(pool: &Pool) -> (u64, u64) {
    let r = pool
        .run(Job {
            code: COUNT.into(),
            ..Job::default()
        })
        .expect("accepted");
    assert!(r.success, "{:?}", r.error);
    let counted = r
        .result
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("a count");
    let version = r.data_as_of.as_ref().expect("data_as_of").snapshot;
    (counted, version)
}

/// Waits until every slot serves `version` (idle slots move by themselves).
fn await_version(pool: &Pool, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.status().iter().any(|s| s.version != Some(version)) {
        assert!(Instant::now() < deadline, "{:?}", pool.status());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes `current` a version the zygote cannot read (a format it does not
/// know), made of the current one's files.
fn publish_unreadable(root: &Path) {
    let (dir, mut m) = snapshot::current(root).unwrap().unwrap();
    let bad = snapshot::version_dir(root, m.version + 1);
    std::fs::create_dir(&bad).unwrap();
    for s in &m.segments {
        std::fs::hard_link(dir.join(&s.file), bad.join(&s.file)).unwrap();
    }
    std::fs::copy(dir.join("snapshots.json"), bad.join("snapshots.json")).unwrap();
    m.version += 1;
    m.format = 99;
    std::fs::write(bad.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    std::os::unix::fs::symlink(bad.file_name().unwrap(), root.join("next")).unwrap();
    std::fs::rename(root.join("next"), root.join("current")).unwrap();
}

#[test]
fn zygotes_move_to_each_new_version_in_place_under_load() {
    let home = common::fixture_home();
    let pool = Arc::new(Pool::start(common::config_for(home.path(), 2)).unwrap());
    let first = snapshot::current(&home.path().join("snapshot"))
        .unwrap()
        .unwrap()
        .1;
    let trades = Arc::new(Mutex::new(HashMap::from([(first.version, first.trades)])));
    let stop = Arc::new(AtomicBool::new(false));

    // Three clients keep both zygotes busy while versions are published.
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (pool, trades, stop) = (pool.clone(), trades.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut answers = 0;
                while !stop.load(Ordering::SeqCst) {
                    let (counted, version) = count(&pool);
                    // The answer is the version its footer names.
                    let expected = trades.lock().unwrap().get(&version).copied();
                    assert_eq!(Some(counted), expected, "version {version}");
                    answers += 1;
                }
                answers
            })
        })
        .collect();
    let mut last = first.version;
    for round in 0..12 {
        // Recorded before the version is current: an answer may name it at once.
        let tag = format!("r{round}");
        let (version, n) = {
            let mut t = trades.lock().unwrap();
            let (version, n) = publish_trades(home.path(), &tag, 3);
            t.insert(version, n);
            (version, n)
        };
        assert!(version > last && n > 0);
        last = version;
        std::thread::sleep(Duration::from_millis(150));
    }
    await_version(&pool, last);
    stop.store(true, Ordering::SeqCst);
    let answers: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(answers > 20, "only {answers} answers");

    let (counted, version) = count(&pool);
    assert_eq!((counted, version), (first.trades + 36, last));
    for s in pool.status() {
        assert_eq!(s.restarts, 0, "moved in place, never restarted: {s:?}");
        assert!(s.loads >= 1, "{s:?}");
        assert!(s.last_error.is_none(), "{s:?}");
    }
}

#[test]
fn a_version_that_cannot_be_read_is_refused_and_the_last_good_one_served() {
    let home = common::fixture_home();
    let root = home.path().join("snapshot");
    let pool = Pool::start(common::config_for(home.path(), 1)).unwrap();
    let (good, good_trades) = publish_trades(home.path(), "good", 2);
    await_version(&pool, good);

    publish_unreadable(&root);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.status()[0].last_error.is_none() {
        assert!(Instant::now() < deadline, "{:?}", pool.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = pool.status()[0].last_error.clone().unwrap();
    assert!(err.contains("refused") && err.contains("format"), "{err}");
    for _ in 0..3 {
        assert_eq!(count(&pool), (good_trades, good), "the last good version");
    }

    // The next publication is whole again, and served.
    let (next, next_trades) = publish_trades(home.path(), "after", 1);
    assert_eq!(next, good + 2);
    await_version(&pool, next);
    assert_eq!(count(&pool), (next_trades, next));
    assert_eq!(pool.status()[0].restarts, 0);
}

#[test]
fn a_pool_started_on_an_unreadable_version_serves_and_takes_the_next_good_one() {
    let home = common::fixture_home();
    let root = home.path().join("snapshot");
    publish_unreadable(&root);
    // It starts (a damaged version never stops the service) without data...
    let pool = Pool::start(common::config_for(home.path(), 1)).unwrap();
    let r = pool
        .run(Job {
            code: COUNT.into(),
            ..Job::default()
        })
        .unwrap();
    let err = r.error.expect("no data loaded");
    assert!(err.message.contains("no trade data is loaded"), "{err:?}");
    // ... and moves to the next version that reads.
    let (next, trades) = publish_trades(home.path(), "good", 1);
    await_version(&pool, next);
    assert_eq!(count(&pool), (trades, next));
}
