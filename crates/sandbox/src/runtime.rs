//! The Python runtime snippets run in, provisioned by tradebox itself on
//! first use and reused afterwards.
//!
//! Layout under the runtime directory the caller chooses
//! (`home.root().join("runtime")`):
//!
//! ```text
//! runtime/
//!   .lock                     flock'ed while the venv is (re)built
//!   requirements.lock         the lock text pip was last run with
//!   pip.log                   pip's output of the last build
//!   venv/                     `python -m venv`, packages from the embedded lock
//!     .tradebox-python.json   the base interpreter it was built with
//!     .tradebox-lock          copy of the lock text; written last (commit marker)
//!   lib/tradebox/*.py         the embedded `tradebox` package, rewritten when it differs
//! ```
//!
//! A build happens in `venv.tmp-<pid>` next to `venv/` and is renamed into
//! place; only then are the imports checked (which also proves the renamed
//! venv works: a venv's `bin/python` is a symlink to the base interpreter and
//! finds its site-packages through `pyvenv.cfg` next to the symlink) and the
//! stamp written. A venv without a matching stamp is never used.
//!
//! [`ensure`] decides reuse without spawning anything (stamp, base
//! interpreter recorded, `bin/python` resolvable, every pinned package's
//! `.dist-info` present, the four main packages' folders present); [`inspect`]
//! changes nothing and runs the import check, for `tradebox doctor`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::{Deserialize, Serialize};
use tradebox_data::progress::Progress;

/// The hash-pinned requirements of the runtime (pip-compile output).
pub const LOCK: &str = include_str!("../../../python/requirements.lock");

/// The project's own Python package, written to `lib/tradebox/`:
/// (path relative to `lib/tradebox/`, content). Adding a file is one line.
pub const PACKAGE_FILES: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../../python/tradebox/__init__.py"),
    ),
    ("data.py", include_str!("../../../python/tradebox/data.py")),
    (
        "runner.py",
        include_str!("../../../python/tradebox/runner.py"),
    ),
    (
        "confine.py",
        include_str!("../../../python/tradebox/confine.py"),
    ),
    (
        "zygote.py",
        include_str!("../../../python/tradebox/zygote.py"),
    ),
];

/// The environment variable naming the base interpreter to build from.
pub const PYTHON_ENV: &str = "TRADEBOX_PYTHON";

/// The oldest base interpreter accepted, (major, minor).
pub const MIN_PYTHON: (u32, u32) = (3, 11);

/// The modules the import check imports (and whose folders reuse requires).
pub const CHECK_MODULES: &[&str] = &["pandas", "numpy", "pyarrow", "matplotlib"];

/// Names looked up on PATH, in order, when `TRADEBOX_PYTHON` is not set.
const PYTHON_NAMES: &[&str] = &[
    "python3",
    "python3.14",
    "python3.13",
    "python3.12",
    "python3.11",
];

const INSTALL_HINT: &str = "install it (Debian/Ubuntu: apt-get install python3 python3-venv) \
                            or set TRADEBOX_PYTHON to its path";

const STAMP: &str = ".tradebox-lock";
const BASE_INFO: &str = ".tradebox-python.json";
const PIP_LOG: &str = "pip.log";
const PIP_LOG_TAIL: usize = 20;
const TMP_PREFIX: &str = "venv.tmp-";
const OLD_PREFIX: &str = "venv.old-";

const MSG_WAIT: &str = "waiting for another tradebox process to set up the python runtime";
const MSG_VENV: &str = "creating venv";
const MSG_PIP: &str = "installing pandas, numpy, pyarrow, matplotlib (first run only, ~1 min)";
const MSG_IMPORTS: &str = "checking imports";

const PROBE_SCRIPT: &str = r#"import sys, os, json
try:
    import importlib.util as u
    venv = u.find_spec("venv") is not None and u.find_spec("ensurepip") is not None
except Exception:
    venv = False
print(json.dumps({"version": "%d.%d.%d" % tuple(sys.version_info[:3]),
                  "major": sys.version_info[0], "minor": sys.version_info[1],
                  "base_prefix": os.path.realpath(sys.base_prefix),
                  "executable": os.path.realpath(sys.executable) if sys.executable else "",
                  "venv": venv}))
"#;

