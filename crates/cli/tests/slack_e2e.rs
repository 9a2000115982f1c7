//! Slack end to end: the real `tradebox serve` binary (real pool, real
//! sandbox, the fixture data) with `SLACK_API_URL` pointing at the
//! fake Slack server of `crates/fake-slack`, over Socket Mode and over the
//! HTTP endpoints. Every slash command and the Run button (through the
//! real `block_actions` payload), a figure arriving as an uploaded file,
//! signature checks, the `response_url` fallback, 429 and 500 answers,
//! reconnection after a dropped socket with no command lost or run twice,
//! and SIGTERM finishing a running job; plus `tradebox doctor --slack`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use tradebox_core::audit::{Action, AuditFilter, AuditLog, Outcome};
use tradebox_fake_slack::{self as fake, Failure, FakeSlack, Message, Sign, SlashCommand};

const WAIT: Duration = Duration::from_secs(60);

/// A long job: a Python loop of about two seconds (its result:
/// 449999985000000).
const LONG_JOB: &str = "x = 0\nfor i in range(30_000_000):\n    x += i\nresult = x";

/// The environment of a server on the fake: Socket Mode or HTTP, and a
/// rate limit of `executions` per minute.
fn env<'a>(fake_url: &'a str, socket: bool, executions: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("SLACK_BOT_TOKEN", fake::BOT_TOKEN),
        ("SLACK_API_URL", fake_url),
        ("TRADEBOX_DATA_AS_OF", "latest"),
        ("TRADEBOX_RATE_LIMIT_EXECUTIONS", executions),
    ];
    if socket {
        env.push(("SLACK_APP_TOKEN", fake::APP_TOKEN));
    } else {
        env.push(("SLACK_SIGNING_SECRET", fake::SIGNING_SECRET));
    }
    env
}

/// The newest message (not deleted) whose text or blocks contain `needle`
/// and, when `final_only`, that is no longer a placeholder.
fn message_with(fake: &FakeSlack, needle: &str) -> Message {
    let needle = needle.to_string();
    fake.block_on(fake.wait_for(&needle.clone(), WAIT, move |v| {
        v.messages()
            .iter()
            .rev()
            .find(|m| {
                let text = m.all_text();
                !m.deleted && text.contains(&needle) && !text.contains(":hourglass")
            })
            .cloned()
    }))
    .unwrap_or_else(|e| panic!("{e}; messages: {:#?}", fake.messages()))
}

fn ephemeral_for(fake: &FakeSlack, user: &str, index: usize) -> fake::Ephemeral {
    let user = user.to_string();
    fake.block_on(fake.wait_for("an ephemeral message", WAIT, move |v| {
        v.ephemerals()
            .iter()
            .filter(|e| e.user == user)
            .nth(index)
            .cloned()
    }))
    .unwrap()
}

fn send(fake: &FakeSlack, cmd: SlashCommand) -> fake::Ack {
    let ack = fake.block_on(fake.send_command(&cmd, WAIT)).unwrap();
    assert!(ack.payload.is_none(), "a bare ack: {:?}", ack.payload);
    ack
}

fn audit(home: &Path, action: Action) -> Vec<tradebox_core::audit::AuditRecord> {
    AuditLog::open(home.join("tradebox.db"))
        .unwrap()
        .query(&AuditFilter {
            action: Some(action),
            ..AuditFilter::default()
        })
        .unwrap()
}

