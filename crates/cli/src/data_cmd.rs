//! `tradebox data ...`: import, demo data, store summary and snapshot export.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use tradebox_data::import::{self, CsvOptions, ImportReport};
use tradebox_data::snapshot::{self, Manifest};
use tradebox_data::{demo, timestamp, Home, Store};

use tradebox_data::sources::{statuses, Follower, Outcome, SourceConfig};

use crate::progress::Terminal;
use crate::sandbox_setup::SetupError;

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
    /// Bring the configured sources ([[data.sources]]) into the store now,
    /// or keep following them.
    #[command(after_help = SYNC_HELP)]
    Sync(SyncArgs),
    /// List the configured sources with their last sync, lag and errors.
    #[command(after_help = "Examples:
  tradebox data sources
  tradebox data sources --json | jq '.[] | {id, lag_seconds, error}'")]
    Sources(InfoArgs),
    /// Export the store again, whole, as a new snapshot version (imports do this by themselves).
    #[command(
        after_help = "Imports and followed sources publish only their new trades (a delta
beside the earlier files); this writes every trade into one new base. Use it
to repair a snapshot damaged on disk (a running `serve` moves to the new
version by itself).

Example:
  tradebox data snapshot"
    )]
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

const SYNC_HELP: &str =
    "Sources are tables in tradebox.toml (relative paths are relative to TRADEBOX_HOME):

  [[data.sources]]
  id = \"cex\"                      # a short name
  kind = \"cex-reporter\"           # an original trade_cache.db another process keeps writing
  path = \"/srv/cex-reporter/data/trade_cache.db\"
  snapshots = \"/srv/cex-reporter/data/snapshots\"   # optional: its daily balance files
  poll_seconds = 2                  # default 2

  [[data.sources]]
  id = \"drop\"
  kind = \"csv-inbox\"              # a folder: each complete CSV is imported once, then moved
  path = \"inbox\"                  # to inbox/done/, or to inbox/failed/ with a .error.txt
  exchange = \"kraken\"             # optional, for files without an exchange column

  [[data.sources]]
  id = \"balances\"
  kind = \"snapshots\"              # a folder of snapshot_YYYY-MM-DD.json files
  path = \"/srv/balances\"

Only new rows and files are read; each lands whole in one transaction with the
source's progress, so a sync cut short (even by kill -9) goes on where it
stopped and imports nothing twice. A new snapshot version is published when
anything was added. `tradebox serve` follows the same sources by itself.

Examples:
  tradebox data sync                 # every source, once
  tradebox data sync cex             # one source
  tradebox data sync --follow        # keep following until Ctrl-C";

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Sources to sync (their ids); all when none is given.
    #[arg(value_name = "SOURCE")]
    sources: Vec<String>,
    /// Keep following: sync each source every poll_seconds until stopped.
    #[arg(long)]
    follow: bool,
}

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
    // With `[store] url` on PostgreSQL the trades live there.
    let home = &crate::app::shared_home(home, &crate::app::config(home)?)?;
    match cmd {
        DataCommand::Import(args) => run_import(args, home, quiet),
        DataCommand::Demo(args) => run_demo(args, home, quiet),
        DataCommand::Info(args) => run_info(args, home),
        DataCommand::Sync(args) => {
            no_sources_with_shared(home)?;
            run_sync(args, home, quiet)
        }
        DataCommand::Sources(args) => run_sources(args, home),
        DataCommand::Snapshot => {
            if let Some(shared) = crate::app::shared_store(home)? {
                // The mirror first, so the version holds the shared trades.
                shared.sync_home_with(home, &Terminal::new(quiet))?;
            }
            let store = Store::open(&home.store_path())?;
            publish(&store, home)
        }
    }
}

/// Followed sources keep their state in the local store: with a shared
/// store, imports go through `tradebox data import` instead.
pub fn no_sources_with_shared(home: &Home) -> anyhow::Result<()> {
    if home.shared_store().is_some() {
        return Err(SetupError(
            "followed sources ([[data.sources]]) are not supported with a PostgreSQL store \
             ([store] url): import into the shared store with `tradebox data import` \
             (from any machine), and every replica serves it"
                .into(),
        )
        .into());
    }
    Ok(())
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
            return Err(anyhow::Error::new(*source).context(format!(
                "the import is kept, but exporting the snapshot to {} failed \
                 (once that is mended, `tradebox data snapshot` publishes it)",
                root.display()
            )));
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
    if let Some(shared) = crate::app::shared_store(home)? {
        return run_demo_shared(args, home, shared, quiet);
    }
    let mut store = Store::open(&home.store_path())?;
    let existing = store.trade_count()?;
    if existing > 0 && !args.replace {
        return Err(tradebox_data::Error::InvalidArgument(format!(
            "the store {} already holds {existing} trades; pass --replace to remove them and generate demo data, or use another --home",
            store.path().display()
        ))
        .into());
    }
    let progress = Terminal::new(quiet);
    let started = Instant::now();
    let report = demo::write(&mut store, &spec(args)?, args.replace, &progress)?;
    print_demo(&report, started);
    publish(&store, home)
}

