//! The leases' contract, on SQLite and on PostgreSQL.

use super::*;
use crate::audit::{Action, AuditEntry, AuditFilter, AuditLog, Outcome, Source};
use std::sync::Barrier;
use tempfile::TempDir;
use tradebox_db::testing::PgCluster;

/// 2025-11-01T00:00:00Z
const T0: Micros = 1_761_955_200_000_000;
const S: Micros = 1_000_000;

/// Opens another connection, as replica `name`, to one case's store.
type Opener<'a> = &'a (dyn Fn(&str) -> Leases + Sync);

fn contract(open: Opener<'_>) {
    let (a, b) = (open("a"), open("b"));
    // Two places for U1 across both replicas.
    let one = a.try_take_at("U1", 2, T0).unwrap().unwrap();
    let two = b.try_take_at("U1", 2, T0).unwrap().unwrap();
    assert_ne!(one, two);
    assert_eq!(a.try_take_at("U1", 2, T0 + 1).unwrap(), None, "both held");
    assert!(
        b.try_take_at("U2", 2, T0).unwrap().is_some(),
        "users are apart"
    );
    assert_eq!(a.held_at("U1", T0).unwrap(), 2);
    // Released: a place again.
    a.release(&one).unwrap();
    let three = b.try_take_at("U1", 2, T0 + 2).unwrap().unwrap();
    // Not renewed: expired after TTL, its place free (a replica that died).
    let ttl = i64::try_from(TTL.as_micros()).unwrap();
    assert!(
        a.renew_at(&three, T0 + 5 * S).unwrap(),
        "renewed to T0 + 5 s + TTL"
    );
    // At T0 + TTL + 1 s `two`, never renewed, has expired (as a dead
    // replica's would): its place is free; `three` is still held.
    assert!(a.try_take_at("U1", 2, T0 + ttl + S).unwrap().is_some());
    assert_eq!(
        a.try_take_at("U1", 2, T0 + ttl + S).unwrap(),
        None,
        "three and the new one"
    );
    assert!(
        !a.renew_at(&two, T0 + ttl + S).unwrap(),
        "an expired lease is gone"
    );

    // Eight replicas after U3's two places at once: two get one.
    let barrier = Barrier::new(8);
    let won: usize = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mine = open(&format!("r{i}"));
                    barrier.wait();
                    usize::from(mine.try_take_at("U3", 2, T0).unwrap().is_some())
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(won, 2);
}

#[test]
fn the_contract_on_sqlite() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tradebox.db");
    contract(&|name| Leases::open(&path, name).unwrap());
}

#[test]
fn the_contract_on_postgres() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    contract(&|name| Leases::open_postgres(&url, name).unwrap());
}

/// Opens one case's store as replica `name`: its leases and its audit trail.
type Both<'a> = &'a (dyn Fn(&str) -> (Leases, AuditLog) + Sync);

/// A job's audit row gives its running place back in the same write; a
/// place already gone is no error, and no other place is touched.
fn given_back_with_the_audit_row(open: Both<'_>) {
    let (leases, audit) = open("a");
    let id = leases.try_take("U1", 1).unwrap().unwrap();
    let other = leases.try_take("U2", 1).unwrap().unwrap();
    assert_eq!(
        leases.try_take("U1", 1).unwrap(),
        None,
        "U1's one place is held"
    );
    let mut entry = AuditEntry::new("U1", Source::Api, Action::Analyze, Outcome::Ok);
    entry.code = Some("result = 1 + 1".into());
    let (row, given_back) = audit.record_releasing(&entry, &id).unwrap();
    assert!(given_back);
    assert_eq!(leases.held("U1").unwrap(), 0, "given back with the row");
    let rows = audit.query(&AuditFilter::default()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].id, &rows[0].entry.code), (row, &entry.code));
    assert_eq!(rows[0].entry.replica, None);
    // Gone already (as a place that expired is): the row is still written.
    assert!(!audit.record_releasing(&entry, &id).unwrap().1);
    assert_eq!(audit.count().unwrap(), 2);
    assert_eq!(leases.held("U2").unwrap(), 1, "U2's place is untouched");
    assert!(leases.try_take("U1", 1).unwrap().is_some());
    leases.release(&other).unwrap();
}

#[test]
fn given_back_with_the_audit_row_on_sqlite() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tradebox.db");
    given_back_with_the_audit_row(&|name| {
        (
            Leases::open(&path, name).unwrap(),
            AuditLog::open(&path).unwrap(),
        )
    });
}

#[test]
fn given_back_with_the_audit_row_on_postgres() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.database().unwrap();
    given_back_with_the_audit_row(&|name| {
        (
            Leases::open_postgres(&url, name).unwrap(),
            AuditLog::open_postgres(&url).unwrap(),
        )
    });
}
