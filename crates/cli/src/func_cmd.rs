//! `tradebox func ...`: manage saved functions from the command line. Saving,
//! running, listing and deleting go through the same pipeline as Slack (so
//! permissions, validation, rate limits and the audit trail apply); show,
//! history, rename, export and import use the function store directly.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use tradebox_core::audit::{Action, AuditEntry, Outcome, Source};
use tradebox_core::command::{self, Command};
use tradebox_core::pipeline::{Input, Request};
use tradebox_data::Home;

use crate::app;
use crate::chat_cmd::{self, Format};
use crate::sandbox_setup::SetupError;

#[derive(Debug, Subcommand)]
pub enum FuncCommand {
    /// Save a function (each save is a new version).
    #[command(after_help = "Examples:
  tradebox func save weekly_volume -d 'Volume by exchange this week' -c \"result = load_trades(days=7).groupby('exchange')['amount'].sum()\"
  tradebox func save pnl -d 'Net position per account' pnl.py")]
    Save(SaveArgs),
    /// Run a function with optional key=value arguments (they reach the code as `params`).
    #[command(after_help = "Example:
  tradebox func run weekly_volume days=14 exchange=mexc")]
    Run(RunArgs),
    /// List functions, most used first, or search names and descriptions.
    #[command(after_help = "Examples:
  tradebox func list
  tradebox func list volume --page 2")]
    List(ListArgs),
    /// Show a function's code and details.
    #[command(after_help = "Example:
  tradebox func show weekly_volume")]
    Show(NameArgs),
    /// Every version of a function, oldest first (deleted functions too).
    #[command(after_help = "Example:
  tradebox func history weekly_volume")]
    History(NameArgs),
    /// Delete a function (kept in its history).
    #[command(after_help = "Example:
  tradebox func delete weekly_volume")]
    Delete(NameArgs),
    /// Rename a function.
    #[command(after_help = "Example:
  tradebox func rename weekly_volume volume_7d")]
    Rename(RenameArgs),
    /// Export all functions as JSON (to stdout or a file).
    #[command(after_help = "Example:
  tradebox func export -o functions.json")]
    Export(ExportArgs),
    /// Import functions from an export (new versions; unchanged ones are skipped).
    #[command(after_help = "Example:
  tradebox func import functions.json")]
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Function name: letters, digits, underscore, 1-64 characters.
    name: String,
    /// What the function answers.
    #[arg(short, long, default_value = "")]
    description: String,
    /// The code.
    #[arg(short = 'c', long = "code", conflicts_with = "file")]
    code: Option<String>,
    /// A file with the code, or - for standard input.
    file: Option<PathBuf>,
    /// Save as this user [default: console.user of the config].
    #[arg(long)]
    user: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    name: String,
    /// Arguments, key=value.
    #[arg(value_name = "KEY=VALUE")]
    params: Vec<String>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Search names and descriptions (case-insensitive).
    query: Option<String>,
    #[arg(long, default_value_t = 1)]
    page: usize,
    /// Print the functions as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    name: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[arg(long)]
    user: Option<String>,
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    old: String,
    new: String,
    #[arg(long)]
    user: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to this file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A file written by `tradebox func export` (or - for stdin).
    file: PathBuf,
    #[arg(long)]
    user: Option<String>,
}

fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| SetupError(format!("{}: {e}", path.display())).into())
    }
}

/// Runs a command through the pipeline and prints the reply.
fn through_pipeline(
    home: &Home,
    user: Option<String>,
    cmd: Command,
    format: Format,
    quiet: bool,
) -> anyhow::Result<u8> {
    let config = app::config(home)?;
    let pipeline = app::pipeline(home, &config, cmd.executes_code().then_some(1), quiet)?;
    let request = Request {
        user: user.unwrap_or_else(|| config.console.user.clone()),
        channel: None,
        source: Source::Cli,
        input: Input::Line(String::new()),
    };
    let reply = app::runtime()?.block_on(pipeline.handle_command(&request, cmd, false, |_| {}));
    chat_cmd::print(&reply, format)?;
    Ok(if reply.error { 1 } else { 0 })
}

fn usage(e: command::UsageError) -> anyhow::Error {
    SetupError(e.to_string()).into()
}

