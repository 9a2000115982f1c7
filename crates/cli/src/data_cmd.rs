//! `tradebox data ...`: import, demo data, store summary and snapshot export.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use tradebox_data::import::{self, CsvOptions, ImportReport};
use tradebox_data::snapshot::{self, Manifest};
use tradebox_data::{demo, timestamp, Home, Store};

use crate::progress::Terminal;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Import trades and balance snapshots into the store.
    #[command(after_help = IMPORT_HELP)]
    Import(ImportArgs),
    /// Generate a realistic demo history ending now (deterministic per seed).
    #[command(after_help = "Examples:
  tradebox data demo                       # 200,000 trades over 90 days
  tradebox data demo --rows 1000000 --days 365 --seed 7 --replace")]
    Demo(DemoArgs),
    /// Show what the store holds: trades per exchange and account, dates, snapshot version.
    #[command(after_help = "Examples:
  tradebox data info
  tradebox data info --json | jq .trades")]
    Info(InfoArgs),
    /// Export the store again as a new snapshot version (imports do this by themselves).
    #[command(after_help = "Example:
  tradebox data snapshot")]
    Snapshot,
}

const IMPORT_HELP: &str = "Each PATH may be:
  - an original trade_cache.db (any SQLite file with a `trades` table of the same columns);
  - a CSV file with a header row;
  - a snapshot_YYYY-MM-DD.json balance snapshot, or a directory of them.
All paths are imported in one transaction: on any error nothing is kept.
Re-importing the same data adds nothing (rows are unique on exchange, account,
trade id, timestamp, symbol, side, amount and price).

CSV columns (case-insensitive; spaces and dashes count as underscores):
  timestamp     timestamp, time, datetime, date, ts, executed_at, created_at, trade_time
                ISO 8601 (zone optional, UTC assumed) or epoch seconds/ms/us
  exchange      exchange, venue                  (or --exchange)
  account_name  account_name, account            (optional; --account, else \"default\")
  symbol        symbol, asset, base, instrument
  side          side, direction, type            buy/sell, b/s, bid/ask
  amount        amount, qty, quantity, size, volume, base_amount
  price         price, rate
  fee           fee, fee_amount, commission      (optional, default 0)
  fee_currency  fee_currency, fee_asset, commission_asset   (optional)
  trade_id      trade_id, id, tradeid, txid, order_id       (optional; derived from the row if absent)
Separators: comma, semicolon or tab, recognised from the header.

Examples:
  tradebox data import ~/cex-reporter/data/trade_cache.db ~/cex-reporter/data/snapshots
  tradebox data import --exchange kraken --account MM2 kraken-export.csv";

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Files or directories to import.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Exchange for CSV rows when the file has no exchange column.
    #[arg(long)]
    exchange: Option<String>,
    /// Account for CSV rows when the file has no account column.
    #[arg(long)]
    account: Option<String>,
}

/// The demo history `data demo` makes by default, and `serve` on an empty store.
const DEMO_ROWS: u64 = 200_000;
const DEMO_DAYS: u32 = 90;
const DEMO_SEED: u64 = 42;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of trades.
    #[arg(long, default_value_t = DEMO_ROWS, value_parser = clap::value_parser!(u64).range(1..=50_000_000))]
    rows: u64,
    /// Days of history, ending at --end.
    #[arg(long, default_value_t = DEMO_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
    /// Random seed: the same seed and end give the same history.
    #[arg(long, default_value_t = DEMO_SEED)]
    seed: u64,
    /// When the history ends (ISO 8601 date or time, UTC) [default: now]
    #[arg(long, value_name = "TIME")]
    end: Option<String>,
    /// Remove every trade and snapshot in the store first.
    #[arg(long)]
    replace: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: &DataCommand, home: &Home, quiet: bool) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Import(args) => run_import(args, home, quiet),
        DataCommand::Demo(args) => run_demo(args, home, quiet),
        DataCommand::Info(args) => run_info(args, home),
        DataCommand::Snapshot => {
            let store = Store::open(&home.store_path())?;
            publish(&store, home)
        }
    }
}

fn run_import(args: &ImportArgs, home: &Home, quiet: bool) -> anyhow::Result<()> {
    let options = CsvOptions {
        exchange: args.exchange.clone(),
        account: args.account.clone(),
    };
    let progress = Terminal::new(quiet);
    let imported = tradebox_data::import_and_publish(home, &args.paths, &options, &progress);
    let imported = match imported {
        Ok(imported) => imported,
        Err(tradebox_data::Error::Publish {
            root,
            imports,
            source,
        }) => {
            print_imports(&imports);
            return Err(anyhow::Error::new(*source)
                .context(format!("exporting the snapshot to {}", root.display())));
        }
        Err(e) => return Err(e.into()),
    };
    print_imports(&imported.imports);
    if imported.published {
        print_published(&imported.manifest, imported.export_time, home);
    } else {
        println!(
            "nothing new; snapshot v{} stays current",
            imported.manifest.version
        );
    }
    Ok(())
}

