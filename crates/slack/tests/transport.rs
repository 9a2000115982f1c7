//! The Slack transport in-process against the fake Slack server (real
//! WebSocket, real HTTP over loopback), with a real pipeline on a temporary
//! store but no sandbox pool: commands that manage functions answer, and a
//! command that would run code gets its placeholder and then the refusal
//! "no sandbox pool", which exercises the ephemeral path. Running code,
//! figures and long jobs are covered end to end with the real binary in
//! `crates/cli/tests/slack_e2e.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tradebox_core::audit::{Action, AuditFilter, AuditLog};
use tradebox_core::config::PermissionsSection;
use tradebox_core::functions::FunctionStore;
use tradebox_core::permissions::Permissions;
use tradebox_core::pipeline::{Pipeline, Settings};
use tradebox_core::ratelimit::RateLimiter;
use tradebox_fake_slack::{self as fake, Failure, FakeSlack, Sign, SlashCommand};
use tradebox_slack::{RetryPolicy, SlackApp, SlackSettings};

const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    _home: TempDir,
    db: std::path::PathBuf,
    fake: FakeSlack,
}

fn setup() -> Setup {
    let home = TempDir::new().unwrap();
    let db = home.path().join("tradebox.db");
    tradebox_data::Store::open(&db).unwrap();
    Setup {
        _home: home,
        db,
        fake: FakeSlack::start().unwrap(),
    }
}

fn pipeline(db: &std::path::Path) -> Arc<Pipeline> {
    let settings = Settings {
        timeout: Duration::from_secs(10),
        memory_mib: 512,
        output_limit: 1 << 20,
        as_of: None,
        validator: Some(tradebox_validate::Rules::default()),
        per_user_running: 2,
        per_user_waiting: 8,
        max_code_bytes: 20_000,
    };
    Arc::new(Pipeline::new(
        None,
        FunctionStore::open(db).unwrap(),
        AuditLog::open(db).unwrap(),
        RateLimiter::open(db, 10, Duration::from_secs(60)).unwrap(),
        Permissions::new(&PermissionsSection::default()),
        settings,
    ))
}

