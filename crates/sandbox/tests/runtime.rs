//! Tests of the Python runtime provisioning. One test builds a real runtime
//! from PyPI (`provisions_reuses_and_repairs`, about a minute the first
//! time); the others use fake interpreters and folders and are fast.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use tradebox_data::progress::NoProgress;
use tradebox_sandbox::runtime::{self, RuntimeError};

const NOWHERE: &str = "/nonexistent/tradebox-test/python3";

/// Writes an executable fake python that prints `json` (the probe's answer).
fn fake_python(dir: &Path, name: &str, json: &str) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\necho '{json}'\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn probe_json(version: &str, venv: bool) -> String {
    let mut parts = version.split('.');
    let major = parts.next().unwrap();
    let minor = parts.next().unwrap();
    format!(
        r#"{{"version": "{version}", "major": {major}, "minor": {minor}, "base_prefix": "/opt/py", "executable": "/opt/py/bin/python{major}.{minor}", "venv": {venv}}}"#
    )
}

/// `find_python_in`, retried while a freshly written fake script is still
/// held open by a concurrently forked child of another test (ETXTBSY).
fn find(
    python_override: Option<&Path>,
    path_var: &std::ffi::OsStr,
) -> Result<runtime::BasePython, RuntimeError> {
    for _ in 0..20 {
        match runtime::find_python_in(python_override, Some(path_var)) {
            Err(RuntimeError::PythonUnusable { detail, .. }) if detail.contains("busy") => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
    runtime::find_python_in(python_override, Some(path_var))
}

fn mtime(path: &Path) -> SystemTime {
    fs::symlink_metadata(path).unwrap().modified().unwrap()
}

fn python_out(python: &Path, code: &str, pythonpath: Option<&Path>) -> String {
    let mut cmd = Command::new(python);
    cmd.args(["-c", code]);
    if let Some(p) = pythonpath {
        cmd.env("PYTHONPATH", p);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{} -c {code:?}: {}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("venv.") || n.contains(".tmp-"))
        .collect()
}

#[test]
fn missing_override_says_what_to_install() {
    let err = runtime::find_python_in(Some(Path::new(NOWHERE)), None).unwrap_err();
    assert!(
        matches!(err, RuntimeError::PythonOverrideMissing { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("TRADEBOX_PYTHON is set to /nonexistent/"),
        "{msg}"
    );
    assert!(
        msg.contains("apt-get install python3 python3-venv"),
        "{msg}"
    );

    // Through ensure: the same error, and nothing built.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("runtime");
    let err = runtime::ensure_with(&dir, Some(Path::new(NOWHERE)), &NoProgress).unwrap_err();
    assert!(
        matches!(err, RuntimeError::PythonOverrideMissing { .. }),
        "{err:?}"
    );
    assert!(!dir.join("venv").exists());
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));

    // A bare name is looked up on PATH.
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let err = find(Some(Path::new("python3.99")), empty.as_os_str()).unwrap_err();
    assert!(
        matches!(err, RuntimeError::PythonOverrideMissing { .. }),
        "{err:?}"
    );
}

#[test]
fn no_python_on_path_says_what_to_install() {
    let tmp = tempfile::tempdir().unwrap();
    let err = find(None, tmp.path().as_os_str()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no python3 >= 3.11 found on PATH; install it (Debian/Ubuntu: apt-get install python3 \
         python3-venv) or set TRADEBOX_PYTHON to its path"
    );
    let err = runtime::find_python_in(None, None).unwrap_err();
    assert!(matches!(err, RuntimeError::NoPython), "{err:?}");
}

#[test]
fn old_python_and_missing_venv_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    fake_python(&old, "python3", &probe_json("3.9.2", true));
    let err = find(None, old.as_os_str()).unwrap_err();
    assert!(matches!(err, RuntimeError::PythonTooOld { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("is Python 3.9.2"), "{msg}");
    assert!(
        msg.contains("apt-get install python3 python3-venv"),
        "{msg}"
    );

    let novenv = tmp.path().join("novenv");
    let exe = fake_python(&novenv, "python3", &probe_json("3.12.3", false));
    let err = find(Some(&exe), novenv.as_os_str()).unwrap_err();
    assert!(
        matches!(err, RuntimeError::VenvModuleMissing { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("apt-get install python3-venv"), "{msg}");
    assert!(msg.contains("python3.12-venv"), "{msg}");

    let broken = tmp.path().join("broken");
    fs::create_dir_all(&broken).unwrap();
    let exe = broken.join("python3");
    fs::write(&exe, "#!/bin/sh\necho oops >&2\nexit 3\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let err = find(None, broken.as_os_str()).unwrap_err();
    assert!(
        matches!(err, RuntimeError::PythonUnusable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("oops"), "{err}");
}

#[test]
fn path_search_falls_back_to_versioned_names() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    fake_python(&a, "python3", &probe_json("3.10.1", true));
    fake_python(&b, "python3.12", &probe_json("3.12.3", true));
    // A non-executable python3 earlier on PATH is skipped.
    let c = tmp.path().join("c");
    fs::create_dir_all(&c).unwrap();
    fs::write(c.join("python3"), "not a program").unwrap();
    let path = std::env::join_paths([&c, &a, &b]).unwrap();
    let base = find(None, &path).unwrap();
    assert_eq!(base.version, "3.12.3");
    assert_eq!(base.executable, Path::new("/opt/py/bin/python3.12"));
    assert_eq!(base.base_prefix, Path::new("/opt/py"));

    let base = find(Some(Path::new("python3.12")), &path).unwrap();
    assert_eq!(base.version, "3.12.3");
}

#[test]
fn lock_pins_come_from_the_embedded_lock() {
    let pins = runtime::lock_pins();
    assert_eq!(pins.get("pandas").map(String::as_str), Some("3.1.1"));
    assert_eq!(pins.get("numpy").map(String::as_str), Some("2.4.6"));
    assert_eq!(pins.get("pyarrow").map(String::as_str), Some("26.0.1"));
    assert_eq!(pins.get("matplotlib").map(String::as_str), Some("3.11.2"));
    assert_eq!(
        pins.get("python-dateutil").map(String::as_str),
        Some("4.0.0")
    );
    let reqs = runtime::LOCK
        .lines()
        .filter(|l| l.contains("==") && !l.starts_with(' ') && !l.starts_with('#'))
        .count();
    assert_eq!(pins.len(), reqs);
}

#[test]
fn package_files_are_written_and_kept_in_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    assert!(runtime::sync_package(&lib).unwrap());
    for (rel, content) in runtime::PACKAGE_FILES {
        assert_eq!(
            fs::read_to_string(lib.join("tradebox").join(rel)).unwrap(),
            *content
        );
    }
    assert!(!runtime::sync_package(&lib).unwrap(), "nothing to change");

    let data = lib.join("tradebox/data.py");
    fs::write(&data, "# edited\n").unwrap();
    fs::write(lib.join("tradebox/gone.py"), "# no longer shipped\n").unwrap();
    fs::write(lib.join("tradebox/notes.txt"), "kept").unwrap();
    assert!(runtime::sync_package(&lib).unwrap());
    assert!(fs::read_to_string(&data).unwrap().len() > 100);
    assert!(!lib.join("tradebox/gone.py").exists());
    assert!(lib.join("tradebox/notes.txt").exists());
    let names: Vec<String> = fs::read_dir(lib.join("tradebox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
}

#[test]
fn installed_packages_are_read_from_dist_info_names() {
    let tmp = tempfile::tempdir().unwrap();
    let sp = tmp.path().join("venv/lib/python3.11/site-packages");
    for d in [
        "pandas-3.1.1.dist-info",
        "python_dateutil-4.0.0.dist-info",
        "Pillow-13.0.0.dist-info",
        "pandas",
        "__pycache__",
    ] {
        fs::create_dir_all(sp.join(d)).unwrap();
    }
    let packages = runtime::installed_packages(&tmp.path().join("venv"));
    let got: Vec<(&str, &str)> = packages
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("pandas", "3.1.1"),
            ("pillow", "13.0.0"),
            ("python-dateutil", "4.0.0")
        ]
    );
}

#[test]
fn inspect_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("runtime");
    assert_eq!(runtime::inspect(&dir).unwrap(), None);
    assert!(!dir.exists());

    // A venv that never got its stamp (an interrupted build) is unhealthy.
    fs::create_dir_all(dir.join("venv/bin")).unwrap();
    let err = runtime::inspect(&dir).unwrap_err();
    assert!(matches!(err, RuntimeError::Unhealthy { .. }), "{err:?}");
    assert!(err.to_string().contains("needs repair"), "{err}");
    let mut entries: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["venv"]);
}

#[test]
fn ensure_waits_for_the_build_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("runtime");
    fs::create_dir_all(&dir).unwrap();
    let held = fs::File::create(dir.join(".lock")).unwrap();
    held.lock().unwrap();

    let d = dir.clone();
    let waiter =
        std::thread::spawn(move || runtime::ensure_with(&d, Some(Path::new(NOWHERE)), &NoProgress));
    std::thread::sleep(Duration::from_millis(400));
    assert!(!waiter.is_finished(), "ensure must wait for the lock");
    held.unlock().unwrap();
    let err = waiter.join().unwrap().unwrap_err();
    assert!(
        matches!(err, RuntimeError::PythonOverrideMissing { .. }),
        "{err:?}"
    );
}

/// A fake base python: answers the probe, and for `-m venv DIR` makes a
/// venv whose python fails the way `pip_script` says.
fn fake_base(dir: &Path, venv_script: &str, pip_script: &str) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("pip.sh"), format!("#!/bin/sh\n{pip_script}\n")).unwrap();
    let script = format!(
        "#!/bin/sh\nif [ \"$2\" = -c ]; then echo '{}'; exit 0; fi\n{venv_script}\n\
         mkdir -p \"$4/bin\" && cp '{}' \"$4/bin/python\" && chmod +x \"$4/bin/python\"\n",
        probe_json("3.12.3", true).replace(
            "/opt/py/bin/python3.12",
            dir.join("python3").to_str().unwrap()
        ),
        dir.join("pip.sh").display()
    );
    let path = dir.join("python3");
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn ensure_fake(dir: &Path, python: &Path) -> Result<runtime::Runtime, RuntimeError> {
    for _ in 0..20 {
        match runtime::ensure_with(dir, Some(python), &NoProgress) {
            Err(RuntimeError::PythonUnusable { detail, .. }) if detail.contains("busy") => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
    runtime::ensure_with(dir, Some(python), &NoProgress)
}

#[test]
fn failed_builds_report_and_clean_up() {
    let tmp = tempfile::tempdir().unwrap();

    // pip fails: the error quotes the end of pip.log; the half-built venv is
    // removed.
    let pip = "i=1; while [ $i -le 30 ]; do echo \"pip line $i\"; i=$((i+1)); done\n\
               echo 'ERROR: No matching distribution found for pandas==3.1.1' >&2; exit 1";
    let python = fake_base(&tmp.path().join("py1"), "", pip);
    let dir = tmp.path().join("runtime1");
    let err = ensure_fake(&dir, &python).unwrap_err();
    let RuntimeError::PipInstall {
        ref status,
        ref log,
        ref tail,
    } = err
    else {
        panic!("{err:?}");
    };
    assert_eq!(status, "exit status: 1");
    assert_eq!(log, &dir.join("pip.log"));
    assert!(
        tail.ends_with("No matching distribution found for pandas==3.1.1"),
        "{tail}"
    );
    assert!(tail.starts_with("pip line 12\n"), "{tail}");
    assert!(err.to_string().contains("last lines of"), "{err}");
    assert!(!dir.join("venv").exists());
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));

    // `python -m venv` fails for want of ensurepip (Debian without
    // python3-venv): say what to install.
    let python = fake_base(
        &tmp.path().join("py2"),
        "echo 'The virtual environment was not created successfully because ensurepip is not \
         available.' >&2; exit 1",
        "exit 0",
    );
    let dir = tmp.path().join("runtime2");
    let err = ensure_fake(&dir, &python).unwrap_err();
    assert!(
        matches!(err, RuntimeError::VenvModuleMissing { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("python3.12-venv"), "{err}");

    // Any other venv failure is passed on.
    let python = fake_base(
        &tmp.path().join("py3"),
        "echo 'Error: [Errno 28] No space left on device' >&2; exit 1",
        "exit 0",
    );
    let dir = tmp.path().join("runtime3");
    let err = ensure_fake(&dir, &python).unwrap_err();
    assert!(matches!(err, RuntimeError::VenvCreate { .. }), "{err:?}");
    assert!(err.to_string().contains("No space left"), "{err}");

    // pip "succeeds" but installs nothing: the import check fails and no
    // stamp is written, so the venv is never reused.
    let python = fake_base(
        &tmp.path().join("py4"),
        "",
        "echo 'ModuleNotFoundError: No module named pandas' >&2; [ \"$3\" = pip ]",
    );
    let dir = tmp.path().join("runtime4");
    let err = ensure_fake(&dir, &python).unwrap_err();
    assert!(matches!(err, RuntimeError::ImportCheck { .. }), "{err:?}");
    assert!(err.to_string().contains("No module named pandas"), "{err}");
    assert!(!dir.join("venv/.tradebox-lock").exists());
    let err = runtime::inspect(&dir).unwrap_err();
    assert!(matches!(err, RuntimeError::Unhealthy { .. }), "{err:?}");
}

/// The real thing: builds a runtime from PyPI, reuses it, reports it and
/// repairs it.
#[test]
fn provisions_reuses_and_repairs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("runtime");
    let progress = NoProgress;

    // First use builds it.
    let started = Instant::now();
    let rt = runtime::ensure(&dir, &progress).unwrap();
    eprintln!("first provisioning: {:?}", started.elapsed());
    let venv = dir.join("venv");
    assert_eq!(rt.python, venv.join("bin/python"));
    assert_eq!(rt.venv, venv);
    assert_eq!(rt.lib, dir.join("lib"));
    assert!(rt.version.starts_with("3."), "{}", rt.version);
    assert!(rt.base_prefix.is_absolute() && rt.base_prefix.is_dir());
    assert_eq!(
        python_out(&rt.python, "import pandas; print(pandas.__version__)", None),
        "3.1.1"
    );
    // The venv was built under another name and renamed: it must know where
    // it is now.
    assert_eq!(
        python_out(&rt.python, "import sys; print(sys.prefix)", None),
        fs::canonicalize(&venv).unwrap().to_str().unwrap()
    );
    // The embedded package imports against the installed pyarrow.
    let file = python_out(
        &rt.python,
        "import tradebox; print(tradebox.__file__)",
        Some(&rt.lib),
    );
    assert!(
        Path::new(&file).starts_with(fs::canonicalize(&rt.lib).unwrap())
            || Path::new(&file).starts_with(&rt.lib),
        "{file}"
    );
    assert_eq!(
        fs::read_to_string(venv.join(".tradebox-lock")).unwrap(),
        runtime::LOCK
    );
    let log = fs::read_to_string(dir.join("pip.log")).unwrap();
    assert!(log.contains("Successfully installed"), "{log}");
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    for (name, version) in runtime::lock_pins() {
        assert_eq!(rt.packages.get(&name), Some(&version), "{name}");
    }

    // Second use reuses it: fast, pip not run, nothing rewritten.
    let before = (
        mtime(&dir.join("pip.log")),
        mtime(&venv),
        mtime(&venv.join(".tradebox-lock")),
    );
    let started = Instant::now();
    let again = runtime::ensure(&dir, &progress).unwrap();
    let reuse = started.elapsed();
    eprintln!("reuse: {reuse:?}");
    assert_eq!(again, rt);
    assert!(reuse < Duration::from_secs(1), "reuse took {reuse:?}");
    let after = (
        mtime(&dir.join("pip.log")),
        mtime(&venv),
        mtime(&venv.join(".tradebox-lock")),
    );
    assert_eq!(before, after);

    // An edited package file is put back.
    fs::write(rt.lib.join("tradebox/data.py"), "raise ImportError\n").unwrap();
    runtime::ensure(&dir, &progress).unwrap();
    assert_eq!(
        fs::read_to_string(rt.lib.join("tradebox/data.py")).unwrap(),
        runtime::PACKAGE_FILES
            .iter()
            .find(|(rel, _)| *rel == "data.py")
            .unwrap()
            .1
    );

    // inspect (doctor) reports what the lock pins.
    let started = Instant::now();
    let seen = runtime::inspect(&dir).unwrap().unwrap();
    eprintln!("inspect: {:?}", started.elapsed());
    assert_eq!(seen.python, rt.python);
    assert_eq!(seen.version, rt.version);
    assert_eq!(seen.base_prefix, rt.base_prefix);
    assert_eq!(
        seen.packages.get("pandas").map(String::as_str),
        Some("3.1.1")
    );
    assert_eq!(
        seen.packages.get("numpy").map(String::as_str),
        Some("2.4.6")
    );
    assert_eq!(
        seen.packages.get("pyarrow").map(String::as_str),
        Some("26.0.1")
    );
    assert_eq!(
        seen.packages.get("matplotlib").map(String::as_str),
        Some("3.11.2")
    );

    // TRADEBOX_PYTHON naming the interpreter it was built with: reused.
    let base = fs::canonicalize(&rt.python).unwrap();
    let same = runtime::ensure_with(&dir, Some(&base), &progress).unwrap();
    assert_eq!(same, rt);
    assert_eq!(mtime(&venv.join(".tradebox-lock")), after.2);

    // A changed TRADEBOX_PYTHON that does not exist: a clear error, and the
    // working runtime is left alone.
    let err = runtime::ensure_with(&dir, Some(Path::new(NOWHERE)), &progress).unwrap_err();
    assert!(
        matches!(err, RuntimeError::PythonOverrideMissing { .. }),
        "{err:?}"
    );
    assert_eq!(runtime::inspect(&dir).unwrap().unwrap(), seen);

    // Broken: a package folder gone, then bin/python gone. inspect says so.
    let sp = fs::read_dir(venv.join("lib"))
        .unwrap()
        .map(|e| e.unwrap().path().join("site-packages"))
        .find(|p| p.is_dir())
        .unwrap();
    fs::remove_dir_all(sp.join("pandas")).unwrap();
    let err = runtime::inspect(&dir).unwrap_err();
    assert!(err.to_string().contains("pandas"), "{err}");
    fs::remove_file(venv.join("bin/python")).unwrap();
    let err = runtime::inspect(&dir).unwrap_err();
    assert!(err.to_string().contains("bin/python"), "{err}");

    // Two processes' worth of ensure at once repair it once, without
    // corrupting it.
    let started = Instant::now();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let d = dir.clone();
            std::thread::spawn(move || runtime::ensure(&d, &NoProgress))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!("repair: {:?}", started.elapsed());
    for r in &results {
        let r = r.as_ref().unwrap();
        assert_eq!(r.python, rt.python);
        assert_eq!(r.packages, rt.packages);
    }
    assert_eq!(
        python_out(&rt.python, "import pandas; print(pandas.__version__)", None),
        "3.1.1"
    );
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    assert!(runtime::inspect(&dir).unwrap().is_some());
}
