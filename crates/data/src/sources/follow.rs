//! Following sources: sync each when it is due, back off after failures
//! (the poll interval doubled per failure in a row, at most 5 minutes),
//! record every outcome in the source's state, and publish a new snapshot
//! version after a pass that changed the store.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::state::{self, SourceState};
use super::{sync, SourceConfig, SyncReport};
use crate::error::Result;
use crate::home::Home;
use crate::snapshot::{self, Manifest};
use crate::store::Store;
use crate::timestamp;

/// The longest wait between two tries of a failing source.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

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
    /// The version published, if any, and how long its export took.
    pub published: Option<(Manifest, Duration)>,
}

/// Follows a set of sources into the store of a home.
pub struct Follower {
    home: Home,
    sources: Vec<SourceConfig>,
    due: HashMap<String, Instant>,
    failures: HashMap<String, u32>,
    /// Whether the first pass has compared the store with the current version.
    caught_up: bool,
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
    /// publishes a snapshot version if any added something, or if the store
    /// holds more than the current version (a sync whose publication was
    /// cut short). Returns the outcomes and the version published, if any.
    pub fn pass(&mut self, all: bool) -> Result<Pass> {
        let mut store = Store::open(&self.home.store_path())?;
        let now = Instant::now();
        let mut outcomes = Vec::new();
        for source in &self.sources {
            if !all && self.due.get(&source.id).is_some_and(|d| *d > now) {
                continue;
            }
            let result = sync(&mut store, source);
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
        let behind = !self.caught_up && behind(&store, &self.home)?;
        self.caught_up = true;
        let published = if changed || behind {
            let started = Instant::now();
            let manifest = snapshot::export(&store, &self.home.snapshot_root())?;
            Some((manifest, started.elapsed()))
        } else {
            None
        };
        Ok(Pass {
            outcomes,
            published,
        })
    }
}

/// Whether the store holds trades or snapshots the current version lacks.
fn behind(store: &Store, home: &Home) -> Result<bool> {
    let Some((_, manifest)) = snapshot::current(&home.snapshot_root())? else {
        return Ok(store.trade_count()? > 0);
    };
    let (trades, snapshots) = store.counts()?;
    Ok(trades != manifest.trades || snapshots != manifest.snapshots)
}

/// Writes the outcome into the source's state.
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
            if source.kind != super::Kind::CexReporter {
                st.added_total += report.added;
            }
            if let Some(last) = report.rejected.last() {
                if source.kind != super::Kind::CexReporter {
                    st.rejected_total += report.rejected.len() as u64;
                    st.rejected = Some(last.clone());
                }
            }
        }
        Err(e) => st.error = Some(e.clone()),
    }
    store.write(|w| w.save_source_state(&st))
}

impl Follower {
    /// Follows until `stop` says so (or its sender is dropped): a pass
    /// whenever a source is due, `on_pass` told of each (or of why the
    /// pass itself failed: the store or the snapshot folder).
    pub fn run(
        &mut self,
        stop: &std::sync::mpsc::Receiver<()>,
        mut on_pass: impl FnMut(std::result::Result<&Pass, &crate::Error>),
    ) {
        use std::sync::mpsc::RecvTimeoutError;
        loop {
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
            let wait = self
                .next_due()
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(50));
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
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