/// The demo history `args` ask for.
fn spec(args: &DemoArgs) -> anyhow::Result<demo::DemoSpec> {
    let end = match &args.end {
        Some(text) => timestamp::parse(text)
            .map_err(|e| tradebox_data::Error::InvalidArgument(format!("--end: {e}")))?,
        None => timestamp::now() / 1_000_000 * 1_000_000,
    };
    Ok(demo::DemoSpec {
        rows: args.rows,
        days: args.days,
        seed: args.seed,
        end,
    })
}

fn print_demo(report: &demo::DemoReport, started: Instant) {
    println!(
        "generated {} demo trades and {} daily balance snapshots ({} .. {}) in {:.1}s",
        report.trades,
        report.snapshots,
        report.first_trade.as_deref().unwrap_or("-"),
        report.last_trade.as_deref().unwrap_or("-"),
        started.elapsed().as_secs_f64()
    );
}

/// `data demo` into the shared store, then this home's mirror published.
fn run_demo_shared(
    args: &DemoArgs,
    home: &Home,
    mut shared: tradebox_data::shared::Shared,
    quiet: bool,
) -> anyhow::Result<()> {
    let existing = shared.trade_count()?;
    if existing > 0 && !args.replace {
        return Err(tradebox_data::Error::InvalidArgument(format!(
            "the shared store {} already holds {existing} trades; pass --replace to remove them \
             (for every replica) and generate demo data",
            shared.target()
        ))
        .into());
    }
    let progress = Terminal::new(quiet);
    let started = Instant::now();
    let report = demo::write(&mut shared, &spec(args)?, args.replace, &progress)?;
    print_demo(&report, started);
    sync_shared(&shared, home, quiet)
}

/// Brings this home's mirror to the shared store and says what was published.
fn sync_shared(
    shared: &tradebox_data::shared::Shared,
    home: &Home,
    quiet: bool,
) -> anyhow::Result<()> {
    let synced = shared
        .sync_home_with(home, &Terminal::new(quiet))
        .with_context(|| format!("mirroring the shared store {}", shared.target()))?;
    if let Some(p) = synced.published {
        print_published(&p.manifest, p.took, home);
    }
    Ok(())
}

