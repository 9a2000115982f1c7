//! The shared store benchmark (a `harness = false` bench target, driven by
//! benches/replicas.sh, which builds the release binary and a demo home).
//!
//! A throwaway PostgreSQL cluster on loopback (tradebox_db's test support)
//! against the home's SQLite file, measured in one run:
//!   stores     each store operation a command makes (the rate-limit check,
//!              fetching a function, counting its use, the audit row), p50
//!              and p99 in process, SQLite then PostgreSQL, interleaved;
//!   limiter    the rate-limit check from 50 users at once (a thread each,
//!              one limiter, as one `tradebox serve` has): checks per
//!              second and p99;
//!   pipeline   `/runfunc` of a saved function and `/listfuncs` through
//!              `POST /api/v1/commands` of a real `tradebox serve`, one on
//!              each store, back to back and with 40 ms idle before each:
//!              p50 per command and what PostgreSQL adds (target: 1 ms or
//!              less);
//!   replicas   1, 2 and 3 `tradebox serve` (one worker each) sharing the
//!              PostgreSQL store, closed-loop clients spread over them:
//!              answers per second, and CPU per answer (the whole machine's
//!              busy time, less this process's, over the answers), which is
//!              what predicts the throughput of more machines: two cores do
//!              not scale to three replicas.
//!   lag        3 replicas, each with a home of its own that mirrors the
//!              shared store: a few trades imported through one replica's
//!              `POST /api/v1/data/import`, then every replica asked
//!              (`len(load_trades(days=None))`) until it answers with them:
//!              the time until the last one does, per import (target: 5 s).
//! The PostgreSQL databases get the demo home's trades with
//! `Shared::copy_from` (what `tradebox store copy` runs); the servers on
//! them start on empty homes, which mirror the shared trades at start.
//!
//! Options (or env): --home DIR (BENCH_HOME, required: a home with a
//! snapshot), --runtime DIR (BENCH_RUNTIME), --n N (BENCH_N, 2000 store
//! operations per kind), --requests N (BENCH_REQUESTS, 300 commands per
//! store), --seconds S (BENCH_SECONDS, 8 per throughput phase).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{percentile, Client, Server};
use tradebox_core::audit::{Action, AuditEntry, AuditLog, Outcome, Source};
use tradebox_core::functions::FunctionStore;
use tradebox_core::ratelimit::RateLimiter;
use tradebox_core::store::StoreUrl;
use tradebox_db::testing::PgCluster;

const TARGET_ADDED_MS: f64 = 1.0;
const USERS: usize = 50;
/// Idle time before each command through a server.
const GAP_MS: u64 = 40;
/// Commands sent to one server before the other's turn.
const BLOCK: usize = 20;
/// Imports timed for the publication lag, and trades in each.
const LAG_ROUNDS: usize = 10;
const LAG_ROWS: usize = 100;
const LAG_TARGET_MS: f64 = 5000.0;

struct Opts {
    home: PathBuf,
    runtime: PathBuf,
    n: usize,
    requests: usize,
    seconds: u64,
}

fn opts() -> Opts {
    let num = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
            })
            .unwrap_or(default)
    };
    let mut o = Opts {
        home: support::bench_home(),
        runtime: support::bench_runtime(),
        n: num("BENCH_N", 2000) as usize,
        requests: num("BENCH_REQUESTS", 300) as usize,
        seconds: num("BENCH_SECONDS", 8),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--home" => o.home = PathBuf::from(value()),
            "--runtime" => o.runtime = PathBuf::from(value()),
            "--n" => o.n = value().parse().expect("--n N"),
            "--requests" => o.requests = value().parse().expect("--requests N"),
            "--seconds" => o.seconds = value().parse().expect("--seconds S"),
            other => {
                panic!("unknown argument {other:?} (--home, --runtime, --n, --requests, --seconds)")
            }
        }
    }
    assert!(
        !o.home.as_os_str().is_empty(),
        "no home: pass --home DIR or set BENCH_HOME"
    );
    o
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and p99 of timings, in ms.
fn p50_p99(mut t: Vec<f64>) -> (f64, f64) {
    t.sort_by(f64::total_cmp);
    (percentile(&t, 50.0), percentile(&t, 99.0))
}

