//! The sandbox contract (SECURITY.md, "Threat model") attacked from inside
//! a job, through the real pool, launcher and zygote, with the validator off
//! (the pool never validates). Each test plants or observes specific evidence:
//! random tokens that must never come back, listeners that must never see a
//! connection, files and processes that must not survive a job, and the
//! error a runaway job must end with, followed by a prompt next job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{error_kind, pool, run, run_with};
use tradebox_sandbox::{ExecResult, Job, Pool, PoolError};

/// A random lowercase hex string of `bytes` bytes.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A secret: `TBXSECRET` and 24 hex digits (a shape a job can scan memory for).
fn secret() -> String {
    format!("TBXSECRET{}", random_hex(12))
}

/// A Python string literal (JSON strings are Python literals for ASCII text).
fn py(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The whole result as JSON: result text, value, output, error and artifacts.
fn everything(r: &ExecResult) -> String {
    serde_json::to_string(r).unwrap()
}

fn assert_absent(r: &ExecResult, token: &str, what: &str) {
    let all = everything(r);
    assert!(
        !all.contains(token),
        "LEAK: {what} ({token}) came back in the job's result: {}",
        excerpt(&all, token)
    );
}

/// Some text around the first occurrence of `needle`.
fn excerpt(hay: &str, needle: &str) -> String {
    let Some(at) = hay.find(needle) else {
        return String::new();
    };
    let mut start = at.saturating_sub(300);
    while !hay.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (at + needle.len() + 300).min(hay.len());
    while !hay.is_char_boundary(end) {
        end += 1;
    }
    format!("...{}...", &hay[start..end])
}

/// The job's output line that starts with `label: `.
fn line<'a>(r: &'a ExecResult, label: &str) -> &'a str {
    let prefix = format!("{label}: ");
    r.output
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line {label:?} in the output of {r:#?}"))
}

fn restarts(pool: &Pool) -> u64 {
    pool.status()[0].restarts
}

/// The next job on the pool must succeed promptly; returns how long it took.
fn assert_recovers(pool: &Pool, after: &str) -> Duration {
    let started = Instant::now();
    let r = run(pool, "result = 1 + 1");
    let took = started.elapsed();
    println!("[timing] next job after {after}: {took:?}");
    assert!(r.success, "the job after {after} failed: {r:?}");
    assert_eq!(r.result.as_deref(), Some("2"), "after {after}: {r:?}");
    assert!(
        took < Duration::from_secs(10),
        "the job after {after} took {took:?}"
    );
    took
}

/// Removes a planted file when the test ends, even when it fails.
struct Planted(PathBuf);

