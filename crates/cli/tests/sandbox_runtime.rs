//! The Python runtime removed, or provisioned anew, under a running pool:
//! its zygote is retired within seconds (new imports would fail in its
//! jobs), jobs are told why while no zygote can start, and a runtime back
//! in place is taken without a job asking. The pool runs on a copy of the
//! test runtime (hard links: folders of its own, the same files), so the
//! other tests' runtime is never touched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::procs::alive;
use common::wait_until;

use tradebox_sandbox::{Pool, PythonPaths};

fn copy(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-al")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -al {} {}",
        from.display(),
        to.display()
    );
}

#[test]
fn a_runtime_removed_under_the_pool_is_reported_and_the_next_one_taken_within_seconds() {
    let shared = common::python();
    let tmp = tempfile::TempDir::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let rt = tmp.path().join("runtime");
    std::fs::create_dir(&rt).unwrap();
    copy(&shared.venv, &rt.join("venv"));
    copy(&shared.lib, &rt.join("lib"));
    let python = PythonPaths {
        python: shared
            .python
            .strip_prefix(&shared.venv)
            .map_or_else(|_| shared.python.clone(), |rel| rt.join("venv").join(rel)),
        venv: rt.join("venv"),
        base_prefix: shared.base_prefix.clone(),
        lib: rt.join("lib"),
    };
    let mut config = common::config(1);
    config.python = python;
    let pool = Pool::start(config).unwrap();
    let pid = |pool: &Pool| pool.status()[0].pid;
    assert_eq!(
        common::run(&pool, "result = 1 + 1").result.as_deref(),
        Some("2")
    );
    let first = pid(&pool).unwrap();

    // Removed: the zygote is retired, and a job is told why at once.
    std::fs::rename(&rt, tmp.path().join("gone")).unwrap();
    let took = wait_until("the zygote retired", Duration::from_secs(10), || {
        !alive(first)
    });
    println!("[runtime] retired in {took:?}");
    let asked = Instant::now();
    let r = common::run(&pool, "result = 1 + 1");
    assert!(!r.success, "{r:#?}");
    assert_eq!(common::error_kind(&r), "SandboxError", "{r:#?}");
    let message = &r.error.as_ref().unwrap().message;
    assert!(
        message.contains("the Python runtime is missing"),
        "{message}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "told within seconds"
    );

    // Back in place: a zygote starts on it before any job asks.
    std::fs::rename(tmp.path().join("gone"), &rt).unwrap();
    let took = wait_until(
        "a zygote on the runtime back",
        Duration::from_secs(60),
        || pid(&pool).is_some_and(|p| p != first && alive(p)),
    );
    println!("[runtime] back, zygote started in {took:?}");
    assert_eq!(
        common::run(&pool, "result = 1 + 1").result.as_deref(),
        Some("2")
    );
    let second = pid(&pool).unwrap();
    let restarts = pool.status()[0].restarts;

    // Provisioned anew (new folders in the same place) while jobs run:
    // the zygote is replaced, and no job fails.
    copy(&rt, &tmp.path().join("new"));
    std::fs::rename(&rt, tmp.path().join("old")).unwrap();
    std::fs::rename(tmp.path().join("new"), &rt).unwrap();
    let took = wait_until(
        "a zygote on the new runtime",
        Duration::from_secs(60),
        || {
            let r = common::run(&pool, "import json\nresult = json.dumps([1])");
            assert_eq!(r.result.as_deref(), Some("[1]"), "{r:#?}");
            pid(&pool).is_some_and(|p| p != second && alive(p))
        },
    );
    println!("[runtime] provisioned anew, replaced in {took:?}");
    assert!(!alive(second));
    assert!(pool.status()[0].restarts > restarts);
    std::fs::remove_dir_all(tmp.path().join("old")).unwrap();
    assert_eq!(
        common::run(&pool, "result = 2 + 2").result.as_deref(),
        Some("4")
    );
}