#[test]
fn socket_mode_every_command_the_run_button_and_a_figure() {
    let home = common::fixture_home();
    let fake = FakeSlack::start().unwrap();
    let url = fake.api_url();
    let server = common::serve(home.path(), &env(&url, true, "4"), &[]);
    assert!(
        server
            .stderr()
            .contains("Slack: Socket Mode as @tradebox in Fake Trading Desk (T0FAKE)"),
        "{}",
        server.stderr()
    );

    // /analyze: placeholder, then the result in its place.
    send(
        &fake,
        SlashCommand::new(
            "/analyze",
            "result = load_trades().groupby('exchange')['amount'].sum()",
        ),
    );
    let m = message_with(&fake, "Analysis Result");
    assert!(
        m.history[0].to_string().contains("Analyzing..."),
        "{:?}",
        m.history
    );
    assert_eq!(m.history.len(), 1, "one placeholder, one update");
    // load_trades() looks 30 days back.
    for exchange in common::strings(&common::expected()["trades"]["last_30_days"]["exchanges"]) {
        assert!(m.all_text().contains(&exchange), "{}", m.all_text());
    }

    // A figure arrives as an uploaded PNG in the same channel; a 429 on
    // chat.update on the way is waited out.
    fake.fail("chat.update", &[Failure::RateLimited { retry_after: 1 }]);
    send(
        &fake,
        SlashCommand::new(
            "/analyze",
            "df = load_trades(days=None)\ndf.groupby('exchange')['amount'].sum().plot(kind='bar')\nresult = len(df)",
        ),
    );
    let m = message_with(
        &fake,
        &format!("Analysis complete: {}", common::trade_count()),
    );
    assert!(
        m.all_text().contains("figure-1.png attached"),
        "{}",
        m.all_text()
    );
    let png = fake
        .block_on(fake.wait_for("the figure", WAIT, |v| {
            v.files()
                .iter()
                .find(|f| f.filename.ends_with(".png"))
                .cloned()
        }))
        .unwrap();
    assert!(png.bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(png.channel.as_deref(), Some(fake::CHANNEL));
    assert_eq!(png.title, "Figure 1");
    let updates = fake.calls_of("chat.update");
    assert!(updates
        .iter()
        .any(|c| c.failed.as_deref() == Some("429 retry-after 1")));

    // /savefunc, /runfunc with a parameter, /listfuncs and its Run button.
    send(
        &fake,
        SlashCommand::new(
            "/savefunc",
            "weekly | Volume this week | result = float(load_trades(days=params.get('days', 7))['amount'].sum())",
        ),
    );
    message_with(&fake, "Saved Function");
    send(&fake, SlashCommand::new("/runfunc", "weekly days=14"));
    let by_command = message_with(&fake, "Used 1x");
    assert!(by_command.all_text().contains("Volume this week"));
    send(&fake, SlashCommand::new("/listfuncs", ""));
    let list = message_with(&fake, "All Saved Functions");
    let ack = fake
        .block_on(fake.click(&list, "run_func_weekly", "U0BOB", WAIT))
        .unwrap();
    assert!(ack.payload.is_none());
    let by_button = message_with(&fake, "Used 2x");
    assert!(
        by_button.all_text().contains("<@U0BOB>"),
        "{}",
        by_button.all_text()
    );
    assert!(by_button.history[0]
        .to_string()
        .contains("Executing `weekly`"));
    let runs = audit(home.path(), Action::RunButton);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].entry.user_id, "U0BOB");
    assert_eq!(runs[0].entry.outcome, Outcome::Ok);
    assert_eq!(runs[0].entry.function_name.as_deref(), Some("weekly"));

    // The button shares /runfunc's rate limit (4 per minute here).
    for _ in 0..2 {
        send(
            &fake,
            SlashCommand::new("/runfunc", "weekly").user("U0CAROL"),
        );
    }
    for _ in 0..2 {
        fake.block_on(fake.click(&list, "run_func_weekly", "U0CAROL", WAIT))
            .unwrap();
    }
    fake.block_on(fake.wait_for("Carol's four runs", WAIT, |v| {
        (v.messages()
            .iter()
            .filter(|m| m.all_text().contains("<@U0CAROL>") && m.all_text().contains("Used"))
            .count()
            == 4)
            .then_some(())
    }))
    .unwrap();
    fake.block_on(fake.click(&list, "run_func_weekly", "U0CAROL", WAIT))
        .unwrap();
    let limited = ephemeral_for(&fake, "U0CAROL", 0);
    assert!(
        limited.text.contains("Rate limit exceeded"),
        "{}",
        limited.text
    );
    let refused = AuditLog::open(home.path().join("tradebox.db"))
        .unwrap()
        .query(&AuditFilter {
            outcome: Some(Outcome::RefusedRateLimit),
            ..AuditFilter::default()
        })
        .unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].entry.action, Action::RunButton);

    // Usage, help and refusals are ephemeral.
    send(&fake, SlashCommand::new("/tradebox", "help"));
    assert!(ephemeral_for(&fake, fake::USER, 0)
        .text
        .contains("/runfunc"));
    send(
        &fake,
        SlashCommand::new("/analyze", "import os\nresult = 1"),
    );
    let refusal = ephemeral_for(&fake, fake::USER, 1);
    assert!(
        refusal.text.contains("Code validation failed"),
        "{}",
        refusal.text
    );
    send(&fake, SlashCommand::new("/delfunc", "weekly").user("U0BOB"));
    let refusal = ephemeral_for(&fake, "U0BOB", 0);
    assert!(
        refusal.text.contains("Only the creator"),
        "{}",
        refusal.text
    );

    // /delfunc by its creator.
    send(&fake, SlashCommand::new("/delfunc", "weekly"));
    message_with(&fake, "Deleted function `weekly`");
    assert!(
        fake.messages()
            .iter()
            .all(|m| !m.all_text().contains(":hourglass") || m.deleted),
        "no placeholder left behind: {:#?}",
        fake.messages()
    );
}

