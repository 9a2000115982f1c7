//! HTTP API benchmark (a `harness = false` bench target, driven by
//! benches/http.sh, which builds the release binary and a demo store).
//!
//! One warm pool (the default size) on the store at `--home` serves three
//! paths, measured in one run, interleaved in rounds so that drift on a
//! shared machine hits all three alike:
//!   executor   `Pool::submit` and await the result: the executor alone;
//!   pipeline   `Pipeline::run_code`: plus permissions, validator, rate
//!              limit and running place (SQLite writes) and the audit row;
//!   spawned    the pipeline call as a task on the server's tokio runtime
//!              (the thread hops the HTTP path also takes, without HTTP);
//!   http       `POST /api/v1/run` through the real console router (token,
//!              Host check, JSON in and out) on a loopback socket, one
//!              keep-alive connection per client.
//! for `result = 1 + 1` and `load_trades(days=7).groupby('exchange')
//! ['amount'].sum()`: p50/p95 with one client, then throughput with 16
//! concurrent clients. Prints a table with the HTTP layer's cost (http -
//! executor, and http - pipeline) against the target of 0.5 ms at p50.
//! Last, the pipeline's three store writes of one job alone (rate limit,
//! running place taken, audit row with the place given back), each timed,
//! after the same idle time and back to back: most of pipeline - executor,
//! and how much of it is the first write after idle; beside them, the two
//! writes the last one replaces. On the home's SQLite store, then on a
//! throwaway PostgreSQL cluster (said so, when PostgreSQL is not
//! installed).
//!
//! Options (or env): --home DIR (BENCH_HOME, required), --runtime DIR
//! (BENCH_RUNTIME, default target/tmp/bench-runtime), --n N (BENCH_N, 300
//! sequential requests per path and query), --jobs N (BENCH_JOBS, 800 per
//! throughput measurement), --clients N (BENCH_CLIENTS, 16), --gap-ms N
//! (BENCH_GAP_MS, 20: idle time before each sequential call), --json.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::Client;
use tradebox_core::audit::{Action, AuditEntry, AuditLog, Outcome, Source};
use tradebox_core::config::Config;
use tradebox_core::functions::FunctionStore;
use tradebox_core::leases::Leases;
use tradebox_core::permissions::Permissions;
use tradebox_core::pipeline::{Input, Pipeline, Request, Settings};
use tradebox_core::ratelimit::RateLimiter;
use tradebox_core::store::StoreUrl;
use tradebox_data::{snapshot, Home};
use tradebox_db::testing::PgCluster;
use tradebox_sandbox::{runtime, Job, Pool, PoolConfig, PythonPaths};

const TRIVIAL: &str = "result = 1 + 1";
const QUERY: &str = "load_trades(days=7).groupby('exchange')['amount'].sum()";
const TARGET_OVERHEAD_MS: f64 = 0.5;
const USER: &str = "bench";
const TOKEN: &str = "bench-token-0123456789abcdef";

struct Opts {
    home: PathBuf,
    runtime: PathBuf,
    n: usize,
    jobs: usize,
    clients: usize,
    gap_ms: u64,
    json: bool,
}

fn opts() -> Opts {
    let mut args = std::env::args().skip(1);
    let env = |k: &str| std::env::var(k).ok();
    let mut o = Opts {
        home: support::bench_home(),
        runtime: support::bench_runtime(),
        n: env("BENCH_N").map_or(300, |v| v.parse().unwrap()),
        jobs: env("BENCH_JOBS").map_or(800, |v| v.parse().unwrap()),
        clients: env("BENCH_CLIENTS").map_or(16, |v| v.parse().unwrap()),
        gap_ms: env("BENCH_GAP_MS").map_or(20, |v| v.parse().unwrap()),
        json: false,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--home" => o.home = args.next().unwrap().into(),
            "--runtime" => o.runtime = args.next().unwrap().into(),
            "--n" => o.n = args.next().unwrap().parse().unwrap(),
            "--jobs" => o.jobs = args.next().unwrap().parse().unwrap(),
            "--clients" => o.clients = args.next().unwrap().parse().unwrap(),
            "--gap-ms" => o.gap_ms = args.next().unwrap().parse().unwrap(),
            "--json" => o.json = true,
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown option {other}"),
        }
    }
    assert!(
        !o.home.as_os_str().is_empty(),
        "--home DIR (or BENCH_HOME) is required"
    );
    o
}

