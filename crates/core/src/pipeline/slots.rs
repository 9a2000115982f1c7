//! Per-user places in line: at most `running` jobs of one user run at once,
//! `waiting` more wait behind them, and a request beyond that is refused
//! before it reaches the executor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

/// At most `running` jobs per user at once, `waiting` more queued behind.
pub(super) struct UserSlots {
    running: usize,
    waiting: usize,
    users: Mutex<HashMap<String, (Arc<Semaphore>, usize)>>,
}

/// A user's place in line; leaving it (drop) frees it.
pub(super) struct Slot<'a> {
    slots: &'a UserSlots,
    user: String,
    semaphore: Arc<Semaphore>,
}

impl UserSlots {
    pub(super) fn new(running: usize, waiting: usize) -> UserSlots {
        UserSlots {
            running: running.max(1),
            waiting,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// A place in the user's line, or `None` when it is full.
    pub(super) fn enter(&self, user: &str) -> Option<Slot<'_>> {
        let mut users = self.users.lock().ok()?;
        let (semaphore, count) = users
            .entry(user.to_string())
            .or_insert_with(|| (Arc::new(Semaphore::new(self.running)), 0));
        if *count >= self.running + self.waiting {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: self,
            user: user.to_string(),
            semaphore: Arc::clone(semaphore),
        })
    }

    /// Places taken, running or waiting, across all users.
    pub(super) fn total(&self) -> usize {
        self.users
            .lock()
            .map_or(0, |users| users.values().map(|(_, n)| n).sum())
    }
}

impl Slot<'_> {
    /// Waits for one of the user's running places.
    pub(super) async fn run(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.semaphore.acquire().await.ok()
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Ok(mut users) = self.slots.users.lock() {
            if let Some((_, count)) = users.get_mut(&self.user) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    users.remove(&self.user);
                }
            }
        }
    }
}