const IMPORT_SCRIPT: &str = r#"import sys, os, json
import pandas, numpy, pyarrow, matplotlib
print(json.dumps({"version": "%d.%d.%d" % tuple(sys.version_info[:3]),
                  "prefix": os.path.realpath(sys.prefix),
                  "base_prefix": os.path.realpath(sys.base_prefix),
                  "modules": {m.__name__: m.__version__
                              for m in (pandas, numpy, pyarrow, matplotlib)}}))
"#;

/// Why the runtime could not be found, built or used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no python3 >= 3.11 found on PATH; {}", INSTALL_HINT)]
    NoPython,
    #[error(
        "TRADEBOX_PYTHON is set to {}, which does not exist or is not executable; install \
         python3 >= 3.11 (Debian/Ubuntu: apt-get install python3 python3-venv) and point \
         TRADEBOX_PYTHON at it, or unset it to use python3 from PATH",
        .path.display()
    )]
    PythonOverrideMissing { path: PathBuf },
    #[error("{} is Python {version}, tradebox needs python3 >= 3.11; {}", .path.display(), INSTALL_HINT)]
    PythonTooOld { path: PathBuf, version: String },
    #[error(
        "{} (Python {version}) has no venv module (ensurepip); install it (Debian/Ubuntu: \
         apt-get install python3-venv, or {package} for this version) or set TRADEBOX_PYTHON \
         to a python3 >= 3.11 that has it",
        .path.display()
    )]
    VenvModuleMissing {
        path: PathBuf,
        version: String,
        package: String,
    },
    #[error("could not use {} as python3: {detail}; {}", .path.display(), INSTALL_HINT)]
    PythonUnusable { path: PathBuf, detail: String },
    #[error("creating the python venv with {} failed: {detail}", .python.display())]
    VenvCreate { python: PathBuf, detail: String },
    #[error("installing the python packages failed ({status}); last lines of {}:\n{tail}", .log.display())]
    PipInstall {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("the python runtime's import check failed ({}): {detail}", .python.display())]
    ImportCheck { python: PathBuf, detail: String },
    #[error("the python runtime in {} needs repair: {reason}; the next run rebuilds it", .venv.display())]
    Unhealthy { venv: PathBuf, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> RuntimeError {
    move |source| RuntimeError::Io {
        context: context(),
        source,
    }
}

/// A provisioned runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// `venv/bin/python`: run this (not its symlink target).
    pub python: PathBuf,
    /// Real path of the base interpreter's `sys.base_prefix` (its stdlib
    /// lives there; a confined process must be able to read it).
    pub base_prefix: PathBuf,
    /// The venv folder.
    pub venv: PathBuf,
    /// The folder holding the `tradebox` package (put it on `PYTHONPATH`).
    pub lib: PathBuf,
    /// Python version, e.g. `3.11.7`.
    pub version: String,
    /// Installed distributions (normalized name -> version), read from the
    /// `.dist-info` folder names.
    pub packages: BTreeMap<String, String>,
}

/// A base interpreter that can build the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasePython {
    /// Real path of `sys.executable`.
    pub executable: PathBuf,
    /// Real path of `sys.base_prefix`.
    pub base_prefix: PathBuf,
    /// e.g. `3.11.7`.
    pub version: String,
}

#[derive(Debug, Deserialize)]
struct Probe {
    version: String,
    major: u32,
    minor: u32,
    base_prefix: PathBuf,
    executable: PathBuf,
    venv: bool,
}

/// What `venv/.tradebox-python.json` records.
#[derive(Debug, Serialize, Deserialize)]
struct BaseInfo {
    /// `TRADEBOX_PYTHON` as it was when built (None: found on PATH).
    requested: Option<PathBuf>,
    executable: PathBuf,
    base_prefix: PathBuf,
    version: String,
}

#[derive(Debug, Deserialize)]
struct ImportReport {
    version: String,
    prefix: PathBuf,
    base_prefix: PathBuf,
    modules: BTreeMap<String, String>,
}

/// Ensures a working runtime in `dir`: reuses it when its stamp matches the
/// embedded lock and nothing is missing (no subprocess), otherwise builds it
/// (each step is a `progress` stage of unknown length, `python runtime:
/// ...`, and `progress` is finished at the end; a reuse reports nothing).
/// Rewrites `lib/tradebox/` when it differs from the embedded package.
/// Reads `TRADEBOX_PYTHON`; see [`ensure_with`].
pub fn ensure(dir: &Path, progress: &dyn Progress) -> Result<Runtime, RuntimeError> {
    let var = std::env::var_os(PYTHON_ENV).filter(|v| !v.is_empty());
    ensure_with(dir, var.as_deref().map(Path::new), progress)
}

