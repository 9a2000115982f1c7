//! The service's metrics in the Prometheus (OpenMetrics) text format, for
//! `GET /metrics`: what the pipeline counts as commands end (counted where
//! their audit row is written, so the two agree unless writing the row
//! failed, which is logged), and gauges read at scrape time from the
//! executor and the snapshot.
//!
//! Labels are bounded sets: actions, sources and outcomes are the audit
//! trail's names (a name outside them counts as `other`), refusal kinds are
//! [`RefusalKind`]'s; no user, channel, function name or code is ever a
//! label.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::audit::{Action, AuditEntry, Outcome, Source};
use crate::executor::ExecutorStatus;
use crate::pipeline::RefusalKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    action: &'static str,
    source: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type Histograms = Family<ActionLabels, Histogram, fn() -> Histogram>;

/// What the metrics read at scrape time, besides the executor.
#[derive(Debug, Clone, Default)]
pub struct SnapshotGauges {
    /// The newest published snapshot version (none published: `None`).
    pub published: Option<u64>,
    /// Seconds since that version was published, while some worker still
    /// serves an older one; 0 once every worker serves it.
    pub lag_seconds: f64,
}

/// The counters and gauges; one per pipeline (see the module documentation).
pub struct Metrics {
    registry: Registry,
    commands: Family<CommandLabels, Counter>,
    durations: Histograms,
    refusals: Family<KindLabels, Counter>,
    workers: Gauge,
    workers_up: Gauge,
    workers_busy: Gauge,
    queued: Gauge,
    restarts: Gauge,
    jobs: Gauge,
    served_version: Gauge,
    published_version: Gauge,
    lag: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A name from `names`, or `other`: label values stay a bounded set.
fn known(name: &str, names: &'static [&'static str]) -> &'static str {
    names
        .iter()
        .find(|n| **n == name)
        .copied()
        .unwrap_or("other")
}

