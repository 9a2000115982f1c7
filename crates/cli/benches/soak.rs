//! Soak under hostile load (a `harness = false` bench target, driven by
//! benches/soak.sh, which builds the release binary and a demo store).
//!
//! The real `tradebox serve` runs on the store at `--home` with its default
//! pool, limits and fairness rule, the validator off (the sandbox alone
//! stands between the jobs and the host) and the rate limit raised (the
//! load is the point here), connected over Socket Mode to the in-repo fake
//! Slack. Then, in one run:
//!
//!   capacity  closed loop: 8 users send the 7-day query over HTTP as fast
//!             as answers come back; capacity = answers per second.
//!   clean     normal traffic only, open loop at 70% of that capacity:
//!             several users' `/analyze` of the 7-day query and `/runfunc`
//!             of a saved function with parameters, over HTTP and over
//!             Slack, `POST /api/v1/run`, `/listfuncs`, and a save followed
//!             by a delete. Latency counts from when a request was due, so
//!             a stalled server cannot hide behind a stalled client.
//!   hostile   the same traffic at the same rate while one other user keeps
//!             three requests in flight, cycling through infinite loops,
//!             memory, fork and thread bombs, output floods, huge results,
//!             segfaults, self-kills, scratch floods and sleeping jobs.
//!
//! Prints, per phase: normal requests, success rate (target 100%), p50 and
//! p99 of the executing requests, and hostile outcomes; then p50 hostile vs
//! clean (target within 2x), zygotes replaced, the supervisor's resident
//! memory and open descriptors at the start and end of the clean phase,
//! halfway through the hostile phase and at its end (target: no growth
//! beyond 5% over the hostile phase's second half, once caches and buffers
//! have reached their working size), audit rows against requests (none
//! lost) and, after `serve` is stopped, processes left on the host
//! (target 0).
//!
//! Options (or env): --home DIR (BENCH_HOME, required), --runtime DIR
//! (BENCH_RUNTIME, default target/tmp/bench-runtime), --minutes M
//! (SOAK_MINUTES, 10), --quick (60 s in all), --rate N (requests per second;
//! default: 70% of the measured capacity), --hostile NAME,... (only these
//! hostile jobs, by the names the report uses, e.g. "output flood"), --json.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{percentile, Client};
use tradebox_fake_slack::{self as fake, FakeSlack, SlashCommand};

const QUERY: &str = "df = load_trades(days=7)\nresult = df.groupby('exchange')['amount'].sum()";
const FUNC: &str = "soak_volume";
const FUNC_CODE: &str = "days = int(params.get('days', 7))\n\
                         df = load_trades(days=days)\n\
                         result = df.groupby('symbol')['amount'].sum()";
const NORMAL_USERS: usize = 12;
const HOSTILE_USER: &str = "UHOSTILE";
const HOSTILE_STREAMS: usize = 3;
const CLIENTS: usize = 24;
const SLACK_SENDERS: usize = 2;
const CAPACITY_CLIENTS: usize = 8;
const TARGET_RATIO_P50: f64 = 2.0;
const TARGET_GROWTH: f64 = 0.05;
const WAIT: Duration = Duration::from_secs(180);

/// What each hostile request runs (validator off: the sandbox alone).
const HOSTILE: &[(&str, &str)] = &[
    ("infinite loop", "while True:\n    pass"),
    (
        "memory bomb",
        "blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))",
    ),
    ("fork bomb", "import os\nwhile True:\n    os.fork()"),
    (
        "thread bomb",
        "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()",
    ),
    ("output flood", "while True:\n    print('x' * 4096)"),
    ("huge result", "result = 'x' * (64 << 20)"),
    ("segfault", "import ctypes\nctypes.string_at(0)"),
    ("self-kill", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
    (
        "scratch flood",
        "i = 0\nwhile True:\n    open(f'/tmp/f{i}', 'w').write('x' * 65536)\n    i += 1",
    ),
    ("sleeping job", "import time\ntime.sleep(3600)"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    HttpAnalyze,
    HttpRunfunc,
    ApiRun,
    ListFuncs,
    SaveDelete,
    SlackAnalyze,
    SlackRunfunc,
}

/// The normal traffic's mix, in parts of 100.
const MIX: [(Kind, u32); 7] = [
    (Kind::HttpAnalyze, 40),
    (Kind::HttpRunfunc, 20),
    (Kind::ApiRun, 5),
    (Kind::ListFuncs, 5),
    (Kind::SaveDelete, 5),
    (Kind::SlackAnalyze, 15),
    (Kind::SlackRunfunc, 10),
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::HttpAnalyze => "http /analyze",
            Kind::HttpRunfunc => "http /runfunc",
            Kind::ApiRun => "POST /api/v1/run",
            Kind::ListFuncs => "http /listfuncs",
            Kind::SaveDelete => "http /savefunc+/delfunc",
            Kind::SlackAnalyze => "slack /analyze",
            Kind::SlackRunfunc => "slack /runfunc",
        }
    }

    fn executes(self) -> bool {
        !matches!(self, Kind::ListFuncs | Kind::SaveDelete)
    }

    fn slack(self) -> bool {
        matches!(self, Kind::SlackAnalyze | Kind::SlackRunfunc)
    }

    /// Audit rows one request of this kind writes.
    fn audit_rows(self) -> u64 {
        match self {
            Kind::ListFuncs => 0,
            Kind::SaveDelete => 2,
            _ => 1,
        }
    }
}

