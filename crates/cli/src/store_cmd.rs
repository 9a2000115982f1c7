//! `tradebox store`: the shared store of functions, audit and rate-limit
//! counters (`[store] url`): `migrate` makes or migrates its tables (each
//! component under a lock, so replicas starting together migrate once; a
//! start does the same), `check` reads it without changing it: whether it
//! answers, its schema versions against this build's, and the database
//! server's clock against this machine's (`tradebox doctor --store` is the
//! same check), and `copy` moves an existing store into an empty one (the
//! functions with their whole history, deleted ones too, and the audit
//! trail), verified by counts.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use tradebox_core::audit::AuditLog;
use tradebox_core::deliveries::Deliveries;
use tradebox_core::functions::FunctionStore;
use tradebox_core::leases::Leases;
use tradebox_core::ratelimit::RateLimiter;
use tradebox_core::store::{inspect, StoreReport, StoreUrl};
use tradebox_data::Home;
use tradebox_data::Store;

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
    /// Copy a store into an empty one: functions (with their history, deleted ones
    /// too) and the audit trail, then compare the counts.
    #[command(after_help = "Examples:
  tradebox store copy --from sqlite:$HOME/.local/share/tradebox/tradebox.db \\
                      --to postgres://tradebox:pw@db:5432/tradebox
  tradebox store copy --to postgres://tradebox:pw@db:5432/tradebox   # from [store] url / the home

The destination's tables are made if needed; it must hold no function and no audit
row (nothing is merged). Rate-limit counters and the record of Slack deliveries are
not copied: they only matter for minutes. The trades stay where they are.

Exit codes: 0 copied and the counts match, 2 a store cannot be used, the destination
is not empty, or the counts differ.")]
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The store to copy (sqlite:PATH or postgres://...) [default: [store] url, else the home's file]
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// The store to copy into (sqlite:PATH or postgres://...).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
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
        StoreCommand::Copy(args) => copy(args, home),
    }
}

fn parse(url: &str, what: &str) -> anyhow::Result<StoreUrl> {
    StoreUrl::parse(url)
        .map_err(|e| crate::sandbox_setup::SetupError(format!("--{what} {e}")).into())
}

fn copy(args: &CopyArgs, home: &Home) -> anyhow::Result<u8> {
    let config = app::config(home)?;
    let from = match &args.from {
        Some(url) => parse(url, "from")?,
        None => app::store_url(home, &config)?,
    };
    let to = parse(&args.to, "to")?;
    if from == to {
        eprintln!(
            "error: --from and --to are the same store ({})",
            to.redacted()
        );
        return Ok(2);
    }
    let open = |url: &StoreUrl| -> anyhow::Result<(FunctionStore, AuditLog)> {
        let functions = FunctionStore::connect(url)
            .with_context(|| format!("opening the functions at {}", url.redacted()))?;
        let audit = AuditLog::connect(url)
            .with_context(|| format!("opening the audit trail at {}", url.redacted()))?;
        Ok((functions, audit))
    };
    let ((src_functions, src_audit), (dst_functions, dst_audit)) = match (open(&from), open(&to)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    // Deliveries and rate-limit tables are made too, so the copy is a whole store.
    if let Err(e) = Deliveries::connect(&to)
        .and_then(|_| RateLimiter::connect(&to, &config.rate_limit))
        .and_then(|_| Leases::connect(&to, &app::replica_name(&config)))
    {
        eprintln!("error: {}: {e}", to.redacted());
        return Ok(2);
    }
    // Trades and balance snapshots go from a SQLite store into a shared
    // PostgreSQL one (checked empty before anything is copied).
    let trades_into = match (&from, &to) {
        (StoreUrl::Sqlite(path), StoreUrl::Postgres(pg)) => {
            let opened = tradebox_data::shared::Shared::open(pg).and_then(|shared| {
                match shared.trade_count()? {
                    0 => Ok((shared, Store::open(path)?)),
                    n => Err(tradebox_data::Error::InvalidArgument(format!(
                        "the shared store already holds {n} trades; trades are copied only into an empty one"
                    ))),
                }
            });
            match opened {
                Ok(pair) => Some(pair),
                Err(e) => {
                    eprintln!("error: {}: {e}", to.redacted());
                    return Ok(2);
                }
            }
        }
        _ => None,
    };
    let copied = src_functions
        .copy_into(&dst_functions)
        .and_then(|(functions, versions)| {
            src_audit
                .copy_into(&dst_audit)
                .map(|audit| (functions, versions, audit))
        });
    let (functions, versions, audit) = match copied {
        Ok(counts) => counts,
        Err(e) => {
            eprintln!("error: copying into {}: {e}", to.redacted());
            return Ok(2);
        }
    };
    // The trades last: (read from the source, now in the shared store).
    let trades = match trades_into {
        Some((shared, mut local)) => {
            let source = local.counts()?;
            match shared.copy_from(&mut local) {
                Ok(copied) => Some((source, copied)),
                Err(e) => {
                    eprintln!("error: copying the trades into {}: {e}", to.redacted());
                    return Ok(2);
                }
            }
        }
        None => None,
    };
    // The counts, read back from both sides.
    let counts = |f: &FunctionStore, a: &AuditLog| -> anyhow::Result<(u64, u64)> {
        Ok((f.stats()?.total_functions, a.count()?))
    };
    let (src_live, src_rows) = counts(&src_functions, &src_audit)?;
    let (dst_live, dst_rows) = counts(&dst_functions, &dst_audit)?;
    let matched = src_live == dst_live
        && src_rows == dst_rows
        && audit == dst_rows
        && trades.is_none_or(|(source, copied)| source == copied);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "from": from.redacted(), "to": to.redacted(),
                "functions": functions, "versions": versions, "audit_rows": audit,
                "live_functions": {"from": src_live, "to": dst_live},
                "audit_count": {"from": src_rows, "to": dst_rows},
                "trades": trades.map(|((t, s), (ct, cs))| json!({
                    "from": {"trades": t, "snapshots": s}, "to": {"trades": ct, "snapshots": cs},
                })),
                "ok": matched,
            }))?
        );
    } else {
        println!("copied {} into {}", from.redacted(), to.redacted());
        println!(
            "  functions   {functions} ({src_live} live, {} deleted), {versions} versions",
            functions - src_live
        );
        println!("  audit rows  {audit}");
        match trades {
            Some((_, (t, s))) => println!("  trades      {t}, {s} balance snapshots"),
            None => println!(
                "  trades      not copied (they move from a SQLite store into a PostgreSQL one)"
            ),
        }
        if matched {
            println!("  counts      match ({dst_live} live functions, {dst_rows} audit rows)");
        } else {
            println!(
                "  counts      DIFFER: live functions {src_live} -> {dst_live}, audit rows {src_rows} -> {dst_rows}{}",
                trades.map_or(String::new(), |((t, s), (ct, cs))| format!(
                    ", trades {t} -> {ct}, balance snapshots {s} -> {cs}"
                ))
            );
        }
    }
    Ok(if matched { 0 } else { 2 })
}

