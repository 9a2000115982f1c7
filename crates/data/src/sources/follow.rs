//! Following sources: sync each when it is due, back off after failures
//! (the poll interval doubled per failure in a row, at most 5 minutes),
//! record every outcome in the source's state, and publish a new snapshot
//! version after a pass that changed the store. While following, a
//! publication is a delta and compaction runs on a thread of its own, so a
//! new trade never waits for a rebuild of the base.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::state::{self, SourceState};
use super::{sync_seen, Sightings, SourceConfig, SyncReport};
use crate::error::Result;
use crate::home::Home;
use crate::snapshot::{self, Mode, Published};
use crate::store::Store;
use crate::timestamp;

/// The longest wait between two tries of a failing source.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The shortest time between two syncs of a source that a notification
/// brought forward: a writer committing many times a second makes a few
/// versions a second, not one per commit.
const MIN_GAP: Duration = Duration::from_secs(1);

/// How often a follower waiting for a change looks at its stop signal.
const STOP_TICK: Duration = Duration::from_millis(100);

/// What one pass did for one source.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: String,
    /// The sync's report, or why it failed.
    pub result: std::result::Result<SyncReport, String>,
}

/// What one pass did.
#[derive(Debug, Clone)]
pub struct Pass {
    /// One per source synced.
    pub outcomes: Vec<Outcome>,
    /// The version published, if any.
    pub published: Option<Published>,
    /// A background compaction that ended since the last pass: the
    /// version it installed (`None`: nothing to install), or its error.
    pub compacted: Option<std::result::Result<Option<Published>, String>>,
}

/// Follows a set of sources into the store of a home.
pub struct Follower {
    home: Home,
    sources: Vec<SourceConfig>,
    due: HashMap<String, Instant>,
    failures: HashMap<String, u32>,
    /// Whether the first pass has compared the store with the current version.
    caught_up: bool,
    /// How a pass publishes: compacted at once (one-off), or as deltas with
    /// compaction in the background (while following).
    mode: Mode,
    compactor: Option<std::thread::JoinHandle<Result<Option<Published>>>>,
    /// What the passes saw of the sources' files.
    seen: Sightings,
}

impl Follower {
    /// `sources` as configured (relative paths are resolved against the home).
    pub fn new(home: Home, sources: &[SourceConfig]) -> Follower {
        let sources = sources.iter().map(|s| s.resolved(home.root())).collect();
        Follower {
            home,
            sources,
            due: HashMap::new(),
            failures: HashMap::new(),
            caught_up: false,
            mode: Mode::Compacted,
            compactor: None,
            seen: Sightings::default(),
        }
    }

    pub fn sources(&self) -> &[SourceConfig] {
        &self.sources
    }

