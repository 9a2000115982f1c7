//! The console's conversation, kept per user while the server runs, so
//! that it survives a page switch or a reload as a Slack channel does: the
//! last [`MAX_ENTRIES`] commands typed (or buttons pressed) on the console
//! page with their final replies, files included, at most [`MAX_BYTES`]
//! of replies per user (the oldest go first). It is not written to disk:
//! the audit trail is the record that lasts.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

/// Entries kept per user.
pub const MAX_ENTRIES: usize = 200;
/// Bytes of reply JSON kept per user (figures are most of it).
pub const MAX_BYTES: usize = 32 << 20;

/// What the user sent, as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sent {
    /// A command line.
    Text { text: String },
    /// A button pressed on a reply.
    Button {
        label: String,
        action_id: String,
        value: String,
    },
}

/// One exchange: what was sent, when (RFC 3339), and the final reply (the
/// JSON the console renders, files as base64 `data`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub at: String,
    pub sent: Sent,
    pub reply: serde_json::Value,
    #[serde(skip)]
    bytes: usize,
}

impl Entry {
    pub fn new(at: String, sent: Sent, reply: serde_json::Value) -> Entry {
        let bytes = reply.to_string().len();
        Entry {
            at,
            sent,
            reply,
            bytes,
        }
    }
}

#[derive(Default)]
struct Log {
    entries: VecDeque<Entry>,
    bytes: usize,
}

/// Every user's conversation.
#[derive(Default)]
pub struct Conversations {
    users: Mutex<HashMap<String, Log>>,
}

impl Conversations {
    /// Adds an exchange; the oldest go while over either bound. A reply
    /// alone over [`MAX_BYTES`] is not kept.
    pub fn push(&self, user: &str, entry: Entry) {
        if entry.bytes > MAX_BYTES {
            return;
        }
        let Ok(mut users) = self.users.lock() else {
            return;
        };
        let log = users.entry(user.to_owned()).or_default();
        log.bytes += entry.bytes;
        log.entries.push_back(entry);
        while log.entries.len() > MAX_ENTRIES || log.bytes > MAX_BYTES {
            match log.entries.pop_front() {
                Some(old) => log.bytes -= old.bytes,
                None => break,
            }
        }
    }

    /// A user's exchanges, oldest first.
    pub fn list(&self, user: &str) -> Vec<Entry> {
        self.users
            .lock()
            .ok()
            .and_then(|users| users.get(user).map(|l| l.entries.iter().cloned().collect()))
            .unwrap_or_default()
    }

    /// Forgets a user's conversation.
    pub fn clear(&self, user: &str) {
        if let Ok(mut users) = self.users.lock() {
            users.remove(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(i: usize, size: usize) -> Entry {
        Entry::new(
            format!("2026-12-05T10:00:{:02}Z", i % 60),
            Sent::Text {
                text: format!("/analyze result = {i}"),
            },
            json!({"blocks": [], "pad": "x".repeat(size)}),
        )
    }

    #[test]
    fn kept_per_user_newest_last_and_cleared() {
        let c = Conversations::default();
        c.push("U1", entry(1, 0));
        c.push("U1", entry(2, 0));
        c.push("U2", entry(3, 0));
        let texts = |u: &str| -> Vec<Sent> { c.list(u).into_iter().map(|e| e.sent).collect() };
        assert_eq!(
            texts("U1"),
            [
                Sent::Text {
                    text: "/analyze result = 1".into()
                },
                Sent::Text {
                    text: "/analyze result = 2".into()
                }
            ]
        );
        assert_eq!(texts("U2").len(), 1);
        c.clear("U1");
        assert!(c.list("U1").is_empty());
        assert_eq!(texts("U2").len(), 1, "other users keep theirs");
    }

    #[test]
    fn bounded_by_count_and_by_bytes() {
        let c = Conversations::default();
        for i in 0..MAX_ENTRIES + 25 {
            c.push("U1", entry(i, 0));
        }
        let kept = c.list("U1");
        assert_eq!(kept.len(), MAX_ENTRIES);
        assert_eq!(
            kept[0].sent,
            Sent::Text {
                text: "/analyze result = 25".into()
            },
            "the oldest went first"
        );

        let c = Conversations::default();
        let big = MAX_BYTES / 4;
        for i in 0..6 {
            c.push("U1", entry(i, big));
        }
        let kept = c.list("U1");
        assert!(kept.len() < 4 && !kept.is_empty(), "{}", kept.len());
        assert!(kept.iter().map(|e| e.bytes).sum::<usize>() <= MAX_BYTES);
        c.push("U1", entry(9, MAX_BYTES + 1));
        assert_ne!(
            c.list("U1").last().map(|e| e.sent.clone()),
            Some(Sent::Text {
                text: "/analyze result = 9".into()
            }),
            "a reply over the bound alone is not kept"
        );
    }
}