/// The three stores of one backend.
struct Stores {
    functions: FunctionStore,
    audit: AuditLog,
    limiter: RateLimiter,
}

fn stores(url: &StoreUrl) -> Stores {
    Stores {
        functions: FunctionStore::connect(url).unwrap(),
        audit: AuditLog::connect(url).unwrap(),
        limiter: RateLimiter::connect(
            url,
            &tradebox_core::config::RateLimitSection {
                executions: 1_000_000,
                window_seconds: 60,
            },
        )
        .unwrap(),
    }
}

/// One store operation's figures: name, SQLite p50/p99, PostgreSQL p50/p99.
type OpRow = (&'static str, (f64, f64), (f64, f64));

/// Store operations, in process.
fn store_ops(sqlite: &Stores, pg: &Stores, n: usize) -> Vec<OpRow> {
    for s in [sqlite, pg] {
        s.functions
            .save("bench_f", "", "result = 1", "U0", true)
            .unwrap();
    }
    type Op = fn(&Stores, usize);
    let ops: [(&str, Op); 4] = [
        ("rate-limit check", |s, i| {
            let now = tradebox_data::timestamp::now();
            s.limiter
                .check_and_record(&format!("U{}", i % USERS), now)
                .unwrap();
        }),
        ("fetch a function", |s, _| {
            s.functions.get("bench_f").unwrap().unwrap();
        }),
        ("count its use", |s, _| {
            s.functions.record_use("bench_f").unwrap();
        }),
        ("audit row", |s, i| {
            let mut e = AuditEntry::new(
                format!("U{}", i % USERS),
                Source::Api,
                Action::Runfunc,
                Outcome::Ok,
            );
            e.function_name = Some("bench_f".into());
            e.duration_ms = Some(5);
            s.audit.record(&e).unwrap();
        }),
    ];
    ops.iter()
        .map(|(name, op)| {
            let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for i in 0..n {
                for (s, out) in [(sqlite, &mut a), (pg, &mut b)] {
                    let t = Instant::now();
                    op(s, i);
                    out.push(ms(t.elapsed()));
                }
            }
            (*name, p50_p99(a), p50_p99(b))
        })
        .collect()
}

/// `USERS` threads, each a user, checking for `seconds` through one limiter
/// (one connection, as one `tradebox serve` has): (checks per second, p99
/// ms, failed checks).
fn limiter_load(url: &StoreUrl, seconds: u64) -> (f64, f64, u64) {
    let rl = RateLimiter::connect(
        url,
        &tradebox_core::config::RateLimitSection {
            executions: 1_000_000,
            window_seconds: 60,
        },
    )
    .unwrap();
    let barrier = Barrier::new(USERS);
    let stop = AtomicBool::new(false);
    let failed = AtomicU64::new(0);
    let (times, elapsed) = std::thread::scope(|s| {
        let threads: Vec<_> = (0..USERS)
            .map(|u| {
                let (barrier, stop, rl, failed) = (&barrier, &stop, &rl, &failed);
                s.spawn(move || {
                    let user = format!("L{u}");
                    barrier.wait();
                    let mut times = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        if rl
                            .check_and_record(&user, tradebox_data::timestamp::now())
                            .is_err()
                        {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        times.push(ms(t.elapsed()));
                    }
                    times
                })
            })
            .collect();
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        let times: Vec<f64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (times, started.elapsed())
    });
    let n = times.len();
    (
        n as f64 / elapsed.as_secs_f64(),
        p50_p99(times).1,
        failed.into_inner(),
    )
}

fn command(client: &mut Client, user: &str, text: &str) {
    let body = json!({"user": user, "channel": "CBENCH", "text": text}).to_string();
    let (status, reply) = client.post("/api/v1/commands", &body).unwrap();
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("\"error\":false"), "{text}: {reply}");
}

/// A server on the store at `url`: on the demo home for SQLite, on a fresh
/// home that mirrors the shared trades for PostgreSQL.
fn serve(o: &Opts, url: &StoreUrl) -> Server {
    match url {
        StoreUrl::Sqlite(_) => serve_at(o, &o.home, url),
        StoreUrl::Postgres(_) => {
            let home = tempfile::TempDir::new().unwrap().keep();
            serve_at(o, &home, url)
        }
    }
}