#[test]
fn http_mode_signed_requests_and_the_run_button() {
    let home = common::fixture_home();
    let fake = FakeSlack::start().unwrap();
    let url = fake.api_url();
    let server = common::serve(home.path(), &env(&url, false, "100"), &[]);
    assert!(
        server.stderr().contains("Slack: HTTP endpoints"),
        "{}",
        server.stderr()
    );
    assert_eq!(fake.connections_opened(), 0, "no Socket Mode in HTTP mode");
    let base = server.base.clone();
    let analyze = SlashCommand::new("/analyze", "result = len(load_trades(days=None))");

    for (sign, status) in [(Sign::Bad, 401), (Sign::Stale, 401), (Sign::Missing, 401)] {
        let answer = fake
            .block_on(fake.http_command(&base, &analyze, sign, None))
            .unwrap();
        assert_eq!(answer.status, status, "{sign:?}: {}", answer.body);
    }
    assert!(
        fake.messages().is_empty(),
        "nothing ran for a bad signature"
    );

    let answer = fake
        .block_on(fake.http_command(&base, &analyze, Sign::Good, None))
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.latency < Duration::from_secs(3),
        "{:?}",
        answer.latency
    );
    let m = message_with(
        &fake,
        &format!("Analysis complete: {}", common::trade_count()),
    );
    assert!(m.history[0].to_string().contains("Analyzing"));
    // A retried delivery of the same command does not run it again.
    let retry = fake
        .block_on(fake.http_command(&base, &analyze, Sign::Good, Some((1, &answer.trigger_id))))
        .unwrap();
    assert_eq!(retry.status, 200);

    let save = SlashCommand::new(
        "/savefunc",
        "total | All volume | result = float(load_trades()['amount'].sum())",
    );
    fake.block_on(fake.http_command(&base, &save, Sign::Good, None))
        .unwrap();
    message_with(&fake, "Saved Function");
    fake.block_on(fake.http_command(
        &base,
        &SlashCommand::new("/runfunc", "total"),
        Sign::Good,
        None,
    ))
    .unwrap();
    message_with(&fake, "Used 1x");
    fake.block_on(fake.http_command(
        &base,
        &SlashCommand::new("/listfuncs", ""),
        Sign::Good,
        None,
    ))
    .unwrap();
    let list = message_with(&fake, "All Saved Functions");
    let click = fake
        .block_on(fake.http_click(&base, &list, "run_func_total", "U0BOB", Sign::Good))
        .unwrap();
    assert_eq!(click.status, 200);
    let m = message_with(&fake, "Used 2x");
    assert!(m.all_text().contains("<@U0BOB>"));
    fake.block_on(fake.http_command(
        &base,
        &SlashCommand::new("/delfunc", "total"),
        Sign::Good,
        None,
    ))
    .unwrap();
    message_with(&fake, "Deleted function `total`");
    fake.block_on(fake.http_command(&base, &SlashCommand::new("/tradebox", ""), Sign::Good, None))
        .unwrap();
    ephemeral_for(&fake, fake::USER, 0);
    assert_eq!(
        audit(home.path(), Action::Analyze).len(),
        1,
        "the retry did not run"
    );
    assert_eq!(audit(home.path(), Action::RunButton).len(), 1);
}

