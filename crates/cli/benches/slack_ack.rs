//! Slack acknowledgement latency (a `harness = false` bench target, driven
//! by benches/slack.sh, which builds the release binary and a demo store).
//!
//! For each transport (Socket Mode, then the HTTP endpoints), the real
//! `tradebox serve` runs on the store at `--home` with two sandbox workers
//! and talks to the in-repo fake Slack server over loopback. Two long jobs
//! are started first (each a Python loop of several seconds, one per
//! worker); while both run, `--rounds` bursts of `--commands` concurrent
//! slash commands are sent (`/analyze result = 1 + 1`, each from its own
//! user), and the time from sending each command to its acknowledgement is
//! measured: for Socket Mode from the envelope written on the WebSocket to
//! the ack frame read back, for HTTP from the signed POST to its answer.
//! Every command must be acknowledged while the long jobs still run (acks
//! never wait for execution), and every command must then be answered in
//! the channel. Prints a table (or `--json`) with the target (p99 at most
//! 100 ms).
//!
//! Options (or env): --home DIR (BENCH_HOME, required), --runtime DIR
//! (BENCH_RUNTIME, default: target/tmp/bench-runtime), --commands N
//! (BENCH_COMMANDS, 50), --rounds N (BENCH_ROUNDS, 3), --long-loop N
//! (BENCH_LONG_LOOP, 60000000 iterations per long job), --json.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::percentile;
use tradebox_fake_slack::{self as fake, FakeSlack, Sign, SlashCommand};

const TARGET_P99_MS: f64 = 100.0;
const WAIT: Duration = Duration::from_secs(120);

struct Args {
    home: PathBuf,
    runtime: PathBuf,
    commands: usize,
    rounds: usize,
    long_loop: u64,
    json: bool,
}