/// A PostgreSQL database holding the demo home's trades and snapshots.
fn shared_copy(o: &Opts, cluster: &PgCluster) -> StoreUrl {
    let url = cluster.database().unwrap();
    let mut local = tradebox_data::Store::open(&o.home.join("tradebox.db")).unwrap();
    let (trades, _) = tradebox_data::shared::Shared::open(&url)
        .unwrap()
        .copy_from(&mut local)
        .unwrap();
    eprintln!("   {trades} trades copied into the shared store");
    StoreUrl::Postgres(url)
}

fn serve_at(o: &Opts, home: &std::path::Path, url: &StoreUrl) -> Server {
    let url = match url {
        StoreUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
        StoreUrl::Postgres(url) => url.clone(),
    };
    support::serve(
        home,
        &o.runtime,
        Some(1),
        &[
            ("TRADEBOX_STORE_URL", &url),
            ("TRADEBOX_DATA_AS_OF", "latest"),
            ("TRADEBOX_RATE_LIMIT_EXECUTIONS", "100000"),
            ("TRADEBOX_VALIDATOR_ENABLED", "no"),
        ],
    )
}

/// p50 of `/runfunc` and of `/listfuncs` through one server per store,
/// interleaved, back to back and then with idle time before each command:
/// [(sqlite, postgres)] in ms, in that order.
fn pipeline(o: &Opts, sqlite: &StoreUrl, pg: &StoreUrl) -> [(f64, f64); 4] {
    let servers = [serve(o, sqlite), serve(o, pg)];
    let mut clients: Vec<Client> = servers
        .iter()
        .map(|s| Client::connect(s.addr, &s.token).unwrap())
        .collect();
    for c in &mut clients {
        command(c, "U1", "/savefunc bench_run | one | result = 1 + 1");
        for _ in 0..20 {
            command(c, "U1", "/runfunc bench_run");
        }
    }
    // One server at a time, in blocks of BLOCK commands, the servers
    // alternating block by block (the other one is idle meanwhile, its
    // worker warmed up); then the same with idle time before each command,
    // as people use it, where every round trip to the database also wakes
    // an idle CPU.
    let mut t: [[Vec<f64>; 2]; 4] = Default::default();
    for (phase, gap) in [(0, 0), (2, GAP_MS)] {
        for (k, text) in ["/runfunc bench_run", "/listfuncs"].iter().enumerate() {
            for block in 0..o.requests.div_ceil(BLOCK) {
                for j in 0..2 {
                    let b = (block + j) % 2;
                    std::thread::sleep(Duration::from_millis(GAP_MS));
                    for i in 0..BLOCK {
                        std::thread::sleep(Duration::from_millis(gap));
                        let started = Instant::now();
                        command(&mut clients[b], &format!("U{}", i % USERS), text);
                        t[phase + k][b].push(ms(started.elapsed()));
                    }
                }
            }
        }
    }
    let p50 = |v: &Vec<f64>| p50_p99(v.clone()).0;
    [0, 1, 2, 3].map(|k| (p50(&t[k][0]), p50(&t[k][1])))
}

/// Busy jiffies of the whole machine (all CPUs), from /proc/stat.
fn machine_busy() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    cpu.iter().sum::<u64>() - cpu[3] - cpu.get(4).copied().unwrap_or(0)
}

/// This process's CPU (user + system) in jiffies.
fn own_cpu() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn jiffies_ms() -> f64 {
    // CLK_TCK is 100 on Linux for every architecture tradebox runs on.
    10.0
}

/// How many trades `server` answers `load_trades(days=None)` with.
fn trade_count(client: &mut Client) -> Option<u64> {
    let body = json!({"code": "result = len(load_trades(days=None))"}).to_string();
    let (status, reply) = client.post("/api/v1/run", &body).ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&reply).ok()?;
    v["result"].as_str()?.parse().ok()
}

