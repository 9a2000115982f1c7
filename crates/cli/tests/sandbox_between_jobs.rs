//! What one job can do to the next job, to the worker and to the
//! supervisor, tried through the real pool, launcher and zygote with the
//! validator off: an attacker job, then a victim job on the same one-worker
//! pool, whose exact result and timing are checked. The attacks are
//! families (every way to leave something in the scratch folder, every way
//! to keep the worker after answering), not single instances.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::procs::{alive, children_of};
use common::{error_kind, pool, run, run_with, wait_until};
use tradebox_sandbox::{ExecResult, Pool};

fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn py(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn restarts(pool: &Pool) -> u64 {
    pool.status().iter().map(|s| s.restarts).sum()
}

/// Runs `code` and returns the result with its wall time.
fn timed(pool: &Pool, code: &str) -> (ExecResult, Duration) {
    let started = Instant::now();
    let r = run(pool, code);
    (r, started.elapsed())
}

/// The victim writes a report into the scratch and reads it back; it
/// reports what it found there first. On a clean scratch its result is
/// exactly [`CLEAN`].
const VICTIM: &str = r#"
import os, stat
before = sorted(os.listdir('/tmp'))
st, fs = os.stat('/tmp'), os.statvfs('/tmp')
with open('/tmp/report.csv', 'w') as f:
    f.write(@SECRET@)
os.makedirs('/tmp/work/a')
with open('/tmp/work/a/part.csv', 'w') as f:
    f.write(@SECRET@)
with open('/tmp/report.csv') as f:
    back = f.read()
result = [before, oct(stat.S_IMODE(st.st_mode)), st.st_uid, fs.f_blocks - fs.f_bfree,
          fs.f_files - fs.f_ffree, back == @SECRET@]
"#;

const CLEAN: &str = "[[], '0o1777', 1000, 0, 1, True]";

/// The attacker's second job: looks everywhere in the scratch for the
/// victim's report.
const HUNT: &str = r#"
import os
found = []
for root, dirs, files in os.walk('/tmp'):
    for name in files:
        try:
            with open(os.path.join(root, name), errors='replace') as f:
                found.append(f.read(4096))
        except OSError:
            pass
result = sorted(os.listdir('/tmp')), any(@SECRET@ in text for text in found)
"#;

/// Runs the attacker's job, then the victim, then the attacker's hunt for
/// the victim's report; asserts the victim found a clean scratch, promptly,
/// and the hunt found nothing.
fn attack_then_victim(pool: &Pool, what: &str, attack: &str) {
    let secret = format!("VICTIM-REPORT-{}", random_hex(8));
    let (a, took) = timed(pool, attack);
    println!(
        "[attack] {what}: {:?} / {:?} after {took:?}",
        a.result, a.error
    );
    let (v, took) = timed(pool, &VICTIM.replace("@SECRET@", &py(&secret)));
    println!("[victim] after {what}: {:?} in {took:?}", v.result);
    assert!(v.success, "the victim failed after {what}: {v:#?}");
    assert_eq!(
        v.result.as_deref(),
        Some(CLEAN),
        "after {what}, the victim did not start on an empty, writable scratch"
    );
    assert!(
        took < Duration::from_secs(2),
        "after {what}, the victim took {took:?}"
    );
    let h = run(pool, &HUNT.replace("@SECRET@", &py(&secret)));
    assert_eq!(
        h.result.as_deref(),
        Some("([], False)"),
        "after {what}, the next job found the victim's files: {h:#?}"
    );
}

// --------------------------------------------------- 1. the scratch folder

#[test]
fn nothing_a_job_does_to_the_scratch_reaches_the_next_job() {
    let pool = pool(1);
    let attacks: &[(&str, &str)] = &[
        (
            "a world-writable trap where the victim writes",
            "import os\nopen('/tmp/report.csv', 'w').close()\nos.chmod('/tmp/report.csv', 0o666)\n\
             os.mkdir('/tmp/work', 0o777)\nos.chmod('/tmp/work', 0o777)\nresult = 'planted'",
        ),
        (
            "a symlink where the victim writes",
            "import os\nos.mkdir('/tmp/.trap')\nos.chmod('/tmp/.trap', 0o777)\n\
             os.symlink('/tmp/.trap/captured', '/tmp/report.csv')\nresult = 'planted'",
        ),
        (
            "/tmp without permissions",
            "import os\nopen('/tmp/left', 'w').write('x')\nos.chmod('/tmp', 0)\nresult = 'done'",
        ),
        (
            "/tmp read-only and not sticky",
            "import os\nopen('/tmp/left', 'w').write('x')\nos.chmod('/tmp', 0o555)\nresult = 'done'",
        ),
        (
            "folders and files without permissions",
            "import os\nfor d in ['a/b/c', 'x/y', '.h/i']:\n    os.makedirs('/tmp/' + d)\n    \
             open('/tmp/' + d + '/f', 'w').write('x')\n\
             for p in ['/tmp/a/b/c/f', '/tmp/a/b/c', '/tmp/a/b', '/tmp/x/y', '/tmp/.h']:\n    \
             os.chmod(p, 0)\nos.chmod('/tmp/x', 0o500)\nos.chmod('/tmp/a', 0o300)\nresult = 'done'",
        ),
        (
            "3,000 nested folders",
            "import os\nfd = os.open('/tmp', os.O_RDONLY)\nfor _ in range(3000):\n    \
             os.mkdir('d', dir_fd=fd)\n    n = os.open('d', os.O_RDONLY, dir_fd=fd)\n    \
             os.close(fd)\n    fd = n\n\
             open('f', 'w', opener=lambda p, f: os.open(p, f, 0o600, dir_fd=fd)).write('deep')\n\
             os.fchmod(fd, 0)\nresult = 'nested'",
        ),
        (
            "folders nested until no inode is left, each locked, under the wipe's own names",
            "import os\nfor name in ['.wipe-0', '.wipe-2']:\n    open('/tmp/' + name, 'w').close()\n\
             os.makedirs('/tmp/.wipe-1/x')\nfd = os.open('/tmp', os.O_RDONLY)\nn, err = 0, None\n\
             try:\n    while True:\n        os.mkdir('.wipe-3', dir_fd=fd)\n        \
             down = os.open('.wipe-3', os.O_RDONLY, dir_fd=fd)\n        if n:\n            \
             os.fchmod(fd, 0)\n        os.close(fd)\n        fd, n = down, n + 1\n\
             except OSError as e:\n    err = e.errno\nresult = [n, err]",
        ),
        (
            "a hidden folder filled to the limit, then closed",
            "import os\nos.mkdir('/tmp/.full')\nn = 0\ntry:\n    \
             with open('/tmp/.full/data', 'wb') as f:\n        \
             while True:\n            f.write(b'x' * (1 << 20))\n            n += 1\n\
             except OSError as e:\n    err = e.errno\nos.chmod('/tmp/.full', 0)\nresult = n",
        ),
        (
            "a sparse file and preallocated space",
            "import os\nfd = os.open('/tmp/sparse', os.O_CREAT | os.O_WRONLY)\n\
             os.posix_fallocate(fd, 0, 48 << 20)\nos.ftruncate(fd, 60 << 20)\nos.close(fd)\n\
             result = os.stat('/tmp/sparse').st_size",
        ),
        (
            "sockets, links and special files",
            "import os, socket\ns = socket.socket(socket.AF_UNIX)\ns.bind('/tmp/sock')\n\
             log = []\nfor name, fn in [('fifo', lambda: os.mkfifo('/tmp/fifo')),\n    \
             ('hardlink', lambda: os.link('/tmp/sock', '/tmp/hard')),\n    \
             ('dangling', lambda: os.symlink('/nonexistent', '/tmp/dangling')),\n    \
             ('loop', lambda: os.symlink('/tmp/loop', '/tmp/loop'))]:\n    \
             try:\n        fn(); log.append(name)\n    except OSError as e:\n        \
             log.append(f'{name}: {e.errno}')\nresult = log",
        ),
        (
            "4,000 folders and files side by side, names that are not UTF-8",
            "import os\nfor i in range(2000):\n    os.mkdir(f'/tmp/d{i}')\n    \
             open(f'/tmp/f{i}', 'w').close()\nopen(b'/tmp/\\xff\\xfe', 'w').close()\n\
             os.mkdir(b'/tmp/\\xff\\xfd')\nos.chmod(b'/tmp/\\xff\\xfd', 0)\n\
             result = len(os.listdir('/tmp'))",
        ),
        (
            "files kept open by threads of the job",
            "import os, threading, time\nfiles = [open(f'/tmp/open-{i}', 'w') for i in range(20)]\n\
             for f in files:\n    f.write('x' * 1000)\n    f.flush()\n    os.unlink(f.name)\n\
             threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\nresult = 'held'",
        ),
    ];
    for (what, attack) in attacks {
        attack_then_victim(&pool, what, attack);
    }
    assert_eq!(
        restarts(&pool),
        0,
        "the wipe handled every attack without replacing the zygote"
    );
}

/// Unreclaimable kernel memory (host-wide, so only a loose bound holds with
/// other tests running): an empty-file flood is bounded by the scratch's
/// inode limit and given back when the job ends.
fn sunreclaim_kib() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("SUnreclaim:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn an_inode_flood_is_bounded_and_given_back() {
    let pool = pool(1);
    let flood = "import os\nn = 0\ntry:\n    while True:\n        \
                 open(f'/tmp/f{n}', 'w').close()\n        n += 1\nexcept OSError as e:\n    \
                 err = e.errno\nresult = [n, err]";
    let before = sunreclaim_kib();
    let mut peak = 0;
    for round in 0..3 {
        let started = Instant::now();
        let r = run_with(&pool, flood, Duration::from_secs(10), 1024);
        println!(
            "[flood] round {round}: {:?} in {:?}; SUnreclaim {} KiB (before {before})",
            r.result,
            started.elapsed(),
            sunreclaim_kib()
        );
        assert!(r.success, "{r:#?}");
        let v: Vec<i64> = serde_json::from_str(r.result.as_deref().unwrap()).unwrap();
        // ENOSPC (28) when the inodes run out, well before any time limit.
        assert_eq!(v[1], 28, "{v:?}");
        assert!(
            v[0] > 1000 && v[0] <= 64 * 64,
            "files created before the inode limit: {}",
            v[0]
        );
        peak = peak.max(sunreclaim_kib() - before);
    }
    attack_then_victim(&pool, "an inode flood", flood);
    let after = sunreclaim_kib() - before;
    println!("[flood] unreclaimable slab: peak +{peak} KiB, after +{after} KiB");
    assert!(
        peak < 100 << 10 && after < 100 << 10,
        "three inode floods left {after} KiB of unreclaimable kernel memory (peak {peak})"
    );
}

// ------------------------------------------- 2. answering early, holding on

/// A job that writes a whole answer frame of its own to its result pipe,
/// then does `then`.
fn forge_then(then: &str) -> String {
    format!(
        r#"
import json, os, struct, sys
f = sys._getframe()
while f.f_code.co_name != "_child_main":
    f = f.f_back
res_w = f.f_locals["res_w"]
body = json.dumps({{"success": True, "result": "forged", "output": "", "artifacts": []}}).encode()
os.write(res_w, struct.pack(">I", len(body)) + body)
{then}
"#
    )
}

#[test]
fn a_job_that_answers_early_loses_the_worker_at_once() {
    let pool = pool(1);
    for (what, then) in [
        ("sleeps", "import time\ntime.sleep(25)"),
        ("spins", "while True:\n    pass"),
        (
            "starts threads",
            "import threading, time\nfor _ in range(8):\n    \
             threading.Thread(target=time.sleep, args=(25,)).start()\ntime.sleep(25)",
        ),
        (
            "writes more to the pipe",
            "import time\nfor _ in range(100):\n    os.write(res_w, b'\\0\\0\\0\\x05hello')\n\
             time.sleep(25)",
        ),
        (
            "fills the scratch",
            "import time\nwith open('/tmp/late', 'wb') as f:\n    \
             for _ in range(30):\n        f.write(b'x' * (1 << 20))\ntime.sleep(25)",
        ),
    ] {
        let (a, took) = timed(&pool, &forge_then(then));
        println!("[early answer] then {what}: {:?} after {took:?}", a.result);
        assert_eq!(a.result.as_deref(), Some("forged"), "{a:#?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        let started = Instant::now();
        let v = run(&pool, "result = 40 + 2");
        let took = started.elapsed();
        println!("[victim] after an early answer that then {what}: {took:?}");
        assert_eq!(v.result.as_deref(), Some("42"), "{v:#?}");
        assert!(
            took < Duration::from_secs(1),
            "the victim waited {took:?} for a worker held by a job that answered early and {what}"
        );
    }
    attack_then_victim(
        &pool,
        "an early answer, then files",
        &forge_then("open('/tmp/late', 'w').write('x')\nimport time\ntime.sleep(25)"),
    );
    assert_eq!(restarts(&pool), 0);
}

/// The next job reads every pipe it holds open: what the job before it
/// wrote to its answer pipe beyond the answer (still in the pipe when it
/// was killed) must not be there, nor that pipe at all.
const PIPES: &str = r#"
import fcntl, os, stat
ends, found = [], b''
for name in os.listdir('/proc/self/fd'):
    fd = int(name)
    try:
        st = os.fstat(fd)
    except OSError:
        continue
    if not stat.S_ISFIFO(st.st_mode):
        continue
    mode = fcntl.fcntl(fd, fcntl.F_GETFL)
    ends.append('read' if mode & os.O_ACCMODE == os.O_RDONLY else 'write')
    if mode & os.O_ACCMODE == os.O_RDONLY:
        fcntl.fcntl(fd, fcntl.F_SETFL, mode | os.O_NONBLOCK)
        try:
            while chunk := os.read(fd, 1 << 16):
                found += chunk
        except BlockingIOError:
            pass
result = sorted(ends), found.count(@SECRET@.encode())
"#;

/// Every way the last job's answer pipe could still hold its bytes when
/// the next child is forked: written with the answer, after it, and
/// blocked on a full pipe when it is killed.
#[test]
fn bytes_a_job_wrote_past_its_answer_never_reach_the_next_job() {
    let pool = pool(1);
    for (i, how) in [
        "os.write(res_w, secret * 2)",
        "import time\nfor _ in range(20):\n    os.write(res_w, secret)\ntime.sleep(25)",
        "while True:\n    os.write(res_w, secret * 100)",
    ]
    .iter()
    .enumerate()
    {
        let secret = random_hex(16);
        let attack = forge_then(&format!("secret = {}.encode() * 64\n{how}", py(&secret)));
        let a = run(&pool, &attack);
        assert_eq!(a.result.as_deref(), Some("forged"), "{a:#?}");
        for idle in [0u64, 50] {
            std::thread::sleep(Duration::from_millis(idle));
            let v = run(&pool, &PIPES.replace("@SECRET@", &py(&secret)));
            println!(
                "[pipes] after an answer then writes ({i}), {idle} ms idle: {:?}",
                v.result
            );
            assert_eq!(
                v.result.as_deref(),
                Some("(['read', 'write'], 0)"),
                "the next job holds other pipes or the last job's bytes: {v:#?}"
            );
        }
    }
}

/// After a normal answer the child sleeps until the zygote, the answer
/// passed on, kills it (it does not exit by itself: its teardown would
/// hold the CPU the zygote wakes on). Everything a job can leave to run in
/// that sleep, on its main thread (signal handlers, which run inside the
/// sleep) or beside it (threads), changes neither its answer nor the next
/// job, and costs no worker.
#[test]
fn what_a_job_leaves_running_after_its_answer_changes_nothing() {
    let pool = pool(1);
    // Each acts only once the main thread sleeps after the answer.
    let timer = |act: &str| {
        format!(
            "import os, signal\ndef h(sig, frame):\n    \
             if frame is not None and frame.f_code.co_name == '_await_kill':\n{act}\n\
             signal.signal(signal.SIGALRM, h)\n\
             signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)\nresult = 'mine'"
        )
    };
    let thread = |act: &str| {
        format!(
            "import os, sys, threading, time\nmain = threading.main_thread().ident\n\
             def t():\n    \
             while sys._current_frames()[main].f_code.co_name != '_await_kill':\n        \
             time.sleep(0.001)\n{act}\n\
             threading.Thread(target=t).start()\nresult = 'mine'"
        )
    };
    for (what, code) in [
        (
            "a timer whose handler raises",
            timer("        raise SystemExit(3)"),
        ),
        (
            "a timer whose handler spins",
            timer("        while True:\n            pass"),
        ),
        ("a timer whose handler exits", timer("        os._exit(9)")),
        (
            "a timer whose handler writes to the scratch",
            timer("        open('/tmp/late', 'a').write('x')"),
        ),
        (
            "a thread that spins",
            thread("    while True:\n        pass"),
        ),
        ("a thread that exits", thread("    os._exit(9)")),
        (
            "a thread that writes to the scratch",
            thread("    while True:\n        open('/tmp/late', 'a').write('x' * 4096)"),
        ),
    ] {
        let (a, took) = timed(&pool, &code);
        println!("[after the answer] {what}: {:?} after {took:?}", a.result);
        assert_eq!(a.result.as_deref(), Some("mine"), "{what}: {a:#?}");
        assert!(took < Duration::from_secs(2), "{what}: {took:?}");
        attack_then_victim(&pool, what, &code);
    }
    assert_eq!(restarts(&pool), 0, "the worker was replaced");
}

#[test]
fn two_early_answers_do_not_hold_a_pool_of_two() {
    let pool = std::sync::Arc::new(pool(2));
    let attackers: Vec<_> = (0..2)
        .map(|_| {
            let pool = std::sync::Arc::clone(&pool);
            std::thread::spawn(move || run(&pool, &forge_then("import time\ntime.sleep(25)")))
        })
        .collect();
    for a in attackers {
        assert_eq!(a.join().unwrap().result.as_deref(), Some("forged"));
    }
    let started = Instant::now();
    let victims: Vec<_> = (0..4)
        .map(|i| {
            let pool = std::sync::Arc::clone(&pool);
            std::thread::spawn(move || run(&pool, &format!("result = {i} * 10")))
        })
        .collect();
    for (i, v) in victims.into_iter().enumerate() {
        let v = v.join().unwrap();
        assert_eq!(v.result, Some((i * 10).to_string()), "{v:#?}");
    }
    let took = started.elapsed();
    println!("[victims] four jobs after two early answers on a pool of two: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

// --------------------------------------------------------------- 3. /proc

#[test]
fn proc_shows_nothing_of_the_zygote_or_other_jobs() {
    let pool = pool(1);
    let first = run(&pool, "import os\nresult = os.getpid()");
    let previous: u32 = first.result.as_deref().unwrap().parse().unwrap();
    let r = run(
        &pool,
        &r#"
import os
log = {}
def attempt(label, fn):
    try:
        fn()
        log[label] = "OK"
    except OSError as e:
        log[label] = type(e).__name__
me = os.getpid()
for pid in (1, @PREV@):
    for name in ["stat", "status", "sched", "schedstat", "io", "statm", "cmdline", "environ",
                 "maps", "smaps_rollup", "limits", "wchan", "task", "fd", "ns/pid", "cgroup"]:
        path = f"/proc/{pid}/{name}"
        attempt(path, lambda: os.listdir(path) if name in ("task", "fd") else open(path).read())
for path in ["/proc/stat", "/proc/loadavg", "/proc/meminfo", "/proc/vmstat", "/proc/interrupts",
             "/proc/pressure/cpu", "/proc/schedstat", "/proc/sys/kernel/ns_last_pid",
             "/proc/self/../1/stat", "/proc/thread-self/../../1/status", "/proc/net/dev",
             "/proc/self/task/1/stat"]:
    attempt(path, lambda: open(path).read())
attempt("/proc/self/stat", lambda: open("/proc/self/stat").read())
attempt("/proc/self/statm", lambda: open("/proc/self/statm").read())
entries = sorted(e for e in os.listdir("/proc") if e.isdigit())
readable = sorted(k for k, v in log.items() if v == "OK")
result = [entries == [str(me)], readable]
"#
        .replace("@PREV@", &previous.to_string()),
    );
    println!("{:?}", r.result);
    assert!(r.success, "{r:#?}");
    assert_eq!(
        r.result.as_deref(),
        Some("[True, ['/proc/self/stat', '/proc/self/statm']]"),
        "a job saw more of /proc than itself"
    );
}

// ------------------------------------------------------ 4. processes, threads

/// Small stacks and a large memory limit, so that only the task limit can
/// stop it (16 threads of 8 MiB stacks and malloc arenas can also meet the
/// default 1 GiB address-space limit).
const THREAD_BOMB: &str = r#"
import threading
threading.stack_size(64 << 10)
stop, n = threading.Event(), 0
try:
    while n < 5000:
        threading.Thread(target=stop.wait).start()
        n += 1
except RuntimeError as e:
    err = str(e)
stop.set()
result = n
"#;

#[test]
fn threads_are_bounded_per_sandbox_even_for_a_root_caller() {
    let pool = std::sync::Arc::new(pool(2));
    // Two bombs at once, one per zygote: each has its own budget.
    let bombs: Vec<_> = (0..2)
        .map(|_| {
            let pool = std::sync::Arc::clone(&pool);
            std::thread::spawn(move || run_with(&pool, THREAD_BOMB, Duration::from_secs(30), 16384))
        })
        .collect();
    for b in bombs {
        let r = b.join().unwrap();
        println!("[threads] {:?}", r.result);
        assert!(r.success, "{r:#?}");
        assert_eq!(
            r.result.as_deref(),
            Some("16"),
            "a job could start this many threads"
        );
    }
    let (v, took) = timed(
        &pool,
        "import threading\nt = threading.Thread(target=print)\nt.start()\nt.join()\nresult = 'ok'",
    );
    assert_eq!(v.result.as_deref(), Some("ok"), "{v:#?}");
    assert!(took < Duration::from_secs(2));
    // The sandbox never runs as host root.
    let ids = run(&pool, "result = open('/proc/self/uid_map').read().split()");
    let expected = tradebox_sandbox::launcher::host_ids().0;
    assert_eq!(
        ids.result,
        Some(format!("['1000', '{expected}', '1']")),
        "{ids:#?}"
    );
    assert_ne!(expected, 0);
}

/// A job that answers with every thread it may still running: they count
/// against the sandbox's task limit until the child is reaped, and the
/// zygote forks the next child while the last one is torn down, so that
/// fork may be refused for a moment. The next jobs run all the same, on
/// the same worker.
#[test]
fn answering_with_every_thread_running_does_not_cost_the_next_job() {
    let pool = pool(1);
    let keep = "import threading, time\nthreading.stack_size(64 << 10)\nn = 0\ntry:\n    \
                while True:\n        threading.Thread(target=time.sleep, args=(25,)).start()\n        \
                n += 1\nexcept RuntimeError:\n    pass\nresult = n";
    for round in 0..5 {
        let a = run(&pool, keep);
        assert_eq!(a.result.as_deref(), Some("16"), "{a:#?}");
        let (v, took) = timed(&pool, "result = 40 + 2");
        println!("[threads] the job after one that kept 16 threads (round {round}): {took:?}");
        assert_eq!(v.result.as_deref(), Some("42"), "{v:#?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    assert_eq!(restarts(&pool), 0, "the worker was replaced");
}

#[test]
fn a_long_job_yields_the_cpu_to_every_other_job_and_cannot_take_it_back() {
    let pool = pool(1);
    // Threads started before the demotion and after it, and the main
    // thread, each read their own nice value and policy once the job has
    // run 1.6 s; then the job tries to undo it.
    let code = "import os, threading, time\n\
        t0 = time.monotonic()\n\
        seen = {}\n\
        def spin(name, until):\n    \
            while time.monotonic() - t0 < until:\n        pass\n    \
            stat = open(f'/proc/self/task/{threading.get_native_id()}/stat').read()\n    \
            fields = stat[stat.rfind(')') + 2:].split()\n    \
            seen[name] = (int(fields[16]), int(fields[38]))\n\
        early = threading.Thread(target=spin, args=('early', 1.6))\n\
        early.start()\n\
        spin('main', 1.6)\n\
        late = threading.Thread(target=spin, args=('late', 1.7))\n\
        late.start(); late.join(); early.join()\n\
        def cpu_group():\n    \
            for line in open('/proc/self/cgroup'):\n        \
                _, ctl, path = line.rstrip('\\n').split(':', 2)\n        \
                if 'cpu' in ctl.split(','):\n            \
                    return path\n\
        until = time.monotonic() + 10\n\
        while not (cpu_group() or '').endswith('-idle') and time.monotonic() < until:\n    \
            time.sleep(0.05)\n\
        idle_group = (cpu_group() or '').endswith('-idle')\n\
        undo = []\n\
        for attempt in (lambda: os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0)),\n                \
                        lambda: os.setpriority(os.PRIO_PROCESS, 0, 0),\n                \
                        lambda: os.setpgid(0, 1),\n                \
                        lambda: os.setsid()):\n    \
            try:\n        \
                attempt()\n        \
                undo.append('done')\n    \
            except OSError as e:\n        \
                undo.append(type(e).__name__)\n\
        result = (seen['main'], seen['early'], seen['late'], undo, idle_group)";
    // The idle CPU group is made wherever a cgroup-v1 cpu hierarchy can be
    // written (as root here, and in CI); elsewhere say why it is not there.
    let grouped = match pool.idle_group() {
        Ok(dir) => {
            println!("[idle group] {}", dir.display());
            "True"
        }
        Err(why) => {
            println!("[idle group] none: {why}");
            assert!(
                !is_root() || !Path::new("/sys/fs/cgroup/cpu").is_dir(),
                "root with a cgroup-v1 cpu hierarchy, but no idle group: {why}"
            );
            "False"
        }
    };
    let r = run(&pool, code);
    assert!(r.success, "{r:#?}");
    // (nice, policy): 5 is SCHED_IDLE, 0 SCHED_OTHER.
    let expected = format!(
        "((19, 5), (19, 0), (19, 5), ['PermissionError', 'PermissionError', 'PermissionError', 'PermissionError'], {grouped})"
    );
    assert_eq!(r.result.as_deref(), Some(expected.as_str()), "{r:#?}");
    // A short job, and the next one after a demoted job, run as before,
    // outside the idle group.
    let r = run(
        &pool,
        "import os\nresult = (os.getpgid(0) == os.getpid(), os.sched_getscheduler(0), \
         [l for l in open('/proc/self/cgroup') if l.rstrip().endswith('-idle')])",
    );
    assert_eq!(r.result.as_deref(), Some("(True, 0, [])"), "{r:#?}");
}

#[test]
fn demoted_jobs_are_held_to_a_cpu_quota_while_another_job_runs() {
    let pool = pool(2);
    let dir = match pool.idle_group() {
        Ok(dir) => dir.to_path_buf(),
        Err(why) => {
            println!("[quota] no idle group: {why}");
            assert!(
                !is_root() || !Path::new("/sys/fs/cgroup/cpu").is_dir(),
                "root with a cgroup-v1 cpu hierarchy, but no idle group: {why}"
            );
            return;
        }
    };
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read("cpu.cfs_quota_us"), "-1", "no quota before any job");
    let job = |code: &str| tradebox_sandbox::Job {
        code: code.to_string(),
        timeout: Duration::from_secs(30),
        as_of: Some("latest".into()),
        ..tradebox_sandbox::Job::default()
    };
    let spinner = pool
        .submit(job(
            "import time\nend = time.monotonic() + 8\nwhile time.monotonic() < end:\n    pass\n\
             result = 'spun'",
        ))
        .unwrap();
    // Demoted after a second, then moved into the group within a tick.
    wait_until(
        "the spinner in the idle group",
        Duration::from_secs(4),
        || !read("cgroup.procs").is_empty(),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read("cpu.cfs_quota_us"),
        "-1",
        "alone, a demoted job has the whole machine"
    );
    // Any job that is not demoted puts the quota on while it runs (a
    // sleeping one as well: the quota follows the pool's jobs, not the CPU).
    let other = pool
        .submit(job("import time\ntime.sleep(2.5)\nresult = 'other'"))
        .unwrap();
    wait_until(
        "the quota on while another job runs",
        Duration::from_secs(2),
        || read("cpu.cfs_quota_us") == "10000",
    );
    assert_eq!(read("cpu.cfs_period_us"), "100000");
    let r = other.blocking_recv().unwrap();
    assert_eq!(r.result.as_deref(), Some("other"), "{r:#?}");
    wait_until(
        "the quota off once the other job ended",
        Duration::from_secs(2),
        || read("cpu.cfs_quota_us") == "-1",
    );
    assert!(
        !read("cgroup.procs").is_empty(),
        "the spinner had ended: the quota was not seen off while it ran"
    );
    let r = spinner.blocking_recv().unwrap();
    assert_eq!(r.result.as_deref(), Some("spun"), "{r:#?}");
}

// ------------------------------------------------ 5. limits reported right

#[test]
fn a_cpu_limit_kill_is_reported_as_the_time_limit() {
    let pool = pool(1);
    // The CPU limit in the job's own hands (lowered, as threads on several
    // cores would reach it before the wall clock).
    let r = run(
        &pool,
        "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (1, 2))\nprint('spinning')\n\
         while True:\n    pass",
    );
    println!("[cpu] {:?} {:?}", r.error, r.output);
    assert_eq!(error_kind(&r), "Timeout", "{r:#?}");
    assert!(r.error.as_ref().unwrap().message.contains("CPU"), "{r:#?}");
    assert_eq!(r.output, "spinning\n");
    // Threads that run numpy in parallel (the GIL released) use CPU time
    // faster than the wall clock: still the time limit, either way.
    let r = run_with(
        &pool,
        "import threading, numpy as np\na = np.random.rand(300, 300)\n\
         def spin():\n    while True:\n        a @ a\n\
         for _ in range(4):\n    threading.Thread(target=spin, daemon=True).start()\nspin()",
        Duration::from_secs(3),
        1024,
    );
    println!("[cpu, threads] {:?}", r.error);
    assert_eq!(error_kind(&r), "Timeout", "{r:#?}");
    let v = run(&pool, "result = 1 + 1");
    assert_eq!(v.result.as_deref(), Some("2"));
}

#[test]
fn output_printed_before_a_timeout_or_crash_comes_back() {
    let pool = pool(1);
    let r = run_with(
        &pool,
        "import time\nprint('step 1 done')\nprint('step 2 started', flush=True)\ntime.sleep(30)",
        Duration::from_secs(2),
        1024,
    );
    assert_eq!(error_kind(&r), "Timeout", "{r:#?}");
    assert_eq!(r.output, "step 1 done\nstep 2 started\n");
    let r = run(
        &pool,
        "import os, signal\nprint('before the crash')\nos.kill(os.getpid(), signal.SIGSEGV)",
    );
    assert_eq!(error_kind(&r), "Crashed", "{r:#?}");
    assert_eq!(r.output, "before the crash\n");
    // A flood before the timeout is cut like any output, with the note.
    let r = run_with(
        &pool,
        "import time\nfor _ in range(5000):\n    print('x' * 999)\ntime.sleep(30)",
        Duration::from_secs(3),
        1024,
    );
    assert_eq!(error_kind(&r), "Timeout", "{r:#?}");
    assert!(r.output.len() <= (1 << 20) + 200, "{}", r.output.len());
    assert!(r.output.starts_with(&"x".repeat(999)));
    assert!(
        r.output.contains("output truncated"),
        "{}",
        &r.output[r.output.len() - 200..]
    );
    // The mirror's header is the job's to write: a forged one claims more
    // than the output limit.
    let r = run_with(
        &pool,
        "import struct, sys, time\nprint('real output')\nf = sys._getframe()\n\
         while f.f_code.co_name != '_child_main':\n    f = f.f_back\n\
         struct.pack_into('<QQ', f.f_locals['mirror'].map, 0, 1 << 40, 1 << 50)\ntime.sleep(30)",
        Duration::from_secs(2),
        1024,
    );
    assert_eq!(error_kind(&r), "Timeout", "{r:#?}");
    assert!(
        r.output.starts_with("real output\n"),
        "{:?}",
        r.output.chars().take(40).collect::<String>()
    );
    assert!(r.output.len() <= (1 << 20) + 200, "{}", r.output.len());
    let v = run(&pool, "result = 1 + 1");
    assert_eq!(v.result.as_deref(), Some("2"));
}

// ------------------------------------------- 6. a broken worker is not blamed

#[test]
fn the_next_job_runs_on_a_healthy_worker_after_the_zygote_dies_between_jobs() {
    let pool = pool(1);
    for round in 0..3 {
        let r = run(&pool, "result = 'before'");
        assert!(r.success);
        let pid = pool.status()[0].pid.unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // Dead, not only signalled, before the next job: a kill still on its
        // way races the job's dispatch, and a worker that takes a job and
        // then dies failed during it (`a_zygote_killed_mid_job_is_replaced`).
        let gone = Instant::now();
        while alive(pid) {
            assert!(
                gone.elapsed() < Duration::from_secs(5),
                "the launcher outlived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        if round == 1 {
            std::thread::sleep(Duration::from_millis(300));
        }
        let (v, took) = timed(&pool, "result = 'victim'");
        println!("[victim] after the zygote was killed between jobs (round {round}): {took:?}");
        assert_eq!(
            v.result.as_deref(),
            Some("victim"),
            "the victim was blamed for a dead worker: {v:#?}"
        );
    }
}

/// A worker that is alive but does not answer (stopped, or hung) is
/// replaced, and the next job runs on a fresh one: it neither waits out its
/// time limit nor is blamed for the worker. Stopped at two moments: right
/// after answering (before it says it is idle again: the supervisor gives
/// up waiting for that) and while idle (it never takes the next job).
#[test]
fn a_stopped_worker_is_replaced_and_the_job_runs_elsewhere() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pool = pool(1);
    for (when, settle) in [("right after a job", 0), ("while idle", 400)] {
        assert!(run(&pool, "result = 'before'").success);
        std::thread::sleep(Duration::from_millis(settle));
        let launcher = pool.status()[0].pid.unwrap();
        let zygotes = children_of(launcher);
        assert_eq!(zygotes.len(), 1, "the launcher's one child is the zygote");
        kill(Pid::from_raw(zygotes[0] as i32), Signal::SIGSTOP).unwrap();
        let before = restarts(&pool);
        let (v, took) = timed(&pool, "result = 'victim'");
        println!("[victim] zygote stopped {when}: {:?} in {took:?}", v.result);
        assert_eq!(v.result.as_deref(), Some("victim"), "{when}: {v:#?}");
        assert_eq!(
            restarts(&pool),
            before + 1,
            "{when}: the worker was replaced"
        );
        // Its time limit is 30 s: it ran long before that.
        assert!(took < Duration::from_secs(20), "{when}: {took:?}");
        assert!(
            children_of(launcher).is_empty(),
            "{when}: the stopped zygote is gone"
        );
    }
}

// ------------------------------------------ 7. memory beyond the job's limit

/// The address-space limit counts only new mappings: the zygote's own
/// buffers (the job and result buffers, the output mirror beyond the job's
/// output limit) must not be in a job's address space, where a job could
/// fill them on top of its memory limit.
#[test]
fn the_zygotes_buffers_are_not_in_a_jobs_address_space() {
    let pool = pool(1);
    let r = run(
        &pool,
        r#"
writable = 0
for row in open('/proc/self/maps'):
    parts = row.split()
    lo, hi = (int(x, 16) for x in parts[0].split('-'))
    path = parts[5] if len(parts) > 5 else ''
    if 'w' in parts[1] and (path == '' or path.startswith('/dev/zero')):
        writable += hi - lo
result = writable >> 20
"#,
    );
    let mib: u64 = r.result.as_deref().unwrap().parse().unwrap();
    println!("[memory] anonymous writable mappings in a job: {mib} MiB");
    // The zygote's result buffer alone is 256 MiB and the mirror 64 MiB.
    assert!(mib < 128, "{mib} MiB of writable anonymous mappings");
}

// ------------------------------------------------ 8. the child's warm-up

/// What a job finds of the work its child did before the job came: the
/// child runs a typical query while it waits (to pay its first-call costs
/// off the request path), and none of it may show.
const LEFTOVERS: &str = r#"
import gc, os, sys, linecache
import pandas as pd, pyarrow as pa
from pandas.core.groupby import GroupBy
objects = [type(o).__name__ for o in gc.get_objects()
           if isinstance(o, (pd.DataFrame, pd.Series, GroupBy, pa.Table, pa.RecordBatch))]
result = {
    'objects': objects,
    'scratch': sorted(os.listdir('/tmp')),
    'threads': len(os.listdir('/proc/self/task')),
    'arrow_bytes': pa.total_allocated_bytes(),
    'lines': sorted(k for k in linecache.cache if k != '<snippet>'),
    'fds': sorted(os.listdir('/proc/self/fd')),
}
"#;

#[test]
fn a_job_finds_nothing_of_its_childs_warm_up() {
    let pool = pool(1);
    let mut seen = Vec::new();
    for idle in [0u64, 400, 4, 8, 12, 16, 20, 25, 0, 400] {
        // 400 ms idle: the child has finished its warm-up; none: it had
        // no time to start it (the job is waiting when it is armed); in
        // between, the job comes during the warm-up and cuts it short
        // (about 5 ms after an answer the child is armed, and its warm-up
        // takes 10 to 20 ms).
        std::thread::sleep(Duration::from_millis(idle));
        let r = run(&pool, LEFTOVERS);
        assert!(r.success, "{r:#?}");
        let v = &r.value.as_ref().unwrap()["value"];
        println!("[warm-up] after {idle} ms idle: {v}");
        assert_eq!(v["objects"], serde_json::json!([]), "objects left: {v}");
        assert_eq!(v["scratch"], serde_json::json!([]), "files left: {v}");
        assert_eq!(v["threads"], 1, "threads left: {v}");
        assert_eq!(v["arrow_bytes"], 0, "Arrow memory left: {v}");
        // The zygote's own (from its imports) are the same for every job.
        seen.push((v["fds"].clone(), v["lines"].clone()));
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "open descriptors or cached source lines differ with and without the warm-up: {seen:?}"
    );
}

/// Whether the test runs as root (its /proc entry belongs to uid 0).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