struct Args {
    home: PathBuf,
    runtime: PathBuf,
    total: Duration,
    rate: Option<f64>,
    /// The hostile jobs to cycle through (all by default).
    hostile: Vec<(&'static str, &'static str)>,
    json: bool,
}

fn args() -> Args {
    let mut argv = std::env::args().skip(1);
    let env = |k: &str| std::env::var(k).ok();
    let minutes: f64 = env("SOAK_MINUTES")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let mut a = Args {
        home: support::bench_home(),
        runtime: support::bench_runtime(),
        total: Duration::from_secs_f64(minutes * 60.0),
        rate: None,
        hostile: HOSTILE.to_vec(),
        json: false,
    };
    while let Some(arg) = argv.next() {
        let mut value = || argv.next().expect("a value after the option");
        match arg.as_str() {
            "--home" => a.home = PathBuf::from(value()),
            "--runtime" => a.runtime = PathBuf::from(value()),
            "--minutes" => {
                a.total =
                    Duration::from_secs_f64(value().parse::<f64>().expect("--minutes M") * 60.0)
            }
            "--quick" => a.total = Duration::from_secs(60),
            "--rate" => a.rate = Some(value().parse().expect("--rate N")),
            "--hostile" => {
                let names = value();
                a.hostile = HOSTILE
                    .iter()
                    .filter(|(what, _)| names.split(',').any(|n| n.trim() == *what))
                    .copied()
                    .collect();
                assert!(
                    !a.hostile.is_empty(),
                    "--hostile: none of {names:?} is a hostile job"
                );
            }
            "--json" => a.json = true,
            "--bench" => {}
            other => panic!("unknown option {other}"),
        }
    }
    assert!(
        !a.home.as_os_str().is_empty(),
        "--home DIR (or BENCH_HOME) with a store is required; run benches/soak.sh"
    );
    a
}

/// A small deterministic generator (xorshift64*), so that two runs send
/// the same sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A request due at `due`.
struct Item {
    n: u64,
    due: Instant,
    kind: Kind,
    user: String,
    days: u64,
}

/// A normal request's outcome.
struct Done {
    kind: Kind,
    due: Instant,
    latency: Duration,
    ok: bool,
    problem: Option<String>,
}

/// A Slack command sent; its answer is read from the fake afterwards.
struct SlackSent {
    kind: Kind,
    due: Instant,
    channel: String,
    problem: Option<String>,
}

struct Ctx {
    server: support::Server,
    fake: Arc<FakeSlack>,
}

impl Ctx {
    fn client(&self) -> Client {
        Client::connect(self.server.addr, &self.server.token).expect("connect to serve")
    }
}

fn command_body(user: &str, channel: &str, text: &str) -> String {
    json!({"user": user, "channel": channel, "text": text}).to_string()
}

/// Sends one command line; `Ok(reply)` when answered 200 without an error.
fn command(client: &mut Client, user: &str, text: &str) -> Result<Value, String> {
    let (status, body) = client
        .post("/api/v1/commands", &command_body(user, "CSOAK", text))
        .map_err(|e| format!("no answer: {e}"))?;
    let v: Value = serde_json::from_str(&body).map_err(|_| format!("{status}: {body}"))?;
    if status != 200 || v["error"] != false {
        let text = v["fallback"]
            .as_str()
            .or(v["error"].as_str())
            .unwrap_or(&body);
        return Err(format!("{status}: {}", first_line(text)));
    }
    Ok(v)
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(120)
        .collect()
}

