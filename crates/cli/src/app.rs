//! Wiring the command layer for CLI commands: configuration, stores, the
//! sandbox pool and the pipeline, as `tradebox chat` and `tradebox func` use
//! them (the web console and Slack will build the same).

use std::sync::Arc;

use anyhow::Context;

use tradebox_core::audit::AuditLog;
use tradebox_core::config::Config;
use tradebox_core::deliveries::Deliveries;
use tradebox_core::executor::Executor;
use tradebox_core::functions::FunctionStore;
use tradebox_core::leases::Leases;
use tradebox_core::permissions::Permissions;
use tradebox_core::pipeline::{Pipeline, Settings};
use tradebox_core::ratelimit::RateLimiter;
use tradebox_core::store::StoreUrl;
use tradebox_data::{Home, Store};

use crate::sandbox_setup::{self, PoolShape, SetupError};

/// `tradebox.toml` and the environment; errors are configuration errors (exit 2).
pub fn config(home: &Home) -> anyhow::Result<Config> {
    Config::load(home.root()).map_err(|e| SetupError(e.to_string()).into())
}

/// The variable `[store] url` falls back to, as many hosting platforms set it.
pub const DATABASE_URL: &str = "DATABASE_URL";

/// Where the functions, the audit trail and the rate limiter live: `[store]
/// url`, else `DATABASE_URL`, else the home's SQLite file (created with the
/// trade store's tables if needed).
pub fn store_url(home: &Home, config: &Config) -> anyhow::Result<StoreUrl> {
    let url = resolve_store_url(home, config)?;
    if let StoreUrl::Sqlite(path) = &url {
        Store::open(path)?;
    }
    Ok(url)
}

/// [`store_url`] without making the SQLite file.
fn resolve_store_url(home: &Home, config: &Config) -> anyhow::Result<StoreUrl> {
    let from_env = std::env::var(DATABASE_URL)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let url = match (&config.store.url, from_env) {
        (Some(url), _) => StoreUrl::parse(url).map_err(|e| SetupError(format!("store.url {e}")))?,
        (None, Some(url)) => {
            StoreUrl::parse(&url).map_err(|e| SetupError(format!("{DATABASE_URL} {e}")))?
        }
        (None, None) => StoreUrl::Sqlite(home.store_path()),
    };
    Ok(url)
}

/// `home` with its trades in the shared store when `[store] url` is a
/// PostgreSQL one (imports then write there and the home's SQLite store is
/// its mirror); as it is otherwise.
pub fn shared_home(home: &Home, config: &Config) -> anyhow::Result<Home> {
    Ok(match resolve_store_url(home, config)? {
        StoreUrl::Postgres(url) => home.clone().with_shared_store(Some(url)),
        StoreUrl::Sqlite(_) => home.clone(),
    })
}

/// The shared trade store of `home`, if it has one.
pub fn shared_store(home: &Home) -> anyhow::Result<Option<tradebox_data::shared::Shared>> {
    home.shared_store()
        .map(|url| {
            tradebox_data::shared::Shared::open(url).context("opening the shared trade store")
        })
        .transpose()
}

/// This process's name in the audit trail: `[store] replica`, else
/// `host:pid`.
pub fn replica_name(config: &Config) -> String {
    if let Some(name) = &config.store.replica {
        return name.trim().to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// The function store.
pub fn functions(home: &Home, config: &Config) -> anyhow::Result<FunctionStore> {
    functions_at(&store_url(home, config)?)
}

fn functions_at(url: &StoreUrl) -> anyhow::Result<FunctionStore> {
    FunctionStore::connect(url)
        .with_context(|| format!("opening the function store at {}", url.redacted()))
}

/// The audit trail, pruned to the configured retention.
pub fn audit(home: &Home, config: &Config) -> anyhow::Result<AuditLog> {
    audit_at(&store_url(home, config)?, config, &replica_name(config))
}

/// The audit trail at `url`, stamped with `replica`, pruned to the
/// configured retention.
fn audit_at(url: &StoreUrl, config: &Config, replica: &str) -> anyhow::Result<AuditLog> {
    let audit = AuditLog::connect(url)
        .with_context(|| format!("opening the audit trail at {}", url.redacted()))?
        .with_replica(replica);
    if let Some(keep) = config.audit.retention() {
        let cutoff = tradebox_data::timestamp::now() - keep.as_micros() as i64;
        let removed = audit.prune(cutoff)?;
        if removed > 0 {
            tracing::info!(removed, "audit entries past the retention period removed");
        }
    }
    Ok(audit)
}

/// Permissions; the console user is an admin when the config says so.
pub fn permissions(config: &Config) -> Permissions {
    let permissions = Permissions::new(&config.permissions);
    if config.console.user_is_admin {
        permissions.with_admin(config.console.user.clone())
    } else {
        permissions
    }
}

/// The pipeline; with `Some(workers)` a pool of that many zygotes (0: the
/// configured number) is its executor, with `None` only functions are
/// managed.
pub fn pipeline(
    home: &Home,
    config: &Config,
    workers: Option<usize>,
    quiet: bool,
) -> anyhow::Result<Pipeline> {
    let mut settings = Settings::from_config(config);
    let executor: Option<Arc<dyn Executor>> = match workers {
        Some(workers) => {
            let shape = PoolShape {
                size: if workers == 0 {
                    config.pool.effective_workers()
                } else {
                    workers
                },
                queue: config.pool.queue,
                scratch_mib: config.limits.scratch_mb,
            };
            settings = settings.fair_for(shape.size);
            Some(Arc::new(sandbox_setup::start_pool(home, shape, quiet)?))
        }
        None => None,
    };
    // Resolved once: every store of the pipeline lives there.
    let url = store_url(home, config)?;
    let replica = replica_name(config);
    Ok(Pipeline::new(
        executor,
        functions_at(&url)?,
        audit_at(&url, config, &replica)?,
        RateLimiter::connect(&url, &config.rate_limit)?,
        permissions(config),
        settings,
    )
    .with_deliveries(Deliveries::connect(&url)?)
    .with_leases(Leases::connect(&url, &replica)?))
}

/// A single-threaded async runtime for one CLI command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
