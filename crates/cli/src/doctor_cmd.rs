//! `tradebox doctor`: the Python runtime, host facts and every sandbox
//! layer, checked from inside a real sandboxed job; the data snapshot and
//! every followed source (last sync, lag, error); and, when Slack is
//! configured, its tokens (`auth.test`, `apps.connections.open`) and the
//! bot scopes tradebox needs.

use clap::Args;
use serde_json::json;
use tradebox_data::snapshot;
use tradebox_data::sources::{statuses, SourceStatus};
use tradebox_data::Home;
use tradebox_sandbox::{doctor, runtime, Job};

use crate::sandbox_setup;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  tradebox doctor
  tradebox doctor --json | jq '.layers[] | select(.active | not)'
  tradebox doctor --slack                 # only the Slack tokens and scopes
  tradebox doctor --store                 # only the shared store: reachable, schemas, clock

Exit codes: 0 every layer active, every followed source syncing (and Slack,
when configured, answers with every scope), 2 the sandbox cannot run here,
a source's last sync failed or the Slack settings are refused (with what to
change).")]
pub struct DoctorArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Check only the Slack connection (tokens and scopes), not the sandbox.
    #[arg(long)]
    slack: bool,
    /// Check only the shared store ([store] url): reachable, schema versions, clock skew.
    #[arg(long, conflicts_with = "slack")]
    store: bool,
}

/// The Slack part of the report.
struct SlackReport {
    /// `not_configured`, `ok`, `missing_scopes` or `error`.
    status: &'static str,
    mode: Option<&'static str>,
    identity: Option<tradebox_slack::Identity>,
    missing: Vec<&'static str>,
    error: Option<String>,
}

impl SlackReport {
    fn ok(&self) -> bool {
        matches!(self.status, "ok" | "not_configured")
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "status": self.status,
            "mode": self.mode,
            "bot": self.identity.as_ref().map(|i| json!({
                "user": i.user, "user_id": i.user_id, "team": i.team, "team_id": i.team_id,
            })),
            "scopes": self.identity.as_ref().and_then(|i| i.scopes.clone()),
            "required_scopes": tradebox_slack::REQUIRED_SCOPES,
            "missing_scopes": self.missing,
            "error": self.error,
        })
    }

    fn print(&self) {
        println!("\nslack");
        match (self.status, &self.identity) {
            ("not_configured", _) => println!(
                "  not configured (set SLACK_BOT_TOKEN and SLACK_APP_TOKEN; see \"Connect to Slack\" in the README)"
            ),
            ("error", _) => println!(
                "  FAIL {}",
                self.error.as_deref().unwrap_or("unknown error")
            ),
            (_, Some(i)) => {
                println!(
                    "  {:<28} ok   @{} ({}) in {} ({})",
                    self.mode.unwrap_or("slack"),
                    i.user,
                    i.user_id,
                    i.team,
                    i.team_id
                );
                match &i.scopes {
                    Some(scopes) => println!("  {:<28}      {}", "scopes", scopes.join(", ")),
                    None => println!("  {:<28}      (Slack did not list them)", "scopes"),
                }
                if !self.missing.is_empty() {
                    println!(
                        "  {:<28} FAIL missing {}",
                        "required scopes",
                        self.missing.join(", ")
                    );
                    println!(
                        "  {:<28}      -> add them under OAuth & Permissions > Bot Token Scopes \
                         (or from slack/manifest.yml), then reinstall the app",
                        ""
                    );
                }
            }
            _ => {}
        }
    }
}