/// Runs one normal HTTP request; `Err` says why it failed.
fn http_request(client: &mut Client, item: &Item) -> Result<(), String> {
    match item.kind {
        Kind::HttpAnalyze => command(client, &item.user, &format!("/analyze {QUERY}")).map(|_| ()),
        Kind::HttpRunfunc => {
            let v = command(
                client,
                &item.user,
                &format!("/runfunc {FUNC} days={}", item.days),
            )?;
            let fallback = v["fallback"].as_str().unwrap_or_default();
            if fallback.starts_with(&format!("{FUNC}:")) {
                Ok(())
            } else {
                Err(first_line(fallback))
            }
        }
        Kind::ApiRun => {
            let (status, body) = client
                .post("/api/v1/run", &json!({ "code": QUERY }).to_string())
                .map_err(|e| format!("no answer: {e}"))?;
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if status == 200 && v["success"] == true {
                Ok(())
            } else {
                Err(format!("{status}: {}", first_line(&body)))
            }
        }
        Kind::ListFuncs => {
            let v = command(client, &item.user, "/listfuncs")?;
            let all = v.to_string();
            if all.contains(FUNC) {
                Ok(())
            } else {
                Err("the saved function is not listed".into())
            }
        }
        Kind::SaveDelete => {
            let name = format!("tmp_{}_{}", item.user.to_lowercase(), item.n);
            command(
                client,
                &item.user,
                &format!("/savefunc {name} | soak | result = {}", item.n),
            )?;
            command(client, &item.user, &format!("/delfunc {name}")).map(|_| ())
        }
        Kind::SlackAnalyze | Kind::SlackRunfunc => unreachable!("sent over Slack"),
    }
}

struct Phase {
    name: &'static str,
    started: Instant,
    elapsed: Duration,
    done: Vec<Done>,
    hostile: BTreeMap<&'static str, BTreeMap<String, usize>>,
    /// Each hostile request: what it ran, when it was sent and answered.
    spans: Vec<(&'static str, Instant, Instant)>,
    audited: u64,
}

impl Phase {
    fn latencies(&self, filter: impl Fn(Kind) -> bool) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .done
            .iter()
            .filter(|d| d.ok && d.kind.executes() && filter(d.kind))
            .map(|d| d.latency.as_secs_f64() * 1e3)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn ok(&self) -> usize {
        self.done.iter().filter(|d| d.ok).count()
    }