fn seconds_buckets() -> Histogram {
    // 1 ms .. about 33 s, doubling.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tradebox");
        let commands = Family::<CommandLabels, Counter>::default();
        registry.register(
            "commands",
            "Commands that ended, by action, source and outcome (one per audit row)",
            commands.clone(),
        );
        let durations = Histograms::new_with_constructor(seconds_buckets as fn() -> Histogram);
        registry.register(
            "command_duration_seconds",
            "How long commands that ran code took, from the request to the answer",
            durations.clone(),
        );
        let refusals = Family::<KindLabels, Counter>::default();
        registry.register(
            "refusals",
            "Code runs refused before they ran, by why (permission, validation, rate_limit, \
             busy: the user's own places in line are full, overloaded: the pool's queue is \
             full, unavailable)",
            refusals.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let workers = gauge(
            "workers",
            "Sandbox workers (zygotes) the pool runs when whole",
        );
        let workers_up = gauge("workers_up", "Sandbox workers able to take a job now");
        let workers_busy = gauge("workers_busy", "Sandbox workers running a job now");
        let queued = gauge("queue_depth", "Jobs waiting for a sandbox worker");
        let restarts = gauge(
            "zygote_restarts",
            "Sandbox workers replaced since the start (died, stuck or retired)",
        );
        let jobs = gauge("jobs", "Jobs the sandbox pool answered since the start");
        let served_version = gauge(
            "snapshot_served_version",
            "The oldest snapshot version a sandbox worker serves (0: none)",
        );
        let published_version = gauge(
            "snapshot_published_version",
            "The newest published snapshot version (0: none)",
        );
        let lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "snapshot_lag_seconds",
            "Seconds since the newest version was published while a worker still serves \
             an older one (0: every worker serves it)",
            lag.clone(),
        );
        Metrics {
            registry,
            commands,
            durations,
            refusals,
            workers,
            workers_up,
            workers_busy,
            queued,
            restarts,
            jobs,
            served_version,
            published_version,
            lag,
        }
    }

    /// Counts an audit row as it is written.
    pub fn command(&self, entry: &AuditEntry) {
        let action = known(entry.action.as_str(), Action::NAMES);
        self.commands
            .get_or_create(&CommandLabels {
                action,
                source: known(entry.source.as_str(), Source::NAMES),
                outcome: known(entry.outcome.as_str(), Outcome::NAMES),
            })
            .inc();
        let ran_code = matches!(
            entry.action,
            Action::Analyze | Action::Runfunc | Action::RunButton
        );
        if let (true, Some(ms)) = (ran_code, entry.duration_ms) {
            self.durations
                .get_or_create(&ActionLabels { action })
                .observe(Duration::from_millis(ms).as_secs_f64());
        }
    }

    /// Counts a refusal of a code run.
    pub fn refused(&self, kind: RefusalKind) {
        self.refusals
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// The text exposition, the gauges set from `executor` and `snapshot`
    /// first.
    pub fn render(&self, executor: Option<&ExecutorStatus>, snapshot: &SnapshotGauges) -> String {
        let n = |x: usize| i64::try_from(x).unwrap_or(i64::MAX);
        let v = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        let e = executor.cloned().unwrap_or_default();
        self.workers.set(n(e.workers));
        self.workers_up.set(n(e.up));
        self.workers_busy.set(n(e.busy));
        self.queued.set(n(e.queued));
        self.restarts.set(v(e.restarts));
        self.jobs.set(v(e.jobs));
        let served = e.versions.iter().map(|x| x.unwrap_or(0)).min().unwrap_or(0);
        self.served_version.set(v(served));
        self.published_version
            .set(v(snapshot.published.unwrap_or(0)));
        self.lag.set(snapshot.lag_seconds);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: Action, outcome: Outcome, ms: Option<u64>) -> AuditEntry {
        let mut e = AuditEntry::new("U1", Source::Api, action, outcome);
        e.duration_ms = ms;
        e
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn commands_are_counted_by_action_source_and_outcome() {
        let m = Metrics::new();
        m.command(&entry(Action::Analyze, Outcome::Ok, Some(12)));
        m.command(&entry(Action::Analyze, Outcome::Ok, Some(3000)));
        m.command(&entry(Action::Analyze, Outcome::Timeout, Some(30_000)));
        m.command(&entry(Action::Savefunc, Outcome::Ok, Some(2)));
        let text = m.render(None, &SnapshotGauges::default());
        assert_eq!(
            line(
                &text,
                "tradebox_commands_total{action=\"analyze\",source=\"api\",outcome=\"ok\"}"
            ),
            Some("tradebox_commands_total{action=\"analyze\",source=\"api\",outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(text.contains("outcome=\"timeout\"} 1"), "{text}");
        // Only runs of code have a duration.
        assert!(
            text.contains("tradebox_command_duration_seconds_count{action=\"analyze\"} 3"),
            "{text}"
        );
        assert!(
            !text.contains("duration_seconds_count{action=\"savefunc\""),
            "{text}"
        );
        // 12 ms falls in the 16 ms bucket, not the 8 ms one.
        assert!(
            text.contains(
                "tradebox_command_duration_seconds_bucket{le=\"0.008\",action=\"analyze\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tradebox_command_duration_seconds_bucket{le=\"0.016\",action=\"analyze\"} 1"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn names_outside_the_audit_sets_count_as_other() {
        let m = Metrics::new();
        let mut e = entry(
            Action::Other("made up".into()),
            Outcome::Other("odd".into()),
            None,
        );
        e.source = Source::Other("somewhere".into());
        m.command(&e);
        let text = m.render(None, &SnapshotGauges::default());
        assert!(
            text.contains(
                "tradebox_commands_total{action=\"other\",source=\"other\",outcome=\"other\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn gauges_come_from_the_executor_and_the_snapshot() {
        let m = Metrics::new();
        m.refused(RefusalKind::RateLimit);
        m.refused(RefusalKind::RateLimit);
        let status = ExecutorStatus {
            workers: 3,
            up: 2,
            busy: 1,
            queued: 4,
            jobs: 17,
            restarts: 1,
            versions: vec![Some(7), Some(6)],
        };
        let snapshot = SnapshotGauges {
            published: Some(7),
            lag_seconds: 1.5,
        };
        let text = m.render(Some(&status), &snapshot);
        for want in [
            "tradebox_refusals_total{kind=\"rate_limit\"} 2",
            "tradebox_workers 3",
            "tradebox_workers_up 2",
            "tradebox_workers_busy 1",
            "tradebox_queue_depth 4",
            "tradebox_jobs 17",
            "tradebox_zygote_restarts 1",
            "tradebox_snapshot_served_version 6",
            "tradebox_snapshot_published_version 7",
            "tradebox_snapshot_lag_seconds 1.5",
        ] {
            assert!(text.lines().any(|l| l == want), "{want} missing:\n{text}");
        }
        // No executor: zeros, not stale values.
        let text = m.render(None, &SnapshotGauges::default());
        assert!(text.lines().any(|l| l == "tradebox_workers 0"), "{text}");
    }
}