/// Imports of `rows` new trades through replica 0's console, `rounds`
/// times: per import, the time until each replica answers with them
/// (the last one's), in ms.
fn publication_lag(servers: &[Server], rounds: usize, rows: usize) -> Vec<f64> {
    let mut clients: Vec<Client> = servers
        .iter()
        .map(|s| Client::connect(s.addr, &s.token).unwrap())
        .collect();
    let mut lags = Vec::new();
    for round in 0..rounds {
        let before = trade_count(&mut clients[0]).unwrap();
        let mut csv = String::from("timestamp,exchange,account,symbol,side,amount,price\n");
        for i in 0..rows {
            csv += &format!(
                "2030-01-01T00:{:02}:{:02}.{round:06},benchex,lag,BTC,buy,{},{}\n",
                i / 60 % 60,
                i % 60,
                i + 1,
                round + 1
            );
        }
        let started = Instant::now();
        let (status, reply) = clients[0]
            .post_bytes("/api/v1/data/import?name=lag.csv", csv.as_bytes())
            .unwrap();
        assert_eq!(status, 200, "{reply}");
        let want = before + rows as u64;
        let mut waiting: Vec<usize> = (0..servers.len()).collect();
        while !waiting.is_empty() {
            waiting.retain(|&i| trade_count(&mut clients[i]) != Some(want));
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "replicas {waiting:?} never served the import"
            );
            if !waiting.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        lags.push(ms(started.elapsed()));
        std::thread::sleep(Duration::from_millis(200));
    }
    lags
}