    /// When the next source is due (now if one has never been synced).
    pub fn next_due(&self) -> Instant {
        self.sources
            .iter()
            .map(|s| self.due.get(&s.id).copied().unwrap_or_else(Instant::now))
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// Syncs the sources that are due (all of them when `all`), then
    /// publishes a snapshot version if any added something, if the store
    /// holds more than the current version (a sync whose publication was
    /// cut short), or if a file of the current version is damaged (then
    /// the version is whole). Returns the outcomes and the version published, if any.
    pub fn pass(&mut self, all: bool) -> Result<Pass> {
        let mut store = Store::open(&self.home.store_path())?;
        let now = Instant::now();
        let mut outcomes = Vec::new();
        for source in &self.sources {
            if !all && self.due.get(&source.id).is_some_and(|d| *d > now) {
                continue;
            }
            let result = sync_seen(&mut store, source, &mut self.seen);
            let failures = self.failures.entry(source.id.clone()).or_insert(0);
            let failed = match &result {
                Ok(r) => r.problem.is_some(),
                Err(_) => true,
            };
            *failures = if failed {
                failures.saturating_add(1)
            } else {
                0
            };
            let wait = source
                .poll()
                .saturating_mul(1 << (*failures).min(16))
                .min(MAX_BACKOFF.max(source.poll()));
            self.due.insert(source.id.clone(), Instant::now() + wait);
            let result = result.map_err(|e| e.to_string());
            if let Err(e) = record(&mut store, source, &result, u64::from(*failures)) {
                tracing::warn!(source = %source.id, "recording the sync outcome: {e}");
            }
            outcomes.push(Outcome {
                id: source.id.clone(),
                result,
            });
        }
        let changed = outcomes
            .iter()
            .any(|o| o.result.as_ref().is_ok_and(|r| r.added > 0));
        let root = self.home.snapshot_root();
        // On the first pass, anything the current version lacks (a
        // publication cut short); on every pass, a file of it damaged on disk.
        let stale = if self.caught_up {
            snapshot::damaged(&root)?
        } else {
            snapshot::stale(&store, &root)?
        };
        self.caught_up = true;
        let published = if changed || stale {
            Some(snapshot::publish(&store, &root, self.mode)?)
        } else {
            None
        };
        let compacted = self.compact(published.as_ref());
        Ok(Pass {
            outcomes,
            published,
            compacted,
        })
    }

    /// Collects a background compaction that ended, and starts one when
    /// the version just published calls for it (while following).
    fn compact(
        &mut self,
        published: Option<&Published>,
    ) -> Option<std::result::Result<Option<Published>, String>> {
        let ended = match self.compactor.take() {
            Some(t) if t.is_finished() => Some(match t.join() {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("the compaction thread panicked".into()),
            }),
            running => {
                self.compactor = running;
                None
            }
        };
        let due = published.is_some_and(|p| p.manifest.compaction().is_some());
        if self.mode == Mode::Delta && due && self.compactor.is_none() {
            let (store_path, root) = (self.home.store_path(), self.home.snapshot_root());
            let thread = std::thread::Builder::new()
                .name("tradebox-compact".into())
                .spawn(move || snapshot::compact(&Store::open(&store_path)?, &root));
            match thread {
                Ok(t) => self.compactor = Some(t),
                Err(e) => tracing::warn!("starting a compaction: {e}"),
            }
        }
        ended
    }
}

/// Writes the outcome into the source's state (its counters are kept by
/// the sync itself, in the transactions of what it imported or refused).
fn record(
    store: &mut Store,
    source: &SourceConfig,
    result: &std::result::Result<SyncReport, String>,
    failures: u64,
) -> Result<()> {
    let mut st = state::load(store, &source.id)?;
    let now = timestamp::format(timestamp::now());
    st.kind = source.kind.as_str().into();
    st.path = source.path.display().to_string();
    st.attempted_at = Some(now.clone());
    st.failures = failures;
    match result {
        Ok(report) => {
            st.synced_at = Some(now.clone());
            st.error = report.problem.clone();
            if report.added > 0 {
                st.changed_at = Some(now);
            }
        }
        Err(e) => st.error = Some(e.clone()),
    }
    store.write(|w| w.save_source_state(&st))
}

impl Follower {
    /// Follows until `stop` says so (or its sender is dropped): a pass
    /// whenever a source is due (its poll interval, or a change its folder
    /// notified, at most every [`MIN_GAP`]), `on_pass` told of each (or of
    /// why the pass itself failed: the store or the snapshot folder).
    pub fn run(
        &mut self,
        stop: &std::sync::mpsc::Receiver<()>,
        mut on_pass: impl FnMut(std::result::Result<&Pass, &crate::Error>),
    ) {
        use std::sync::mpsc::TryRecvError;
        self.mode = Mode::Delta;
        let mut watch = super::watch::Watch::new(&self.sources);
        if watch.is_none() {
            tracing::info!("no filesystem notifications here: sources are polled");
        }
        loop {
            let passed = Instant::now();
            match self.pass(false) {
                Ok(pass) => on_pass(Ok(&pass)),
                Err(e) => {
                    on_pass(Err(&e));
                    // Whatever failed (a locked store, a full disk) is tried
                    // again after the shortest poll, not in a tight loop.
                    let poll = self.sources.iter().map(SourceConfig::poll).min();
                    for s in &self.sources {
                        self.due
                            .insert(s.id.clone(), Instant::now() + poll.unwrap_or(MAX_BACKOFF));
                    }
                }
            }
            // Wait for the next due source, a change, or the stop signal.
            loop {
                match stop.try_recv() {
                    Err(TryRecvError::Empty) => {}
                    Ok(()) | Err(TryRecvError::Disconnected) => {
                        // A compaction under way ends with its version installed.
                        if let Some(t) = self.compactor.take() {
                            let _ = t.join();
                        }
                        return;
                    }
                }
                let left = self.next_due().saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let slice = left.min(STOP_TICK);
                let Some(w) = watch.as_mut() else {
                    std::thread::sleep(slice);
                    continue;
                };
                for i in w.wait(slice) {
                    let id = &self.sources[i].id;
                    // A failing source keeps its backoff.
                    if self.failures.get(id).copied().unwrap_or(0) == 0 {
                        let soon = (passed + MIN_GAP).max(Instant::now());
                        let due = self.due.entry(id.clone()).or_insert(soon);
                        *due = (*due).min(soon);
                    }
                }
            }
        }
    }
}

impl SourceState {
    /// Seconds since the last successful sync, at `now` (microseconds).
    pub fn lag_seconds(&self, now: i64) -> Option<f64> {
        let at = timestamp::parse(self.synced_at.as_deref()?).ok()?;
        Some(now.saturating_sub(at).max(0) as f64 / 1e6)
    }
}