fn settings(fake: &FakeSlack, socket: bool) -> SlackSettings {
    SlackSettings {
        bot_token: fake::BOT_TOKEN.into(),
        app_token: socket.then(|| fake::APP_TOKEN.into()),
        signing_secret: (!socket).then(|| fake::SIGNING_SECRET.into()),
        api_url: fake.api_url(),
        retry: RetryPolicy {
            base: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        // Five attempts, as for the checks, so that giving up is quick to see.
        reply_retry: RetryPolicy {
            base: Duration::from_millis(50),
            attempts: 5,
            ..RetryPolicy::replies()
        },
        socket_connections: 1,
    }
}

async fn socket_app(s: &Setup) -> SlackApp {
    let app = SlackApp::start(pipeline(&s.db), settings(&s.fake, true))
        .await
        .unwrap();
    s.fake.wait_for_sockets(1, WAIT).await.unwrap();
    app
}

/// Serves the HTTP-mode routes on a loopback port; returns the base URL.
async fn serve_http(app: &SlackApp) -> String {
    let router = app.router().expect("HTTP mode has routes");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// The newest non-deleted message whose text contains `needle`.
async fn message_with(fake: &FakeSlack, needle: &'static str) -> fake::Message {
    fake.wait_for(needle, WAIT, move |v| {
        v.messages()
            .iter()
            .rev()
            .find(|m| !m.deleted && m.all_text().contains(needle))
            .cloned()
    })
    .await
    .unwrap()
}

fn audit_count(db: &std::path::Path, action: Action) -> usize {
    AuditLog::open(db)
        .unwrap()
        .query(&AuditFilter {
            action: Some(action),
            ..AuditFilter::default()
        })
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_commands_and_the_run_button() {
    let s = setup();
    let app = socket_app(&s).await;
    assert!(
        app.describe()
            .starts_with("Slack: Socket Mode as @tradebox"),
        "{}",
        app.describe()
    );
    assert_eq!(s.fake.calls_of("auth.test").len(), 1);

    // Help is ephemeral; the ack is bare (no payload Slack would show).
    let ack = s
        .fake
        .send_command(&SlashCommand::new("/tradebox", "help"), WAIT)
        .await
        .unwrap();
    assert!(ack.payload.is_none(), "{:?}", ack.payload);
    assert_eq!(ack.deliveries, 1);
    let help = s
        .fake
        .wait_for("help", WAIT, |v| v.ephemerals().first().cloned())
        .await
        .unwrap();
    assert_eq!(help.user, fake::USER);
    assert!(help.text.contains("/analyze"), "{}", help.text);

    // A usage error: ephemeral too.
    s.fake
        .send_command(&SlashCommand::new("/savefunc", "no pipes here"), WAIT)
        .await
        .unwrap();
    s.fake
        .wait_for("usage", WAIT, |v| (v.ephemerals().len() == 2).then_some(()))
        .await
        .unwrap();

    // Save, list (with a Run button), run through the button.
    s.fake
        .send_command(
            &SlashCommand::new("/savefunc", "weekly | Volume this week | result = 1 + 1"),
            WAIT,
        )
        .await
        .unwrap();
    let saved = message_with(&s.fake, "Saved Function").await;
    assert_eq!(saved.channel, fake::CHANNEL);
    s.fake
        .send_command(&SlashCommand::new("/listfuncs", ""), WAIT)
        .await
        .unwrap();
    let list = message_with(&s.fake, "All Saved Functions").await;
    let before = s.fake.ephemerals().len();
    let ack = s
        .fake
        .click(&list, "run_func_weekly", "U0BOB", WAIT)
        .await
        .unwrap();
    assert!(ack.payload.is_none());
    // No pool here: the placeholder is shown, then replaced by an ephemeral
    // refusal and deleted (chat.update cannot make a message ephemeral).
    let refusal = s
        .fake
        .wait_for("the refusal", WAIT, move |v| {
            v.ephemerals().get(before).cloned()
        })
        .await
        .unwrap();
    assert_eq!(refusal.user, "U0BOB");
    assert!(refusal.text.contains("no sandbox pool"), "{}", refusal.text);
    let placeholder = s
        .fake
        .messages()
        .into_iter()
        .find(|m| m.text.contains("Executing `weekly`"))
        .expect("a placeholder was posted");
    assert!(placeholder.deleted);

    // A payload slack-morphism's types reject (a field they require is
    // gone): acknowledged, and the press is still taken.
    let before = s.fake.ephemerals().len();
    let ack = s
        .fake
        .click_edited(
            &list,
            "run_func_weekly",
            "U0CAROL",
            |p| {
                p.as_object_mut().unwrap().remove("api_app_id");
            },
            WAIT,
        )
        .await
        .unwrap();
    assert!(ack.payload.is_none());
    let refusal = s
        .fake
        .wait_for("the refusal", WAIT, move |v| {
            v.ephemerals().get(before).cloned()
        })
        .await
        .unwrap();
    assert_eq!(refusal.user, "U0CAROL");

    // Delete.
    s.fake
        .send_command(&SlashCommand::new("/delfunc", "weekly"), WAIT)
        .await
        .unwrap();
    message_with(&s.fake, "Deleted function").await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_checks_signatures_and_ignores_retries() {
    let s = setup();
    let app = SlackApp::start(pipeline(&s.db), settings(&s.fake, false))
        .await
        .unwrap();
    assert!(app.describe().starts_with("Slack: HTTP endpoints"));
    assert_eq!(s.fake.connections_opened(), 0);
    let base = serve_http(&app).await;
    let save = SlashCommand::new("/savefunc", "f1 | one | result = 1");

    for (sign, why) in [
        (Sign::Bad, "bad signature"),
        (Sign::Stale, "stale or invalid timestamp"),
        (Sign::Missing, "missing x-slack-signature"),
    ] {
        let answer = s.fake.http_command(&base, &save, sign, None).await.unwrap();
        assert_eq!(answer.status, 401, "{sign:?}: {}", answer.body);
        assert!(answer.body.contains(why), "{sign:?}: {}", answer.body);
    }
    let answer = s
        .fake
        .http_command(&base, &save, Sign::Good, None)
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.is_empty(), "{}", answer.body);
    message_with(&s.fake, "Saved Function").await;
    // Slack retries the same delivery: acknowledged, not run again.
    let retry = s
        .fake
        .http_command(&base, &save, Sign::Good, Some((1, &answer.trigger_id)))
        .await
        .unwrap();
    assert_eq!(retry.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(audit_count(&s.db, Action::Savefunc), 1);
    assert_eq!(
        s.fake
            .messages()
            .iter()
            .filter(|m| m.all_text().contains("Saved Function"))
            .count(),
        1
    );

    // A button press over HTTP, signed; and one badly signed.
    s.fake
        .http_command(
            &base,
            &SlashCommand::new("/listfuncs", ""),
            Sign::Good,
            None,
        )
        .await
        .unwrap();
    let list = message_with(&s.fake, "All Saved Functions").await;
    let bad = s
        .fake
        .http_click(&base, &list, "run_func_f1", "U0BOB", Sign::Bad)
        .await
        .unwrap();
    assert_eq!(bad.status, 401);
    let good = s
        .fake
        .http_click(&base, &list, "run_func_f1", "U0BOB", Sign::Good)
        .await
        .unwrap();
    assert_eq!(good.status, 200);
    s.fake
        .wait_for("the refusal", WAIT, |v| {
            v.ephemerals().iter().find(|e| e.user == "U0BOB").cloned()
        })
        .await
        .unwrap();
    assert!(s
        .fake
        .messages()
        .iter()
        .any(|m| m.deleted && m.text.contains("Executing `f1`")));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_url_takes_over_where_the_bot_cannot_post() {
    let s = setup();
    s.fake.deny_channel("G0PRIVATE", "not_in_channel");
    s.fake.deny_channel("D0OTHERS", "channel_not_found");
    let app = socket_app(&s).await;
    let save = SlashCommand::new("/savefunc", "p1 | private | result = 1").channel("G0PRIVATE");
    let ack = s.fake.send_command(&save, WAIT).await.unwrap();
    let trigger = ack.trigger_id.clone();
    let post = s
        .fake
        .wait_for("a response_url post", WAIT, move |v| {
            v.responses()
                .iter()
                .find(|r| r.trigger_id == trigger)
                .cloned()
        })
        .await
        .unwrap();
    assert!(post.in_channel(), "{:?}", post.body);
    assert!(post.all_text().contains("Saved Function"));
    assert_eq!(
        s.fake.calls_of("chat.postMessage")[0].failed.as_deref(),
        Some("not_in_channel")
    );

    // A refusal in a DM between others: postEphemeral fails, the
    // response_url carries it, ephemeral.
    let ack = s
        .fake
        .send_command(
            &SlashCommand::new("/delfunc", "nope").channel("D0OTHERS"),
            WAIT,
        )
        .await
        .unwrap();
    let trigger = ack.trigger_id.clone();
    let post = s
        .fake
        .wait_for("an ephemeral response", WAIT, move |v| {
            v.responses()
                .iter()
                .find(|r| r.trigger_id == trigger)
                .cloned()
        })
        .await
        .unwrap();
    assert!(!post.in_channel());
    assert!(post.all_text().contains("not found"), "{}", post.all_text());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_are_retried_then_reported() {
    let s = setup();
    let app = socket_app(&s).await;

    // 429 with Retry-After: 1 -> waits at least a second, then posts.
    s.fake.fail(
        "chat.postMessage",
        &[Failure::RateLimited { retry_after: 1 }],
    );
    s.fake
        .send_command(&SlashCommand::new("/savefunc", "r1 | x | result = 1"), WAIT)
        .await
        .unwrap();
    message_with(&s.fake, "`r1`").await;
    let calls = s.fake.calls_of("chat.postMessage");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].failed.as_deref(), Some("429 retry-after 1"));
    let gap = calls[1].at.duration_since(calls[0].at);
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");

    // Two 500s, then it works.
    s.fake.fail(
        "chat.postMessage",
        &[Failure::ServerError, Failure::ServerError],
    );
    s.fake
        .send_command(&SlashCommand::new("/savefunc", "r2 | x | result = 1"), WAIT)
        .await
        .unwrap();
    message_with(&s.fake, "`r2`").await;
    assert_eq!(s.fake.calls_of("chat.postMessage").len(), 5);

    // 500 on every attempt: given up after 5, and the user is told.
    s.fake
        .fail("chat.postMessage", &vec![Failure::ServerError; 5]);
    let ack = s
        .fake
        .send_command(&SlashCommand::new("/savefunc", "r3 | x | result = 1"), WAIT)
        .await
        .unwrap();
    let trigger = ack.trigger_id.clone();
    let report = s
        .fake
        .wait_for("the failure report", WAIT, move |v| {
            v.responses()
                .iter()
                .find(|r| r.trigger_id == trigger)
                .cloned()
        })
        .await
        .unwrap();
    assert!(!report.in_channel());
    let text = report.all_text();
    assert!(
        text.contains("could not post the result") && text.contains("failed 5 times"),
        "{text}"
    );
    assert_eq!(s.fake.calls_of("chat.postMessage").len(), 10);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_reconnect_and_no_command_is_lost_or_run_twice() {
    let s = setup();
    let app = socket_app(&s).await;
    let connected = s.fake.sockets_connected();

    // The socket drops right after the envelope is sent, before the app can
    // acknowledge it: the fake redelivers on the next connection; the
    // command runs once.
    s.fake.drop_after_delivery(1);
    let ack = s
        .fake
        .send_command(
            &SlashCommand::new("/savefunc", "once | x | result = 1"),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(ack.deliveries, 2, "delivered again after the drop");
    message_with(&s.fake, "`once`").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(audit_count(&s.db, Action::Savefunc), 1);
    assert!(s.fake.sockets_connected() > connected);

    // A plain drop, then Slack's refresh: each time the app reconnects and
    // the next command works.
    s.fake.drop_sockets();
    s.fake
        .wait_for("a reconnection", WAIT, move |v| {
            (v.sockets_connected() >= connected + 2 && v.live_sockets() >= 1).then_some(())
        })
        .await
        .unwrap();
    s.fake
        .send_command(
            &SlashCommand::new("/savefunc", "after_drop | x | result = 1"),
            WAIT,
        )
        .await
        .unwrap();
    message_with(&s.fake, "`after_drop`").await;
    let now = s.fake.sockets_connected();
    s.fake
        .disconnect("refresh_requested", Duration::from_secs(2));
    s.fake
        .wait_for("a reconnection after refresh", WAIT, move |v| {
            (v.sockets_connected() > now).then_some(())
        })
        .await
        .unwrap();
    s.fake
        .send_command(
            &SlashCommand::new("/savefunc", "after_refresh | x | result = 1"),
            WAIT,
        )
        .await
        .unwrap();
    message_with(&s.fake, "`after_refresh`").await;
    assert_eq!(audit_count(&s.db, Action::Savefunc), 3);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_advice() {
    let s = setup();
    let mut bad = settings(&s.fake, true);
    bad.bot_token = "xoxb-wrong".into();
    let err = SlackApp::start(pipeline(&s.db), bad).await.err().unwrap();
    let text = err.to_string();
    assert!(
        text.contains("SLACK_BOT_TOKEN was refused by Slack (invalid_auth)"),
        "{text}"
    );
    let mut bad = settings(&s.fake, true);
    bad.app_token = Some("xapp-wrong".into());
    let text = SlackApp::start(pipeline(&s.db), bad)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        text.contains("SLACK_APP_TOKEN was refused by Slack (invalid_auth)"),
        "{text}"
    );
    // Missing scopes are named in the banner.
    s.fake.set_scopes("commands,chat:write");
    let app = SlackApp::start(pipeline(&s.db), settings(&s.fake, false))
        .await
        .unwrap();
    assert!(
        app.describe()
            .contains("MISSING SCOPES files:write, files:read"),
        "{}",
        app.describe()
    );
    app.shutdown().await;
}
