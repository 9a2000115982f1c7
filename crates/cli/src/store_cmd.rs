//! `tradebox store`: the shared store of functions, audit and rate-limit
//! counters (`[store] url`): `migrate` makes or migrates its tables (each
//! component under a lock, so replicas starting together migrate once; a
//! start does the same), `check` reads it without changing it: whether it
//! answers, its schema versions against this build's, and the database
//! server's clock against this machine's. `tradebox doctor --store` is the
//! same check.

use clap::{Args, Subcommand};
use serde_json::json;
use tradebox_core::audit::AuditLog;
use tradebox_core::deliveries::Deliveries;
use tradebox_core::functions::FunctionStore;
use tradebox_core::ratelimit::RateLimiter;
use tradebox_core::store::{inspect, StoreReport};
use tradebox_data::Home;

use crate::app;

/// The clock skew over which `check` fails.
pub const MAX_SKEW_MS: i64 = 1000;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Make or migrate the store's tables now (a start does it too).
    #[command(after_help = "Examples:
  TRADEBOX_STORE_URL=postgres://tradebox:pw@db:5432/tradebox tradebox store migrate
  tradebox store migrate --json

Exit codes: 0 migrated (or already current), 2 the store cannot be reached or refused.")]
    Migrate(StoreArgs),
    /// Check the store without changing it: reachable, schema versions, clock skew.
    #[command(after_help = "Examples:
  tradebox store check
  tradebox doctor --store --json

Exit codes: 0 reachable, every schema at this build's version (or none made yet on a
new database) and the server's clock within 1 s of this machine's; 2 otherwise.")]
    Check(StoreArgs),
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: &StoreCommand, home: &Home) -> anyhow::Result<u8> {
    match cmd {
        StoreCommand::Migrate(args) => migrate(args, home),
        StoreCommand::Check(args) => check(args.json, home),
    }
}

fn migrate(args: &StoreArgs, home: &Home) -> anyhow::Result<u8> {
    let config = app::config(home)?;
    let url = app::store_url(home, &config)?;
    let opened = FunctionStore::connect(&url)
        .and_then(|_| AuditLog::connect(&url))
        .and_then(|_| RateLimiter::connect(&url, &config.rate_limit))
        .and_then(|_| Deliveries::connect(&url))
        .and_then(|_| inspect(&url));
    let report = match opened {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {}: {e}", url.redacted());
            return Ok(2);
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report_json(&report, None))?
        );
    } else {
        println!("store {}: current", report.target);
        for (name, found, _) in &report.schemas {
            println!("  {name:<12} v{found}");
        }
    }
    Ok(0)
}

fn report_json(report: &StoreReport, error: Option<&str>) -> serde_json::Value {
    json!({
        "target": report.target,
        "reachable": error.is_none(),
        "error": error,
        "schemas": report.schemas.iter().map(|(name, found, wanted)| json!({
            "component": name, "version": found, "this_build": wanted,
            "ok": found == wanted || *found == 0,
        })).collect::<Vec<_>>(),
        "clock_skew_ms": report.clock_skew_ms,
        "ok": error.is_none() && verdict(report),
    })
}

/// Schemas at this build's version (or not made yet) and the clock close.
fn verdict(report: &StoreReport) -> bool {
    report
        .schemas
        .iter()
        .all(|(_, found, wanted)| found == wanted || *found == 0)
        && report.clock_skew_ms.is_none_or(|s| s.abs() <= MAX_SKEW_MS)
}

/// `store check` and `doctor --store`; the exit code.
pub fn check(json: bool, home: &Home) -> anyhow::Result<u8> {
    let config = app::config(home)?;
    let url = app::store_url(home, &config)?;
    let (report, error) = match inspect(&url) {
        Ok(report) => (report, None),
        Err(e) => (
            StoreReport {
                target: url.redacted(),
                schemas: Vec::new(),
                clock_skew_ms: None,
            },
            Some(e.to_string()),
        ),
    };
    let ok = error.is_none() && verdict(&report);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report_json(&report, error.as_deref()))?
        );
        return Ok(if ok { 0 } else { 2 });
    }
    println!("store {}", report.target);
    match &error {
        Some(e) => println!("  {:<20} FAIL {e}", "reachable"),
        None => println!("  {:<20} ok", "reachable"),
    }
    for (name, found, wanted) in &report.schemas {
        let line = match (found, wanted) {
            (0, _) => format!("not made yet (the first start makes v{wanted})"),
            (f, w) if f == w => format!("v{f} ok"),
            (f, w) if f < w => {
                format!("v{f}, this build uses v{w}: FAIL (run `tradebox store migrate`)")
            }
            (f, w) => format!("v{f}, newer than this build's v{w}: FAIL (upgrade this tradebox)"),
        };
        println!("  {:<20} {line}", format!("schema {name}"));
    }
    if let Some(skew) = report.clock_skew_ms {
        let verdict = if skew.abs() <= MAX_SKEW_MS {
            "ok".to_string()
        } else {
            format!("FAIL (over {MAX_SKEW_MS} ms: synchronise this machine's clock, e.g. with NTP)")
        };
        println!("  {:<20} {skew:+} ms {verdict}", "clock skew");
    }
    Ok(if ok { 0 } else { 2 })
}
