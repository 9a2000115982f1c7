//! Starting the sandbox for a CLI command: the Python runtime (provisioned
//! on first use, with progress), the current data snapshot, and a pool of
//! zygotes launched through this very binary.

use std::time::Duration;

use tradebox_data::progress::Progress;
use tradebox_data::{snapshot, Home};
use tradebox_sandbox::{doctor, runtime, Pool, PoolConfig, PoolError, PythonPaths};

/// A configuration problem the user must fix (exit code 2).
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

/// Where the runtime lives: `TRADEBOX_RUNTIME`, else `$TRADEBOX_HOME/runtime`
/// (several homes may share one runtime).
fn runtime_dir(home: &Home) -> std::path::PathBuf {
    std::env::var_os("TRADEBOX_RUNTIME")
        .filter(|v| !v.is_empty())
        .map_or_else(|| home.root().join("runtime"), Into::into)
}

/// The runtime, provisioned if needed.
pub fn runtime(home: &Home, quiet: bool) -> anyhow::Result<runtime::Runtime> {
    let progress = crate::progress::Terminal::new(quiet);
    let rt = runtime::ensure(&runtime_dir(home), &progress);
    rt.map_err(|e| SetupError(format!("the Python runtime is not usable: {e}")).into())
}

/// Pool shape: zygotes, queue, scratch.
#[derive(Debug, Clone, Copy)]
pub struct PoolShape {
    pub size: usize,
    pub queue: usize,
    pub scratch_mib: u64,
}

impl PoolShape {
    /// One zygote, for a single command.
    pub fn single() -> PoolShape {
        PoolShape {
            size: 1,
            queue: 64,
            scratch_mib: 64,
        }
    }
}

/// Starts a pool on the current snapshot.
pub fn start_pool(home: &Home, shape: PoolShape, quiet: bool) -> anyhow::Result<Pool> {
    let rt = runtime(home, quiet)?;
    start_pool_on(home, rt, shape, quiet)
}

/// Starts a pool on an already ensured runtime.
pub fn start_pool_on(
    home: &Home,
    rt: runtime::Runtime,
    shape: PoolShape,
    quiet: bool,
) -> anyhow::Result<Pool> {
    let size = shape.size;
    let snapshot = snapshot::current(&home.snapshot_root())?.map(|(dir, _)| dir);
    let config = PoolConfig {
        launcher: std::env::current_exe()?,
        python: PythonPaths {
            python: rt.python,
            venv: rt.venv,
            base_prefix: rt.base_prefix,
            lib: rt.lib,
        },
        run_dir: home.root().join("run"),
        snapshot,
        follow: Some(home.snapshot_root()),
        size,
        queue: shape.queue,
        scratch_mib: shape.scratch_mib,
        start_timeout: Duration::from_secs(120),
    };
    let progress = crate::progress::Terminal::new(quiet);
    progress.stage(&format!("starting {size} sandboxed Python worker(s)"), None);
    let pool = Pool::start(config);
    progress.finish();
    pool.map_err(|e| match e {
        PoolError::Layer { layer, message } => SetupError(format!(
            "the sandbox cannot be set up on this machine ({layer}: {message}); \
             tradebox does not run code unconfined.{}",
            advice()
        ))
        .into(),
        other => anyhow::Error::new(other),
    })
}

/// What to change, from the host checks that fail.
fn advice() -> String {
    let lines: Vec<String> = doctor::host_checks()
        .into_iter()
        .filter_map(|c| c.advice.map(|a| format!("\n  - {}: {a}", c.name)))
        .collect();
    if lines.is_empty() {
        "\nRun `tradebox doctor` for details.".to_string()
    } else {
        format!("\nTo fix:{}", lines.concat())
    }
}