fn print_imports(reports: &[ImportReport]) {
    for r in reports {
        let unit = match r.kind {
            import::SourceKind::Sqlite | import::SourceKind::Csv => "trades",
            _ => "snapshots",
        };
        println!(
            "imported {} ({}): {} {unit} read, {} new",
            r.path.display(),
            r.kind.describe(),
            r.read,
            r.added
        );
    }
}

fn run_demo(args: &DemoArgs, home: &Home, quiet: bool) -> anyhow::Result<()> {
    let mut store = Store::open(&home.store_path())?;
    let existing = store.trade_count()?;
    if existing > 0 && !args.replace {
        return Err(tradebox_data::Error::InvalidArgument(format!(
            "the store {} already holds {existing} trades; pass --replace to remove them and generate demo data, or use another --home",
            store.path().display()
        ))
        .into());
    }
    let end = match &args.end {
        Some(text) => timestamp::parse(text)
            .map_err(|e| tradebox_data::Error::InvalidArgument(format!("--end: {e}")))?,
        None => timestamp::now() / 1_000_000 * 1_000_000,
    };
    let spec = demo::DemoSpec {
        rows: args.rows,
        days: args.days,
        seed: args.seed,
        end,
    };
    let progress = Terminal::new(quiet);
    let started = Instant::now();
    let report = demo::write(&mut store, &spec, args.replace, &progress)?;
    println!(
        "generated {} demo trades and {} daily balance snapshots ({} .. {}) in {:.1}s",
        report.trades,
        report.snapshots,
        report.first_trade.as_deref().unwrap_or("-"),
        report.last_trade.as_deref().unwrap_or("-"),
        started.elapsed().as_secs_f64()
    );
    publish(&store, home)
}

/// For `tradebox serve` on a fresh machine: generates the default demo
/// history when the store holds no trades, and publishes a snapshot when
/// none exists.
pub fn ensure_data(home: &Home, quiet: bool) -> anyhow::Result<()> {
    let store = Store::open(&home.store_path())?;
    if store.trade_count()? == 0 {
        let defaults = DemoArgs {
            rows: DEMO_ROWS,
            days: DEMO_DAYS,
            seed: DEMO_SEED,
            end: None,
            replace: false,
        };
        if !quiet {
            eprintln!(
                "the store {} is empty: generating demo data ({} trades over {} days)",
                store.path().display(),
                defaults.rows,
                defaults.days
            );
        }
        drop(store);
        return run_demo(&defaults, home, quiet);
    }
    if snapshot::current(&home.snapshot_root())?.is_none() {
        publish(&store, home)?;
    }
    Ok(())
}

fn publish(store: &Store, home: &Home) -> anyhow::Result<()> {
    let started = Instant::now();
    let m = snapshot::export(store, &home.snapshot_root()).with_context(|| {
        format!(
            "exporting the snapshot to {}",
            home.snapshot_root().display()
        )
    })?;
    print_published(&m, started.elapsed(), home);
    Ok(())
}

fn print_published(m: &Manifest, took: Duration, home: &Home) {
    println!(
        "snapshot v{} published: {} trades, {} balance snapshots, in {:.2}s ({})",
        m.version,
        m.trades,
        m.snapshots,
        took.as_secs_f64(),
        snapshot::version_dir(&home.snapshot_root(), m.version).display()
    );
}

fn run_info(args: &InfoArgs, home: &Home) -> anyhow::Result<()> {
    if args.json {
        let out = tradebox_data::info::info(home)?;
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let store_path = home.store_path();
    let summary = match Store::open_read_only(&store_path)? {
        Some(store) => Some(store.summary()?),
        None => None,
    };
    let current = snapshot::current(&home.snapshot_root())?;
    println!("store      {}", store_path.display());
    let Some(s) = summary.filter(|s| s.trades > 0 || s.snapshots > 0) else {
        println!("the store is empty: run `tradebox data demo` or `tradebox data import PATH`");
        return Ok(());
    };
    println!(
        "trades     {} ({} .. {})",
        s.trades,
        s.first_trade.as_deref().unwrap_or("-"),
        s.last_trade.as_deref().unwrap_or("-")
    );
    println!(
        "balances   {} daily snapshots ({} .. {})",
        s.snapshots,
        s.first_snapshot.as_deref().unwrap_or("-"),
        s.last_snapshot.as_deref().unwrap_or("-")
    );
    match &current {
        Some((dir, m)) => println!(
            "snapshot   v{} with {} trades, created {} ({})",
            m.version,
            m.trades,
            m.created_at,
            dir.display()
        ),
        None => println!("snapshot   none yet: run `tradebox data snapshot`"),
    }
    if !s.accounts.is_empty() {
        println!();
        println!(
            "{:<12} {:<14} {:>9}  {:<26} {:<26}",
            "exchange", "account", "trades", "first", "last"
        );
        for a in &s.accounts {
            println!(
                "{:<12} {:<14} {:>9}  {:<26} {:<26}",
                a.exchange, a.account_name, a.trades, a.first_trade, a.last_trade
            );
        }
    }
    Ok(())
}
