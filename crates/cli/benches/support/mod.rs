//! Pieces the bench targets share: a keep-alive HTTP/1.1 client, the real
//! `tradebox serve` as a child process, percentiles, and the process tree
//! under a pid.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The store the bench runs on: `BENCH_HOME` (empty when unset; the
/// drivers in benches/ set it, or `--home` does).
pub fn bench_home() -> PathBuf {
    std::env::var_os("BENCH_HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The Python runtime the benches share: `BENCH_RUNTIME`, by default
/// target/tmp/bench-runtime (provisioned on first use, then reused).
pub fn bench_runtime() -> PathBuf {
    std::env::var_os("BENCH_RUNTIME").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-runtime"),
        PathBuf::from,
    )
}

/// One keep-alive HTTP/1.1 connection that sends a bearer token.
pub struct Client {
    reader: BufReader<TcpStream>,
    host: String,
    token: String,
}

impl Client {
    pub fn connect(addr: SocketAddr, token: &str) -> std::io::Result<Client> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(300)))?;
        Ok(Client {
            reader: BufReader::new(s),
            host: addr.to_string(),
            token: token.to_string(),
        })
    }

    /// POSTs JSON and returns (status, body).
    pub fn post(&mut self, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        self.request(path, "application/json", body.as_bytes())
    }

    /// POSTs bytes (an upload) and returns (status, body).
    #[allow(dead_code)] // not every bench uploads
    pub fn post_bytes(&mut self, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
        self.request(path, "application/octet-stream", body)
    }

    fn request(
        &mut self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            self.token,
            body.len()
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        self.reader.get_mut().write_all(&req)?;
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(bad("the server closed the connection"));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().map_err(|_| bad("Content-Length"))?;
                }
                if k.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(bad("the bench client reads Content-Length bodies only"));
                }
            }
        }
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// A running `tradebox serve` (killed on drop).
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tradebox serve` on `home` with `workers` workers (`None`: the
/// configured default) and the environment given, and waits for its
/// "Console ready" line.
pub fn serve(home: &Path, runtime: &Path, workers: Option<usize>, env: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tradebox"));
    cmd.env("TRADEBOX_HOME", home)
        .env("TRADEBOX_RUNTIME", runtime)
        .env_remove("TRADEBOX_TOKEN")
        .env_remove("DATABASE_URL")
        .env_remove("TRADEBOX_STORE_URL")
        .env_remove("SLACK_BOT_TOKEN")
        .env_remove("SLACK_APP_TOKEN")
        .env_remove("SLACK_SIGNING_SECRET")
        .env("RUST_LOG", "error")
        .args(["--quiet", "serve", "--listen", "127.0.0.1:0", "--no-demo"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(n) = workers {
        cmd.args(["--workers", &n.to_string()]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("tradebox serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("Console ready: ") {
                    break url.to_string();
                }
            }
            _ => panic!("tradebox serve exited before it was ready"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, token) = rest.split_once("/?token=").expect("a token in the URL");
    Server {
        child,
        addr: host.parse().expect("a socket address"),
        token: token.to_string(),
    }
}

/// The `p`th percentile of sorted values (nearest rank); NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Every process under `pid` (children, their children, ...).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(pp) = parent_of(p) {
                parents.push((p, pp));
            }
        }
    }
    let mut all = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        for &(kid, _) in parents.iter().filter(|(_, pp)| *pp == p) {
            all.push(kid);
            next.push(kid);
        }
    }
    all
}

/// Field `n` of `/proc/<pid>/stat`, counted after the command's closing
/// parenthesis (0: the state, 1: the parent, 19: the start time).
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(n).map(str::to_string)
}

/// The parent of `pid`.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_field(pid, 1)?.parse().ok()
}

/// Whether `pid` is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    stat_field(pid, 0).is_some_and(|state| state != "Z" && state != "X")
}

/// When `pid` started (clock ticks since boot): with the pid, it names one
/// process even after its pid is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_field(pid, 19)?.parse().ok()
}

/// `pid`, its state and its command line, for a report.
pub fn describe(pid: u32) -> String {
    let state = stat_field(pid, 0).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default();
    format!(
        "{pid} ({state}) {}",
        cmdline.chars().take(120).collect::<String>()
    )
}

/// Resident memory (KiB) and open descriptors of `pid`.
pub fn rss_and_fds(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}
