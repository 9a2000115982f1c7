//! Deliveries already taken, so that a redelivered Socket Mode envelope or a
//! retried HTTP request (`X-Slack-Retry-Num`) is acknowledged but not run
//! again. Keyed by Slack's `trigger_id`, kept for [`KEEP`], at most
//! [`MAX_KEYS`] keys.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// How long a delivery is remembered (Slack redelivers within minutes).
pub const KEEP: Duration = Duration::from_secs(3600);
/// The most deliveries remembered at once.
pub const MAX_KEYS: usize = 100_000;

#[derive(Default)]
pub struct Seen {
    keys: HashSet<String>,
    order: VecDeque<(Instant, String)>,
}

impl Seen {
    /// `true` the first time `key` is seen, `false` for a repeat.
    pub fn first(&mut self, key: &str, now: Instant) -> bool {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < KEEP && self.order.len() < MAX_KEYS {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        if self.keys.contains(key) {
            return false;
        }
        self.keys.insert(key.to_string());
        self.order.push_back((now, key.to_string()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_caught_until_they_expire() {
        let mut seen = Seen::default();
        let t0 = Instant::now();
        assert!(seen.first("a", t0));
        assert!(!seen.first("a", t0 + Duration::from_secs(5)));
        assert!(seen.first("b", t0 + Duration::from_secs(5)));
        assert!(seen.first("a", t0 + KEEP + Duration::from_secs(1)));
        assert!(!seen.first("b", t0 + KEEP + Duration::from_secs(1)));
    }
}
