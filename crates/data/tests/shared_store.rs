//! The shared trade store on a throwaway PostgreSQL cluster: the importers
//! write to it as to the local store (same trades, same dedupe, in the same
//! order), every home mirrors it and publishes from the mirror, a removal
//! re-mirrors whole, a home with trades of its own is never overwritten, and
//! a follower serves another home's import within seconds of its commit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tradebox_data::import::CsvOptions;
use tradebox_data::progress::NoProgress;
use tradebox_data::shared::Shared;
use tradebox_data::{demo, import_and_publish, snapshot, Home, Store};
use tradebox_db::testing::PgCluster;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cex-reporter")
}

fn fixture_paths() -> Vec<PathBuf> {
    vec![
        fixtures().join("trade_cache.db"),
        fixtures().join("snapshots"),
    ]
}

/// Every trade of a local store, in id order, every column but the id and
/// `cached_at` (the import's own time).
fn rows(store: &Store) -> Vec<String> {
    let db = rusqlite::Connection::open(store.path()).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT trade_id, exchange, account_name, timestamp, symbol, side, amount, price,
                    fee, fee_currency FROM trades ORDER BY id",
        )
        .unwrap();
    let out = stmt
        .query_map([], |r| {
            let mut cols = Vec::new();
            for i in 0..10 {
                cols.push(format!("{:?}", r.get_ref(i)?));
            }
            Ok(cols.join("|"))
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    out
}

/// The stages reported: (message, total, units done).
#[derive(Default)]
struct Stages(std::cell::RefCell<Vec<(String, Option<u64>, u64)>>);

impl tradebox_data::progress::Progress for Stages {
    fn stage(&self, message: &str, total: Option<u64>) {
        self.0.borrow_mut().push((message.to_string(), total, 0));
    }
    fn advance(&self, n: u64) {
        if let Some(last) = self.0.borrow_mut().last_mut() {
            last.2 += n;
        }
    }
}

fn shared_home(dir: &Path, url: &str) -> Home {
    Home::new(dir).with_shared_store(Some(url.to_string()))
}

#[test]
fn imports_land_in_the_shared_store_and_every_home_mirrors_it() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    let dirs = [(); 3].map(|()| tempfile::TempDir::new().unwrap());
    let (a, b) = (
        shared_home(dirs[0].path(), &url),
        shared_home(dirs[1].path(), &url),
    );
    let local = Home::new(dirs[2].path());
    let options = CsvOptions::default();

    // The same files into a local store and, through home A, the shared one.
    let here = import_and_publish(&local, &fixture_paths(), &options, &NoProgress).unwrap();
    let first = import_and_publish(&a, &fixture_paths(), &options, &NoProgress).unwrap();
    let added = |i: &tradebox_data::Imported| -> Vec<(u64, u64)> {
        i.imports.iter().map(|r| (r.read, r.added)).collect()
    };
    assert_eq!(added(&first), added(&here));
    assert!(first.published);
    assert_eq!(first.manifest.trades, here.manifest.trades);
    assert_eq!(first.manifest.snapshots, here.manifest.snapshots);

    // A CSV with a NULL trade_id and a row repeated: both stores keep one.
    let csv = dirs[2].path().join("more.csv");
    std::fs::write(
        &csv,
        "timestamp,exchange,account,symbol,side,amount,price\n\
         2025-01-02T03:04:05,kraken,desk,BTC,buy,1,100\n\
         2025-01-02T03:04:05,kraken,desk,BTC,buy,1,100\n\
         2025-01-02T03:04:06,kraken,desk,ETH,sell,2,50\n",
    )
    .unwrap();
    for home in [&local, &a] {
        let i =
            import_and_publish(home, std::slice::from_ref(&csv), &options, &NoProgress).unwrap();
        assert_eq!(added(&i), vec![(3, 2)]);
        let again =
            import_and_publish(home, std::slice::from_ref(&csv), &options, &NoProgress).unwrap();
        assert_eq!(added(&again), vec![(3, 0)]);
        assert!(!again.published, "nothing new, nothing published");
    }

    // Home B has nothing yet: a sync copies everything (saying how far it
    // is), then nothing.
    let shared = Shared::open(&url).unwrap();
    let progress = Stages::default();
    let synced = shared.sync_home_with(&b, &progress).unwrap();
    let expected = here.manifest.trades + 2;
    assert_eq!(synced.pulled, expected);
    let stages = progress.0.borrow().clone();
    assert_eq!(stages.len(), 1, "{stages:?}");
    assert!(
        stages[0].0.starts_with("mirroring the shared trades"),
        "{stages:?}"
    );
    assert_eq!((stages[0].1, stages[0].2), (Some(expected), expected));
    let published = synced.published.expect("a first version");
    assert_eq!(published.manifest.trades, expected);
    let again = shared.sync_home(&b).unwrap();
    assert_eq!((again.pulled, again.published.is_none()), (0, true));
    assert_eq!(again.generation, synced.generation);

    // Same trades in the same order everywhere; same summaries.
    let open = |h: &Home| Store::open(&h.store_path()).unwrap();
    let (la, lb, ll) = (open(&a), open(&b), open(&local));
    assert_eq!(rows(&la), rows(&ll));
    assert_eq!(rows(&lb), rows(&ll));
    let summary = ll.summary().unwrap();
    for s in [
        la.summary().unwrap(),
        lb.summary().unwrap(),
        shared.summary().unwrap(),
    ] {
        assert_eq!(
            (s.trades, &s.first_trade, &s.last_trade, s.snapshots),
            (
                summary.trades,
                &summary.first_trade,
                &summary.last_trade,
                summary.snapshots
            )
        );
        let accounts = |s: &tradebox_data::store::StoreSummary| -> Vec<(String, String, u64)> {
            s.accounts
                .iter()
                .map(|a| (a.exchange.clone(), a.account_name.clone(), a.trades))
                .collect()
        };
        assert_eq!(accounts(&s), accounts(&summary));
    }
    assert_eq!(
        lb.balance_snapshots().unwrap(),
        ll.balance_snapshots().unwrap()
    );
    // Both mirrors' versions name the shared store's content.
    let state = shared.state().unwrap();
    for h in [&a, &b] {
        let (_, m) = snapshot::current(&h.snapshot_root()).unwrap().unwrap();
        assert_eq!(m.store_id.as_deref(), Some(state.identity.as_str()));
        assert_eq!(m.trades, expected);
    }

    // A changed balance snapshot reaches B; nothing else is copied.
    let snap = dirs[2].path().join("snapshot_2025-01-03.json");
    std::fs::write(
        &snap,
        r#"{"date": "2025-01-03", "timestamp": "2025-01-03T00:00:00", "balances": {"BTC": 7}}"#,
    )
    .unwrap();
    let i = import_and_publish(&a, std::slice::from_ref(&snap), &options, &NoProgress).unwrap();
    assert_eq!(added(&i), vec![(1, 1)]);
    let synced = shared.sync_home(&b).unwrap();
    assert_eq!(synced.pulled, 0);
    assert_eq!(
        synced.published.unwrap().manifest.snapshots,
        summary.snapshots + 1
    );
    assert_eq!(
        open(&b).balance_snapshots().unwrap(),
        tradebox_data::shared::balance_snapshots(&shared).unwrap()
    );
}

