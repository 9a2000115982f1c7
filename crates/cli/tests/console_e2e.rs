//! The web console in a real browser: starts `tradebox serve` on the
//! fixture data and runs tests/e2e/console.test.mjs (headless Debian
//! chromium driven by playwright-core) against it. Needs `chromium` and
//! `npm ci` in tests/e2e (scripts/test installs both); fails, never skips,
//! when they are missing. Screenshots go to target/e2e-screenshots/.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/e2e-screenshots` (beside `target/tmp`).
fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("e2e-screenshots")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

#[test]
fn the_console_in_a_browser() {
    let e2e = repo().join("tests/e2e");
    let browser = chromium();
    assert!(
        browser.is_file(),
        "no browser at {}: the console end-to-end test needs Debian's chromium \
         (`apt-get install -y chromium`, as scripts/test does) or CHROMIUM=/path/to/chromium",
        browser.display()
    );
    assert!(
        e2e.join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is not installed: run `npm ci` in {} (scripts/test does)",
        e2e.display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "`node` is needed for the browser test (Debian: apt-get install -y nodejs)"
    );

    let home = common::fixture_home();
    let server = common::serve(
        home.path(),
        &[
            ("TRADEBOX_DATA_AS_OF", "latest"),
            ("TRADEBOX_CONSOLE_USER", "deskops"),
        ],
        &["--no-demo"],
    );
    let shots = screenshots();
    let _ = std::fs::remove_dir_all(&shots);
    let mut child = Command::new("node")
        .arg(e2e.join("console.test.mjs"))
        .current_dir(&e2e)
        .env("TRADEBOX_URL", &server.url)
        .env(
            "TRADEBOX_EXPECTED",
            common::fixtures().join("expected.json"),
        )
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &browser)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    // Generous: the first job of a fresh pool and a snapshot switch included.
    let limit = Duration::from_secs(600);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the browser test did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                reader.join().unwrap(),
                err_reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    println!("{stdout}");
    eprintln!("{stderr}");
    println!("screenshots of the console: {}", shots.display());
    assert!(
        status.success() && stdout.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "the browser test failed ({status}); screenshots in {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver stderr:\n{}",
        shots.display(),
        server.stderr()
    );
    let passed: usize = stdout
        .lines()
        .find_map(|l| l.strip_suffix(" passed, 0 failed"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(passed >= 10, "only {passed} browser steps ran");
    for name in [
        "02-analyze-table",
        "03-chart",
        "06-functions",
        "07-audit",
        "08-data",
    ] {
        assert!(
            shots.join(format!("{name}.png")).is_file(),
            "screenshot {name}.png missing"
        );
    }
}