/// [`ensure`] with the base interpreter override given explicitly (`None`:
/// search PATH). A runtime built from a different override is rebuilt;
/// with `None` any base interpreter is accepted.
pub fn ensure_with(
    dir: &Path,
    python_override: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Runtime, RuntimeError> {
    let dir = absolute(dir)?;
    fs::create_dir_all(&dir).map_err(io_err(|| format!("creating {}", dir.display())))?;
    if let Ok(runtime) = check(&dir, python_override) {
        sync_package(&runtime.lib)?;
        return Ok(runtime);
    }

    let lock_path = dir.join(".lock");
    let lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_err(|| format!("opening {}", lock_path.display())))?;
    let spinner = Steps(progress);
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            spinner.step(MSG_WAIT);
            lock.lock()
                .map_err(io_err(|| format!("locking {}", lock_path.display())))?;
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(io_err(|| format!("locking {}", lock_path.display()))(e))
        }
    }

    // Another process may have built it while we waited.
    let runtime = match check(&dir, python_override) {
        Ok(runtime) => runtime,
        Err(reason) => {
            tracing::info!(dir = %dir.display(), %reason, "building the python runtime");
            let base = find_python(python_override)?;
            build(&dir, &base, python_override, &spinner)?;
            check(&dir, python_override).map_err(|reason| RuntimeError::Unhealthy {
                venv: dir.join("venv"),
                reason,
            })?
        }
    };
    sync_package(&runtime.lib)?;
    drop(lock);
    Ok(runtime)
}

/// The runtime in `dir` as it is, changing nothing: `Ok(None)` when none was
/// built, [`RuntimeError::Unhealthy`] when one exists but would be rebuilt
/// (stale lock, missing files, failing imports). Runs the import check
/// (about a second) and reports the version the venv's python runs.
pub fn inspect(dir: &Path) -> Result<Option<Runtime>, RuntimeError> {
    let dir = absolute(dir)?;
    let venv = dir.join("venv");
    if fs::symlink_metadata(&venv).is_err() {
        return Ok(None);
    }
    let mut runtime =
        check(&dir, None).map_err(|reason| RuntimeError::Unhealthy { venv, reason })?;
    let report = import_check(&runtime)?;
    runtime.version = report.version;
    runtime.base_prefix = report.base_prefix;
    Ok(Some(runtime))
}

/// Finds the base interpreter: `python_override` (a path, or a bare name
/// looked up on PATH) if given, else `python3` (then `python3.14` …
/// `python3.11`) on PATH. Runs each candidate once to check it.
pub fn find_python(python_override: Option<&Path>) -> Result<BasePython, RuntimeError> {
    find_python_in(python_override, std::env::var_os("PATH").as_deref())
}

/// [`find_python`] with PATH given explicitly.
pub fn find_python_in(
    python_override: Option<&Path>,
    path_var: Option<&OsStr>,
) -> Result<BasePython, RuntimeError> {
    if let Some(wanted) = python_override {
        let found = if wanted.components().count() == 1 && !wanted.is_absolute() {
            search_path(wanted.as_os_str(), path_var)
        } else if is_executable(wanted) {
            Some(wanted.to_path_buf())
        } else {
            None
        };
        let Some(found) = found else {
            return Err(RuntimeError::PythonOverrideMissing {
                path: wanted.to_path_buf(),
            });
        };
        return probe(&found);
    }
    let mut first_problem = None;
    for name in PYTHON_NAMES {
        let Some(candidate) = search_path(OsStr::new(name), path_var) else {
            continue;
        };
        match probe(&candidate) {
            Ok(base) => return Ok(base),
            Err(e) => {
                tracing::debug!(candidate = %candidate.display(), error = %e, "python candidate rejected");
                // A plain python3 that does not work says more than a
                // missing versioned name.
                first_problem.get_or_insert(e);
            }
        }
    }
    Err(first_problem.unwrap_or(RuntimeError::NoPython))
}