fn migrate(args: &StoreArgs, home: &Home) -> anyhow::Result<u8> {
    let config = app::config(home)?;
    let url = app::store_url(home, &config)?;
    let opened = FunctionStore::connect(&url)
        .and_then(|_| AuditLog::connect(&url))
        .and_then(|_| RateLimiter::connect(&url, &config.rate_limit))
        .and_then(|_| Deliveries::connect(&url))
        .and_then(|_| Leases::connect(&url, &app::replica_name(&config)))
        .map_err(anyhow::Error::from)
        .and_then(|_| match &url {
            StoreUrl::Postgres(pg) => tradebox_data::shared::Shared::open(pg)
                .map(drop)
                .map_err(anyhow::Error::from),
            StoreUrl::Sqlite(_) => Ok(()),
        })
        .and_then(|()| inspect(&url).map_err(anyhow::Error::from));
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
        "tls": report.tls,
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
                tls: None,
            },
            Some(e.to_string()),
        ),
    };
    let ok = error.is_none() && verdict(&report);
    // What the shared trade store is at, and what each replica serves.
    let registry = match (&url, &error) {
        (StoreUrl::Postgres(pg), None) => registry(pg),
        _ => None,
    };
    if json {
        let mut out = report_json(&report, error.as_deref());
        if let Some((state, replicas)) = &registry {
            out["trades"] = json!({"generation": state.generation, "replicas": replicas});
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
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
    if let Some(tls) = &report.tls {
        println!("  {:<20} {tls}", "encryption");
    }
    if let Some((state, replicas)) = &registry {
        println!("  {:<20} generation {}", "shared trades", state.generation);
        for r in replicas {
            let status = if r.generation == state.generation {
                "current"
            } else {
                "behind"
            };
            println!(
                "  {:<20} generation {}, snapshot v{} ({} trades), recorded {:.0} s ago: {status}",
                format!("replica {}", r.replica),
                r.generation,
                r.version,
                r.trades,
                r.age_seconds
            );
        }
    }
    Ok(if ok { 0 } else { 2 })
}

/// The shared trade store's generation and its replicas' registry, when
/// the store has them (`None` when unreadable: the checks above say why).
fn registry(
    url: &str,
) -> Option<(
    tradebox_data::shared::SharedState,
    Vec<tradebox_data::shared::ReplicaSnapshot>,
)> {
    let shared = tradebox_data::shared::Shared::open_existing(url).ok()??;
    Some((shared.state().ok()?, shared.replicas().ok()?))
}