impl Planted {
    fn new(path: PathBuf, content: &str) -> Planted {
        std::fs::write(&path, content).unwrap();
        Planted(path)
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Python: `attempt(label, fn)` records `label: OK <value>` or
/// `label: <ExceptionType>: <message>` in `log`.
const ATTEMPT: &str = r#"
import os, sys
log = []
def attempt(label, fn):
    try:
        value = fn()
        log.append(f"{label}: OK {repr(value)[:300]}")
    except BaseException as e:
        log.append(f"{label}: {type(e).__name__}: {str(e)[:200]}")
"#;

/// Python: `scan(pid)` returns every `TBXSECRET...` / `TBXLEAK...` string in
/// the readable memory of a process of the sandbox: its own (read in place:
/// a job may not open its own `/proc/self/mem`, which belongs to the
/// sandbox's unmapped root as the process is not dumpable) or another's
/// (through `/proc/PID/mem`, which must fail).
const SCAN: &str = r#"
import ctypes, re
def scan(pid, pattern=rb"TBX(?:SECRET|LEAK)[0-9a-f]{24}"):
    found, pat = set(), re.compile(pattern)
    with open(f"/proc/{pid}/maps") as maps:
        rows = maps.readlines()
    mem = None if pid == "self" else open(f"/proc/{pid}/mem", "rb", buffering=0)
    for row in rows:
        parts = row.split()
        path = parts[5] if len(parts) > 5 else ""
        if "r" not in parts[1] or path.startswith("[v"):
            continue
        if mem is None and path.startswith("/") and not path.startswith("/dev/zero"):
            continue  # files mapped in place (libraries, the snapshot): read past their end faults
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if mem is None:
            data = ctypes.string_at(lo, hi - lo)
        else:
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except (OSError, OverflowError, ValueError):
                continue
        found.update(m.decode() for m in pat.findall(data))
    return sorted(found)
"#;

// ---------------------------------------------------------------- 1. files

#[test]
fn host_files_are_out_of_reach() {
    let pool = pool(1);
    let home = common::home();
    let tokens: Vec<(String, &str)> = vec![
        (secret(), "host /tmp file"),
        (secret(), "tradebox.toml in the test home"),
        (secret(), "row in the home's tradebox.db"),
        (secret(), "file in $HOME"),
    ];
    let tmp_file = std::env::temp_dir().join(format!("tradebox-test-secret-{}.csv", random_hex(6)));
    let _tmp = Planted::new(tmp_file.clone(), &format!("secret\n{}\n", tokens[0].0));
    let config = home.join("tradebox.toml");
    let _config = Planted::new(
        config.clone(),
        &format!("# test secret\n[test]\nslack_token = \"{}\"\n", tokens[1].0),
    );
    let store = home.join("tradebox.db");
    {
        let db = rusqlite::Connection::open(&store).unwrap();
        db.execute_batch("CREATE TABLE IF NOT EXISTS test_secret (v TEXT)")
            .unwrap();
        db.execute("INSERT INTO test_secret (v) VALUES (?1)", [&tokens[2].0])
            .unwrap();
    }
    let user_home = PathBuf::from(std::env::var_os("HOME").expect("HOME is set"));
    let home_file = user_home.join(format!(".tradebox-test-secret-{}", random_hex(6)));
    let _home_file = Planted::new(home_file.clone(), &tokens[3].0);

    let paths: Vec<String> = [&tmp_file, &config, &store, &home_file]
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    let code = format!(
        "{ATTEMPT}{SCAN}{}",
        r#"
import numpy as np, pandas as pd
paths = @PATHS@
for i, p in enumerate(paths):
    attempt(f"exists {i}", lambda: os.path.exists(p))
    attempt(f"open {i}", lambda: open(p).read())
    attempt(f"open-bytes {i}", lambda: open(p, "rb").read())
    attempt(f"read_csv {i}", lambda: pd.read_csv(p, header=None).to_string())
    attempt(f"read_pickle {i}", lambda: repr(pd.read_pickle(p)))
    attempt(f"np.load {i}", lambda: repr(np.load(p, allow_pickle=False)))
    attempt(f"np.fromfile {i}", lambda: np.fromfile(p, dtype="u1").tobytes())
    attempt(f"proc-self-root {i}", lambda: open("/proc/self/root" + p, "rb").read())
    attempt(f"proc-1-root {i}", lambda: open("/proc/1/root" + p, "rb").read())
    attempt(f"proc-1-cwd {i}", lambda: open("/proc/1/cwd" + p, "rb").read())
    link = f"/tmp/link-{i}"
    attempt(f"symlink {i}", lambda: os.symlink(p, link))
    attempt(f"via-symlink {i}", lambda: open(link, "rb").read())
    d = os.path.dirname(p)
    while True:
        attempt(f"listdir {d}", lambda: sorted(os.listdir(d)))
        if d == "/":
            break
        d = os.path.dirname(d)
for pid in range(1, 65):
    for name in ("environ", "cmdline"):
        path = f"/proc/{pid}/{name}"
        if os.path.exists(path):
            attempt(path, lambda: open(path, "rb").read())
attempt("scan self", lambda: scan("self"))
attempt("scan zygote", lambda: scan(1))
print("\n".join(log))
print("ATTEMPTS DONE", len(log))
"#
        .replace(
            "@PATHS@",
            &format!(
                "[{}]",
                paths.iter().map(|p| py(p)).collect::<Vec<_>>().join(", ")
            )
        )
    );
    let r = run(&pool, &code);
    println!("{}", r.output);
    assert!(r.success, "{r:#?}");
    assert!(r.output.contains("ATTEMPTS DONE"), "{r:#?}");
    for (token, what) in &tokens {
        assert_absent(&r, token, what);
    }
    // The evidence that each attempt was made and refused.
    for i in 0..paths.len() {
        assert_eq!(
            line(&r, &format!("exists {i}")),
            format!("exists {i}: OK False")
        );
        for how in [
            "open",
            "open-bytes",
            "read_csv",
            "np.fromfile",
            "proc-self-root",
        ] {
            let l = line(&r, &format!("{how} {i}"));
            assert!(l.contains("FileNotFoundError"), "{l}");
        }
        assert!(line(&r, &format!("via-symlink {i}")).contains("FileNotFoundError"));
    }
    assert!(line(&r, "scan self").starts_with("scan self: OK"));
}

// ------------------------------------------------------------ 2. environment

#[test]
fn the_supervisors_environment_is_not_visible() {
    let token = format!("xoxb-{}", random_hex(16));
    // Edition 2021: set_var is safe; this binary's own code reads no
    // environment concurrently except through std (which locks).
    std::env::set_var("SLACK_BOT_TOKEN", &token);
    let pool = pool(1);
    let code = format!(
        "{ATTEMPT}{}",
        r#"
attempt("os.environ", lambda: dict(os.environ))
attempt("getenv", lambda: os.getenv("SLACK_BOT_TOKEN"))
attempt("self environ", lambda: open("/proc/self/environ", "rb").read())
attempt("1 environ", lambda: open("/proc/1/environ", "rb").read())
for pid in sorted(p for p in os.listdir("/proc") if p.isdigit()):
    attempt(f"{pid} environ (listed)", lambda: open(f"/proc/{pid}/environ", "rb").read())
    attempt(f"{pid} cmdline (listed)", lambda: open(f"/proc/{pid}/cmdline", "rb").read())
print("\n".join(log))
"#
    );
    let r = run(&pool, &code);
    std::env::remove_var("SLACK_BOT_TOKEN");
    println!("{}", r.output);
    assert!(r.success, "{r:#?}");
    assert_absent(&r, &token, "SLACK_BOT_TOKEN of the supervisor");
    assert_eq!(line(&r, "getenv"), "getenv: OK None");
    // The dump did happen: the sandbox's own pins are visible...
    assert!(line(&r, "os.environ").contains("OPENBLAS_NUM_THREADS"));
    // ...but the zygote is not even visible in a job's /proc.
    assert!(
        line(&r, "1 environ").contains("FileNotFoundError"),
        "{}",
        line(&r, "1 environ")
    );
}

// ---------------------------------------------------------------- 3. network

#[test]
fn no_connection_leaves_the_sandbox() {
    use std::net::{TcpListener, UdpSocket};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};

    let pool = pool(1);
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let sock_path = dir.path().join("host.sock");
    let unix = UnixListener::bind(&sock_path).unwrap();
    unix.set_nonblocking(true).unwrap();
    let abstract_name = format!("tradebox-test-{}", random_hex(8));
    let abs =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap())
            .unwrap();
    abs.set_nonblocking(true).unwrap();

