//! Tests of the rate limiter: the contract every backend keeps, run on
//! SQLite and on PostgreSQL (a throwaway cluster, a fresh database per
//! case), then what is particular to SQLite.

use super::*;
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::Barrier;
use tempfile::TempDir;
use tradebox_db::testing::PgCluster;

/// 2025-11-29T00:00:00Z, in microseconds.
const T0: Micros = 1_764_374_400_000_000;
const S: Micros = MICROS_PER_SECOND;
const MINUTE: Duration = Duration::from_secs(60);

/// One test's store: limiters on it (each its own connection), and how
/// many events it holds.
trait TestStore: Send + Sync {
    fn open(&self, executions: u32, window: Duration) -> Result<RateLimiter, StoreError>;
    fn rows(&self) -> i64;

    fn limiter(&self, executions: u32, window: Duration) -> RateLimiter {
        self.open(executions, window).unwrap()
    }
}

struct Sqlite {
    _dir: TempDir,
    path: PathBuf,
}

impl TestStore for Sqlite {
    fn open(&self, executions: u32, window: Duration) -> Result<RateLimiter, StoreError> {
        RateLimiter::open(&self.path, executions, window)
    }

    fn rows(&self) -> i64 {
        rows(&self.path)
    }
}

struct Postgres {
    url: String,
}

impl TestStore for Postgres {
    fn open(&self, executions: u32, window: Duration) -> Result<RateLimiter, StoreError> {
        RateLimiter::open_postgres(&self.url, executions, window)
    }

    fn rows(&self) -> i64 {
        use tradebox_db::pg::postgres::{Client, NoTls};
        let url = self.url.clone();
        // Not on a thread inside a runtime (see tradebox_db::pg).
        std::thread::spawn(move || {
            let mut client = Client::connect(&url, NoTls).unwrap();
            client
                .query_one("SELECT count(*) FROM rate_limit_events", &[])
                .unwrap()
                .get(0)
        })
        .join()
        .unwrap()
    }
}