fn slack_report(home: &Home) -> anyhow::Result<SlackReport> {
    let config = crate::app::config(home)?;
    let settings = match tradebox_slack::SlackSettings::from_env(&config.slack) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Ok(SlackReport {
                status: "not_configured",
                mode: None,
                identity: None,
                missing: Vec::new(),
                error: None,
            })
        }
        Err(e) => {
            return Ok(SlackReport {
                status: "error",
                mode: None,
                identity: None,
                missing: Vec::new(),
                error: Some(e.to_string()),
            })
        }
    };
    let mode = match settings.mode() {
        tradebox_slack::Mode::SocketMode => "socket mode",
        tradebox_slack::Mode::Http => "http endpoints",
    };
    let settings = tradebox_slack::SlackSettings {
        retry: tradebox_slack::RetryPolicy {
            attempts: 2,
            call_timeout: std::time::Duration::from_secs(10),
            ..tradebox_slack::RetryPolicy::default()
        },
        ..settings
    };
    let checked = crate::app::runtime()?.block_on(tradebox_slack::SlackApp::check(&settings));
    Ok(match checked {
        Ok(identity) => {
            let missing = identity.missing_scopes();
            SlackReport {
                status: if missing.is_empty() {
                    "ok"
                } else {
                    "missing_scopes"
                },
                mode: Some(mode),
                identity: Some(identity),
                missing,
                error: None,
            }
        }
        Err(e) => SlackReport {
            status: "error",
            mode: Some(mode),
            identity: None,
            missing: Vec::new(),
            error: Some(e.to_string()),
        },
    })
}

/// The data part of the report: the current snapshot and each source.
struct DataReport {
    snapshot: Option<tradebox_data::snapshot::Manifest>,
    sources: Vec<SourceStatus>,
}

impl DataReport {
    fn of(home: &Home) -> anyhow::Result<DataReport> {
        let config = crate::app::config(home)?;
        Ok(DataReport {
            snapshot: snapshot::current(&home.snapshot_root())?.map(|(_, m)| m),
            sources: statuses(home, &config.data.sources)?,
        })
    }

    fn ok(&self) -> bool {
        self.sources.iter().all(|s| s.error.is_none())
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "snapshot": self.snapshot.as_ref().map(|m| json!({
                "version": m.version,
                "trades": m.trades,
                "segments": m.segments.len(),
                "compaction_due": m.compaction(),
            })),
            "sources": self.sources,
        })
    }

    fn print(&self) {
        println!(
            "
data"
        );
        match &self.snapshot {
            Some(m) => println!(
                "  {:<28} ok   v{}: {} trades in {} segment(s){}",
                "snapshot",
                m.version,
                m.trades,
                m.segments.len().max(1),
                if m.compaction().is_some() {
                    ", compaction due"
                } else {
                    ""
                }
            ),
            None => println!(
                "  {:<28} none (run `tradebox data demo` or `tradebox data import`)",
                "snapshot"
            ),
        }
        for s in &self.sources {
            let name = format!("source {}", s.id);
            match &s.error {
                None => println!(
                    "  {name:<28} ok   {} {}, last sync {}, {} trades added",
                    s.kind.as_str(),
                    s.path.display(),
                    crate::data_cmd::ago(s.lag_seconds),
                    s.added_total
                ),
                Some(e) => println!(
                    "  {name:<28} FAIL {e} ({} failure(s) in a row; retried with backoff)",
                    s.failures
                ),
            }
        }
    }
}

fn run_slack_only(args: &DoctorArgs, home: &Home) -> anyhow::Result<u8> {
    let report = slack_report(home)?;
    if args.json {
        let out = json!({"slack": report.json(), "ok": report.ok()});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        report.print();
    }
    Ok(if report.ok() { 0 } else { 2 })
}