pub fn run(cmd: &FuncCommand, home: &Home, quiet: bool) -> anyhow::Result<u8> {
    match cmd {
        FuncCommand::Save(a) => {
            command::validate_name(&a.name).map_err(usage)?;
            let code = match (&a.code, &a.file) {
                (Some(code), _) => code.clone(),
                (None, Some(path)) => read_input(path)?,
                (None, None) => {
                    return Err(
                        SetupError("no code given: pass -c CODE, a FILE, or -".into()).into(),
                    )
                }
            };
            if code.trim().is_empty() {
                return Err(SetupError("the code is empty".into()).into());
            }
            let cmd = Command::SaveFunc {
                name: a.name.clone(),
                description: a.description.clone(),
                code,
            };
            through_pipeline(home, a.user.clone(), cmd, Format::Text, quiet)
        }
        FuncCommand::Run(a) => {
            command::validate_name(&a.name).map_err(usage)?;
            let params = tradebox_core::params::parse_params(&a.params.join(" "))
                .map_err(|e| SetupError(e.to_string()))?;
            let cmd = Command::RunFunc {
                name: Some(a.name.clone()),
                params,
            };
            through_pipeline(home, a.user.clone(), cmd, a.format, quiet)
        }
        FuncCommand::List(a) => {
            if a.json {
                let store = app::functions(home, &app::config(home)?)?;
                let funcs = match &a.query {
                    Some(q) => store.search(q, 1000, 0)?,
                    None => store.list(1000, 0)?,
                };
                println!("{}", serde_json::to_string_pretty(&funcs)?);
                return Ok(0);
            }
            let cmd = Command::ListFuncs {
                query: a.query.clone(),
                page: a.page.max(1),
            };
            through_pipeline(home, None, cmd, Format::Text, quiet)
        }
        FuncCommand::Delete(a) => {
            let cmd = Command::DelFunc {
                name: a.name.clone(),
            };
            through_pipeline(home, a.user.clone(), cmd, Format::Text, quiet)
        }
        FuncCommand::Show(a) => {
            let store = app::functions(home, &app::config(home)?)?;
            let Some(f) = store.get(&a.name)? else {
                return Err(not_found(&store, &a.name));
            };
            if a.json {
                println!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                println!("name         {}", f.name);
                println!("description  {}", f.description);
                println!(
                    "version      {} (saved by {} at {})",
                    f.version,
                    f.updated_by.as_deref().unwrap_or(&f.created_by),
                    f.updated_at.as_deref().unwrap_or(&f.created_at)
                );
                println!("created      by {} at {}", f.created_by, f.created_at);
                println!(
                    "used         {}x (last {})",
                    f.use_count,
                    f.last_used.as_deref().unwrap_or("never")
                );
                println!("\n{}", f.code);
            }
            Ok(0)
        }
        FuncCommand::History(a) => {
            let store = app::functions(home, &app::config(home)?)?;
            let versions = store.history(&a.name)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&versions)?);
            } else {
                for v in &versions {
                    println!(
                        "v{:<4} {:<8} {:<26} by {:<12} {}",
                        v.version,
                        v.action.as_str(),
                        v.saved_at,
                        v.saved_by,
                        v.name
                    );
                }
            }
            Ok(0)
        }
        FuncCommand::Rename(a) => {
            command::validate_name(&a.new).map_err(usage)?;
            let config = app::config(home)?;
            let user = a
                .user
                .clone()
                .unwrap_or_else(|| config.console.user.clone());
            let admin = app::permissions(&config).is_admin(&user);
            let store = app::functions(home, &config)?;
            let mut entry = AuditEntry::new(user.clone(), Source::Cli, Action::Rename, Outcome::Ok);
            entry.function_name = Some(a.old.clone());
            entry.detail = Some(format!("renamed to {}", a.new));
            let result = store.rename(&a.old, &a.new, &user, admin);
            if let Err(e) = &result {
                entry.outcome = Outcome::Error;
                entry.detail = Some(e.to_string());
            }
            app::audit(home, &config)?.record(&entry)?;
            let f = result?;
            println!(
                "renamed `{}` to `{}` (version {})",
                a.old, f.name, f.version
            );
            Ok(0)
        }
        FuncCommand::Export(a) => {
            let json = serde_json::to_string_pretty(
                &app::functions(home, &app::config(home)?)?.export()?,
            )?;
            match &a.output {
                Some(path) => {
                    std::fs::write(path, json + "\n")
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("exported to {}", path.display());
                }
                None => println!("{json}"),
            }
            Ok(0)
        }
        FuncCommand::Import(a) => {
            let text = read_input(&a.file)?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| SetupError(format!("{}: not JSON: {e}", a.file.display())))?;
            let config = app::config(home)?;
            let user = a
                .user
                .clone()
                .unwrap_or_else(|| config.console.user.clone());
            // An import may replace anyone's functions: admins only.
            if !app::permissions(&config).is_admin(&user) {
                return Err(SetupError(format!(
                    "importing functions may replace other users' code, so it needs an admin; \
                     {user} is not one (see [permissions] admins in docs/configuration.md)"
                ))
                .into());
            }
            let report = app::functions(home, &config)?.import(&value, &user)?;
            let mut entry = AuditEntry::new(user, Source::Cli, Action::Import, Outcome::Ok);
            let summary = format!(
                "{} created, {} updated, {} unchanged",
                report.created.len(),
                report.updated.len(),
                report.unchanged.len()
            );
            entry.detail = Some(summary.clone());
            app::audit(home, &config)?.record(&entry)?;
            println!("imported: {summary}");
            Ok(0)
        }
    }
}

fn not_found(store: &tradebox_core::functions::FunctionStore, name: &str) -> anyhow::Error {
    let close = store.suggest(name, 3).unwrap_or_default();
    let hint = if close.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", close.join(", "))
    };
    SetupError(format!("function `{name}` not found{hint}")).into()
}
