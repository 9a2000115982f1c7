//! Tests of the rate limiter on its SQLite backend.

use super::*;
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use tempfile::TempDir;

/// 2025-11-29T00:00:00Z, in microseconds.
const T0: Micros = 1_764_374_400_000_000;
const S: Micros = MICROS_PER_SECOND;
const MINUTE: Duration = Duration::from_secs(60);

fn setup(executions: u32, window: Duration) -> (TempDir, PathBuf, RateLimiter) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tradebox.db");
    let limiter = RateLimiter::open(&path, executions, window).unwrap();
    (dir, path, limiter)
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

#[test]
fn ten_allowed_then_limited_until_the_oldest_leaves() {
    let (_dir, _path, rl) = setup(10, MINUTE);
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

#[test]
fn the_window_slides() {
    let (_dir, _path, rl) = setup(10, MINUTE);
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
    let (_dir, _path, rl) = setup(10, MINUTE);
    for _ in 0..10 {
        assert!(rl.check_and_record("U2", T0 + 59 * S).unwrap().is_allowed());
    }
    assert_eq!(rl.check_and_record("U2", T0 + 61 * S).unwrap(), limited(58));
    // Nor a token bucket: no refill of one slot every window/N.
    assert_eq!(rl.check_and_record("U2", T0 + 65 * S).unwrap(), limited(54));
    // Long after, the whole window is free again.
    assert_eq!(rl.check_and_record("U2", T0 + 119 * S).unwrap(), allowed(9));
}

#[test]
fn refusals_are_not_counted() {
    let (_dir, path, rl) = setup(10, MINUTE);
    for _ in 0..10 {
        assert!(rl.check_and_record("U1", T0).unwrap().is_allowed());
    }
    for i in 0..100 {
        let d = rl.check_and_record("U1", T0 + 30 * S + i).unwrap();
        assert!(!d.is_allowed());
    }
    assert_eq!(rows(&path), 10);
    // Had the refusals counted, U1 would wait until T0 + 90 s.
    for i in 0..10 {
        assert_eq!(
            rl.check_and_record("U1", T0 + 60 * S).unwrap(),
            allowed(9 - i)
        );
    }
}

#[test]
fn users_are_independent() {
    let (_dir, _path, rl) = setup(3, MINUTE);
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

#[test]
fn concurrent_limiters_share_the_counters_exactly() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tradebox.db");
    let barrier = Arc::new(Barrier::new(10));
    let threads: Vec<_> = (0..10)
        .map(|_| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let rl = RateLimiter::open(&path, 10, MINUTE).unwrap();
                barrier.wait();
                (0..5)
                    .map(|_| rl.check_and_record("U1", T0).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let decisions: Vec<Decision> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
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
    assert_eq!(rows(&path), 10);
}

#[test]
fn old_rows_are_deleted() {
    let (_dir, path, rl) = setup(10, MINUTE);
    for i in 0..5 {
        rl.check_and_record("U1", T0 + i * S).unwrap();
        rl.check_and_record("U2", T0 + i * S).unwrap();
    }
    assert_eq!(rows(&path), 10);
    // U1's next check clears U1's rows that left the window, not U2's.
    assert_eq!(rl.check_and_record("U1", T0 + 200 * S).unwrap(), allowed(9));
    assert_eq!(rows(&path), 6);
    // prune clears everyone's.
    assert_eq!(rl.prune(T0 + 200 * S).unwrap(), 5);
    assert_eq!(rows(&path), 1);
    assert_eq!(rl.prune(T0 + 300 * S).unwrap(), 1);
    assert_eq!(rows(&path), 0);
}

#[test]
fn a_lowered_limit_waits_for_enough_rows_to_leave() {
    let (_dir, path, rl) = setup(10, MINUTE);
    for i in 0..10 {
        rl.check_and_record("U1", T0 + i * S).unwrap();
    }
    drop(rl);
    // Now 3 per minute: 8 of the 10 must leave, the 8th (T0 + 7 s) at
    // T0 + 67 s.
    let rl = RateLimiter::open(&path, 3, MINUTE).unwrap();
    assert_eq!(rl.check_and_record("U1", T0 + 10 * S).unwrap(), limited(57));
    assert_eq!(rl.check_and_record("U1", T0 + 67 * S).unwrap(), allowed(0));
}

#[test]
fn short_windows_and_rounding() {
    let (_dir, _path, rl) = setup(1, Duration::from_millis(1500));
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
    let (_dir, _path, rl) = setup(10, MINUTE);
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

#[test]
fn invalid_settings_and_input_are_refused() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tradebox.db");
    assert!(matches!(
        RateLimiter::open(&path, 0, MINUTE),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        RateLimiter::open(&path, 10, Duration::ZERO),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        RateLimiter::open(&path, 10, Duration::from_secs(u64::MAX)),
        Err(StoreError::Invalid(_))
    ));
    let rl = RateLimiter::open(&path, 10, MINUTE).unwrap();
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