    let code = format!(
        "{ATTEMPT}{}",
        r#"
import socket
tcp_port, udp_port = @TCP@, @UDP@
attempt("tcp", lambda: socket.create_connection(("127.0.0.1", tcp_port), timeout=2))
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return s.sendto(b"hello", ("127.0.0.1", udp_port))
attempt("udp", udp)
attempt("tcp6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
attempt("dns", lambda: socket.getaddrinfo("example.com", 80))
def unix(addr):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(addr)
    return "connected"
attempt("unix path", lambda: unix(@PATH@))
attempt("unix abstract", lambda: unix("\0" + @ABSTRACT@))
def pair():
    a, b = socket.socketpair()
    a.sendall(b"x")
    return b.recv(1)
attempt("socketpair", pair)
print("\n".join(log))
"#
        .replace("@TCP@", &tcp.local_addr().unwrap().port().to_string())
        .replace("@UDP@", &udp.local_addr().unwrap().port().to_string())
        .replace("@PATH@", &py(sock_path.to_str().unwrap()))
        .replace("@ABSTRACT@", &py(&abstract_name))
    );
    let r = run(&pool, &code);
    println!("{}", r.output);
    assert!(r.success, "{r:#?}");
    // The job's own evidence: non-unix sockets are refused by seccomp (EPERM).
    for label in ["tcp", "udp", "tcp6", "netlink", "packet"] {
        let l = line(&r, label);
        assert!(
            l.contains("PermissionError") && l.contains("Errno 1"),
            "{l}"
        );
    }
    let dns = line(&r, "dns");
    assert!(
        dns.contains("gaierror") || dns.contains("PermissionError"),
        "{dns}"
    );
    assert!(line(&r, "unix path").contains("FileNotFoundError"));
    let abstract_line = line(&r, "unix abstract");
    assert!(
        abstract_line.contains("ConnectionRefusedError")
            || abstract_line.contains("PermissionError"),
        "{abstract_line}"
    );
    assert_eq!(line(&r, "socketpair"), "socketpair: OK b'x'");
    // The host side saw nothing.
    let nothing = |e: std::io::Error, what: &str| {
        assert_eq!(e.kind(), ErrorKind::WouldBlock, "{what}: {e}");
    };
    match tcp.accept() {
        Ok((_, peer)) => panic!("the TCP listener got a connection from {peer}"),
        Err(e) => nothing(e, "tcp"),
    }
    let mut buf = [0u8; 64];
    match udp.recv_from(&mut buf) {
        Ok((n, peer)) => panic!("the UDP socket got {n} bytes from {peer}"),
        Err(e) => nothing(e, "udp"),
    }
    match unix.accept() {
        Ok(_) => panic!(
            "the unix socket at {} got a connection",
            sock_path.display()
        ),
        Err(e) => nothing(e, "unix"),
    }
    match abs.accept() {
        Ok(_) => panic!("the abstract unix socket got a connection"),
        Err(e) => nothing(e, "abstract unix"),
    }
}

// -------------------------------------------------------------- 4. processes

#[test]
fn no_process_can_be_started() {
    let pool = pool(1);
    let code = format!(
        "{ATTEMPT}{}",
        r#"
import ctypes, multiprocessing, platform, subprocess, threading
attempt("subprocess", lambda: subprocess.run(["/bin/sh", "-c", "echo x > /tmp/by-subprocess"]))
attempt("os.system", lambda: os.system("echo x > /tmp/by-system"))
attempt("os.fork", lambda: os.fork())
attempt("posix_spawn", lambda: os.posix_spawn("/bin/sh", ["sh", "-c", "echo x > /tmp/by-spawn"], {}))
def mp():
    p = multiprocessing.Process(target=print)
    p.start()
    return p.pid
attempt("multiprocessing", mp)
libc = ctypes.CDLL(None, use_errno=True)
def c_call(fn, *args):
    ctypes.set_errno(0)
    rc = fn(*args)
    return f"rc={rc} errno={ctypes.get_errno()}"
argv = (ctypes.c_char_p * 4)(b"sh", b"-c", b"echo x > /tmp/by-execve", None)
envp = (ctypes.c_char_p * 1)(None)
attempt("execve", lambda: c_call(libc.execve, b"/bin/sh", argv, envp))
attempt("fork", lambda: c_call(libc.fork))
x86 = platform.machine() == "x86_64"
SYS_clone3, SYS_clone = (435, 56) if x86 else (435, 220)
attempt("clone3", lambda: c_call(libc.syscall, ctypes.c_long(SYS_clone3), ctypes.c_void_p(0), ctypes.c_size_t(0)))
attempt("clone", lambda: c_call(libc.syscall, ctypes.c_long(SYS_clone), ctypes.c_ulong(17), ctypes.c_void_p(0)))
if x86:
    attempt("vfork", lambda: c_call(libc.syscall, ctypes.c_long(58)))
    attempt("raw fork", lambda: c_call(libc.syscall, ctypes.c_long(57)))
def thread():
    box = []
    t = threading.Thread(target=lambda: box.append(os.getpid()))
    t.start(); t.join()
    return box == [os.getpid()]
attempt("thread", thread)
attempt("written", lambda: sorted(f for f in os.listdir("/tmp") if f.startswith("by-")))
attempt("pids", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
attempt("me", lambda: os.getpid())
print("\n".join(log))
"#
    );
    let r = run(&pool, &code);
    println!("{}", r.output);
    assert!(r.success, "{r:#?}");
    let eperm = |label: &str| {
        let l = line(&r, label);
        assert!(
            l.contains("PermissionError") && l.contains("Operation not permitted"),
            "{l}"
        );
    };
    eperm("subprocess");
    eperm("os.fork");
    eperm("posix_spawn");
    eperm("multiprocessing");
    // system() reports a shell that could not start as exit status 127.
    assert_eq!(line(&r, "os.system"), "os.system: OK 32512");
    assert_eq!(line(&r, "execve"), "execve: OK 'rc=-1 errno=1'");
    assert_eq!(line(&r, "fork"), "fork: OK 'rc=-1 errno=1'");
    assert_eq!(line(&r, "clone3"), "clone3: OK 'rc=-1 errno=38'");
    assert_eq!(line(&r, "clone"), "clone: OK 'rc=-1 errno=1'");
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(line(&r, "vfork"), "vfork: OK 'rc=-1 errno=1'");
        assert_eq!(line(&r, "raw fork"), "raw fork: OK 'rc=-1 errno=1'");
    }
    assert_eq!(line(&r, "thread"), "thread: OK True");
    assert_eq!(line(&r, "written"), "written: OK []");
    let me = line(&r, "me").trim_start_matches("me: OK ").to_string();
    assert_eq!(line(&r, "pids"), format!("pids: OK [{me}]"));
}

// ------------------------------------------- 5. writes and what a job leaves

#[test]
fn writes_stay_in_scratch_and_nothing_survives_a_job() {
    let pool = pool(1);
    let code = format!(
        "{ATTEMPT}{}",
        r#"
def write(path, mode="w"):
    with open(path, mode) as f:
        f.write("x")
    return "written"
for path in ["/opt/x", "/opt/venv/x", "/opt/tradebox/x", "/data/x", "/data/manifest.json",
             "/usr/x", "/usr/bin/python3", "/etc/x", "/etc/passwd", "/etc/tradebox/child.bpf",
             "/x", "/root/x", "/dev/shm/x", "/dev/x", "/proc/sys/kernel/hostname",
             "/proc/sys/kernel/core_pattern", "/proc/1/mem", "/proc/1/attr/current",
             "/proc/sysrq-trigger"]:
    attempt(f"write {path}", lambda: write(path, "a" if path.startswith(("/data/m", "/etc/p")) else "w"))
attempt("mkdir /opt/d", lambda: os.mkdir("/opt/d"))
attempt("chmod /etc/passwd", lambda: os.chmod("/etc/passwd", 0o666))
attempt("unlink /etc/passwd", lambda: os.unlink("/etc/passwd"))
attempt("rename /data", lambda: os.rename("/data/manifest.json", "/tmp/m"))
attempt("write /tmp/ok", lambda: write("/tmp/ok"))
def big():
    with open("/tmp/big", "wb") as f:
        for _ in range(80):
            f.write(b"\0" * (1 << 20))
    return "80 MiB written"
attempt("scratch over 64 MiB", big)
os.unlink("/tmp/big")
print("\n".join(log))
"#
    );
    let r = run(&pool, &code);
    println!("{}", r.output);
    assert!(r.success, "{r:#?}");
    for l in r.output.lines().filter(|l| {
        l.starts_with("write /")
            || l.contains(" /opt/d")
            || l.contains(" /etc/passwd")
            || l.starts_with("rename")
    }) {
        if l.starts_with("write /tmp/ok") {
            assert_eq!(l, "write /tmp/ok: OK 'written'");
        } else {
            assert!(
                ["PermissionError", "OSError", "FileNotFoundError"]
                    .iter()
                    .any(|e| l.contains(&format!(": {e}: "))),
                "a write outside the scratch was not refused: {l}"
            );
        }
    }
    let big = line(&r, "scratch over 64 MiB");
    assert!(
        big.contains("OSError") && (big.contains("Errno 27") || big.contains("Errno 28")),
        "{big}"
    );

    // Job A leaves a file, a sleeping thread, and its pid.
    let a = run(
        &pool,
        "import os, threading, time\nopen('/tmp/leftover', 'w').write('A')\nos.mkdir('/tmp/dir')\n\
         open('/tmp/dir/f', 'w').write('A')\nos.symlink('/tmp/leftover', '/tmp/link')\n\
         threading.Thread(target=time.sleep, args=(30,)).start()\nresult = os.getpid()",
    );
    assert!(a.success, "{a:#?}");
    let a_pid: u64 = a.result.as_deref().unwrap().parse().unwrap();
    let b = run(
        &pool,
        "import os\nprint('tmp', sorted(os.listdir('/tmp')))\n\
         print('pids', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n\
         print('tasks', len(os.listdir('/proc/self/task')))\nresult = os.getpid()",
    );
    println!("job A pid {a_pid}; job B: {}", b.output);
    assert!(b.success, "{b:#?}");
    let b_pid: u64 = b.result.as_deref().unwrap().parse().unwrap();
    assert!(
        b.output.contains("tmp []\n"),
        "job A's files survived: {}",
        b.output
    );
    assert!(
        b.output.contains(&format!("pids [{b_pid}]\n")),
        "job B sees other processes (job A was {a_pid}): {}",
        b.output
    );
    assert!(b.output.contains("tasks 1\n"), "{}", b.output);
}

// ------------------------------------------------------ 6. state of other jobs

#[test]
fn a_job_does_not_see_the_previous_jobs_state() {
    let pool = pool(1);
    let token = secret();
    let a = run(
        &pool,
        &"import builtins, sys\nLEAK_GLOBAL = @T@\nbuiltins.LEAK_BUILTIN = @T@\n\
          sys.modules['leak_module'] = type(sys)('leak_module')\n\
          pd.DataFrame.sum = lambda self, *a, **k: 42\nimport math\nmath.pi = 3\n\
          open('/tmp/state-file', 'w').write(@T@)\n\
          result = int(pd.DataFrame({'a': [1, 2]}).sum())"
            .replace("@T@", &py(&token)),
    );
    assert!(a.success, "{a:#?}");
    assert_eq!(
        a.result.as_deref(),
        Some("42"),
        "the monkeypatch took effect in job A"
    );

    let r = run(&pool, "LEAK_GLOBAL");
    assert_eq!(error_kind(&r), "NameError", "{r:#?}");
    let r = run(
        &pool,
        "result = int(pd.DataFrame({'a': [1, 2]}).sum()['a'])",
    );
    assert_eq!(r.result.as_deref(), Some("3"), "{r:#?}");
    let r = run(
        &pool,
        "import builtins, sys, os\nresult = (hasattr(builtins, 'LEAK_BUILTIN'), \
         'leak_module' in sys.modules, os.path.exists('/tmp/state-file'), math.pi > 3.14)",
    );
    assert_eq!(
        r.result.as_deref(),
        Some("(False, False, False, True)"),
        "{r:#?}"
    );
    assert_absent(&r, &token, "job A's state");
}

/// The next job's child is forked from the zygote after the previous job: it
/// must not find that job's code or result anywhere in its inherited Python
/// state (walking its stack up into the zygote's frames, `gc.get_objects()`).
/// (An earlier zygote kept them in local variables of its loop.)
#[test]
fn the_previous_jobs_code_and_result_are_not_in_the_next_jobs_process() {
    let pool = pool(1);
    let code_token = format!("TBXLEAK{}", random_hex(12));
    let result_token = format!("TBXLEAK{}", random_hex(12));
    let a = run(
        &pool,
        &format!(
            "code_secret = {}\nresult = {}",
            py(&code_token),
            py(&result_token)
        ),
    );
    assert!(a.success, "{a:#?}");
    let b = run(
        &pool,
        r#"
import gc, sys
found = []
f = sys._getframe()
while f is not None:
    for name, value in list(f.f_locals.items()):
        if isinstance(value, (bytes, str, dict)) and "TBXLEAK" in repr(value):
            found.append(f"{f.f_code.co_name}.{name} = {repr(value)[:400]}")
    f = f.f_back
for o in gc.get_objects():
    if isinstance(o, dict) and o.get("type") == "job" and "TBXLEAK" in repr(o):
        found.append(f"gc: {repr(o)[:400]}")
print("\n".join(found))
result = len(found)
"#,
    );
    println!("{}", b.output);
    assert!(b.success, "{b:#?}");
    let leaked: Vec<&str> = b
        .output
        .lines()
        .filter(|l| l.contains(&code_token) || l.contains(&result_token))
        .collect();
    assert!(
        leaked.is_empty(),
        "LEAK: job B read job A's code ({code_token}) and result ({result_token}):\n{}",
        leaked.join("\n")
    );
    assert_absent(&b, &code_token, "the previous job's code");
    assert_absent(&b, &result_token, "the previous job's result");
}

/// Nothing of a job may stay in memory that a later job inherits or can
/// read: job C scans its own memory and tries the zygote's (`/proc/1/mem`)
/// for job A's token (A returned a table), with an unrelated job B between.
/// (An earlier zygote relayed payloads through its heap and was dumpable.)
#[test]
fn earlier_jobs_leave_nothing_a_later_job_can_read_in_memory() {
    let pool = pool(1);
    let token = format!("TBXLEAK{}", random_hex(12));
    // A user's table (the usual kind of result), then an unrelated job.
    let a = run(
        &pool,
        &format!(
            "result = pd.DataFrame({{'secret': [{}] * 50, 'n': range(50)}})",
            py(&token)
        ),
    );
    assert!(a.success, "{a:#?}");
    let b = run(&pool, "result = 2");
    assert!(b.success, "{b:#?}");
    let c = run(
        &pool,
        &format!(
            "{ATTEMPT}{SCAN}{}",
            r#"
control = "TBXLEAK" + "c0ffee" * 4  # made at run time: in this job's heap
attempt("scan self", lambda: scan("self"))
attempt("open /proc/1/mem", lambda: open("/proc/1/mem", "rb").close())
attempt("scan zygote", lambda: scan(1))
print("\n".join(log))
"#
        ),
    );
    println!("{}", c.output);
    assert!(c.success, "{c:#?}");
    // The scan works: it finds the job's own control string.
    assert!(
        line(&c, "scan self").contains("TBXLEAKc0ffeec0ffeec0ffeec0ffee"),
        "{}",
        line(&c, "scan self")
    );
    let mut leaks = Vec::new();
    for label in ["scan self", "scan zygote"] {
        let l = line(&c, label);
        if l.contains(&token) {
            leaks.push(format!("{l} (job A's result, two jobs earlier)"));
        }
    }
    let mem = line(&c, "open /proc/1/mem");
    if mem.contains(": OK") {
        leaks.push(format!("{mem} (the zygote's memory is readable by a job)"));
    }
    assert!(leaks.is_empty(), "LEAK:\n{}", leaks.join("\n"));
}

/// A job must not reach the zygote's protocol pipes through `/proc/1/fd/{0,1}`:
/// writing frames there would forge its own result and shift every later
/// result by one, so the next user would receive this job's real result.
#[test]
fn a_job_cannot_write_to_the_zygotes_protocol_pipes() {
    let pool = pool(1);
    let forged = format!("FORGED-{}", random_hex(8));
    let code = r#"
import json, os, struct
def frame(fd, obj):
    body = json.dumps(obj).encode()
    os.write(fd, struct.pack(">I", len(body)) + body)
opened = []
for fd in (0, 1):
    try:
        w = os.open(f"/proc/1/fd/{fd}", os.O_WRONLY)
        opened.append(fd)
        if fd == 1:
            frame(w, {"type": "result", "status": "ok", "elapsed_ms": 1})
            frame(w, {"success": True, "result": @FORGED@, "output": "", "artifacts": []})
        os.close(w)
    except OSError as e:
        print(f"fd {fd}: {type(e).__name__}: {e}")
print("opened", opened)
result = "job A's own result"
"#
    .replace("@FORGED@", &py(&forged));
    let a = run(&pool, &code);
    let b = run(&pool, "result = \"job B's own result\"");
    let c = run(&pool, "result = \"job C's own result\"");
    println!("job A got: {a:?}\njob B got: {b:?}\njob C got: {c:?}");
    let mut problems = Vec::new();
    if everything(&a).contains(&forged) {
        problems.push(format!(
            "job A's result is the one it forged on /proc/1/fd/1: {:?}",
            a.result
        ));
    }
    for (r, own) in [(&b, "job B's own result"), (&c, "job C's own result")] {
        if r.result.as_deref() != Some(own) {
            problems.push(format!(
                "a later job expecting {own:?} received {:?} with output {:?}",
                r.result, r.output
            ));
        }
    }
    if !problems.is_empty() {
        let opened = [&a, &b, &c]
            .iter()
            .find_map(|r| r.output.lines().find(|l| l.starts_with("opened")))
            .unwrap_or("?");
        panic!(
            "a job wrote to the zygote's protocol pipes (job A's own report: {opened}):\n{}",
            problems.join("\n")
        );
    }
    assert!(a.output.contains("opened []"), "{a:#?}");
}

// ------------------------------------------------------ 7. taking it down

#[test]
fn an_infinite_loop_is_stopped_at_its_timeout() {
    let pool = pool(1);
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let r = run_with(&pool, "while True:\n    pass", timeout, 1024);
    let took = started.elapsed();
    println!(
        "[timing] infinite loop with a 2 s timeout returned after {took:?} (job time {} ms)",
        r.execution_time_ms
    );
    assert_eq!(error_kind(&r), "Timeout", "{r:#?}");
    assert!(
        r.error.as_ref().unwrap().message.contains("timed out"),
        "{r:#?}"
    );
    assert!(
        took < timeout + Duration::from_millis(1500),
        "the job was stopped only after {took:?}"
    );
    assert_recovers(&pool, "an infinite loop");

    // Sleeping (no CPU) with signals blocked: only the wall clock can stop it.
    let started = Instant::now();
    let r = run_with(
        &pool,
        "import signal, time\nsignal.pthread_sigmask(signal.SIG_BLOCK, range(1, 32))\ntime.sleep(60)",
        timeout,
        1024,
    );
    let took = started.elapsed();
    println!("[timing] blocked-signal sleep with a 2 s timeout returned after {took:?}");
    assert_eq!(error_kind(&r), "Timeout", "{r:#?}");
    assert!(took < timeout + Duration::from_millis(1500), "{took:?}");
    assert_recovers(&pool, "a sleeping job");
    assert_eq!(restarts(&pool), 0, "a timeout must not cost the zygote");
}

/// A job that closes its result pipe and keeps running must still be stopped
/// at its timeout (the zygote must not take the end of the pipe for the end
/// of the job and wait without a deadline).
#[test]
fn a_job_that_closes_its_result_pipe_is_still_stopped_at_its_timeout() {
    let pool = pool(1);
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let r = run_with(
        &pool,
        "import os, time\nos.closerange(3, 1024)\ntime.sleep(60)",
        timeout,
        1024,
    );
    let took = started.elapsed();
    println!(
        "[timing] closed result pipe + sleep, 2 s timeout: returned after {took:?}: {:?}",
        r.error
    );
    assert_recovers(&pool, "a job that closed its result pipe");
    assert!(
        error_kind(&r) == "Timeout" && took < timeout + Duration::from_millis(1500),
        "a job with a {timeout:?} timeout that closed its result pipe and slept was \
         stopped only after {took:?}, as {:?} (the zygote waits for it without a deadline; \
         the supervisor's fallback replaced the zygote: {} restart(s))",
        r.error,
        restarts(&pool)
    );
}

#[test]
fn memory_hogs_end_in_a_memory_error() {
    let pool = pool(1);
    for (what, code, memory) in [
        (
            "np.ones(2**30)",
            "import numpy as np\nx = np.ones(2**30)",
            1024,
        ),
        ("bytearray(8 << 30)", "x = bytearray(8 << 30)", 1024),
        (
            "a growing list",
            "x = []\nwhile True:\n    x.append(bytearray(1 << 20))",
            256,
        ),
        (
            "a growing list of small objects",
            "x = []\nwhile True:\n    x.append(str(len(x)))",
            256,
        ),
    ] {
        let started = Instant::now();
        let r = run_with(&pool, code, Duration::from_secs(20), memory);
        let took = started.elapsed();
        println!("[timing] {what}: {:?} after {took:?}", r.error);
        assert_eq!(error_kind(&r), "MemoryError", "{what}: {r:#?}");
        let message = &r.error.as_ref().unwrap().message;
        assert!(
            message.contains(&format!("memory limit of {memory} MiB")),
            "{what}: {message}"
        );
        assert_recovers(&pool, what);
    }
}

#[test]
fn a_fork_bomb_fails_fast() {
    let pool = pool(1);
    let started = Instant::now();
    let r = run(&pool, "import os\nwhile True:\n    os.fork()");
    let took = started.elapsed();
    println!("[timing] fork bomb: {:?} after {took:?}", r.error);
    assert_eq!(error_kind(&r), "PermissionError", "{r:#?}");
    assert!(r
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("Operation not permitted"));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_recovers(&pool, "a fork bomb");
}

#[test]
fn an_output_flood_is_capped() {
    let pool = pool(1);
    let started = Instant::now();
    let r = run(
        &pool,
        "line = 'x' * 999\nfor _ in range(100_000):\n    print(line)\nresult = 'done'",
    );
    let took = started.elapsed();
    println!(
        "[timing] 100 MB of print: {} bytes of output after {took:?}; tail {:?}",
        r.output.len(),
        &r.output[r.output.len().saturating_sub(120)..]
    );
    assert!(r.success, "{:?}", r.error);
    assert_eq!(r.result.as_deref(), Some("done"));
    assert!(r.output.len() <= (1 << 20) + 200, "{}", r.output.len());
    assert!(r.output.len() >= (1 << 20) - 1000, "{}", r.output.len());
    assert!(r.output.contains("output truncated"), "no truncation note");
    assert!(took < Duration::from_secs(30), "{took:?}");
    // One huge string printed at once.
    let r = run(&pool, "print('y' * 100_000_000)\nresult = 'done'");
    assert!(r.success, "{:?}", r.error);
    assert!(r.output.len() <= (1 << 20) + 200 && r.output.contains("output truncated"));
    // A huge result: its text is capped; the whole may be refused as too large.
    let r = run(&pool, "result = 'z' * 50_000_000");
    println!("50 MB result string: {:?}", r.error);
    match error_kind(&r) {
        "" => assert!(r.result.as_ref().unwrap().len() <= (1 << 20) + 200),
        "ResultTooLarge" => assert!(r.error.as_ref().unwrap().message.contains("limit")),
        other => panic!("unexpected {other}: {r:#?}"),
    }
    assert_recovers(&pool, "an output flood");
}

#[test]
fn runaway_recursion_is_contained() {
    let pool = pool(1);
    let r = run(&pool, "def f(n):\n    return f(n + 1)\nf(0)");
    assert_eq!(error_kind(&r), "RecursionError", "{r:#?}");
    assert!(r
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("maximum recursion depth"));
    assert_eq!(r.error.as_ref().unwrap().line, Some(2));
    assert_recovers(&pool, "a RecursionError");

    let started = Instant::now();
    let r = run(
        &pool,
        "import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n    return f(n + 1)\nf(0)",
    );
    println!(
        "[timing] recursion with a limit of 10**6: {:?} after {:?}",
        r.error,
        started.elapsed()
    );
    assert!(
        ["RecursionError", "Crashed", "MemoryError"].contains(&error_kind(&r)),
        "{r:#?}"
    );
    assert!(!r.error.as_ref().unwrap().message.is_empty());
    // Deep recursion through C (repr of a deeply nested list).
    let r = run(
        &pool,
        "import sys\nsys.setrecursionlimit(10**6)\nx = []\nfor _ in range(10**6):\n    x = [x]\nrepr(x)",
    );
    println!("nested repr: {:?}", r.error);
    assert!(
        ["RecursionError", "Crashed", "MemoryError"].contains(&error_kind(&r)),
        "{r:#?}"
    );
    assert_recovers(&pool, "deep recursion");
}

#[test]
fn crashes_and_kills_from_inside_are_reported_and_survived() {
    let pool = pool(1);
    let r = run(&pool, "import os\nos._exit(3)");
    assert_eq!(error_kind(&r), "Crashed", "{r:#?}");
    assert!(
        r.error.as_ref().unwrap().message.contains("exit code 3"),
        "{r:#?}"
    );
    assert_recovers(&pool, "os._exit(3)");

    let r = run(
        &pool,
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    );
    assert_eq!(error_kind(&r), "Crashed", "{r:#?}");
    assert!(
        r.error.as_ref().unwrap().message.contains("SIGKILL"),
        "{r:#?}"
    );
    assert_recovers(&pool, "SIGKILL of itself");

    let r = run(
        &pool,
        "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
    );
    assert_eq!(error_kind(&r), "Crashed", "{r:#?}");
    assert!(
        r.error.as_ref().unwrap().message.contains("SIGSEGV"),
        "{r:#?}"
    );
    assert_recovers(&pool, "SIGSEGV");

    let r = run(&pool, "import ctypes\nctypes.string_at(0)");
    assert_eq!(error_kind(&r), "Crashed", "{r:#?}");
    assert_recovers(&pool, "a NULL dereference");

    // Killing the zygote, its parent or everything: pid 1 of the namespace
    // ignores signals from inside, and nothing else is visible.
    let r = run(
        &pool,
        &format!(
            "{ATTEMPT}{}",
            r#"
import signal, time
attempt("kill 1", lambda: os.kill(1, signal.SIGKILL))
attempt("kill ppid", lambda: os.kill(os.getppid(), 9))
attempt("ppid", lambda: os.getppid())
for s in range(1, 65):
    if s not in (signal.SIGKILL,):
        try:
            os.kill(1, s)
        except OSError as e:
            log.append(f"signal {s}: {e}")
attempt("kill -1", lambda: os.kill(-1, 9))
time.sleep(0.3)
attempt("pid 1 alive", lambda: os.getppid())
print("\n".join(log))
result = "still here"
"#
        ),
    );
    println!("{}", r.output);
    assert!(r.success, "{r:#?}");
    assert_eq!(r.result.as_deref(), Some("still here"));
    assert_eq!(line(&r, "ppid"), "ppid: OK 1");
    assert_eq!(line(&r, "pid 1 alive"), "pid 1 alive: OK 1");
    assert_recovers(&pool, "kill 1 / kill ppid / kill -1");

    let r = run(&pool, "import os\nos.closerange(0, 1024)\nresult = 1");
    println!("closerange(0, 1024): {:?}", r.error);
    assert_eq!(error_kind(&r), "Crashed", "{r:#?}");
    assert_recovers(&pool, "os.closerange(0, 1024)");

    let r = run(
        &pool,
        "import os, sys\nos.close(0)\nos.close(1)\nos.close(2)\nsys.stdout.close()\nprint('x')",
    );
    println!("closing stdin/stdout/stderr: {:?}", r.error);
    assert_recovers(&pool, "closing stdout");
    assert_eq!(restarts(&pool), 0, "none of these may cost the zygote");
}

#[test]
fn a_zygote_killed_mid_job_is_replaced() {
    let pool = std::sync::Arc::new(pool(1));
    let zygote = pool.status()[0].pid.expect("the launcher's pid");
    let runner = {
        let pool = std::sync::Arc::clone(&pool);
        std::thread::spawn(move || {
            let r = run(&pool, "import time\ntime.sleep(20)\nresult = 'slept'");
            (r, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-9", &zygote.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (r, answered) = runner.join().unwrap();
    let latency = answered.duration_since(killed);
    println!(
        "[timing] killed zygote: the running job answered {latency:?} after the kill: {:?}",
        r.error
    );
    assert_eq!(error_kind(&r), "Crashed", "{r:#?}");
    assert!(latency < Duration::from_secs(3), "{latency:?}");
    let recovery = assert_recovers(&pool, "a zygote killed from outside");
    println!("[timing] killed zygote: the next job (with a new zygote) took {recovery:?}; kill to next result {:?}", killed.elapsed());
    let status = &pool.status()[0];
    assert_eq!(status.restarts, 1);
    assert_ne!(status.pid, Some(zygote));
    // The old namespace is gone with its processes.
    assert!(!Path::new(&format!("/proc/{zygote}")).exists());
}

// ------------------------------------------------ results crossing back

#[test]
fn figures_come_back_as_png_artifacts() {
    let pool = pool(1);
    let r = run(
        &pool,
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.title('t')\nresult = 1",
    );
    assert!(r.success, "{r:#?}");
    assert_eq!(r.artifacts.len(), 1, "{:?}", r.artifacts);
    let a = &r.artifacts[0];
    assert_eq!(a.kind, "png");
    assert_eq!(a.mime, "image/png");
    assert_eq!(a.name, "figure-1.png");
    let bytes = a.bytes().expect("valid base64");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(bytes.len() as u64, a.size);
}

/// The child writes its result to a pipe a job can reach (`res_w` in the
/// `_child_main` frame): the supervisor must treat what arrives as hostile.
#[test]
fn forged_results_are_tidied_by_the_supervisor() {
    let pool = pool(1);
    let forge = |payload: &str| {
        format!(
            r#"
import os, struct, sys
f = sys._getframe()
while f.f_code.co_name != "_child_main":
    f = f.f_back
res_w = f.f_locals["res_w"]
payload = {payload}
view = memoryview(struct.pack(">I", len(payload)) + payload)
while view:
    view = view[os.write(res_w, view):]
os._exit(0)
"#
        )
    };
    let hostile = r#"__import__("json").dumps({"success": True, "result": "forged", "artifacts":
    [{"kind": "png", "name": "../../etc/passwd", "data_b64": "aGk="},
     {"kind": "exe", "name": "evil.sh", "data_b64": "aGk="},
     {"kind": "csv", "name": "....", "data_b64": ""},
     {"kind": "png", "name": "/abs/\u00e9vil name;rm -rf.png", "data_b64": ""},
     {"kind": "csv", "name": "a" * 500, "data_b64": ""}]
    + [{"kind": "png", "name": f"x{i}.png", "data_b64": ""} for i in range(30)]}).encode()"#;
    let r = run(&pool, &forge(hostile));
    println!("{:?}", r.error);
    assert!(!r.success, "{r:#?}");
    assert!(r.artifacts.is_empty() && r.result.is_none(), "{r:#?}");
    let e = r.error.as_ref().unwrap();
    assert_eq!(
        (e.kind.as_str(), e.origin),
        ("InvalidResult", tradebox_sandbox::Origin::Job)
    );
    assert!(e.message.contains("artifact 1 is not a PNG"), "{e:?}");
    assert_recovers(&pool, "a forged result");

    // One plausible artifact under a name of the job's choosing: tradebox
    // names it, and only a real PNG passes.
    let png = r#"__import__("json").dumps({"success": True, "result": "forged", "artifacts":
    [{"kind": "png", "name": "../../conftest.py", "data_b64":
      __import__("base64").b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()}]}).encode()"#;
    let r = run(&pool, &forge(png));
    assert!(r.success, "{r:#?}");
    assert_eq!(r.artifacts.len(), 1);
    assert_eq!(
        (r.artifacts[0].name.as_str(), r.artifacts[0].mime.as_str()),
        ("figure-1.png", "image/png")
    );
    let script = png.replace(r#"b"\x89PNG\r\n\x1a\n" + b"\0" * 16"#, r#"b"import os""#);
    let r = run(&pool, &forge(&script));
    assert_eq!(error_kind(&r), "InvalidResult", "{r:#?}");
    assert!(r.artifacts.is_empty());
    // Real PNGs, but more than a job may return.
    let many = png.replace("}]}).encode()", "}] * 35}).encode()");
    let r = run(&pool, &forge(&many));
    assert_eq!(error_kind(&r), "InvalidResult", "{r:#?}");
    assert!(
        r.error
            .as_ref()
            .unwrap()
            .message
            .contains("more than 11 artifacts"),
        "{r:#?}"
    );

    let r = run(&pool, &forge("b'{not json'"));
    assert_eq!(error_kind(&r), "InvalidResult", "{r:#?}");
    assert!(r
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("could not be read"));
    assert_recovers(&pool, "a result that is not JSON");

    let started = Instant::now();
    let r = run(&pool, &forge("b'x' * (60 << 20)"));
    println!(
        "[timing] 60 MiB result: {:?} after {:?}",
        r.error,
        started.elapsed()
    );
    assert_eq!(error_kind(&r), "ResultTooLarge", "{r:#?}");
    assert_recovers(&pool, "a 60 MiB result");
    assert_eq!(restarts(&pool), 0);
}

#[test]
fn a_full_queue_is_reported_at_once() {
    let mut config = common::config(1);
    config.queue = 1;
    let pool = Pool::start(config).expect("pool starts");
    let job = || Job {
        code: "import time\ntime.sleep(1.5)\nresult = 'slept'".into(),
        timeout: Duration::from_secs(10),
        memory_mib: 1024,
        as_of: Some("latest".into()),
        ..Job::default()
    };
    let first = pool.submit(job()).expect("the first job is accepted");
    // Let the zygote's slot take the first job off the queue.
    std::thread::sleep(Duration::from_millis(500));
    let second = pool
        .submit(job())
        .expect("the second job waits in the queue");
    let started = Instant::now();
    match pool.submit(job()) {
        Err(PoolError::QueueFull(n)) => assert_eq!(n, 1),
        Err(e) => panic!("expected QueueFull, got {e}"),
        Ok(_) => panic!("a third job was accepted by a pool of 1 with a queue of 1"),
    }
    // Refused without waiting for the queue to move (the first job alone
    // takes 1.5 s); the bound leaves room for a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(1));
    for rx in [first, second] {
        let r = rx.blocking_recv().unwrap();
        assert_eq!(r.result.as_deref(), Some("slept"), "{r:#?}");
    }
}