#[derive(Clone, Copy, PartialEq)]
enum Path3 {
    Executor,
    Pipeline,
    Http,
    Hop,
}

impl Path3 {
    fn name(self) -> &'static str {
        match self {
            Path3::Executor => "executor",
            Path3::Pipeline => "pipeline",
            Path3::Http => "http",
            Path3::Hop => "spawned",
        }
    }
}

struct Bench {
    pool: Arc<Pool>,
    pipeline: Arc<Pipeline>,
    addr: SocketAddr,
    rt: tokio::runtime::Runtime,
}

impl Bench {
    fn job(code: &str) -> Job {
        Job {
            code: code.into(),
            timeout: Duration::from_secs(30),
            memory_mib: 1024,
            output_limit: 1 << 20,
            as_of: Some("latest".into()),
            ..Job::default()
        }
    }

    /// One call on `path`; `client` is that thread's connection.
    fn call(&self, path: Path3, code: &str, client: &mut Option<Client>) -> Duration {
        let started = Instant::now();
        match path {
            Path3::Executor => {
                let r = self
                    .rt
                    .block_on(self.pool.submit(Bench::job(code)).unwrap())
                    .unwrap();
                assert!(r.success, "{r:?}");
            }
            Path3::Pipeline => {
                let req = Request {
                    user: USER.into(),
                    channel: None,
                    source: Source::Api,
                    input: Input::Line(String::new()),
                };
                let r = self
                    .rt
                    .block_on(self.pipeline.run_code(&req, code, None))
                    .unwrap_or_else(|refusal| panic!("refused: {}", refusal.message));
                assert!(r.success, "{r:?}");
            }
            Path3::Hop => {
                let req = Request {
                    user: USER.into(),
                    channel: None,
                    source: Source::Api,
                    input: Input::Line(String::new()),
                };
                let p = Arc::clone(&self.pipeline);
                let code = code.to_string();
                let r = self
                    .rt
                    .block_on(
                        self.rt
                            .spawn(async move { p.run_code(&req, &code, None).await }),
                    )
                    .unwrap()
                    .unwrap();
                assert!(r.success);
            }
            Path3::Http => {
                let c = client.get_or_insert_with(|| Client::connect(self.addr, TOKEN).unwrap());
                let body = json!({ "code": code }).to_string();
                let (status, text) = c.post("/api/v1/run", &body).unwrap();
                assert_eq!(status, 200, "{text}");
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["success"], true, "{text}");
            }
        }
        started.elapsed()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What the pipeline writes to the store for one job, in its order, then
/// the three together, then what the last one replaces (for comparison).
const STORE_WRITES: [&str; 5] = [
    "rate limit, checked and counted",
    "running place taken",
    "audit row, place given back",
    "all three",
    "(place given back, then audit row)",
];

/// The pipeline's three store writes of one job alone, on the store at
/// `url`: `n` jobs' worth, `gap` idle before each job's three, which run
/// back to back (no job between). Interleaved with them, `n` jobs whose
/// place is given back the way the last write replaces (a release, then
/// the row: two writes), for comparison. Each one's times in µs, in
/// `STORE_WRITES`' order. Fronts of their own, as the pipeline's are (each
/// opens its connections).
fn store_writes(url: &StoreUrl, config: &Config, n: usize, gap: Duration) -> [Vec<f64>; 5] {
    let limiter = RateLimiter::connect(url, &config.rate_limit).unwrap();
    let leases = Leases::connect(url, "bench-store").unwrap();
    let audit = AuditLog::connect(url).unwrap();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut entry = AuditEntry::new(USER, Source::Api, Action::Analyze, Outcome::Ok);
    entry.code = Some(TRIVIAL.into());
    entry.duration_ms = Some(1);
    let take = || {
        leases
            .try_take(USER, 256)
            .unwrap()
            .expect("a running place")
    };
    let mut out: [Vec<f64>; 5] = Default::default();
    for job in 0..2 * n {
        std::thread::sleep(gap);
        // The rate limit counts a user's executions within its window: as
        // for a user's occasional command, not the thousand of this loop.
        let user = format!("{USER}-{job}");
        let t0 = Instant::now();
        let allowed = limiter
            .check_and_record(&user, tradebox_data::timestamp::now())
            .unwrap();
        assert!(
            matches!(allowed, tradebox_core::ratelimit::Decision::Allowed { .. }),
            "{allowed:?}"
        );
        let t1 = Instant::now();
        let id = take();
        let t2 = Instant::now();
        if job % 2 == 1 {
            leases.release(&id).unwrap();
            audit.record(&entry).unwrap();
            out[4].push(us(t2.elapsed()));
            continue;
        }
        assert!(audit.record_releasing(&entry, &id).unwrap().1);
        let t3 = Instant::now();
        for (i, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t0, t3)]
            .into_iter()
            .enumerate()
        {
            out[i].push(us(b - a));
        }
    }
    for v in &mut out {
        v.sort_by(f64::total_cmp);
    }
    out
}