/// One case of the contract, by name.
type Case = (&'static str, fn(&dyn TestStore));

/// The contract: every case runs on every backend.
const CONTRACT: [Case; 10] = [
    (
        "ten_allowed_then_limited_until_the_oldest_leaves",
        ten_allowed_then_limited_until_the_oldest_leaves,
    ),
    ("the_window_slides", the_window_slides),
    ("refusals_are_not_counted", refusals_are_not_counted),
    ("users_are_independent", users_are_independent),
    (
        "concurrent_limiters_share_the_counters_exactly",
        concurrent_limiters_share_the_counters_exactly,
    ),
    ("old_rows_are_deleted", old_rows_are_deleted),
    (
        "a_lowered_limit_waits_for_enough_rows_to_leave",
        a_lowered_limit_waits_for_enough_rows_to_leave,
    ),
    ("short_windows_and_rounding", short_windows_and_rounding),
    (
        "invalid_settings_and_input_are_refused",
        invalid_settings_and_input_are_refused,
    ),
    ("reopening_finds_the_counters", reopening_finds_the_counters),
];

#[test]
fn the_contract_on_sqlite() {
    for (name, case) in CONTRACT {
        eprintln!("case {name}");
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("tradebox.db");
        case(&Sqlite { _dir: dir, path });
    }
}

#[test]
fn the_contract_on_postgres() {
    let cluster = PgCluster::start().unwrap();
    for (name, case) in CONTRACT {
        eprintln!("case {name}");
        case(&Postgres {
            url: cluster.database().unwrap(),
        });
    }
}

fn reopening_finds_the_counters(store: &dyn TestStore) {
    let rl = store.limiter(2, Duration::from_secs(30));
    assert_eq!(rl.check_and_record("U1", T0).unwrap(), allowed(1));
    let again = store.limiter(2, Duration::from_secs(30));
    assert_eq!(again.check_and_record("U1", T0).unwrap(), allowed(0));
    assert_eq!(rl.check_and_record("U1", T0 + 29 * S).unwrap(), limited(1));
}

fn allowed(remaining: u32) -> Decision {
    Decision::Allowed { remaining }
}

fn limited(retry_after_seconds: u64) -> Decision {
    Decision::Limited {
        retry_after_seconds,
    }
}

fn rows(path: &Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.query_row("SELECT count(*) FROM rate_limit_events", [], |r| r.get(0))
        .unwrap()
}

fn ten_allowed_then_limited_until_the_oldest_leaves(store: &dyn TestStore) {
    let rl = store.limiter(10, MINUTE);
    // One execution per second from T0 to T0 + 9 s.
    for i in 0..10 {
        let d = rl.check_and_record("U1", T0 + i * S).unwrap();
        assert_eq!(d, allowed(9 - u32::try_from(i).unwrap()));
        assert!(d.is_allowed());
    }
    // The oldest (T0) leaves the window at T0 + 60 s.
    assert_eq!(rl.check_and_record("U1", T0 + 10 * S).unwrap(), limited(50));
    assert_eq!(
        rl.check_and_record("U1", T0 + 10 * S + 1).unwrap(),
        limited(50)
    );
    assert_eq!(
        rl.check_and_record("U1", T0 + 9 * S + S / 2).unwrap(),
        limited(51)
    );
    assert_eq!(rl.check_and_record("U1", T0 + 59 * S).unwrap(), limited(1));
    assert_eq!(
        rl.check_and_record("U1", T0 + 60 * S - 1).unwrap(),
        limited(1),
        "at least 1"
    );
    assert!(!limited(1).is_allowed());
    assert_eq!(rl.used("U1", T0 + 30 * S).unwrap(), 10);
    assert_eq!(
        rl.used("U1", T0 + 65 * S).unwrap(),
        4,
        "T0+6s .. T0+9s still count"
    );
}

fn the_window_slides(store: &dyn TestStore) {
    let rl = store.limiter(10, MINUTE);
    for i in 0..10 {
        assert!(rl.check_and_record("U1", T0 + i * S).unwrap().is_allowed());
    }
    // Exactly one window after the first, the first no longer counts.
    assert_eq!(rl.check_and_record("U1", T0 + 60 * S).unwrap(), allowed(0));
    // The next slot frees at T0 + 61 s.
    assert_eq!(rl.check_and_record("U1", T0 + 60 * S).unwrap(), limited(1));
    assert_eq!(rl.check_and_record("U1", T0 + 61 * S).unwrap(), allowed(0));
    // Not a fixed window: a burst at the end of one minute and one at
    // the start of the next never give more than 10 in 60 s.
    let rl = store.limiter(10, MINUTE);
    for _ in 0..10 {
        assert!(rl.check_and_record("U2", T0 + 59 * S).unwrap().is_allowed());
    }
    assert_eq!(rl.check_and_record("U2", T0 + 61 * S).unwrap(), limited(58));
    // Nor a token bucket: no refill of one slot every window/N.
    assert_eq!(rl.check_and_record("U2", T0 + 65 * S).unwrap(), limited(54));
    // Long after, the whole window is free again.
    assert_eq!(rl.check_and_record("U2", T0 + 119 * S).unwrap(), allowed(9));
}

fn refusals_are_not_counted(store: &dyn TestStore) {
    let rl = store.limiter(10, MINUTE);
    for _ in 0..10 {
        assert!(rl.check_and_record("U1", T0).unwrap().is_allowed());
    }
    for i in 0..100 {
        let d = rl.check_and_record("U1", T0 + 30 * S + i).unwrap();
        assert!(!d.is_allowed());
    }
    assert_eq!(store.rows(), 10);
    // Had the refusals counted, U1 would wait until T0 + 90 s.
    for i in 0..10 {
        assert_eq!(
            rl.check_and_record("U1", T0 + 60 * S).unwrap(),
            allowed(9 - i)
        );
    }
}

fn users_are_independent(store: &dyn TestStore) {
    let rl = store.limiter(3, MINUTE);
    for i in 0..3 {
        assert_eq!(rl.check_and_record("U1", T0).unwrap(), allowed(2 - i));
    }
    assert!(!rl.check_and_record("U1", T0).unwrap().is_allowed());
    assert_eq!(rl.check_and_record("U2", T0).unwrap(), allowed(2));
    assert_eq!(rl.check_and_record("alice", T0).unwrap(), allowed(2));
    assert_eq!(
        rl.check_and_record("u1", T0).unwrap(),
        allowed(2),
        "exact ids"
    );
    assert_eq!(rl.used("U1", T0).unwrap(), 3);
    assert_eq!(rl.used("U2", T0).unwrap(), 1);
    assert_eq!(rl.used("nobody", T0).unwrap(), 0);
}

fn concurrent_limiters_share_the_counters_exactly(store: &dyn TestStore) {
    let barrier = Barrier::new(10);
    let decisions: Vec<Decision> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..10)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    let rl = store.limiter(10, MINUTE);
                    barrier.wait();
                    (0..5)
                        .map(|_| rl.check_and_record("U1", T0).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    assert_eq!(decisions.len(), 50);
    let mut remaining: Vec<u32> = decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Allowed { remaining } => Some(*remaining),
            Decision::Limited { .. } => None,
        })
        .collect();
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        (0..10).collect::<Vec<_>>(),
        "exactly 10 allowed, each once"
    );
    assert!(decisions
        .iter()
        .filter(|d| !d.is_allowed())
        .all(|d| *d == limited(60)));
    assert_eq!(store.rows(), 10);
}