    fn problems(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for d in &self.done {
            if let Some(p) = &d.problem {
                *out.entry(format!("{}: {p}", d.kind.name())).or_default() += 1;
            }
        }
        out
    }
}

/// Normal executing requests by the hostile job running when they were
/// due: (what ran, requests, slow ones, their p50 ms). The hostile user
/// runs one job at a time, in the order sent, so a job runs from the later
/// of its sending and the previous answer until its own answer.
fn attribution(ph: &Phase, slow: Duration) -> Vec<(&'static str, usize, usize, f64)> {
    let mut spans = ph.spans.clone();
    spans.sort_by_key(|s| s.2);
    let mut running = Vec::new();
    let mut previous: Option<Instant> = None;
    for (what, sent, answered) in spans {
        let from = previous.map_or(sent, |p| p.max(sent));
        running.push((what, from, answered));
        previous = Some(answered);
    }
    let mut by: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for d in ph.done.iter().filter(|d| d.ok && d.kind.executes()) {
        let what = running
            .iter()
            .find(|(_, from, to)| *from <= d.due && d.due < *to)
            .map_or("(none)", |r| r.0);
        by.entry(what)
            .or_default()
            .push(d.latency.as_secs_f64() * 1e3);
    }
    by.into_iter()
        .map(|(what, mut v)| {
            v.sort_by(f64::total_cmp);
            let n_slow = v
                .iter()
                .filter(|ms| **ms > slow.as_secs_f64() * 1e3)
                .count();
            (what, v.len(), n_slow, percentile(&v, 50.0))
        })
        .collect()
}

/// Classifies a hostile job's answer in a few words.
fn hostile_outcome(answer: std::io::Result<(u16, String)>) -> String {
    match answer {
        Err(e) => format!("no answer ({e})"),
        Ok((status, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let text = v["fallback"]
                .as_str()
                .or(v["error"].as_str())
                .unwrap_or(&body);
            let text = text.strip_prefix("Analysis failed: ").unwrap_or(text);
            let head: String = text
                .split([':', '(', '\n'])
                .next()
                .unwrap_or_default()
                .chars()
                .take(48)
                .collect();
            format!("{status} {}", head.trim())
        }
    }
}

/// One phase: normal traffic at `rate` per second for `length`, with the
/// hostile user alongside when `hostile`.
fn run_phase(
    ctx: &Ctx,
    name: &'static str,
    rate: f64,
    length: Duration,
    hostile: &[(&'static str, &'static str)],
    first: u64,
    rng: &mut Rng,
) -> Phase {
    let started = Instant::now();
    let end = started + length;
    let done = Mutex::new(Vec::new());
    let sent = Mutex::new(Vec::new());
    let outcomes: Mutex<BTreeMap<&'static str, BTreeMap<String, usize>>> = Mutex::default();
    let spans = Mutex::new(Vec::new());
    let hostile_sent = std::sync::atomic::AtomicU64::new(0);
    let (http_tx, http_rx) = mpsc::channel::<Item>();
    let (slack_tx, slack_rx) = mpsc::channel::<Item>();
    let (http_rx, slack_rx) = (Mutex::new(http_rx), Mutex::new(slack_rx));
    let mut audited = 0u64;
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let mut client = ctx.client();
                loop {
                    let Ok(item) = http_rx.lock().unwrap().recv() else {
                        return;
                    };
                    let result = http_request(&mut client, &item);
                    if result.is_err() {
                        // A fresh connection after any failure.
                        client = ctx.client();
                    }
                    done.lock().unwrap().push(Done {
                        kind: item.kind,
                        due: item.due,
                        latency: item.due.elapsed(),
                        ok: result.is_ok(),
                        problem: result.err(),
                    });
                }
            });
        }
        for _ in 0..SLACK_SENDERS {
            s.spawn(|| loop {
                let Ok(item) = slack_rx.lock().unwrap().recv() else {
                    return;
                };
                let channel = format!("CSOAK{}", item.n);
                let text = match item.kind {
                    Kind::SlackAnalyze => QUERY.to_string(),
                    _ => format!("{FUNC} days={}", item.days),
                };
                let command = match item.kind {
                    Kind::SlackAnalyze => "/analyze",
                    _ => "/runfunc",
                };
                let cmd = SlashCommand::new(command, &text)
                    .user(&item.user)
                    .channel(&channel);
                let acked = ctx.fake.block_on(ctx.fake.send_command(&cmd, WAIT));
                sent.lock().unwrap().push(SlackSent {
                    kind: item.kind,
                    due: item.due,
                    channel,
                    problem: acked.err().map(|e| format!("not acknowledged: {e}")),
                });
            });
        }
        if !hostile.is_empty() {
            for stream in 0..HOSTILE_STREAMS {
                let (outcomes, hostile_sent, spans) = (&outcomes, &hostile_sent, &spans);
                s.spawn(move || {
                    let mut client = ctx.client();
                    let mut i = stream;
                    while Instant::now() < end {
                        let (what, code) = hostile[i % hostile.len()];
                        i += HOSTILE_STREAMS;
                        let body =
                            command_body(HOSTILE_USER, "CHOSTILE", &format!("/analyze {code}"));
                        let sent_at = Instant::now();
                        let answer = client.post("/api/v1/commands", &body);
                        spans.lock().unwrap().push((what, sent_at, Instant::now()));
                        hostile_sent.fetch_add(1, Ordering::Relaxed);
                        if answer.is_err() {
                            client = ctx.client();
                        }
                        *outcomes
                            .lock()
                            .unwrap()
                            .entry(what)
                            .or_default()
                            .entry(hostile_outcome(answer))
                            .or_default() += 1;
                    }
                });
            }
        }
        // The dispatcher: one request every 1/rate seconds, each due then.
        let interval = Duration::from_secs_f64(1.0 / rate);
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        for (n, i) in (first..).zip(0u32..) {
            let due = started + interval * i;
            if due >= end {
                break;
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let mut pick = rng.below(u64::from(total)) as u32;
            let kind = MIX
                .iter()
                .find(|(_, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .map_or(Kind::HttpAnalyze, |(k, _)| *k);
            let item = Item {
                n,
                due,
                kind,
                user: format!("U{:02}", rng.below(NORMAL_USERS as u64)),
                days: 1 + rng.below(7),
            };
            audited += kind.audit_rows();
            if kind.slack() {
                slack_tx.send(item).unwrap();
            } else {
                http_tx.send(item).unwrap();
            }
        }
        drop(http_tx);
        drop(slack_tx);
    });
    let mut done = done.into_inner().unwrap();
    done.extend(slack_answers(ctx, sent.into_inner().unwrap()));
    audited += hostile_sent.into_inner();
    Phase {
        name,
        started,
        elapsed: started.elapsed(),
        done,
        hostile: outcomes.into_inner().unwrap(),
        spans: spans.into_inner().unwrap(),
        audited,
    }
}