pub fn run(args: &DoctorArgs, home: &Home, quiet: bool) -> anyhow::Result<u8> {
    if args.slack {
        return run_slack_only(args, home);
    }
    if args.store {
        return crate::store_cmd::check(args.json, home);
    }
    let host = doctor::host_checks();
    let rt = sandbox_setup::runtime(home, quiet)?;
    let lock = runtime::lock_pins();
    let packages: Vec<_> = ["pandas", "numpy", "pyarrow", "matplotlib"]
        .iter()
        .map(|name| {
            let installed = rt.packages.get(*name).cloned();
            json!({"name": name, "version": installed, "pinned": lock.get(*name), "matches": installed.as_ref() == lock.get(*name)})
        })
        .collect();
    let (layers, pool, sandbox_error) = match sandbox_setup::start_pool_on(
        home,
        rt.clone(),
        sandbox_setup::PoolShape::single(),
        quiet,
    ) {
        Ok(pool) => {
            let probe = pool.run(Job {
                code: doctor::PROBE.to_string(),
                ..Job::default()
            })?;
            let value = probe
                .value
                .as_ref()
                .and_then(|v| v.get("value"))
                .cloned()
                .unwrap_or_default();
            let layers = if probe.success {
                doctor::interpret(&value)
            } else {
                Vec::new()
            };
            let error = (!probe.success).then(|| format!("{:?}", probe.error));
            (layers, Some(pool.status()), error)
        }
        Err(e) => (Vec::new(), None, Some(format!("{e:#}"))),
    };
    let all_active = !layers.is_empty() && layers.iter().all(|l| l.active);
    let data = DataReport::of(home)?;
    let slack = slack_report(home)?;
    if args.json {
        let out = json!({
            "python": {"version": rt.version, "venv": rt.venv, "base_prefix": rt.base_prefix},
            "packages": packages,
            "host": host,
            "memory_limits": doctor::cgroup_mode(),
            "layers": layers,
            "pool": pool,
            "sandbox_error": sandbox_error,
            "data": data.json(),
            "slack": slack.json(),
            "ok": all_active && data.ok() && slack.ok(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("python     {} ({})", rt.version, rt.venv.display());
        // The zygote says how many of its objects it made immortal: none on
        // a Python without immortal objects.
        let immortal = pool
            .as_ref()
            .and_then(|p| p.first())
            .and_then(|s| s.immortal);
        if immortal == Some(0) {
            println!(
                "           (with Python 3.12 or 3.13, e.g. TRADEBOX_PYTHON=python3.13, each \
                 job's worker copies about a third less memory)"
            );
        }
        let pkgs: Vec<String> = packages
            .iter()
            .map(|p| {
                format!(
                    "{} {}{}",
                    p["name"].as_str().unwrap_or(""),
                    p["version"].as_str().unwrap_or("missing"),
                    if p["matches"] == true {
                        ""
                    } else {
                        " (differs from the lock)"
                    }
                )
            })
            .collect();
        println!("packages   {}", pkgs.join(", "));
        println!("\nhost");
        for c in &host {
            println!(
                "  {:<28} {} {}",
                c.name,
                if c.ok { "ok  " } else { "FAIL" },
                c.detail
            );
            if let Some(a) = &c.advice {
                println!("  {:<28}      -> {a}", "");
            }
        }
        println!("\nsandbox layers (checked from inside a sandboxed job)");
        for l in &layers {
            println!(
                "  {:<28} {} {}",
                l.name,
                if l.active { "active  " } else { "INACTIVE" },
                l.detail
            );
        }
        if let Some(e) = &sandbox_error {
            println!("  the sandbox could not run: {e}");
        }
        if let Some(pool) = &pool {
            for (i, s) in pool.iter().enumerate() {
                println!(
                    "\npool       zygote {i}: pid {}, RSS {} MiB",
                    s.pid.map_or("-".into(), |p| p.to_string()),
                    s.rss_kb.map_or("-".into(), |k| (k / 1024).to_string())
                );
            }
        }
        data.print();
        slack.print();
        println!(
            "\n{}",
            if all_active {
                "every layer is active"
            } else {
                "the sandbox is NOT fully active: tradebox refuses to run code here"
            }
        );
        if !data.ok() {
            println!("a data source needs attention (see above)");
        }
        if !slack.ok() {
            println!("the Slack settings need attention (see above)");
        }
    }
    Ok(if all_active && data.ok() && slack.ok() {
        0
    } else {
        2
    })
}