fn args() -> Args {
    let mut argv = std::env::args().skip(1);
    let env = |k: &str| std::env::var(k).ok();
    let mut a = Args {
        home: support::bench_home(),
        runtime: support::bench_runtime(),
        commands: env("BENCH_COMMANDS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(50),
        rounds: env("BENCH_ROUNDS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(3),
        long_loop: env("BENCH_LONG_LOOP")
            .and_then(|v| v.parse().ok())
            .unwrap_or(60_000_000),
        json: false,
    };
    while let Some(arg) = argv.next() {
        let mut value = || argv.next().expect("a value after the option");
        match arg.as_str() {
            "--home" => a.home = PathBuf::from(value()),
            "--runtime" => a.runtime = PathBuf::from(value()),
            "--commands" => a.commands = value().parse().expect("--commands N"),
            "--rounds" => a.rounds = value().parse().expect("--rounds N"),
            "--long-loop" => a.long_loop = value().parse().expect("--long-loop N"),
            "--json" => a.json = true,
            "--bench" => {}
            other => panic!("unknown option {other}"),
        }
    }
    assert!(
        !a.home.as_os_str().is_empty(),
        "--home DIR (or BENCH_HOME) with a store is required; run benches/slack.sh"
    );
    a
}

/// `tradebox serve` on the bench store with two workers, limits raised for
/// the bursts, and the fake Slack's environment.
fn serve(a: &Args, env: &[(&str, &str)]) -> support::Server {
    let mut all = vec![
        ("TRADEBOX_RATE_LIMIT_EXECUTIONS", "100000"),
        ("TRADEBOX_POOL_QUEUE", "4096"),
        ("TRADEBOX_LIMITS_TIMEOUT_SECONDS", "120"),
    ];
    all.extend_from_slice(env);
    support::serve(&a.home, &a.runtime, Some(2), &all)
}

fn long_job(n: u64, salt: usize) -> String {
    format!("x = {salt}\nfor i in range({n}):\n    x += i\nresult = x")
}

struct Row {
    transport: &'static str,
    latencies_ms: Vec<f64>,
    long_running_at_last_ack: bool,
    answered: usize,
    answered_in: Duration,
}

/// Count of messages answered (not placeholders) from the burst users.
fn answered(fake: &FakeSlack, prefix: &'static str, want: usize) -> Result<usize, String> {
    fake.block_on(fake.wait_for("every command answered", WAIT, move |v| {
        let n = v
            .messages()
            .iter()
            .filter(|m| {
                let t = m.all_text();
                t.contains("Analysis complete: 2") && t.contains(prefix)
            })
            .count();
        (n >= want).then_some(n)
    }))
    .map_err(|e| e.to_string())
}

fn long_jobs_done(fake: &FakeSlack) -> usize {
    fake.messages()
        .iter()
        .filter(|m| m.all_text().contains("<@ULONG") && m.all_text().contains("Analysis complete"))
        .count()
}

fn run_transport(a: &Args, socket: bool) -> Row {
    let fake = FakeSlack::start().expect("fake Slack");
    let url = fake.api_url();
    let mut env = vec![
        ("SLACK_BOT_TOKEN", fake::BOT_TOKEN),
        ("SLACK_API_URL", url.as_str()),
    ];
    if socket {
        env.push(("SLACK_APP_TOKEN", fake::APP_TOKEN));
    } else {
        env.push(("SLACK_SIGNING_SECRET", fake::SIGNING_SECRET));
    }
    let server = serve(a, &env);
    let base = format!("http://{}", server.addr);
    if socket {
        fake.block_on(fake.wait_for_sockets(1, WAIT))
            .expect("socket");
    }

    // Two long jobs, one per worker; wait until both placeholders show.
    for i in 0..2 {
        let cmd =
            SlashCommand::new("/analyze", &long_job(a.long_loop, i)).user(&format!("ULONG{i}"));
        if socket {
            fake.block_on(fake.send_command(&cmd, WAIT)).expect("ack");
        } else {
            let r = fake
                .block_on(fake.http_command(&base, &cmd, Sign::Good, None))
                .expect("answer");
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
    fake.block_on(fake.wait_for("the long jobs' placeholders", WAIT, |v| {
        (v.messages()
            .iter()
            .filter(|m| m.all_text().contains("Analyzing..."))
            .count()
            >= 2)
            .then_some(())
    }))
    .expect("placeholders");

    let started = Instant::now();
    let mut latencies = Vec::new();
    for round in 0..a.rounds {
        let cmds: Vec<SlashCommand> = (0..a.commands)
            .map(|i| {
                SlashCommand::new("/analyze", "result = 1 + 1").user(&format!("UBURST{round}X{i}"))
            })
            .collect();
        let burst: Vec<f64> = if socket {
            let futures = cmds.iter().map(|c| fake.send_command(c, WAIT));
            fake.block_on(futures_join(futures))
                .into_iter()
                .map(|r| r.expect("ack").latency.as_secs_f64() * 1e3)
                .collect()
        } else {
            let futures = cmds
                .iter()
                .map(|c| fake.http_command(&base, c, Sign::Good, None));
            fake.block_on(futures_join(futures))
                .into_iter()
                .map(|r| {
                    let r = r.expect("answer");
                    assert_eq!(r.status, 200, "{}", r.body);
                    r.latency.as_secs_f64() * 1e3
                })
                .collect()
        };
        latencies.extend(burst);
    }
    let long_running_at_last_ack = long_jobs_done(&fake) == 0;
    let want = a.commands * a.rounds;
    let n = answered(&fake, "<@UBURST", want).unwrap_or_else(|e| panic!("{e}"));
    let answered_in = started.elapsed();
    drop(server);
    latencies.sort_by(f64::total_cmp);
    Row {
        transport: if socket { "Socket Mode" } else { "HTTP" },
        latencies_ms: latencies,
        long_running_at_last_ack,
        answered: n,
        answered_in,
    }
}

/// Polls every future to completion concurrently (on the caller's
/// runtime: here the fake's).
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

fn main() {
    let a = args();
    let rows: Vec<Row> = [true, false]
        .iter()
        .map(|s| run_transport(&a, *s))
        .collect();
    if a.json {
        let out: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "transport": r.transport,
                    "acks": r.latencies_ms.len(),
                    "p50_ms": percentile(&r.latencies_ms, 50.0),
                    "p99_ms": percentile(&r.latencies_ms, 99.0),
                    "max_ms": r.latencies_ms.last(),
                    "target_p99_ms": TARGET_P99_MS,
                    "long_jobs_running_at_last_ack": r.long_running_at_last_ack,
                    "answered": r.answered,
                    "answered_in_s": r.answered_in.as_secs_f64(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return;
    }
    println!(
        "\nSlack acknowledgement latency: {} rounds of {} concurrent slash commands while 2 long jobs run (2 workers)\n",
        a.rounds, a.commands
    );
    println!(
        "{:<12} {:>5} {:>8} {:>8} {:>8} {:>11}  {:<26} answered",
        "transport", "acks", "p50 ms", "p99 ms", "max ms", "target p99", "long jobs at last ack",
    );
    for r in &rows {
        let p99 = percentile(&r.latencies_ms, 99.0);
        println!(
            "{:<12} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>11}  {:<26} {}/{} in {:.1} s",
            r.transport,
            r.latencies_ms.len(),
            percentile(&r.latencies_ms, 50.0),
            p99,
            r.latencies_ms.last().copied().unwrap_or(f64::NAN),
            format!(
                "<= {TARGET_P99_MS:.0} {}",
                if p99 <= TARGET_P99_MS { "ok" } else { "MISSED" }
            ),
            if r.long_running_at_last_ack {
                "still running (ok)"
            } else {
                "FINISHED BEFORE (acks waited?)"
            },
            r.answered,
            r.latencies_ms.len(),
            r.answered_in.as_secs_f64(),
        );
    }
    println!(
        "\nack latency: Socket Mode from the envelope written on the WebSocket to its ack read back;\n\
         HTTP from the signed POST to Slack's 200. Both against the in-repo fake Slack over loopback."
    );
}