/// `replicas` servers on the PostgreSQL store, 3 closed-loop clients per
/// replica: (answers per second, CPU ms per answer).
fn replicas(o: &Opts, pg: &StoreUrl, count: usize) -> (f64, f64) {
    let servers: Vec<Server> = (0..count).map(|_| serve(o, pg)).collect();
    for s in &servers {
        let mut c = Client::connect(s.addr, &s.token).unwrap();
        for _ in 0..10 {
            command(&mut c, "UWARM", "/analyze result = 1 + 1");
        }
    }
    let answers = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let clients = 3 * count;
    let (busy0, own0) = (machine_busy(), own_cpu());
    let started = Instant::now();
    std::thread::scope(|s| {
        for c in 0..clients {
            let server = &servers[c % count];
            let (answers, stop) = (&answers, &stop);
            s.spawn(move || {
                let mut client = Client::connect(server.addr, &server.token).unwrap();
                let user = format!("R{c}");
                while !stop.load(Ordering::Relaxed) {
                    command(&mut client, &user, "/analyze result = 1 + 1");
                    answers.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs(o.seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (busy, own) = (machine_busy() - busy0, own_cpu() - own0);
    let n = answers.into_inner() as f64;
    let cpu_ms = busy.saturating_sub(own) as f64 * jiffies_ms() / n;
    (n / elapsed, cpu_ms)
}

fn main() {
    let o = opts();
    eprintln!("== a throwaway PostgreSQL cluster");
    let cluster = PgCluster::start().unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let sqlite = StoreUrl::Sqlite(dir.path().join("bench.db"));
    let pg = StoreUrl::Postgres(cluster.database().unwrap());

    eprintln!("== store operations: {} of each kind on each store", o.n);
    let ops = store_ops(&stores(&sqlite), &stores(&pg), o.n);
    eprintln!(
        "== the rate-limit check from {USERS} users at once, {} s per store",
        o.seconds
    );
    let lim = [
        limiter_load(&sqlite, o.seconds),
        limiter_load(&pg, o.seconds),
    ];
    eprintln!(
        "== commands through tradebox serve: {} of each per store",
        o.requests
    );
    let pipe = pipeline(&o, &sqlite, &shared_copy(&o, &cluster));
    let shared = shared_copy(&o, &cluster);
    let mut rep = Vec::new();
    for count in 1..=3 {
        eprintln!(
            "== {count} replica(s) on one PostgreSQL store, {} s",
            o.seconds
        );
        rep.push(replicas(&o, &shared, count));
    }
    eprintln!("== publication lag: {LAG_ROUNDS} imports through one of 3 replicas");
    let lag = {
        let servers: Vec<Server> = (0..3).map(|_| serve(&o, &shared)).collect();
        publication_lag(&servers, LAG_ROUNDS, LAG_ROWS)
    };

    let version = match &pg {
        StoreUrl::Postgres(url) => server_version(url),
        StoreUrl::Sqlite(_) => String::new(),
    };
    println!(
        "\nShared store: SQLite file vs PostgreSQL {version} on loopback, this machine ({} cores)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<44} {:>16} {:>16} {:>10}",
        "store operation (in process)", "SQLite p50/p99", "Postgres p50/p99", "added p50"
    );
    for (name, a, b) in &ops {
        println!(
            "{:<44} {:>16} {:>16} {:>+9.3} ms",
            name,
            format!("{:.3}/{:.3}", a.0, a.1),
            format!("{:.3}/{:.3}", b.0, b.1),
            b.0 - a.0
        );
    }
    println!(
        "{:<44} {:>16} {:>16}",
        format!("rate-limit checks, {USERS} users at once"),
        format!("{:.0}/s p99 {:.1}", lim[0].0, lim[0].1),
        format!("{:.0}/s p99 {:.1}", lim[1].0, lim[1].1),
    );
    if lim[0].2 + lim[1].2 > 0 {
        println!(
            "  checks that failed (the store busy past its timeout): SQLite {}, PostgreSQL {}",
            lim[0].2, lim[1].2
        );
    }
    println!(
        "\n{:<44} {:>10} {:>10} {:>10} {:>14}",
        "command through serve, p50", "SQLite", "Postgres", "added", "target"
    );
    let idle = format!(", {GAP_MS} ms idle before");
    for ((name, (a, b)), check) in [
        ("/runfunc of a saved function".to_string(), pipe[0]),
        ("/listfuncs".to_string(), pipe[1]),
        (format!("/runfunc{idle}"), pipe[2]),
        (format!("/listfuncs{idle}"), pipe[3]),
    ]
    .into_iter()
    .zip([true, false, true, false])
    {
        let added = b - a;
        let verdict = if !check {
            "-".to_string()
        } else if added <= TARGET_ADDED_MS {
            format!("<= {TARGET_ADDED_MS} ms  met")
        } else {
            format!("<= {TARGET_ADDED_MS} ms  MISSED")
        };
        println!("{name:<44} {a:>7.2} ms {b:>7.2} ms {added:>+7.2} ms {verdict:>14}");
    }
    println!(
        "\n{:<44} {:>12} {:>16}",
        "replicas on one PostgreSQL store", "answers/s", "CPU per answer"
    );
    for (i, (rate, cpu)) in rep.iter().enumerate() {
        println!(
            "{:<44} {:>12.0} {:>13.1} ms",
            format!(
                "{} (1 worker each, {} clients, `1 + 1`)",
                i + 1,
                3 * (i + 1)
            ),
            rate,
            cpu
        );
    }
    let (lag50, lag_max) = {
        let mut sorted = lag.clone();
        sorted.sort_by(f64::total_cmp);
        (
            percentile(&sorted, 50.0),
            sorted.last().copied().unwrap_or(0.0),
        )
    };
    println!(
        "\n{:<44} {:>12} {:>12} {:>14}",
        "publication lag, 3 replicas", "p50", "max", "target"
    );
    println!(
        "{:<44} {:>9.0} ms {:>9.0} ms {:>14}",
        format!("import of {LAG_ROWS} trades until all 3 answer ({LAG_ROUNDS}x)"),
        lag50,
        lag_max,
        if lag_max <= LAG_TARGET_MS {
            format!("<= {} s  met", LAG_TARGET_MS / 1000.0)
        } else {
            format!("<= {} s  MISSED", LAG_TARGET_MS / 1000.0)
        }
    );
    println!(
        "\nCPU per answer is the whole machine's busy time less the load generator's, over the answers:\n\
         with N machines of this kind, throughput is about N x cores / CPU per answer.\n\
         The lag runs from the upload's start: its import and publication on the replica that took it,\n\
         the notification, the others' mirroring and publication, and each pool's move to the new version."
    );
    drop(cluster);
}

/// The server's version, as it reports it.
fn server_version(url: &str) -> String {
    tradebox_db::PgDb::open(url)
        .and_then(|db| {
            db.read(|c| {
                c.run(|tx| {
                    tx.query_one("SHOW server_version", &[])
                        .map(|r| r.get::<_, String>(0))
                })
            })
        })
        .unwrap_or_else(|e| format!("(version unknown: {e})"))
}