#[test]
fn fallback_failures_reconnects_and_sigterm() {
    let home = common::fixture_home();
    let fake = FakeSlack::start().unwrap();
    fake.deny_channel("G0PRIVATE", "not_in_channel");
    let url = fake.api_url();
    let mut server = common::serve(home.path(), &env(&url, true, "100"), &[]);

    // The bot is not in the channel: the response_url carries the
    // placeholder (ephemeral) and the result (in channel), and says why
    // the figure is missing.
    let ack = send(
        &fake,
        SlashCommand::new(
            "/analyze",
            "load_trades()['price'].plot()\nresult = 'plotted'",
        )
        .channel("G0PRIVATE"),
    );
    let trigger = ack.trigger_id.clone();
    let posts = fake
        .block_on(fake.wait_for("two response_url posts", WAIT, move |v| {
            let posts: Vec<_> = v
                .responses()
                .iter()
                .filter(|r| r.trigger_id == trigger)
                .cloned()
                .collect();
            (posts.len() == 2).then_some(posts)
        }))
        .unwrap();
    assert!(!posts[0].in_channel() && posts[0].all_text().contains("Analyzing"));
    assert!(posts[1].in_channel(), "{:?}", posts[1].body);
    let text = posts[1].all_text();
    assert!(
        text.contains("plotted") && text.contains("figure-1.png not attached"),
        "{text}"
    );
    assert!(text.contains("Invite <@U0BOT>"), "{text}");
    assert!(fake.files().is_empty());

    // 500s on chat.postMessage are retried.
    fake.fail(
        "chat.postMessage",
        &[Failure::ServerError, Failure::ServerError],
    );
    send(&fake, SlashCommand::new("/analyze", "result = 6 * 7"));
    message_with(&fake, "Analysis complete: 42");

    // The socket drops while a long job runs: the acknowledged job still
    // answers, and the app reconnects.
    let connected = fake.sockets_connected();
    send(&fake, SlashCommand::new("/analyze", LONG_JOB));
    fake.block_on(fake.wait_for("the placeholder", WAIT, |v| {
        v.messages()
            .iter()
            .find(|m| m.all_text().contains("Analyzing...") && m.history.is_empty())
            .cloned()
    }))
    .unwrap();
    fake.drop_sockets();
    message_with(&fake, "449999985000000");
    fake.block_on(fake.wait_for("a reconnection", WAIT, move |v| {
        (v.sockets_connected() > connected && v.live_sockets() > 0).then_some(())
    }))
    .unwrap();

    // The socket drops right after an envelope, before its ack: Slack
    // redelivers, the command runs once.
    let before = audit(home.path(), Action::Analyze).len();
    fake.drop_after_delivery(1);
    let ack = send(
        &fake,
        SlashCommand::new("/analyze", "result = 'exactly once'"),
    );
    assert_eq!(ack.deliveries, 2);
    message_with(&fake, "exactly once");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(audit(home.path(), Action::Analyze).len(), before + 1);
    assert_eq!(
        fake.messages()
            .iter()
            .filter(|m| m.all_text().contains("exactly once"))
            .count(),
        1
    );

    // SIGTERM while a job runs: its reply is posted, then the process exits.
    send(
        &fake,
        SlashCommand::new(
            "/analyze",
            LONG_JOB.replace("result = x", "result = x + 1").as_str(),
        ),
    );
    fake.block_on(fake.wait_for("the second placeholder", WAIT, |v| {
        v.messages()
            .iter()
            .filter(|m| m.history.is_empty() && m.all_text().contains("Analyzing..."))
            .count()
            .eq(&1)
            .then_some(())
    }))
    .unwrap();
    let status = server.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}; {}", server.stderr());
    assert!(
        fake.messages()
            .iter()
            .any(|m| m.all_text().contains("449999985000001")),
        "the running job answered before the exit: {:#?}",
        fake.messages()
    );
}

#[test]
fn doctor_checks_the_tokens_and_the_scopes() {
    let fake = FakeSlack::start().unwrap();
    let url = fake.api_url();
    let home = tempfile::TempDir::new().unwrap();
    let doctor = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(common::bin());
        cmd.env("TRADEBOX_HOME", home.path())
            .env_remove("SLACK_BOT_TOKEN")
            .env_remove("SLACK_APP_TOKEN")
            .env_remove("SLACK_SIGNING_SECRET")
            .args(["doctor", "--slack", "--json"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v)
    };
    let (code, v) = doctor(&[]);
    assert_eq!(
        (code, v["slack"]["status"].as_str()),
        (Some(0), Some("not_configured"))
    );

    let good = env(&url, true, "100");
    let (code, v) = doctor(&good);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["slack"]["status"], "ok");
    assert_eq!(v["slack"]["bot"]["user"], "tradebox");
    assert_eq!(fake.calls_of("auth.test").len(), 1);
    assert_eq!(fake.calls_of("apps.connections.open").len(), 1);

    fake.set_scopes("commands,chat:write");
    let (code, v) = doctor(&good);
    assert_eq!(code, Some(2));
    assert_eq!(v["slack"]["status"], "missing_scopes");
    assert_eq!(
        v["slack"]["missing_scopes"],
        serde_json::json!(["files:write", "files:read"])
    );

    let mut bad = good.clone();
    bad[0] = ("SLACK_BOT_TOKEN", "xoxb-not-the-token");
    let (code, v) = doctor(&bad);
    assert_eq!(code, Some(2));
    let error = v["slack"]["error"].as_str().unwrap();
    assert!(
        error.contains("SLACK_BOT_TOKEN was refused by Slack (invalid_auth)"),
        "{error}"
    );

    let half = [("SLACK_BOT_TOKEN", fake::BOT_TOKEN)];
    let (code, v) = doctor(&half);
    assert_eq!(code, Some(2));
    assert!(
        v["slack"]["error"]
            .as_str()
            .unwrap()
            .contains("SLACK_APP_TOKEN"),
        "{v}"
    );
}