#[test]
fn a_removal_is_mirrored_whole_and_a_foreign_local_store_is_never_overwritten() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    let dirs = [(); 2].map(|()| tempfile::TempDir::new().unwrap());
    let a = shared_home(dirs[0].path(), &url);
    let spec = |rows, seed| demo::DemoSpec {
        rows,
        days: 10,
        seed,
        end: 1_750_000_000_000_000,
    };
    let mut shared = Shared::open(&url).unwrap();
    let report = demo::write(&mut shared, &spec(2_000, 1), false, &NoProgress).unwrap();
    assert_eq!(report.trades, 2_000);
    shared.sync_home(&a).unwrap();
    let before = shared.state().unwrap();

    // Replaced: a new identity, and the mirror holds only the new trades.
    demo::write(&mut shared, &spec(500, 2), true, &NoProgress).unwrap();
    let after = shared.state().unwrap();
    assert_ne!(after.identity, before.identity);
    let synced = shared.sync_home(&a).unwrap();
    assert_eq!(synced.pulled, 500);
    let m = synced.published.unwrap().manifest;
    assert_eq!(m.trades, 500);
    assert_eq!(m.store_id.as_deref(), Some(after.identity.as_str()));
    assert_eq!(
        Store::open(&a.store_path()).unwrap().trade_count().unwrap(),
        500
    );

    // Trades imported into the mirror itself (without the store's URL):
    // said at the next sync, not merged or overwritten.
    let csv = dirs[1].path().join("local.csv");
    std::fs::write(
        &csv,
        "timestamp,exchange,account,symbol,side,amount,price\n\
         2025-01-02T03:04:05,kraken,desk,BTC,buy,1,100\n",
    )
    .unwrap();
    let plain = Home::new(dirs[0].path());
    import_and_publish(
        &plain,
        std::slice::from_ref(&csv),
        &CsvOptions::default(),
        &NoProgress,
    )
    .unwrap();
    demo::write(&mut shared, &spec(10, 4), false, &NoProgress).unwrap();
    let err = shared.sync_home(&a).unwrap_err().to_string();
    assert!(
        err.contains("was changed outside the shared store"),
        "{err}"
    );
    assert_eq!(
        Store::open(&a.store_path()).unwrap().trade_count().unwrap(),
        501
    );

    // A home whose own store holds trades it never mirrored: refused, and
    // its file keeps every trade.
    let own = Home::new(dirs[1].path());
    let mut store = Store::open(&own.store_path()).unwrap();
    demo::write(&mut store, &spec(300, 3), false, &NoProgress).unwrap();
    drop(store);
    let err = shared
        .sync_home(&own.clone().with_shared_store(Some(url.clone())))
        .unwrap_err()
        .to_string();
    assert!(err.contains("did not come from the shared store"), "{err}");
    assert!(err.contains("tradebox store copy"), "{err}");
    assert_eq!(
        Store::open(&own.store_path())
            .unwrap()
            .trade_count()
            .unwrap(),
        300
    );
}

