//! Shared set-up for the tests of the binary: a provisioned Python runtime
//! (built once under the cargo target folder and reused), a home with the
//! repository's fixture imported (`tests/fixtures/cex-reporter`, written by
//! `tests/fixtures/generate.py`, with its answers in `expected.json`), the
//! optional real-data tier (`TRADEBOX_FIXTURES`), and a pool launched
//! through the real `tradebox` binary.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod procs;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tradebox_sandbox::{runtime, ExecResult, Job, Pool, PoolConfig, PythonPaths};

/// The repository's fixture: a `trade_cache.db` and `snapshots/` in the
/// original cex-reporter format.
pub fn fixtures() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cex-reporter");
    assert!(
        dir.join("trade_cache.db").is_file() && dir.join("snapshots").is_dir(),
        "the fixture is missing at {} (python3 tests/fixtures/generate.py writes it)",
        dir.display()
    );
    dir
}

/// The fixture's answers (`expected.json`), computed by its generator.
pub fn expected() -> &'static serde_json::Value {
    static EXPECTED: OnceLock<serde_json::Value> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        let path = fixtures().join("expected.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    })
}

/// How many trades the fixture holds.
pub fn trade_count() -> u64 {
    expected()["trades"]["count"].as_u64().unwrap()
}

/// A list of strings of `expected.json` (e.g. `["trades"]["exchanges"]`).
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The extra real-data tier: a cex-reporter data folder (`trade_cache.db`
/// and `snapshots/`) named by `TRADEBOX_FIXTURES`. When it is not set, the
/// tier is skipped, said once per test binary on stderr.
pub fn real_fixtures() -> Option<PathBuf> {
    match std::env::var_os("TRADEBOX_FIXTURES") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("trade_cache.db").is_file() && dir.join("snapshots").is_dir(),
                "TRADEBOX_FIXTURES={} does not hold trade_cache.db and snapshots/",
                dir.display()
            );
            Some(dir)
        }
        _ => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write;
                // Straight to the stream: the test harness captures eprintln!.
                let _ = writeln!(
                    std::io::stderr(),
                    "real-data tier skipped: TRADEBOX_FIXTURES is not set"
                );
            });
            None
        }
    }
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
        let rt =
            runtime::ensure(&dir, &tradebox_data::progress::NoProgress).expect("Python runtime");
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
        .env_remove("DATABASE_URL")
        .env_remove("TRADEBOX_STORE_URL")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A home (kept for the process, shared by its tests) with the fixture imported.
pub fn home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(fixture_home).path()
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

/// A fresh home (removed on drop) with the fixture imported.
pub fn fixture_home() -> tempfile::TempDir {
    home_with(&fixtures())
}

/// A fresh home (removed on drop) with the trades and snapshots of the
/// cex-reporter folder `data` imported.
pub fn home_with(data: &Path) -> tempfile::TempDir {
    let dir = tempfile::TempDir::new().unwrap();
    let (db, snaps) = (data.join("trade_cache.db"), data.join("snapshots"));
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
}

/// A running `tradebox serve` (killed on drop).
pub struct Server {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub token: String,
    /// The console URL as printed, with `?token=`.
    pub url: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits (at most `limit`) for the process to exit.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "tradebox serve did not exit within {limit:?} of SIGTERM; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tradebox serve --listen 127.0.0.1:0 --workers 1 ARGS` on `home`
/// with the shared runtime and `env`, and waits for its ready line.
pub fn serve(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
    use std::io::{BufRead, BufReader, Read};
    python(); // the shared runtime, provisioned once under its lock
    let mut cmd = std::process::Command::new(bin());
    cmd.env("TRADEBOX_HOME", home)
        .env("TRADEBOX_RUNTIME", runtime_dir())
        .env_remove("TRADEBOX_TOKEN")
        .env_remove("DATABASE_URL")
        .env_remove("TRADEBOX_STORE_URL")
        .env_remove("SLACK_BOT_TOKEN")
        .env_remove("SLACK_APP_TOKEN")
        .env_remove("SLACK_SIGNING_SECRET")
        .args([
            "--quiet",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::sync::Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                stderr
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let url = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("Console ready: ") {
                    break url.trim().to_string();
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "tradebox serve exited ({status}) before it was ready; stderr:\n{}",
                        stderr.lock().unwrap()
                    );
                }
                assert!(
                    !left.is_zero(),
                    "tradebox serve was not ready within 240 s; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                panic!(
                    "tradebox serve exited ({status}) before it was ready; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    // Everything written on stderr before the ready line has been read
    // once its last line ("tradebox is ready ...") has.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !stderr.lock().unwrap().contains("tradebox is ready") {
        assert!(
            std::time::Instant::now() < deadline,
            "no \"tradebox is ready\" on stderr: {}",
            stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (base, token) = url.split_once("/?token=").unwrap();
    Server {
        child,
        base: base.to_string(),
        token: token.to_string(),
        url: url.clone(),
        stderr,
    }
}

/// An HTTP answer.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text()))
    }
}

/// A small HTTP/1.1 client for the server tests: sends one request
/// (`Connection: close`) and reads the whole answer.
/// `Host` is the server's own unless `headers` has one.
pub fn http(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    use std::io::{Read, Write};
    let authority = base.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {authority}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let has_length = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if !has_length && (!body.is_empty() || method == "POST") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body; ignore a reset then.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&raw[..line_end])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// `POST base+path` with a JSON body and the bearer token; the status and
/// the parsed JSON answer.
pub fn post_json(
    server: &Server,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {}", server.token);
    let answer = http(
        &server.base,
        "POST",
        path,
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    );
    (answer.status, answer.json())
}

/// The object has exactly the fields of `tradebox run --json` (which
/// `POST /api/v1/run` answers too).
pub fn assert_run_fields(v: &serde_json::Value) {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "artifacts",
            "data_as_of",
            "error",
            "execution_time_ms",
            "output",
            "result",
            "success"
        ],
        "{v}"
    );
}

/// Polls `done` every 50 ms until it holds, failing the test ("`what`: not
/// within `limit`") if it does not within `limit`; how long it took.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}
