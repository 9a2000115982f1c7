//! `tradebox audit`: read the audit trail.

use clap::Args;
use tradebox_core::audit::{Action, AuditFilter, Outcome};
use tradebox_data::Home;

use crate::app;
use crate::sandbox_setup::SetupError;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  tradebox audit                                  # the newest 50 entries
  tradebox audit --user U123 --since 2026-11-01
  tradebox audit --outcome refused_rate_limit --json

Outcomes: ok, error, timeout, not_found, refused_permission, refused_rate_limit,
refused_validation, refused_queue_full. Actions: analyze, runfunc, run_button,
savefunc, delfunc, rename, import, export, listfuncs.")]
pub struct AuditArgs {
    /// Only this user.
    #[arg(long)]
    user: Option<String>,
    /// Only entries at or after this time (ISO 8601 date or time, UTC).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only this outcome.
    #[arg(long)]
    outcome: Option<String>,
    /// Only this action.
    #[arg(long)]
    action: Option<String>,
    /// At most this many entries, newest first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON (one array) instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &AuditArgs, home: &Home) -> anyhow::Result<u8> {
    let config = app::config(home)?;
    let since = match &args.since {
        Some(t) => Some(
            tradebox_data::timestamp::parse(t).map_err(|e| SetupError(format!("--since: {e}")))?,
        ),
        None => None,
    };
    let known = |value: &Option<String>, names: &[&str], flag: &str| -> anyhow::Result<()> {
        match value {
            Some(v) if !names.contains(&v.as_str()) => {
                Err(SetupError(format!("{flag} {v:?} is not one of: {}", names.join(", "))).into())
            }
            _ => Ok(()),
        }
    };
    known(&args.outcome, Outcome::NAMES, "--outcome")?;
    known(&args.action, Action::NAMES, "--action")?;
    let filter = AuditFilter {
        user: args.user.clone(),
        since,
        outcome: args.outcome.as_deref().map(Outcome::from),
        action: args.action.as_deref().map(Action::from),
        limit: Some(args.limit),
    };
    let records = app::audit(home, &config)?.query(&filter)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(0);
    }
    if records.is_empty() {
        println!("no audit entries match");
        return Ok(0);
    }
    println!(
        "{:<26} {:<12} {:<8} {:<10} {:<18} {:<20} {:>8}  detail",
        "at", "user", "source", "action", "function", "outcome", "ms"
    );
    for r in &records {
        let e = &r.entry;
        let function = match (&e.function_name, e.function_version) {
            (Some(n), Some(v)) => format!("{n} v{v}"),
            (Some(n), None) => n.clone(),
            _ => "-".into(),
        };
        let detail: String = e
            .error_type
            .iter()
            .chain(e.detail.iter())
            .cloned()
            .collect::<Vec<_>>()
            .join(": ")
            .replace('\n', " ")
            .chars()
            .take(80)
            .collect();
        println!(
            "{:<26} {:<12} {:<8} {:<10} {:<18} {:<20} {:>8}  {}",
            r.at,
            e.user_id,
            e.source.to_string(),
            e.action.to_string(),
            function,
            e.outcome.to_string(),
            e.duration_ms.map_or("-".into(), |d| d.to_string()),
            detail
        );
    }
    Ok(0)
}