/// Writes the embedded `tradebox` package to `lib/tradebox/`, rewriting
/// files whose content differs (atomically) and removing `.py` files no
/// longer embedded. Returns whether anything changed.
pub fn sync_package(lib: &Path) -> Result<bool, RuntimeError> {
    let pkg = lib.join("tradebox");
    fs::create_dir_all(&pkg).map_err(io_err(|| format!("creating {}", pkg.display())))?;
    let mut changed = false;
    for (rel, content) in PACKAGE_FILES {
        let path = pkg.join(rel);
        if fs::read(&path).is_ok_and(|old| old == content.as_bytes()) {
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(io_err(|| format!("creating {}", parent.display())))?;
        }
        write_atomic(&path, content.as_bytes())?;
        changed = true;
    }
    let entries = fs::read_dir(&pkg).map_err(io_err(|| format!("reading {}", pkg.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".py") && !PACKAGE_FILES.iter().any(|(rel, _)| *rel == name) {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err(|| format!("removing {}", path.display())))?;
            changed = true;
        }
    }
    if changed {
        tracing::info!(lib = %lib.display(), "wrote the tradebox python package");
    }
    Ok(changed)
}

/// The pins of the embedded lock (normalized name -> version), leaving out
/// those with environment markers (they may not apply here).
pub fn lock_pins() -> BTreeMap<String, String> {
    let mut pins = BTreeMap::new();
    for line in LOCK.lines() {
        if line.starts_with([' ', '\t', '#', '-']) {
            continue;
        }
        let line = line.trim_end().trim_end_matches('\\').trim();
        if line.is_empty() || line.contains(';') {
            continue;
        }
        let Some((name, version)) = line.split_once("==") else {
            continue;
        };
        let name = name.split('[').next().unwrap_or(name);
        pins.insert(normalize(name), version.trim().to_string());
    }
    pins
}

/// Installed distributions of a venv, from `lib/python3.*/site-packages/
/// *.dist-info` folder names (normalized name -> version). No subprocess.
pub fn installed_packages(venv: &Path) -> BTreeMap<String, String> {
    let mut packages = BTreeMap::new();
    for sp in site_packages_dirs(venv) {
        let Ok(entries) = fs::read_dir(&sp) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".dist-info")) else {
                continue;
            };
            if let Some((name, version)) = stem.split_once('-') {
                packages.insert(normalize(name), version.to_string());
            }
        }
    }
    packages
}

/// PEP 503 name normalization: lowercase, runs of `-_.` become `-`.
fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

fn site_packages_dirs(venv: &Path) -> Vec<PathBuf> {
    let lib = venv.join("lib");
    let mut dirs = Vec::new();
    if let Ok(entries) = fs::read_dir(&lib) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("python3."))
            {
                let sp = entry.path().join("site-packages");
                if sp.is_dir() {
                    dirs.push(sp);
                }
            }
        }
    }
    dirs.sort();
    dirs
}

/// The no-subprocess health check; `Err` carries why it must be rebuilt.
fn check(dir: &Path, python_override: Option<&Path>) -> Result<Runtime, String> {
    let venv = dir.join("venv");
    match fs::read_to_string(venv.join(STAMP)) {
        Ok(stamp) if stamp == LOCK => {}
        Ok(_) => return Err("it was built from a different requirements.lock".into()),
        Err(_) => return Err(format!("{} is missing (never finished)", STAMP)),
    }
    let info: BaseInfo = fs::read(venv.join(BASE_INFO))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| format!("{BASE_INFO} is missing or unreadable"))?;
    if let Some(wanted) = python_override {
        // Same override, or a path to the very interpreter it was built with.
        let same = info.requested.as_deref() == Some(wanted)
            || fs::canonicalize(wanted).is_ok_and(|real| real == info.executable);
        if !same {
            return Err(format!(
                "it was built from {}, TRADEBOX_PYTHON is now {}",
                info.executable.display(),
                wanted.display()
            ));
        }
    }
    let python = venv.join("bin").join("python");
    if !is_executable(&python) {
        return Err(format!(
            "{} is missing or its base interpreter {} is gone",
            python.display(),
            info.executable.display()
        ));
    }
    let packages = installed_packages(&venv);
    for (name, version) in lock_pins() {
        match packages.get(&name) {
            Some(v) if *v == version => {}
            Some(v) => return Err(format!("{name} is {v}, the lock pins {version}")),
            None => return Err(format!("{name} {version} is not installed")),
        }
    }
    let sps = site_packages_dirs(&venv);
    for module in CHECK_MODULES {
        if !sps
            .iter()
            .any(|sp| sp.join(module).join("__init__.py").is_file())
        {
            return Err(format!("the {module} package folder is missing"));
        }
    }
    Ok(Runtime {
        python,
        base_prefix: info.base_prefix,
        lib: dir.join("lib"),
        venv,
        version: info.version,
        packages,
    })
}