fn old_rows_are_deleted(store: &dyn TestStore) {
    let rl = store.limiter(10, MINUTE);
    for i in 0..5 {
        rl.check_and_record("U1", T0 + i * S).unwrap();
        rl.check_and_record("U2", T0 + i * S).unwrap();
    }
    assert_eq!(store.rows(), 10);
    // U1's next check clears U1's rows that left the window, not U2's.
    assert_eq!(rl.check_and_record("U1", T0 + 200 * S).unwrap(), allowed(9));
    assert_eq!(store.rows(), 6);
    // prune clears everyone's.
    assert_eq!(rl.prune(T0 + 200 * S).unwrap(), 5);
    assert_eq!(store.rows(), 1);
    assert_eq!(rl.prune(T0 + 300 * S).unwrap(), 1);
    assert_eq!(store.rows(), 0);
}

fn a_lowered_limit_waits_for_enough_rows_to_leave(store: &dyn TestStore) {
    let rl = store.limiter(10, MINUTE);
    for i in 0..10 {
        rl.check_and_record("U1", T0 + i * S).unwrap();
    }
    drop(rl);
    // Now 3 per minute: 8 of the 10 must leave, the 8th (T0 + 7 s) at
    // T0 + 67 s.
    let rl = store.limiter(3, MINUTE);
    assert_eq!(rl.check_and_record("U1", T0 + 10 * S).unwrap(), limited(57));
    assert_eq!(rl.check_and_record("U1", T0 + 67 * S).unwrap(), allowed(0));
}

fn short_windows_and_rounding(store: &dyn TestStore) {
    let rl = store.limiter(1, Duration::from_millis(1500));
    assert_eq!(rl.check_and_record("U1", T0).unwrap(), allowed(0));
    assert_eq!(rl.check_and_record("U1", T0 + 1).unwrap(), limited(2));
    assert_eq!(rl.check_and_record("U1", T0 + S).unwrap(), limited(1));
    assert_eq!(
        rl.check_and_record("U1", T0 + 3 * S / 2).unwrap(),
        allowed(0)
    );
    assert_eq!(
        rl.limited_message(2),
        "Rate limit exceeded. Max 1 executions per 1.5s. Try again in 2s."
    );
    let rl = store.limiter(10, MINUTE);
    assert_eq!(
        rl.limited_message(12),
        "Rate limit exceeded. Max 10 executions per 60s. Try again in 12s."
    );
    assert_eq!(seconds_rounded_up(0), 1);
    assert_eq!(seconds_rounded_up(1), 1);
    assert_eq!(seconds_rounded_up(S), 1);
    assert_eq!(seconds_rounded_up(S + 1), 2);
    assert_eq!(seconds_rounded_up(-5), 1);
}

fn invalid_settings_and_input_are_refused(store: &dyn TestStore) {
    assert!(matches!(store.open(0, MINUTE), Err(StoreError::Invalid(_))));
    assert!(matches!(
        store.open(10, Duration::ZERO),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.open(10, Duration::from_secs(u64::MAX)),
        Err(StoreError::Invalid(_))
    ));
    let rl = store.limiter(10, MINUTE);
    assert!(matches!(
        rl.check_and_record("", T0),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn shares_the_store_file_and_the_config() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tradebox.db");
    let store = crate::functions::FunctionStore::open(&path).unwrap();
    store.save("pnl", "", "result = 1", "U1", false).unwrap();
    let section = RateLimitSection {
        executions: 2,
        window_seconds: 30,
    };
    let rl = RateLimiter::from_config(&path, &section).unwrap();
    assert_eq!(rl.executions(), 2);
    assert_eq!(rl.window(), Duration::from_secs(30));
    assert_eq!(rl.check_and_record("U1", T0).unwrap(), allowed(1));
    assert!(store.get("pnl").unwrap().is_some());
    // Reopening finds the table and the counters.
    let again = RateLimiter::from_config(&path, &section).unwrap();
    assert_eq!(again.check_and_record("U1", T0).unwrap(), allowed(0));
    assert_eq!(rl.check_and_record("U1", T0 + 29 * S).unwrap(), limited(1));
}

#[test]
fn decisions_serialize_for_the_api() {
    assert_eq!(
        serde_json::to_value(allowed(3)).unwrap(),
        serde_json::json!({"decision": "allowed", "remaining": 3})
    );
    assert_eq!(
        serde_json::to_value(limited(7)).unwrap(),
        serde_json::json!({"decision": "limited", "retry_after_seconds": 7})
    );
}
