//! The claims' contract, on SQLite and on PostgreSQL.

use super::*;
use std::sync::Barrier;
use tempfile::TempDir;
use tradebox_db::testing::PgCluster;

/// 2025-11-01T00:00:00Z
const T0: Micros = 1_761_955_200_000_000;

/// Opens another connection to one case's store each call.
type Opener<'a> = &'a (dyn Fn() -> Deliveries + Sync);

fn contract(open: Opener<'_>) {
    let d = open();
    assert!(d.claim_at("trigger-1", T0).unwrap());
    assert!(!d.claim_at("trigger-1", T0 + 1).unwrap(), "a repeat");
    assert!(
        !open().claim_at("trigger-1", T0 + 2).unwrap(),
        "another process too"
    );
    assert!(d.claim_at("trigger-2", T0 + 3).unwrap());
    assert!(matches!(d.claim_at("", T0), Err(StoreError::Invalid(_))));
    // Kept for KEEP, then forgotten (by the next claim of anything).
    let keep = i64::try_from(KEEP.as_micros()).unwrap();
    assert!(!d.claim_at("trigger-1", T0 + keep - 1).unwrap());
    assert!(d.claim_at("trigger-1", T0 + keep + 10).unwrap());

    // One key claimed by 8 processes at once: one of them gets it.
    let barrier = Barrier::new(8);
    let won: usize = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mine = open();
                    barrier.wait();
                    usize::from(mine.claim_at("race", T0 + keep + 20).unwrap())
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(won, 1);
}

#[test]
fn the_contract_on_sqlite() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tradebox.db");
    contract(&|| Deliveries::open(&path).unwrap());
}

#[test]
fn the_contract_on_postgres() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    contract(&|| Deliveries::open_postgres(&url).unwrap());
}