/// [`store_writes`] after `gap` idle and back to back, as JSON rows.
fn store_table(url: &StoreUrl, config: &Config, n: usize, gap: Duration) -> Vec<Value> {
    let idle = store_writes(url, config, n, gap);
    let busy = store_writes(url, config, n, Duration::ZERO);
    STORE_WRITES
        .iter()
        .zip(idle.iter().zip(&busy))
        .map(|(write, (i, b))| {
            json!({
                "write": write,
                "idle_p50_us": percentile(i, 0.5),
                "idle_p95_us": percentile(i, 0.95),
                "back_to_back_p50_us": percentile(b, 0.5),
                "back_to_back_p95_us": percentile(b, 0.95),
            })
        })
        .collect()
}

fn main() {
    let o = opts();
    let home = Home::new(o.home.clone());
    eprintln!("== runtime at {}", o.runtime.display());
    let rt_paths = runtime::ensure(&o.runtime, &tradebox_data::progress::NoProgress).unwrap();
    let snapshot = snapshot::current(&home.snapshot_root())
        .unwrap()
        .map(|(d, _)| d);
    assert!(snapshot.is_some(), "no snapshot in {}", o.home.display());
    let workers = tradebox_sandbox::pool::default_size();
    let pool = Arc::new(
        Pool::start(PoolConfig {
            launcher: PathBuf::from(env!("CARGO_BIN_EXE_tradebox")),
            python: PythonPaths {
                python: rt_paths.python,
                venv: rt_paths.venv,
                base_prefix: rt_paths.base_prefix,
                lib: rt_paths.lib,
            },
            run_dir: home.root().join("run"),
            snapshot,
            follow: Some(home.snapshot_root()),
            size: workers,
            queue: 256,
            scratch_mib: 64,
            start_timeout: Duration::from_secs(120),
        })
        .unwrap(),
    );

    // The pipeline as `tradebox serve` builds it (its running places kept
    // in the store, as they are for replicas sharing one), with the rate
    // limit and the per-user slots out of the way (one user sends
    // everything here).
    let mut config = Config::default();
    // The demo store ends on 2026-11-01: count days back from its newest
    // trade, as the executor path's job does.
    config.data.as_of = Some("latest".into());
    config.rate_limit.executions = 1_000_000;
    config.rate_limit.window_seconds = 1;
    config.pool.per_user_running = 256;
    config.pool.per_user_waiting = 256;
    let store = home.store_path();
    let pipeline = Arc::new(
        Pipeline::new(
            Some(pool.clone()),
            FunctionStore::open(&store).unwrap(),
            AuditLog::open(&store).unwrap(),
            RateLimiter::from_config(&store, &config.rate_limit).unwrap(),
            Permissions::new(&config.permissions).with_admin(USER),
            Settings::from_config(&config),
        )
        .with_leases(Leases::open(&store, "bench").unwrap()),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let router = tradebox_web::router(
        Arc::clone(&pipeline),
        home.clone(),
        tradebox_web::ConsoleOptions {
            token: TOKEN.into(),
            allowed_hosts: vec![addr.to_string()],
            user: USER.into(),
            max_body_bytes: tradebox_web::DEFAULT_MAX_BODY,
        },
    );
    // As `tradebox serve` does: replies leave at once (no Nagle delay).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    rt.spawn(async move { axum::serve(listener, router).await });
    let bench = Arc::new(Bench {
        pool,
        pipeline,
        addr,
        rt,
    });

    let paths = [Path3::Executor, Path3::Pipeline, Path3::Http, Path3::Hop];
    let mut rows = Vec::new();
    let mut overheads = Vec::new();
    for (label, code) in [("1 + 1", TRIVIAL), ("load_trades(days=7) groupby", QUERY)] {
        eprintln!("== {label}: warm-up");
        let mut clients = [None, None, None, None];
        for _ in 0..20 {
            for (i, p) in paths.iter().enumerate() {
                bench.call(*p, code, &mut clients[i]);
            }
        }
        eprintln!("== {label}: {} sequential calls per path, interleaved", o.n);
        let mut lat: [Vec<f64>; 4] = Default::default();
        for round in 0..o.n {
            // Each path goes first, second and third equally often.
            for k in 0..4 {
                let i = (round + k) % 4;
                // Idle before each call, as between a user's commands: a
                // job right behind the previous one would wait for its
                // zygote to pre-fork the next child, whichever path sent it.
                std::thread::sleep(Duration::from_millis(o.gap_ms));
                lat[i].push(ms(bench.call(paths[i], code, &mut clients[i])));
            }
        }
        let mut thr = [0.0f64; 4];
        for round in 0..2 {
            for (i, p) in paths.iter().enumerate() {
                eprintln!(
                    "== {label}: {} jobs from {} clients on {} (round {})",
                    o.jobs,
                    o.clients,
                    p.name(),
                    round + 1
                );
                let started = Instant::now();
                let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let handles: Vec<_> = (0..o.clients)
                    .map(|_| {
                        let (bench, next, p) = (Arc::clone(&bench), Arc::clone(&next), *p);
                        let (jobs, code) = (o.jobs, code.to_string());
                        std::thread::spawn(move || {
                            let mut client = None;
                            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < jobs {
                                bench.call(p, &code, &mut client);
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
                let rate = o.jobs as f64 / started.elapsed().as_secs_f64();
                thr[i] = thr[i].max(rate); // best of two rounds
            }
        }
        // The cost of a layer: the median of paired differences (the calls
        // of one round ran back to back, so drift cancels out).
        let paired = |a: usize, b: usize| {
            let mut d: Vec<f64> = lat[a].iter().zip(&lat[b]).map(|(x, y)| x - y).collect();
            d.sort_by(f64::total_cmp);
            percentile(&d, 0.5)
        };
        overheads.push(json!({
            "query": label,
            "http_minus_executor_p50_ms": paired(2, 0),
            "http_minus_spawned_p50_ms": paired(2, 3),
            "spawned_minus_pipeline_p50_ms": paired(3, 1),
            "pipeline_minus_executor_p50_ms": paired(1, 0),
            "target_ms": TARGET_OVERHEAD_MS,
            "met": paired(2, 0) <= TARGET_OVERHEAD_MS,
        }));
        for (i, p) in paths.iter().enumerate() {
            let mut v = lat[i].clone();
            v.sort_by(f64::total_cmp);
            rows.push(json!({
                "query": label,
                "path": p.name(),
                "p50_ms": percentile(&v, 0.50),
                "p95_ms": percentile(&v, 0.95),
                "jobs_per_s": thr[i],
            }));
        }
    }

    eprintln!(
        "== the store's writes alone: {} jobs' worth, {} ms apart, then back to back",
        o.n, o.gap_ms
    );
    let gap = Duration::from_millis(o.gap_ms);
    let mut writes = vec![(
        "SQLite (the home's store)".to_string(),
        Ok(store_table(
            &StoreUrl::Sqlite(store.clone()),
            &config,
            o.n,
            gap,
        )),
    )];
    eprintln!("== the same on PostgreSQL (a throwaway cluster on loopback)");
    // Kept alive until the end: dropping it stops the cluster.
    let cluster = PgCluster::start();
    writes.push((
        "PostgreSQL (a throwaway cluster: loopback, fsync off)".to_string(),
        cluster
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|c| c.database())
            .map(|url| store_table(&StoreUrl::Postgres(url), &config, o.n, gap)),
    ));
    let writes_json: Vec<Value> = writes
        .iter()
        .map(|(store, rows)| match rows {
            Ok(rows) => json!({ "store": store, "rows": rows }),
            Err(e) => json!({ "store": store, "skipped": e }),
        })
        .collect();

    if o.json {
        println!(
            "{}",
            json!({ "workers": workers, "clients": o.clients, "rows": rows, "overhead": overheads,
                    "store_writes": writes_json })
        );
        return;
    }
    println!(
        "\nPOST /api/v1/run vs the executor alone ({workers} zygotes, loopback, {} sequential calls per row {} ms apart, throughput: {} clients, best of 2 rounds of {} jobs)\n",
        o.n, o.gap_ms, o.clients, o.jobs
    );
    println!(
        "{:<30} {:<9} {:>9} {:>9} {:>11}",
        "query", "path", "p50 ms", "p95 ms", "jobs/s"
    );
    for r in &rows {
        println!(
            "{:<30} {:<9} {:>9.2} {:>9.2} {:>11.0}",
            r["query"].as_str().unwrap(),
            r["path"].as_str().unwrap(),
            r["p50_ms"].as_f64().unwrap(),
            r["p95_ms"].as_f64().unwrap(),
            r["jobs_per_s"].as_f64().unwrap()
        );
    }
    println!(
        "\nCost of each layer: median of paired differences (ms)\n{:<30} {:>16} {:>16} {:>18} {:>18} {:>10}",
        "query", "http - executor", "http - spawned", "spawned - pipeline", "pipeline - exec", "target"
    );
    for ov in &overheads {
        println!(
            "{:<30} {:>16.2} {:>16.2} {:>18.2} {:>18.2} {:>10}",
            ov["query"].as_str().unwrap(),
            ov["http_minus_executor_p50_ms"].as_f64().unwrap(),
            ov["http_minus_spawned_p50_ms"].as_f64().unwrap(),
            ov["spawned_minus_pipeline_p50_ms"].as_f64().unwrap(),
            ov["pipeline_minus_executor_p50_ms"].as_f64().unwrap(),
            format!(
                "{} {}",
                if ov["met"].as_bool().unwrap() {
                    "met"
                } else {
                    "MISSED"
                },
                format!("<={TARGET_OVERHEAD_MS}")
            )
        );
    }
    println!(
        "\nThe store's writes of one job, alone (what pipeline - exec pays; µs): {} jobs' worth, each job's three back to back, {} ms idle before each job, then none",
        o.n, o.gap_ms
    );
    for (store, rows) in &writes {
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                println!("{store}: not measured ({e})");
                continue;
            }
        };
        println!(
            "{:<40} {:>10} {:>10} {:>12} {:>12}",
            store, "idle p50", "idle p95", "no idle p50", "no idle p95"
        );
        for w in rows {
            println!(
                "  {:<38} {:>10.0} {:>10.0} {:>12.0} {:>12.0}",
                w["write"].as_str().unwrap(),
                w["idle_p50_us"].as_f64().unwrap(),
                w["idle_p95_us"].as_f64().unwrap(),
                w["back_to_back_p50_us"].as_f64().unwrap(),
                w["back_to_back_p95_us"].as_f64().unwrap()
            );
        }
    }
}
