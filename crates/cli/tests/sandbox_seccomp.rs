//! The seccomp policy (`crates/sandbox/seccomp/`) seen from inside real
//! jobs, through the real binary, launcher and zygote, validator off:
//!
//! - the argument checks hold: `ioctl` only with the allowed requests,
//!   signals only to the job itself (not pid 1, -1, 0 or a process group),
//!   `prctl` only the allowed options;
//! - the corpus (`crates/sandbox/seccomp/corpus/*.py`), run under
//!   `strace -f`, needs nothing the allow-list denies (but for the denials
//!   listed in `denied.json`), and makes every call the allow-list allows
//!   (but for those listed, with reasons, in `unreached.json`). It fails
//!   when strace cannot trace here (scripts/test installs strace).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{pool, run};
use tradebox_sandbox::seccomp::{self, bpf, Filter};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox/seccomp/corpus")
}

/// A job's log of attempts: `name: OK value` or `name: ERRNO`.
const ATTEMPT: &str = r#"
import ctypes, errno, os
log = {}
def attempt(name, f):
    try:
        value = f()
        log[name] = "OK" if value is None else f"OK {value}"
    except OSError as e:
        log[name] = errno.errorcode.get(e.errno, str(e.errno))
libc = ctypes.CDLL(None, use_errno=True)
def syscall(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r
"#;

fn attempts(r: &tradebox_sandbox::ExecResult) -> BTreeMap<String, String> {
    assert!(r.success, "{r:#?}");
    serde_json::from_str(r.result.as_deref().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {:?}", r.result))
}

fn expect(log: &BTreeMap<String, String>, name: &str, want: &str) {
    let got = log.get(name).map(String::as_str).unwrap_or("(missing)");
    assert!(
        got == want || got.starts_with(&format!("{want} ")),
        "{name}: got {got}, expected {want}; all: {log:#?}"
    );
}

fn host_nr(name: &str) -> u32 {
    seccomp::syscall_number(name, seccomp::host_arch().unwrap()).unwrap()
}

#[test]
fn ioctl_requests_are_checked() {
    let pool = pool(1);
    let code = format!(
        "{ATTEMPT}{}",
        r#"
import fcntl, json, socket, struct, termios
r, w = os.pipe()
a, b = socket.socketpair()
# Allowed: answered by the kernel (a pipe is no terminal) or done.
attempt("TCGETS", lambda: fcntl.ioctl(r, termios.TCGETS, bytes(64)) and None)
attempt("TIOCGWINSZ", lambda: fcntl.ioctl(r, termios.TIOCGWINSZ, bytes(8)) and None)
attempt("isatty", lambda: os.isatty(r))
attempt("FIONBIO", lambda: fcntl.ioctl(a.fileno(), termios.FIONBIO, struct.pack("i", 1)) and None)
attempt("setblocking", lambda: a.setblocking(True))
attempt("FIOCLEX", lambda: fcntl.ioctl(r, termios.FIOCLEX))
attempt("FIONCLEX", lambda: fcntl.ioctl(r, termios.FIONCLEX))
attempt("set_inheritable", lambda: (os.set_inheritable(r, True), os.get_inheritable(r))[1])
attempt("get_terminal_size", lambda: os.get_terminal_size(r))
# Denied: every other request, whatever the descriptor.
os.write(w, b"xyz")
attempt("FIONREAD", lambda: struct.unpack("i", fcntl.ioctl(r, termios.FIONREAD, bytes(4)))[0])
attempt("TIOCSTI", lambda: fcntl.ioctl(r, termios.TIOCSTI, b"x"))
attempt("TCSETS", lambda: fcntl.ioctl(r, termios.TCSETS, bytes(64)))
attempt("TIOCSWINSZ", lambda: fcntl.ioctl(r, termios.TIOCSWINSZ, bytes(8)))
attempt("SIOCGIFCONF", lambda: fcntl.ioctl(a.fileno(), 0x8912, bytes(16)))
attempt("request 0", lambda: fcntl.ioctl(r, 0, bytes(8)))
result = json.dumps(log)
"#
    );
    let log = attempts(&run(&pool, &code));
    for (name, want) in [
        ("TCGETS", "ENOTTY"),
        ("TIOCGWINSZ", "ENOTTY"),
        ("isatty", "OK False"),
        ("FIONBIO", "OK"),
        ("setblocking", "OK"),
        ("FIOCLEX", "OK"),
        ("FIONCLEX", "OK"),
        ("set_inheritable", "OK True"),
        ("get_terminal_size", "ENOTTY"),
        ("FIONREAD", "EPERM"),
        ("TIOCSTI", "EPERM"),
        ("TCSETS", "EPERM"),
        ("TIOCSWINSZ", "EPERM"),
        ("SIOCGIFCONF", "EPERM"),
        ("request 0", "EPERM"),
    ] {
        expect(&log, name, want);
    }
}

#[test]
fn a_job_signals_itself_only() {
    let pool = pool(1);
    let code = format!(
        "{ATTEMPT}{}",
        r#"
import json, signal, threading, time
got = []
signal.signal(signal.SIGUSR1, lambda s, f: got.append("usr1"))
signal.signal(signal.SIGINT, signal.default_int_handler)
attempt("kill self 0", lambda: os.kill(os.getpid(), 0))
attempt("kill self", lambda: os.kill(os.getpid(), signal.SIGUSR1))
attempt("raise_signal", lambda: signal.raise_signal(signal.SIGUSR1))
attempt("pthread_kill", lambda: signal.pthread_kill(threading.get_ident(), signal.SIGUSR1))
t = threading.Thread(target=lambda: os.kill(os.getpid(), signal.SIGUSR1))
t.start(); t.join()
time.sleep(0.05)
def interrupted():
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    except KeyboardInterrupt:
        return "KeyboardInterrupt"
attempt("SIGINT", interrupted)
attempt("handled", lambda: len(got))
attempt("kill 1", lambda: os.kill(1, 0))
attempt("kill 1 SIGTERM", lambda: os.kill(1, signal.SIGTERM))
attempt("kill ppid", lambda: os.kill(os.getppid(), signal.SIGUSR1))
attempt("kill -1", lambda: os.kill(-1, 0))
attempt("kill 0", lambda: os.kill(0, 0))
attempt("killpg own", lambda: os.killpg(os.getpgrp(), 0))
attempt("kill -pid", lambda: os.kill(-os.getpid(), 0))
attempt("tgkill 1", lambda: syscall(TGKILL, 1, 1, 0))
attempt("tgkill self", lambda: syscall(TGKILL, os.getpid(), threading.get_native_id(), 0))
attempt("tkill self", lambda: syscall(TKILL, threading.get_native_id(), 0))
attempt("pidfd_open 1", lambda: os.pidfd_open(1))
attempt("ppid after", lambda: os.getppid())
result = json.dumps(log)
"#
    );
    let code = format!(
        "TGKILL, TKILL = {}, {}\n{code}",
        host_nr("tgkill"),
        host_nr("tkill")
    );
    let log = attempts(&run(&pool, &code));
    for (name, want) in [
        ("kill self 0", "OK"),
        ("kill self", "OK"),
        ("raise_signal", "OK"),
        ("pthread_kill", "OK"),
        ("SIGINT", "OK KeyboardInterrupt"),
        ("handled", "OK 4"),
        ("kill 1", "EPERM"),
        ("kill 1 SIGTERM", "EPERM"),
        ("kill ppid", "EPERM"),
        ("kill -1", "EPERM"),
        ("kill 0", "EPERM"),
        ("killpg own", "EPERM"),
        ("kill -pid", "EPERM"),
        ("tgkill 1", "EPERM"),
        ("tgkill self", "OK 0"),
        ("tkill self", "EPERM"),
        ("pidfd_open 1", "EPERM"),
        ("ppid after", "OK 1"),
    ] {
        expect(&log, name, want);
    }
    // The zygote was not touched: the next job runs on it.
    let r = run(&pool, "result = 2 + 2");
    assert_eq!(r.result.as_deref(), Some("4"), "{r:#?}");
}

#[test]
fn prctl_prlimit_and_clone_are_checked() {
    let pool = pool(1);
    let code = format!(
        "{ATTEMPT}{}",
        r#"
import json, resource, threading
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NAME, PR_GET_NAME, PR_SET_CHILD_SUBREAPER = 1, 4, 15, 16, 36
name = ctypes.create_string_buffer(16)
attempt("PR_SET_NAME", lambda: syscall(PRCTL, PR_SET_NAME, ctypes.addressof(ctypes.create_string_buffer(b"job"))))
attempt("PR_GET_NAME", lambda: syscall(PRCTL, PR_GET_NAME, ctypes.addressof(name)))
attempt("PR_SET_DUMPABLE", lambda: syscall(PRCTL, PR_SET_DUMPABLE, 1))
attempt("PR_SET_PDEATHSIG", lambda: syscall(PRCTL, PR_SET_PDEATHSIG, 0))
attempt("PR_SET_CHILD_SUBREAPER", lambda: syscall(PRCTL, PR_SET_CHILD_SUBREAPER, 1))
attempt("getrlimit", lambda: resource.getrlimit(resource.RLIMIT_NOFILE)[0])
attempt("prlimit own", lambda: resource.prlimit(0, resource.RLIMIT_NOFILE)[0])
attempt("prlimit 1", lambda: resource.prlimit(1, resource.RLIMIT_NOFILE))
attempt("prlimit self by pid", lambda: resource.prlimit(os.getpid(), resource.RLIMIT_NOFILE))
t = threading.Thread(target=lambda: None)
attempt("thread", lambda: (t.start(), t.join())[1])
attempt("fork", lambda: os.fork())
attempt("unshare", lambda: os.unshare(os.CLONE_NEWUSER) if hasattr(os, "unshare") else syscall(UNSHARE, 0x10000000))
result = json.dumps(log)
"#
    );
    let code = format!(
        "PRCTL, UNSHARE = {}, {}\n{code}",
        host_nr("prctl"),
        host_nr("unshare")
    );
    let log = attempts(&run(&pool, &code));
    for (name, want) in [
        ("PR_SET_NAME", "OK 0"),
        ("PR_GET_NAME", "OK 0"),
        ("PR_SET_DUMPABLE", "EPERM"),
        ("PR_SET_PDEATHSIG", "EPERM"),
        ("PR_SET_CHILD_SUBREAPER", "EPERM"),
        ("getrlimit", "OK 256"),
        ("prlimit own", "OK 256"),
        ("prlimit 1", "EPERM"),
        ("prlimit self by pid", "EPERM"),
        ("thread", "OK"),
        ("fork", "EPERM"),
        ("unshare", "EPERM"),
    ] {
        expect(&log, name, want);
    }
}

/// One call of an armed child, from the strace log.
#[derive(Debug, Clone)]
struct Call {
    name: String,
    /// Numeric arguments (0 where strace printed something else).
    args: [u64; 6],
    text: String,
}

/// Splits `s` at top-level commas (outside brackets and strings).
fn split_args(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quoted, mut escaped) =
        (Vec::new(), String::new(), 0i32, false, false);
    for ch in s.chars() {
        if quoted {
            cur.push(ch);
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => quoted = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur).trim().to_string());
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// The arguments' text and the return value's text of a whole call
/// (`args) = ret`).
fn split_call(s: &str) -> Option<(&str, &str)> {
    let (mut depth, mut quoted, mut escaped) = (0i32, false, false);
    for (i, ch) in s.char_indices() {
        if quoted {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => quoted = true,
            '(' | '[' | '{' => depth += 1,
            ')' if depth == 0 => {
                let ret = s[i + 1..].trim_start().strip_prefix('=')?.trim();
                return Some((&s[..i], ret));
            }
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A number as strace prints it raw (`-X raw`): `0x1f`, `-1`, `17`,
/// `0x100|17`, a pid with its `/* N in strace's PID NS */` comment.
fn number(token: &str) -> Option<u64> {
    let token = token.split("/*").next()?.trim();
    let mut value = 0u64;
    for part in token.split('|') {
        let part = part.trim();
        value |= if let Some(hex) = part.strip_prefix("0x") {
            u64::from_str_radix(hex, 16).ok()?
        } else if let Some(neg) = part.strip_prefix('-') {
            neg.parse::<u64>().ok()?.wrapping_neg()
        } else {
            part.parse::<u64>().ok()?
        };
    }
    Some(value)
}

/// The host pid in a return value like `5 /* 10095 in strace's PID NS */`.
fn host_pid(ret: &str) -> Option<u64> {
    let inner = ret.split("/*").nth(1)?;
    inner.split_whitespace().next()?.parse().ok()
}

/// The calls made by every job child after it installed its first filter
/// (its own allow-list), and by the threads it started.
fn armed_calls(log: &str) -> Vec<Call> {
    // (line of its start, tid, name, whole text)
    let mut entries: Vec<(usize, u64, String, String)> = Vec::new();
    let mut pending: HashMap<u64, (usize, String, String)> = HashMap::new();
    for (i, line) in log.lines().enumerate() {
        let Some((tid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(tid) = tid.parse::<u64>() else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = resumed.split_once(" resumed>") else {
                continue;
            };
            if let Some((start, name, head)) = pending.remove(&tid) {
                entries.push((start, tid, name, format!("{head}{tail}")));
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(head) = args.strip_suffix("<unfinished ...>") {
            pending.insert(tid, (i, name.to_string(), head.to_string()));
        } else {
            entries.push((i, tid, name.to_string(), args.to_string()));
        }
    }
    entries.sort_by_key(|e| e.0);
    let mut armed_at: HashMap<u64, usize> = HashMap::new();
    let mut parent: HashMap<u64, u64> = HashMap::new();
    for (line, tid, name, text) in &entries {
        if matches!(name.as_str(), "clone" | "clone3" | "fork" | "vfork") {
            if let Some(child) = split_call(text).and_then(|(_, ret)| host_pid(ret)) {
                parent.insert(child, *tid);
            }
        }
        // prctl(PR_SET_SECCOMP = 0x16, SECCOMP_MODE_FILTER = 0x2, ...)
        if name == "prctl" && text.starts_with("0x16, 0x2,") {
            armed_at.entry(*tid).or_insert(*line);
        }
    }
    let armed = |tid: u64, line: usize| -> bool {
        if let Some(&at) = armed_at.get(&tid) {
            return line > at;
        }
        let mut p = parent.get(&tid);
        while let Some(&up) = p {
            if armed_at.contains_key(&up) {
                return true;
            }
            p = parent.get(&up);
        }
        false
    };
    let mut calls = Vec::new();
    for (line, tid, name, text) in entries {
        if !armed(tid, line) {
            continue;
        }
        let arg_text = split_call(&text).map_or(text.as_str(), |(a, _)| a);
        let mut args = [0u64; 6];
        for (i, token) in split_args(arg_text).iter().enumerate() {
            match token.split_once('=') {
                // clone prints named fields; its flags are the first argument.
                Some((field, value)) if name == "clone" => {
                    if field == "flags" {
                        args[0] = number(value).unwrap_or(0);
                    }
                }
                _ => {
                    if let Some(slot) = args.get_mut(i) {
                        *slot = number(token).unwrap_or(0);
                    }
                }
            }
        }
        calls.push(Call { name, args, text });
    }
    calls
}

fn strace_works() -> Result<(), String> {
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-X",
            "raw",
            "--decode-pids=pidns",
            "-o",
            "/dev/null",
            "true",
        ])
        .output()
        .map_err(|e| format!("strace: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The corpus as one job: each file runs in a namespace of its own, and
/// the job fails with every file's traceback if any fails.
fn corpus_job() -> String {
    let mut files: Vec<(String, String)> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "py"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the corpus is missing: {files:?}");
    // A JSON list of strings is a Python literal too.
    format!(
        r#"import traceback as _tb
_failed = []
_base = dict(globals())
for _name, _src in {}:
    try:
        exec(compile(_src, _name, "exec"), dict(_base))
    except BaseException:
        _failed.append(_name + ": " + _tb.format_exc())
assert not _failed, "\n".join(_failed)
result = "corpus ok"
"#,
        serde_json::to_string(&files).unwrap()
    )
}

fn reasons(file: &str) -> BTreeMap<String, String> {
    let path = corpus_dir().join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_corpus_needs_each_allowed_call_and_nothing_denied() {
    // scripts/test installs strace; a host where it cannot trace fails
    // here rather than passing without the check.
    if let Err(why) = strace_works() {
        panic!(
            "the corpus runs under `strace -f`, which cannot trace here ({why}): \
             install strace (apt-get install strace), as scripts/test does"
        );
    }
    common::python(); // the shared runtime, provisioned once
    let dir = tempfile::TempDir::new().unwrap();
    let (job, trace) = (dir.path().join("corpus.py"), dir.path().join("trace.txt"));
    std::fs::write(&job, corpus_job()).unwrap();
    let out = Command::new("strace")
        .args(["-f", "-qq", "-X", "raw", "--decode-pids=pidns", "-o"])
        .arg(&trace)
        .arg(common::bin())
        .args([
            "--quiet",
            "run",
            "--json",
            "--no-validate",
            "--timeout",
            "120",
        ])
        .args(["--as-of", "latest", "--artifacts"])
        .arg(dir.path().join("artifacts"))
        .arg(&job)
        .env("TRADEBOX_HOME", common::home())
        .env("TRADEBOX_RUNTIME", common::runtime_dir())
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    assert_eq!(answer["result"], "corpus ok", "{answer:#}");

    let calls = armed_calls(&std::fs::read_to_string(&trace).unwrap());
    assert!(calls.len() > 1000, "too few calls traced: {}", calls.len());
    let arch = seccomp::host_arch().unwrap();
    let programs: Vec<_> = Filter::Child
        .stack()
        .iter()
        .map(|f| seccomp::compile(*f, arch).unwrap())
        .collect();
    let stack: Vec<&[seccomp::sock_filter]> = programs.iter().map(Vec::as_slice).collect();
    let denied_ok = reasons("denied.json");
    let unreached_ok = reasons("unreached.json");
    let doc = seccomp::document(Filter::Child, arch).unwrap();

    let mut problems = Vec::new();
    let mut denied: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut decided: HashMap<(String, [u64; 6]), u32> = HashMap::new();
    for call in &calls {
        let key = (call.name.clone(), call.args);
        let ret = match decided.get(&key) {
            Some(&ret) => ret,
            None => {
                let Ok(nr) = seccomp::syscall_number(&call.name, arch) else {
                    problems.push(format!("unknown system call in the trace: {}", call.text));
                    continue;
                };
                let data = bpf::SeccompData::new(arch, nr, call.args);
                let ret = bpf::decide(&stack, &data).unwrap();
                decided.insert(key, ret);
                ret
            }
        };
        if ret != bpf::RET_ALLOW {
            let example = call.text.split_whitespace().collect::<Vec<_>>().join(" ");
            let e = denied.entry(call.name.clone()).or_insert((0, example));
            e.0 += 1;
        }
    }
    for (name, (count, example)) in &denied {
        if !denied_ok.contains_key(name) {
            problems.push(format!(
                "the corpus made {name} {count} times and the allow-list denies it, \
                 e.g. {name}({example}; allow it with a reason, or list it in denied.json"
            ));
        }
    }
    let mut reached_listed = BTreeSet::new();
    for rule in &doc.filter {
        let label = rule.label();
        let reached = calls
            .iter()
            .any(|c| c.name == rule.syscall && rule.matches(&c.args));
        match (reached, unreached_ok.contains_key(&label)) {
            (false, false) => problems.push(format!(
                "{label} is allowed but the corpus never makes it: remove the rule, add a \
                 snippet that needs it, or say in unreached.json why it stays"
            )),
            (true, true) => {
                reached_listed.insert(label);
            }
            _ => {}
        }
    }
    if !reached_listed.is_empty() {
        // Not a failure: which calls a C library makes depends on the host
        // (glibc version, architecture), and the list is written for all.
        eprintln!("note: unreached.json lists calls the corpus made here: {reached_listed:?}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    println!(
        "{} calls of the job's child traced; {} rules of the allow-list, {} of them \
         explained in unreached.json; denied as listed: {:?}",
        calls.len(),
        doc.filter.len(),
        unreached_ok.len(),
        denied.keys().collect::<Vec<_>>()
    );
}

#[test]
fn the_trace_parser_reads_strace_lines() {
    let log = "\
100 prctl(0x16, 0x2, {len=10, filter=0x7f}) = 0
100 ioctl(5, 0x5401, 0x7fff99bd34b0)  = -1 ENOTTY (Inappropriate ioctl for device)
100 kill(5 /* 100 in strace's PID NS */, 10) = 0
100 clone(child_stack=0x7f, flags=0x3d0f00, parent_tid=[6 /* 101 in strace's PID NS */], tls=0x7f) = 6 /* 101 in strace's PID NS */
101 write(1, \"a, b) = (\\\"\", 8 <unfinished ...>
102 read(0, \"\", 1) = 0
101 <... write resumed>) = 8
101 socketpair(0x1, 0x1|0x80000, 0, [5, 7]) = 0
100 kill(-1, 9) = -1 EPERM (Operation not permitted)
";
    let calls = armed_calls(log);
    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["ioctl", "kill", "clone", "write", "socketpair", "kill"],
        "{calls:#?}"
    );
    assert_eq!(calls[0].args[..2], [5, 0x5401]);
    assert_eq!(calls[1].args[..2], [5, 10]);
    assert_eq!(calls[2].args[0], 0x3d0f00);
    assert_eq!(calls[3].args[2], 8, "{:?}", calls[3]);
    assert_eq!(calls[4].args[..2], [1, 0x80001]);
    assert_eq!(calls[5].args[0], u64::MAX);
    assert_eq!(number("0x1200000|17"), Some(0x1200011));
}
