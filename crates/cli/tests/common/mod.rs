//! Shared set-up for the sandbox tests: a provisioned Python runtime (built
//! once under the cargo target folder and reused), a home with the real
//! fixture imported, and a pool launched through the real `tradebox` binary.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tradebox_sandbox::{runtime, ExecResult, Job, Pool, PoolConfig, PythonPaths};

pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("TRADEBOX_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cex-reporter"),
        PathBuf::from,
    );
    assert!(
        dir.join("trade_cache.db").is_file(),
        "fixture data not found at {} (set TRADEBOX_FIXTURES)",
        dir.display()
    );
    dir
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tradebox")
}

/// The runtime folder shared by every test binary (ensure() locks and reuses it);
/// pass it to the binary as `TRADEBOX_RUNTIME`.
pub fn runtime_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("runtime")
}

/// The runtime, provisioned once.
pub fn python() -> PythonPaths {
    static RT: OnceLock<PythonPaths> = OnceLock::new();
    RT.get_or_init(|| {
        let dir = runtime_dir();
        let rt = runtime::ensure(&dir, &indicatif::ProgressBar::hidden()).expect("Python runtime");
        PythonPaths {
            python: rt.python,
            venv: rt.venv,
            base_prefix: rt.base_prefix,
            lib: rt.lib,
        }
    })
    .clone()
}

/// Runs the binary on `home`; panics with its stderr if it fails.
pub fn tradebox(home: &Path, args: &[&str]) {
    let out = std::process::Command::new(bin())
        .env("TRADEBOX_HOME", home)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh home (kept for the process) with the fixture imported.
pub fn home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| {
        let dir = tempfile::TempDir::new().unwrap();
        let f = fixtures();
        let (db, snaps) = (f.join("trade_cache.db"), f.join("snapshots"));
        tradebox(
            dir.path(),
            &[
                "data",
                "import",
                db.to_str().unwrap(),
                snaps.to_str().unwrap(),
            ],
        );
        dir
    })
    .path()
}

/// A pool configuration on the fixture home.
pub fn config(size: usize) -> PoolConfig {
    config_for(home(), size)
}

/// A pool configuration on `home`'s current snapshot, following new ones.
pub fn config_for(home: &Path, size: usize) -> PoolConfig {
    let snapshot = tradebox_data::snapshot::current(&home.join("snapshot"))
        .unwrap()
        .map(|(dir, _)| dir);
    PoolConfig {
        launcher: PathBuf::from(bin()),
        python: python(),
        run_dir: home.join("run"),
        snapshot,
        follow: Some(home.join("snapshot")),
        size,
        queue: 64,
        scratch_mib: 64,
        start_timeout: Duration::from_secs(120),
    }
}

pub fn pool(size: usize) -> Pool {
    Pool::start(config(size)).expect("pool starts")
}

/// Runs `code` with default limits (validator never involved: the pool does not validate).
pub fn run(pool: &Pool, code: &str) -> ExecResult {
    run_with(pool, code, Duration::from_secs(30), 1024)
}

pub fn run_with(pool: &Pool, code: &str, timeout: Duration, memory_mib: u64) -> ExecResult {
    pool.run(Job {
        code: code.to_string(),
        timeout,
        memory_mib,
        as_of: Some("latest".into()),
        ..Job::default()
    })
    .expect("job accepted")
}

/// The error type name of a failed result ("" when it succeeded).
pub fn error_kind(r: &ExecResult) -> &str {
    r.error.as_ref().map_or("", |e| e.kind.as_str())
}