#[test]
fn the_web_api_down_for_two_minutes_delays_replies_tells_users_and_sends_nothing_twice() {
    use std::time::Instant;
    let home = common::fixture_home();
    let fake = FakeSlack::start().unwrap();
    let url = fake.api_url();
    let server = common::serve(home.path(), &env(&url, true, "100"), &[]);
    fake.block_on(fake.wait_for_sockets(1, WAIT)).unwrap();

    // Every Web API method answers 503 for two minutes; the socket stays
    // up, so commands keep arriving: a job (placeholder, then its reply),
    // a save (one message) and a job that fails (an error reply).
    let outage = Duration::from_secs(120);
    fake.outage(outage);
    let down = Instant::now();
    let commands = [
        (
            "COUT1",
            SlashCommand::new("/analyze", "result = 1 + 1"),
            "Analysis complete: 2",
        ),
        (
            "COUT2",
            SlashCommand::new("/savefunc", "outage_f | saved in the outage | result = 2"),
            "outage_f",
        ),
        (
            "COUT3",
            SlashCommand::new("/analyze", "result = 1 / 0"),
            "ZeroDivisionError",
        ),
    ];
    let triggers: Vec<String> = commands
        .iter()
        .map(|(channel, cmd, _)| send(&fake, cmd.clone().channel(channel)).trigger_id)
        .collect();

    // Each user is told, through the response_url, within seconds.
    let told = triggers.clone();
    fake.block_on(
        fake.wait_for("a notice per command", Duration::from_secs(40), move |v| {
            told.iter()
                .all(|t| v.responses().iter().any(|r| &r.trigger_id == t))
                .then_some(())
        }),
    )
    .unwrap_or_else(|e| panic!("{e}: {:#?}", fake.responses()));
    assert!(down.elapsed() < outage, "told while Slack is still down");
    for r in fake.responses() {
        assert!(!r.in_channel(), "the notice is for the user only");
        assert!(r.all_text().contains("not answering"), "{}", r.all_text());
    }

    // Once Slack is back, every reply arrives, once.
    for (channel, _, expected) in &commands {
        let (channel, expected) = (channel.to_string(), expected.to_string());
        fake.block_on(fake.wait_for(
            &format!("the reply in {channel}"),
            outage + WAIT,
            move |v| {
                v.messages()
                    .iter()
                    .any(|m| {
                        m.channel == channel
                            && !m.deleted
                            && m.all_text().contains(&expected)
                            && !m.text.contains(":hourglass")
                    })
                    .then_some(())
            },
        ))
        .unwrap_or_else(|e| panic!("{e}: {:#?}", fake.messages()));
    }
    assert!(down.elapsed() >= outage, "nothing got through the outage");
    // Retries go on a little after the last reply; let them settle.
    std::thread::sleep(Duration::from_secs(20));
    let calls = fake.calls();
    for (channel, _, _) in &commands {
        let shown: Vec<_> = fake
            .messages()
            .into_iter()
            .filter(|m| m.channel == *channel && !m.deleted)
            .collect();
        assert_eq!(shown.len(), 1, "{channel}: {shown:#?}");
        let posted = calls
            .iter()
            .filter(|c| {
                c.method == "chat.postMessage"
                    && c.failed.is_none()
                    && c.params["channel"] == *channel
            })
            .count();
        assert_eq!(posted, 1, "{channel}: posted once");
        // Bounded: backoff grows to 15 s, so about a dozen tries in two
        // minutes for each call waiting.
        let failed = calls
            .iter()
            .filter(|c| c.failed.is_some() && c.params["channel"] == *channel)
            .count();
        assert!(
            (3..=40).contains(&failed),
            "{channel}: {failed} failed calls"
        );
    }
    assert!(fake.ephemerals().is_empty(), "{:#?}", fake.ephemerals());
    for t in &triggers {
        let notices = fake
            .responses()
            .iter()
            .filter(|r| &r.trigger_id == t)
            .count();
        assert_eq!(notices, 1, "one notice per command");
    }
    // Each command ran once.
    assert_eq!(audit(home.path(), Action::Analyze).len(), 2);
    assert_eq!(audit(home.path(), Action::Savefunc).len(), 1);
    drop(server);
}