#[test]
fn a_follower_serves_an_import_made_elsewhere_within_seconds() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    let dirs = [(); 2].map(|()| tempfile::TempDir::new().unwrap());
    let (a, b) = (
        shared_home(dirs[0].path(), &url),
        shared_home(dirs[1].path(), &url),
    );
    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    let follower = {
        let (b, url) = (b.clone(), url.clone());
        std::thread::spawn(move || {
            let shared = Shared::open(&url).unwrap();
            let mut errors = Vec::new();
            shared.follow(&b, "replica-b", &stop_rx, |r| {
                if let Err(e) = r {
                    errors.push(e.to_string());
                }
            });
            errors
        })
    };
    let imported =
        import_and_publish(&a, &fixture_paths(), &CsvOptions::default(), &NoProgress).unwrap();
    let want = imported.manifest.trades;
    // Not a timing assertion: the follower is given far longer than the
    // 5 s it is meant to take, and the time is reported.
    let started = Instant::now();
    let served = loop {
        let current = snapshot::current(&b.snapshot_root()).unwrap();
        if let Some((_, m)) = current.filter(|(_, m)| m.trades == want) {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "home B never published the import"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "follower published the import after {:?}",
        started.elapsed()
    );
    assert_eq!(served.snapshots, imported.manifest.snapshots);

    // The registry says what replica B serves.
    let shared = Shared::open(&url).unwrap();
    let generation = shared.state().unwrap().generation;
    let started = Instant::now();
    loop {
        let replicas = shared.replicas().unwrap();
        if replicas
            .iter()
            .any(|r| r.replica == "replica-b" && r.generation == generation && r.trades == want)
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{replicas:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop_tx.send(()).unwrap();
    let errors = follower.join().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
}