/// For `tradebox serve` without followed sources: generates the default
/// demo history when the store holds no trades (if `demo`), publishes a
/// snapshot when none exists, and publishes again when the current one is
/// behind the store (a publication cut short) or damaged on disk.
pub fn ensure_data(home: &Home, demo: bool, quiet: bool) -> anyhow::Result<()> {
    if let Some(shared) = crate::app::shared_store(home)? {
        if demo && shared.trade_count()? == 0 {
            if !quiet {
                eprintln!(
                    "the shared store {} is empty: generating demo data ({DEMO_ROWS} trades over {DEMO_DAYS} days)",
                    shared.target()
                );
            }
            drop(shared);
            return run_demo(&default_demo(), home, quiet);
        }
        return sync_shared(&shared, home, quiet);
    }
    let store = Store::open(&home.store_path())?;
    if demo && store.trade_count()? == 0 {
        let defaults = default_demo();
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
    let root = home.snapshot_root();
    if !snapshot::stale(&store, &root)? {
        return Ok(());
    }
    if snapshot::current(&root)?.is_none() {
        return publish(&store, home);
    }
    // A publication cut short (the store holds more than the version), or
    // a version damaged on disk: published again.
    let p = snapshot::publish(&store, &root, snapshot::Mode::Compacted)
        .with_context(|| format!("publishing the snapshot to {}", root.display()))?;
    if !quiet {
        eprintln!(
            "the snapshot was behind the store: v{} published ({})",
            p.manifest.version, p.written
        );
    }
    Ok(())
}

/// The demo history `serve` makes for an empty store.
fn default_demo() -> DemoArgs {
    DemoArgs {
        rows: DEMO_ROWS,
        days: DEMO_DAYS,
        seed: DEMO_SEED,
        end: None,
        replace: false,
    }
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
    let (summary, shown) = match crate::app::shared_store(home)? {
        Some(shared) => (Some(shared.summary()?), shared.target().to_string()),
        None => (
            match Store::open_read_only(&store_path)? {
                Some(store) => Some(store.summary()?),
                None => None,
            },
            store_path.display().to_string(),
        ),
    };
    let current = snapshot::current(&home.snapshot_root())?;
    println!("store      {shown}");
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

/// The configured sources that `names` asks for (all when empty).
fn chosen_sources(home: &Home, names: &[String]) -> anyhow::Result<Vec<SourceConfig>> {
    let config = crate::app::config(home)?;
    let all = config.data.sources;
    if all.is_empty() {
        return Err(SetupError(format!(
            "no sources are configured: add [[data.sources]] tables to {} (see `tradebox data sync --help`)",
            home.root().join("tradebox.toml").display()
        ))
        .into());
    }
    for name in names {
        if !all.iter().any(|s| &s.id == name) {
            let ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
            return Err(SetupError(format!(
                "no source {name:?}; configured: {}",
                ids.join(", ")
            ))
            .into());
        }
    }
    Ok(all
        .into_iter()
        .filter(|s| names.is_empty() || names.contains(&s.id))
        .collect())
}

/// One line per source outcome.
fn print_outcome(o: &Outcome) {
    match &o.result {
        Ok(r) => {
            let mut line = format!("{:<12} {} new of {} read", o.id, r.added, r.read);
            if r.full {
                line.push_str(" (every row read again)");
            }
            match r.files.as_slice() {
                [] => {}
                [one] => line.push_str(&format!("; file {one}")),
                [first, .., last] if r.files.len() > 3 => {
                    line.push_str(&format!("; {} files ({first} .. {last})", r.files.len()))
                }
                many => line.push_str(&format!("; files {}", many.join(", "))),
            }
            println!("{line}");
            for why in &r.rejected {
                println!("{:<12} refused: {why}", "");
            }
            if let Some(p) = &r.problem {
                println!("{:<12} retrying: {p}", "");
            }
        }
        Err(e) => println!("{:<12} FAILED: {e}", o.id),
    }
}

fn run_sync(args: &SyncArgs, home: &Home, quiet: bool) -> anyhow::Result<()> {
    let sources = chosen_sources(home, &args.sources)?;
    let mut follower = Follower::new(home.clone(), &sources);
    if args.follow {
        if !quiet {
            eprintln!(
                "following {} source(s); press Ctrl-C to stop",
                follower.sources().len()
            );
        }
        let (_keep, stop) = std::sync::mpsc::channel::<()>();
        follower.run(&stop, |pass| match pass {
            Ok(pass) => {
                for o in &pass.outcomes {
                    let quiet_ok = o
                        .result
                        .as_ref()
                        .is_ok_and(|r| r.read == 0 && r.rejected.is_empty() && r.problem.is_none());
                    if !quiet_ok {
                        print_outcome(o);
                    }
                }
                for p in pass
                    .published
                    .iter()
                    .chain(pass.compacted.iter().flatten().flatten())
                {
                    println!(
                        "snapshot v{} published ({}): {} trades, in {:.2}s",
                        p.manifest.version,
                        p.written,
                        p.manifest.trades,
                        p.took.as_secs_f64()
                    );
                }
                if let Some(Err(e)) = &pass.compacted {
                    eprintln!("compacting the snapshot failed (retried later): {e}");
                }
                let _ = std::io::Write::flush(&mut std::io::stdout());
            }
            Err(e) => eprintln!("sync failed (retrying): {e}"),
        });
        return Ok(());
    }
    let pass = follower.pass(true)?;
    for o in &pass.outcomes {
        print_outcome(o);
    }
    match &pass.published {
        Some(p) => print_published(&p.manifest, p.took, home),
        None => println!("nothing new: the snapshot stays as it is"),
    }
    let failed: Vec<&str> = pass
        .outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.id.as_str())
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("{} source(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}

fn run_sources(args: &InfoArgs, home: &Home) -> anyhow::Result<()> {
    let config = crate::app::config(home)?;
    let rows = statuses(home, &config.data.sources)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no sources are configured; see `tradebox data sync --help`");
        return Ok(());
    }
    println!(
        "{:<12} {:<13} {:>10} {:>9}  {:<26} path",
        "id", "kind", "last sync", "added", "newest trade"
    );
    for r in &rows {
        println!(
            "{:<12} {:<13} {:>10} {:>9}  {:<26} {}",
            r.id,
            r.kind.as_str(),
            ago(r.lag_seconds),
            r.added_total,
            r.newest_trade.as_deref().unwrap_or("-"),
            r.path.display()
        );
        if let Some(e) = &r.error {
            println!("{:<12} error ({} in a row): {e}", "", r.failures);
        }
        if let Some(why) = &r.rejected {
            println!(
                "{:<12} last refused ({} in all): {why}",
                "", r.rejected_total
            );
        }
    }
    Ok(())
}

/// "12s ago", or "never".
pub fn ago(lag_seconds: Option<f64>) -> String {
    lag_seconds.map_or_else(|| "never".into(), |s| format!("{}s ago", s.round() as u64))
}
