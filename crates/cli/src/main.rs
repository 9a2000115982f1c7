//! The `tradebox` command: wires the crates together behind one CLI.

mod app;
mod audit_cmd;
mod chat_cmd;
mod config_cmd;
mod data_cmd;
mod doctor_cmd;
mod func_cmd;
mod malloc;
mod progress;
mod run_cmd;
mod sandbox_setup;
mod serve_cmd;
mod store_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tradebox_data::Home;

/// The heading of the options every command takes: listed after a
/// command's own.
const GLOBAL: &str = "Global options";

/// Ask questions of your exchange trade data with pandas snippets that run
/// in a kernel-enforced sandbox.
#[derive(Debug, Parser)]
#[command(name = "tradebox", version, about, long_about = None)]
#[command(after_help = "Examples:
  tradebox serve                          # the web console on demo data (start here)
  tradebox data demo --rows 200000        # a realistic demo history ending today
  tradebox data import trade_cache.db snapshots/
  tradebox data info
  tradebox run -c \"df = load_trades(days=7); result = df.groupby('exchange')['amount'].sum()\"
  tradebox doctor                         # the Python runtime and every sandbox layer
  tradebox config show                    # every setting, and where it came from

Environment: TRADEBOX_HOME (store, snapshots, runtime), TRADEBOX_RUNTIME (a
shared Python runtime folder), TRADEBOX_PYTHON (the python3 to build it from),
RUST_LOG (log filter).")]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = GLOBAL)]
    verbose: u8,

    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, help_heading = GLOBAL)]
    log_format: LogFormat,

    /// Hide progress bars.
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    quiet: bool,

    /// Where tradebox keeps its store and snapshots [default: the platform data dir, e.g. ~/.local/share/tradebox]
    #[arg(long, env = "TRADEBOX_HOME", global = true, value_name = "DIR", help_heading = GLOBAL)]
    home: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the trade store: import, demo data, info, snapshot.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Run a snippet in the sandbox and print its result.
    Run(run_cmd::RunArgs),
    /// Check the Python runtime and every sandbox layer.
    Doctor(doctor_cmd::DoctorArgs),
    /// Run one slash command through the same pipeline as Slack and the console.
    Chat(chat_cmd::ChatArgs),
    /// Manage saved functions: save, run, list, show, history, delete, rename, export, import.
    #[command(subcommand)]
    Func(func_cmd::FuncCommand),
    /// Read the audit trail of executions, saves, deletes and refusals.
    Audit(audit_cmd::AuditArgs),
    /// Serve the web console and HTTP API (and Slack when configured).
    Serve(serve_cmd::ServeArgs),
    /// Show the configuration: every setting, its value and where it came from.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// The shared store of functions, audit and rate limits: migrate, check.
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
    /// Internal: the sandbox launcher that becomes a confined Python zygote.
    #[command(name = "__zygote", hide = true)]
    Zygote {
        /// The launch spec (JSON).
        spec: String,
    },
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn home(cli: &Cli) -> anyhow::Result<Home> {
    let root = match &cli.home {
        Some(dir) => dir.clone(),
        None => directories::ProjectDirs::from("", "", "tradebox")
            .map(|d| d.data_dir().to_path_buf())
            .context("cannot find a home directory; set TRADEBOX_HOME or pass --home")?,
    };
    Ok(Home::new(root))
}

/// Runs the command; returns the exit code of a command that finished.
fn run(cli: &Cli) -> anyhow::Result<u8> {
    let home = home(cli)?;
    match &cli.command {
        Command::Data(cmd) => data_cmd::run(cmd, &home, cli.quiet).map(|()| 0),
        Command::Run(args) => run_cmd::run(args, &home, cli.quiet),
        Command::Doctor(args) => doctor_cmd::run(args, &home, cli.quiet),
        Command::Chat(args) => chat_cmd::run(args, &home, cli.quiet),
        Command::Func(cmd) => func_cmd::run(cmd, &home, cli.quiet),
        Command::Audit(args) => audit_cmd::run(args, &home),
        Command::Serve(args) => serve_cmd::run(args, &home, cli.quiet),
        Command::Config(cmd) => config_cmd::run(cmd, &home).map(|()| 0),
        Command::Store(cmd) => store_cmd::run(cmd, &home),
        Command::Zygote { spec } => Ok(exit_byte(tradebox_sandbox::launcher::main(spec))),
    }
}

fn exit_byte(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(1)
}

/// Exit code 2 for bad input (a file, an argument), 1 for everything else.
fn exit_code(err: &anyhow::Error) -> u8 {
    let input = err.chain().any(|e| {
        e.downcast_ref::<tradebox_data::Error>()
            .is_some_and(tradebox_data::Error::is_input_error)
            || e.is::<sandbox_setup::SetupError>()
    });
    if input {
        2
    } else {
        1
    }
}

/// Dies quietly on a closed pipe (`tradebox data info | head -1`), as Unix
/// tools do, instead of panicking in `println!`.
#[allow(unsafe_code)]
fn default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: restores the default disposition before any thread exists.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// The error and its causes on one line, each said once: most errors of
/// tradebox already name their cause in their own text.
fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn main() -> ExitCode {
    default_sigpipe();
    // The launcher must stay single-threaded and quiet: no logging set-up.
    let cli = Cli::parse();
    if let Command::Zygote { spec } = &cli.command {
        return ExitCode::from(exit_byte(tradebox_sandbox::launcher::main(spec)));
    }
    init_logging(&cli);
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(exit_code(&err))
        }
    }
}