/// Waits for every Slack command's answer in its own channel, and times it
/// from when the command was due to the last Web API call in that channel.
fn slack_answers(ctx: &Ctx, sent: Vec<SlackSent>) -> Vec<Done> {
    let fake = &ctx.fake;
    let want: HashSet<String> = sent.iter().map(|s| s.channel.clone()).collect();
    let deadline = Instant::now() + WAIT;
    let finals = loop {
        let finals: HashMap<String, String> = fake
            .messages()
            .into_iter()
            .filter(|m| want.contains(&m.channel) && !m.text.starts_with(":hourglass"))
            .map(|m| (m.channel, m.text))
            .chain(
                fake.ephemerals()
                    .into_iter()
                    .filter(|e| want.contains(&e.channel))
                    .map(|e| (e.channel, e.text)),
            )
            .collect();
        if finals.len() >= want.len() || Instant::now() > deadline {
            break finals;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut last_call: HashMap<String, Instant> = HashMap::new();
    for call in fake.calls() {
        if let Some(channel) = call.params["channel"].as_str() {
            if want.contains(channel) && call.failed.is_none() {
                let at = last_call.entry(channel.to_string()).or_insert(call.at);
                *at = (*at).max(call.at);
            }
        }
    }
    sent.into_iter()
        .map(|s| {
            let text = finals.get(&s.channel);
            let expected = match s.kind {
                Kind::SlackAnalyze => "Analysis complete:".to_string(),
                _ => format!("{FUNC}:"),
            };
            let problem = s.problem.or_else(|| match text {
                None => Some("no answer in the channel".into()),
                Some(t) if !t.starts_with(&expected) => Some(first_line(t)),
                Some(_) => None,
            });
            let latency = last_call
                .get(&s.channel)
                .map_or(WAIT, |at| at.saturating_duration_since(s.due));
            Done {
                kind: s.kind,
                due: s.due,
                latency,
                ok: problem.is_none(),
                problem,
            }
        })
        .collect()
}

/// Closed loop: answers per second of the 7-day query with
/// `CAPACITY_CLIENTS` users sending back to back.
fn capacity(ctx: &Ctx, length: Duration) -> f64 {
    let end = Instant::now() + length;
    let started = Instant::now();
    let answered = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for c in 0..CAPACITY_CLIENTS {
            let answered = &answered;
            s.spawn(move || {
                let mut client = ctx.client();
                let user = format!("UCAP{c}");
                while Instant::now() < end {
                    command(&mut client, &user, &format!("/analyze {QUERY}"))
                        .unwrap_or_else(|e| panic!("capacity run failed: {e}"));
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    answered.into_inner() as f64 / started.elapsed().as_secs_f64()
}

fn audit_rows(home: &Path) -> u64 {
    let db = rusqlite::Connection::open(home.join("tradebox.db")).expect("the store");
    db.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    db.query_row("SELECT count(*) FROM audit_log", [], |r| r.get::<_, i64>(0))
        .expect("audit rows") as u64
}

/// Samples the processes under `serve` every 100 ms: every process seen
/// (pid and start time, as pids are reused), and the zygotes (children of
/// `serve` running `tradebox __zygote`) seen.
/// Processes seen (pid, start time), and zygotes seen.
type Seen = (HashSet<(u32, u64)>, HashSet<u32>);

struct Watch {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(pid: u32) -> Watch {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let all = support::descendants(pid);
                    let zygotes = zygotes_among(pid, &all);
                    let mut seen = seen.lock().unwrap();
                    seen.0.extend(
                        all.into_iter()
                            .filter_map(|p| support::start_time(p).map(|t| (p, t))),
                    );
                    seen.1.extend(zygotes);
                    drop(seen);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Watch {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// (every process seen, zygotes seen).
    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// The zygotes of `serve` (`pid`) among `processes`: its children running
/// `tradebox __zygote`.
fn zygotes_among(pid: u32, processes: &[u32]) -> Vec<u32> {
    processes
        .iter()
        .copied()
        .filter(|p| support::parent_of(*p) == Some(pid) && is_zygote(*p))
        .collect()
}

/// Whether `pid` is a zygote (`tradebox __zygote ...`).
fn is_zygote(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("__zygote"))
        .unwrap_or(false)
}

/// A thread that sleeps `STALL_TICK` at a time and keeps every oversleep
/// over `STALL_MIN`: when the whole machine (a virtual one, say) or this
/// process pauses, it shows here whatever tradebox was doing, so a failure
/// can be told apart from a pause of the host.
struct StallProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, Duration)>>,
}

const STALL_TICK: Duration = Duration::from_millis(5);
const STALL_MIN: Duration = Duration::from_millis(50);
/// A pause this long before a failed request is reported beside it.
const STALL_BLAME: Duration = Duration::from_millis(250);

impl StallProbe {
    fn start() -> StallProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut stalls = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let before = Instant::now();
                std::thread::sleep(STALL_TICK);
                let over = before.elapsed().saturating_sub(STALL_TICK);
                if over > STALL_MIN {
                    stalls.push((before, over));
                }
            }
            stalls
        });
        StallProbe { stop, thread }
    }

    fn finish(self) -> Vec<(Instant, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The probe's pauses during `ph`: (how many, the longest, failed requests
/// due within 5 s after a pause over `STALL_BLAME`, failed requests).
fn stalls_in(ph: &Phase, stalls: &[(Instant, Duration)]) -> (usize, Duration, usize, usize) {
    let end = ph.started + ph.elapsed;
    let within: Vec<_> = stalls
        .iter()
        .filter(|(at, _)| *at >= ph.started && *at < end)
        .collect();
    let longest = within.iter().map(|(_, d)| *d).max().unwrap_or_default();
    let failed: Vec<&Done> = ph.done.iter().filter(|d| !d.ok).collect();
    let near = failed
        .iter()
        .filter(|d| {
            within.iter().any(|(at, over)| {
                *over > STALL_BLAME
                    && *at <= d.due + d.latency
                    && d.due < *at + Duration::from_secs(5)
            })
        })
        .count();
    (within.len(), longest, near, failed.len())
}

fn main() {
    let a = args();
    let total = a.total.as_secs_f64();
    // A tenth measures capacity (10 to 30 s), a third of the rest runs
    // clean, the remainder hostile.
    let cap_len = Duration::from_secs_f64((total / 10.0).clamp(10.0, 30.0));
    let rest = (total - cap_len.as_secs_f64()).max(20.0);
    let clean_len = Duration::from_secs_f64(rest / 3.0);
    let hostile_len = Duration::from_secs_f64(rest - rest / 3.0);

    let fake = Arc::new(FakeSlack::start().expect("fake Slack"));
    let url = fake.api_url();
    let server = support::serve(
        &a.home,
        &a.runtime,
        None,
        &[
            ("SLACK_BOT_TOKEN", fake::BOT_TOKEN),
            ("SLACK_APP_TOKEN", fake::APP_TOKEN),
            ("SLACK_API_URL", &url),
            ("TRADEBOX_VALIDATOR_ENABLED", "no"),
            ("TRADEBOX_RATE_LIMIT_EXECUTIONS", "100000"),
        ],
    );
    fake.block_on(fake.wait_for_sockets(1, WAIT))
        .expect("the Slack socket");
    let pid = server.child.id();
    let ctx = Ctx { server, fake };
    let workers = {
        // The pool starts one zygote per worker (one per core plus one by default).
        let deadline = Instant::now() + WAIT;
        loop {
            let z = zygotes_among(pid, &support::descendants(pid));
            if !z.is_empty() || Instant::now() > deadline {
                break z.len();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut client = ctx.client();
    command(
        &mut client,
        "U00",
        &format!("/savefunc {FUNC} | volume by symbol over `days` | {FUNC_CODE}"),
    )
    .unwrap_or_else(|e| panic!("saving {FUNC}: {e}"));
    // Warm up every zygote.
    for _ in 0..20 {
        command(&mut client, "UWARM", &format!("/analyze {QUERY}")).expect("warm-up");
    }

    eprintln!(
        "== capacity: {:.0} s closed loop, {CAPACITY_CLIENTS} users",
        cap_len.as_secs_f64()
    );
    let cap = capacity(&ctx, cap_len);
    let rate = a.rate.unwrap_or(0.7 * cap);
    let watch = Watch::start(pid);
    let probe = StallProbe::start();
    let audit_before = audit_rows(&a.home);
    let start_mem = support::rss_and_fds(pid);
    let mut rng = Rng(0x5eed_50a4);
    eprintln!(
        "== clean: {:.0} s at {rate:.1} requests/s (capacity {cap:.1}/s)",
        clean_len.as_secs_f64()
    );
    let clean = run_phase(&ctx, "clean", rate, clean_len, &[], 0, &mut rng);
    let mid_mem = support::rss_and_fds(pid);
    eprintln!(
        "== hostile: {:.0} s at {rate:.1} requests/s, {HOSTILE_STREAMS} hostile requests in flight",
        hostile_len.as_secs_f64()
    );
    // Halfway through the hostile phase: from there on, growth is steady
    // state, not caches and buffers reaching their working size.
    let halfway = std::thread::spawn(move || {
        std::thread::sleep(hostile_len / 2);
        support::rss_and_fds(pid)
    });
    let hostile = run_phase(
        &ctx,
        "hostile",
        rate,
        hostile_len,
        &a.hostile,
        1_000_000,
        &mut rng,
    );
    let half_mem = halfway.join().unwrap_or_default();
    let stalls = probe.finish();
    // Every job has answered; the last zygote replacements settle.
    std::thread::sleep(Duration::from_secs(2));
    let end_mem = support::rss_and_fds(pid);
    let audit_after = audit_rows(&a.home);
    let audit_want = clean.audited + hostile.audited;

    // Stop `serve` as an operator would, then look for anything left.
    let Ctx { mut server, fake } = ctx;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let stop_deadline = Instant::now() + Duration::from_secs(60);
    while server.child.try_wait().ok().flatten().is_none() && Instant::now() < stop_deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (seen, zygotes) = watch.finish();
    // The kernel may still be tearing down the last ones: a few seconds.
    let still = || -> Vec<String> {
        seen.iter()
            .filter(|(p, t)| support::alive(*p) && support::start_time(*p) == Some(*t))
            .map(|(p, _)| support::describe(*p))
            .collect()
    };
    let gone_by = Instant::now() + Duration::from_secs(10);
    while !still().is_empty() && Instant::now() < gone_by {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = still();
    drop(server);
    drop(fake);

    report(
        &a,
        Report {
            workers,
            capacity: cap,
            rate,
            phases: [clean, hostile],
            zygotes: zygotes.len(),
            mem: [start_mem, mid_mem, half_mem, end_mem],
            audit: (audit_after - audit_before, audit_want),
            processes_seen: seen.len(),
            left,
            stalls,
        },
    );
}

struct Report {
    workers: usize,
    capacity: f64,
    rate: f64,
    phases: [Phase; 2],
    zygotes: usize,
    /// At the start of the clean phase, its end, halfway through the
    /// hostile phase, and at its end.
    mem: [(u64, usize); 4],
    audit: (u64, u64),
    processes_seen: usize,
    left: Vec<String>,
    /// The stall probe's oversleeps over the two phases.
    stalls: Vec<(Instant, Duration)>,
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn growth(a: f64, b: f64) -> f64 {
    if a == 0.0 {
        0.0
    } else {
        (b - a) / a
    }
}

fn report(a: &Args, r: Report) {
    let [clean, hostile] = &r.phases;
    let p = |ph: &Phase, q: f64, slack: bool| percentile(&ph.latencies(|k| k.slack() == slack), q);
    let all = |ph: &Phase, q: f64| percentile(&ph.latencies(|_| true), q);
    let ratio = all(hostile, 50.0) / all(clean, 50.0);
    let success = |ph: &Phase| 100.0 * ph.ok() as f64 / ph.done.len().max(1) as f64;
    let [(rss0, fd0), (rss1, fd1), (rss_h, fd_h), (rss2, fd2)] = r.mem;
    let rss_growth = growth(rss_h as f64, rss2 as f64);
    let fd_growth = growth(fd_h as f64, fd2 as f64);
    let replaced = r.zygotes.saturating_sub(r.workers);
    if a.json {
        let phase = |ph: &Phase| {
            let (n, longest, near, failed) = stalls_in(ph, &r.stalls);
            json!({
                "seconds": ph.elapsed.as_secs_f64(),
                "requests": ph.done.len(),
                "ok": ph.ok(),
                "success_pct": success(ph),
                "p50_ms": all(ph, 50.0), "p99_ms": all(ph, 99.0),
                "http_p50_ms": p(ph, 50.0, false), "http_p99_ms": p(ph, 99.0, false),
                "slack_p50_ms": p(ph, 50.0, true), "slack_p99_ms": p(ph, 99.0, true),
                "problems": ph.problems(),
                "hostile": ph.hostile,
                "by_hostile_job": attribution(ph, Duration::from_millis(500))
                    .into_iter()
                    .map(|(what, n, slow, p50)| json!({"running": what, "requests": n, "slow": slow, "p50_ms": p50}))
                    .collect::<Vec<_>>(),
                "stalls": {"over_50ms": n, "longest_ms": longest.as_secs_f64() * 1e3,
                           "failures_after_a_stall": near, "failures": failed},
            })
        };
        let out = json!({
            "workers": r.workers,
            "capacity_per_s": r.capacity,
            "rate_per_s": r.rate,
            "clean": phase(clean),
            "hostile": phase(hostile),
            "p50_ratio": ratio,
            "zygotes_replaced": replaced,
            "supervisor": {
                "rss_kib": [rss0, rss1, rss_h, rss2], "fds": [fd0, fd1, fd_h, fd2],
                "second_half_growth": {"rss": rss_growth, "fds": fd_growth},
            },
            "audit_rows": r.audit.0, "audited_requests": r.audit.1,
            "processes_seen": r.processes_seen,
            "processes_left": r.left,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return;
    }
    println!(
        "\nSoak: tradebox serve, {} workers, validator off; capacity {:.1} answers/s (7-day query, closed loop); normal traffic at {:.1} requests/s\n",
        r.workers, r.capacity, r.rate
    );
    println!(
        "{:<8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "phase",
        "secs",
        "requests",
        "success",
        "p50 ms",
        "p99 ms",
        "http p50",
        "slack p50",
        "slack p99"
    );
    for ph in &r.phases {
        println!(
            "{:<8} {:>6.0} {:>9} {:>8.2}% {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            ph.name,
            ph.elapsed.as_secs_f64(),
            ph.done.len(),
            success(ph),
            all(ph, 50.0),
            all(ph, 99.0),
            p(ph, 50.0, false),
            p(ph, 50.0, true),
            p(ph, 99.0, true),
        );
    }
    println!("\nhostile requests (one user, {HOSTILE_STREAMS} in flight), by what they ran and what they got:");
    for (what, outcomes) in &hostile.hostile {
        let list: Vec<String> = outcomes.iter().map(|(o, n)| format!("{n} x {o}")).collect();
        println!("  {what:<14} {}", list.join("; "));
    }
    for ph in &r.phases {
        for (problem, n) in ph.problems() {
            println!("  {} failure: {n} x {problem}", ph.name);
        }
    }
    println!("\nnormal requests by the hostile job running when they were due:");
    println!(
        "  {:<14} {:>9} {:>9} {:>9}",
        "running", "requests", "> 500 ms", "p50 ms"
    );
    for (what, n, slow, p50) in attribution(hostile, Duration::from_millis(500)) {
        println!("  {what:<14} {n:>9} {slow:>9} {p50:>9.1}");
    }
    println!();
    let rows: Vec<(String, String, String)> = vec![
        (
            "normal-job success".into(),
            format!(
                "{:.2}% clean, {:.2}% hostile",
                success(clean),
                success(hostile)
            ),
            format!(
                "100%: {}",
                met(clean.ok() == clean.done.len() && hostile.ok() == hostile.done.len())
            ),
        ),
        (
            "p50 hostile / clean".into(),
            format!(
                "{ratio:.2}x ({:.1} / {:.1} ms)",
                all(hostile, 50.0),
                all(clean, 50.0)
            ),
            format!("<= {TARGET_RATIO_P50}x: {}", met(ratio <= TARGET_RATIO_P50)),
        ),
        (
            "p99 hostile / clean".into(),
            format!(
                "{:.2}x ({:.1} / {:.1} ms)",
                all(hostile, 99.0) / all(clean, 99.0),
                all(hostile, 99.0),
                all(clean, 99.0)
            ),
            "reported".into(),
        ),
        (
            "zygotes replaced".into(),
            format!(
                "{replaced} ({} zygotes seen for {} workers)",
                r.zygotes, r.workers
            ),
            "reported".into(),
        ),
        (
            "supervisor RSS".into(),
            format!(
                "{:.1} -> {:.1} -> {:.1} -> {:.1} MiB",
                rss0 as f64 / 1024.0,
                rss1 as f64 / 1024.0,
                rss_h as f64 / 1024.0,
                rss2 as f64 / 1024.0,
            ),
            format!(
                "second half {:+.1}%, <= +5%: {}",
                rss_growth * 100.0,
                met(rss_growth <= TARGET_GROWTH)
            ),
        ),
        (
            "supervisor descriptors".into(),
            format!("{fd0} -> {fd1} -> {fd_h} -> {fd2}"),
            format!(
                "second half {:+.1}%, <= +5%: {}",
                fd_growth * 100.0,
                met(fd_growth <= TARGET_GROWTH)
            ),
        ),
        (
            "audit rows".into(),
            format!("{} for {} audited requests", r.audit.0, r.audit.1),
            format!("none lost: {}", met(r.audit.0 == r.audit.1)),
        ),
        (
            "processes left after stop".into(),
            format!("{} of {} seen under serve", r.left.len(), r.processes_seen),
            format!("0: {}", met(r.left.is_empty())),
        ),
    ];
    for (what, value, target) in rows {
        println!("{what:<28} {value:<48} {target}");
    }
    for p in &r.left {
        println!("  left: {p}");
    }
    for ph in &r.phases {
        let (n, longest, near, failed) = stalls_in(ph, &r.stalls);
        println!(
            "host pauses, {:<8} {n} over {} ms, the longest {:.0} ms; failed requests due within 5 s after one over {} ms: {near} of {failed}",
            ph.name,
            STALL_MIN.as_millis(),
            longest.as_secs_f64() * 1e3,
            STALL_BLAME.as_millis(),
        );
    }
    println!(
        "\nlatency: executing requests (/analyze, /runfunc, POST /api/v1/run) that succeeded, from when each was due\n\
         (open loop) to its answer: over HTTP the response, over Slack the last Web API call in its channel.\n\
         host pauses: a probe thread in this load generator sleeping 5 ms at a time, by how much it overslept."
    );
}