fn build(
    dir: &Path,
    base: &BasePython,
    python_override: Option<&Path>,
    spinner: &Steps<'_>,
) -> Result<(), RuntimeError> {
    remove_leftovers(dir);
    let pid = std::process::id();
    let tmp = dir.join(format!("{TMP_PREFIX}{pid}"));
    let mut guard = RemoveOnDrop(Some(tmp.clone()));

    spinner.step(MSG_VENV);
    let out = run(python(&base.executable, dir)
        .arg("-m")
        .arg("venv")
        .arg(&tmp))
    .map_err(io_err(|| {
        format!("running {} -m venv", base.executable.display())
    }))?;
    if !out.status.success() {
        let detail = output_text(&out);
        if detail.contains("ensurepip") {
            return Err(venv_missing(&base.executable, &base.version));
        }
        return Err(RuntimeError::VenvCreate {
            python: base.executable.clone(),
            detail: format!("{}: {detail}", out.status),
        });
    }

    spinner.step(MSG_PIP);
    let lock_file = dir.join("requirements.lock");
    write_atomic(&lock_file, LOCK.as_bytes())?;
    let log_path = dir.join(PIP_LOG);
    let log =
        File::create(&log_path).map_err(io_err(|| format!("creating {}", log_path.display())))?;
    let log2 = log
        .try_clone()
        .map_err(io_err(|| format!("opening {}", log_path.display())))?;
    let status = python(&tmp.join("bin").join("python"), dir)
        .args([
            "-m",
            "pip",
            "install",
            "--require-hashes",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "-r",
        ])
        .arg(&lock_file)
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .status()
        .map_err(io_err(|| "running pip".to_string()))?;
    if !status.success() {
        return Err(RuntimeError::PipInstall {
            status: status.to_string(),
            tail: log_tail(&log_path, PIP_LOG_TAIL),
            log: log_path,
        });
    }

    let info = BaseInfo {
        requested: python_override.map(Path::to_path_buf),
        executable: base.executable.clone(),
        base_prefix: base.base_prefix.clone(),
        version: base.version.clone(),
    };
    let info_json = serde_json::to_vec_pretty(&info).map_err(|e| RuntimeError::Io {
        context: format!("writing {BASE_INFO}"),
        source: io::Error::other(e),
    })?;
    write_atomic(&tmp.join(BASE_INFO), &info_json)?;

    // Swap into place: the old venv (broken or stale) moves aside first.
    let venv = dir.join("venv");
    if fs::symlink_metadata(&venv).is_ok() {
        let old = dir.join(format!("{OLD_PREFIX}{pid}"));
        fs::rename(&venv, &old).map_err(io_err(|| format!("moving {} aside", venv.display())))?;
        fs::rename(&tmp, &venv).map_err(io_err(|| {
            format!("renaming {} to {}", tmp.display(), venv.display())
        }))?;
        if let Err(e) = fs::remove_dir_all(&old) {
            tracing::warn!(path = %old.display(), error = %e, "could not remove the old venv");
        }
    } else {
        fs::rename(&tmp, &venv).map_err(io_err(|| {
            format!("renaming {} to {}", tmp.display(), venv.display())
        }))?;
    }
    guard.0 = None;

    spinner.step(MSG_IMPORTS);
    let runtime = Runtime {
        python: venv.join("bin").join("python"),
        base_prefix: base.base_prefix.clone(),
        venv: venv.clone(),
        lib: dir.join("lib"),
        version: base.version.clone(),
        packages: BTreeMap::new(),
    };
    let report = import_check(&runtime)?;
    tracing::info!(python = %report.version, modules = ?report.modules, "python runtime ready");
    write_atomic(&venv.join(STAMP), LOCK.as_bytes())?;
    Ok(())
}

fn import_check(runtime: &Runtime) -> Result<ImportReport, RuntimeError> {
    let fail = |detail: String| RuntimeError::ImportCheck {
        python: runtime.python.clone(),
        detail,
    };
    let parent = runtime.venv.parent().unwrap_or(&runtime.venv);
    let out = run(python(&runtime.python, parent).arg("-c").arg(IMPORT_SCRIPT))
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!("{}: {}", out.status, output_text(&out))));
    }
    let report: ImportReport = serde_json::from_slice(last_line(&out.stdout))
        .map_err(|e| fail(format!("unexpected output ({e}): {}", output_text(&out))))?;
    let venv = fs::canonicalize(&runtime.venv).unwrap_or_else(|_| runtime.venv.clone());
    if report.prefix != venv {
        return Err(fail(format!(
            "it runs with sys.prefix {} instead of {}",
            report.prefix.display(),
            venv.display()
        )));
    }
    Ok(report)
}

fn probe(candidate: &Path) -> Result<BasePython, RuntimeError> {
    let unusable = |detail: String| RuntimeError::PythonUnusable {
        path: candidate.to_path_buf(),
        detail,
    };
    let cwd = std::env::temp_dir();
    let out = run(python(candidate, &cwd).arg("-c").arg(PROBE_SCRIPT))
        .map_err(|e| unusable(e.to_string()))?;
    if !out.status.success() {
        return Err(unusable(format!("{}: {}", out.status, output_text(&out))));
    }
    let probe: Probe = serde_json::from_slice(last_line(&out.stdout))
        .map_err(|e| unusable(format!("unexpected output ({e}): {}", output_text(&out))))?;
    if (probe.major, probe.minor) < MIN_PYTHON {
        return Err(RuntimeError::PythonTooOld {
            path: candidate.to_path_buf(),
            version: probe.version,
        });
    }
    if !probe.venv {
        return Err(venv_missing(candidate, &probe.version));
    }
    let executable = if probe.executable.as_os_str().is_empty() {
        fs::canonicalize(candidate).unwrap_or_else(|_| candidate.to_path_buf())
    } else {
        probe.executable
    };
    Ok(BasePython {
        executable,
        base_prefix: probe.base_prefix,
        version: probe.version,
    })
}

fn venv_missing(path: &Path, version: &str) -> RuntimeError {
    let minor: Vec<&str> = version.split('.').take(2).collect();
    RuntimeError::VenvModuleMissing {
        path: path.to_path_buf(),
        version: version.to_string(),
        package: format!("python{}-venv", minor.join(".")),
    }
}

/// A python command: isolated mode (no PYTHON* variables, user site or cwd
/// on sys.path), no stdin, run in `cwd`.
fn python(exe: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("-I")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME");
    cmd
}

fn run(cmd: &mut Command) -> io::Result<Output> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output()
}

fn output_text(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stdout.trim());
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(PIP_LOG_TAIL)..].join("\n")
}

fn last_line(stdout: &[u8]) -> &[u8] {
    let trimmed = stdout.trim_ascii_end();
    match trimmed.iter().rposition(|b| *b == b'\n') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    }
}

fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn search_path(name: &OsStr, path_var: Option<&OsStr>) -> Option<PathBuf> {
    let path_var = path_var?;
    std::env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn absolute(dir: &Path) -> Result<PathBuf, RuntimeError> {
    std::path::absolute(dir).map_err(io_err(|| format!("resolving {}", dir.display())))
}

fn write_atomic(path: &Path, content: &[u8]) -> Result<(), RuntimeError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    fs::write(&tmp, content).map_err(io_err(|| format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io_err(|| format!("renaming {}", tmp.display())))
}

/// Removes `venv.tmp-*` / `venv.old-*` left by interrupted builds (only
/// called with the lock held, so none is in use).
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.starts_with(TMP_PREFIX) || n.starts_with(OLD_PREFIX))
        {
            if let Err(e) = fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove a leftover venv");
            }
        }
    }
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_dir_all(path);
        }
    }
}

/// The steps of a build, reported to the caller's progress while the lock
/// is held (each a stage of unknown length); finished when dropped.
struct Steps<'a>(&'a dyn Progress);

impl Steps<'_> {
    fn step(&self, msg: &'static str) {
        tracing::info!("python runtime: {msg}");
        self.0.stage(&format!("python runtime: {msg}"), None);
    }
}

impl Drop for Steps<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}
