//! The pipeline without a sandbox: a scripted executor
//! ([`crate::executor::fake`]) answers the jobs, the stores are SQLite files
//! in a temporary folder (or backends that fail), and every path is checked
//! for its reply, what reached the executor and what the audit trail holds.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;
use tradebox_data::timestamp::Micros;
use tradebox_db::DbError;
use tradebox_sandbox::{Artifact, DataAsOf, ExecResult, Origin};

use super::*;
use crate::audit::{AuditFilter, AuditRecord};
use crate::config::PermissionsSection;
use crate::executor::fake::{raised, success, timed_out, FakeExecutor, Step};
use crate::functions::{FunctionBackend, FunctionTx};
use crate::ratelimit::{RateLimitBackend, RateLimitTx};

// ---------------------------------------------------------------------------
// Set-up.

/// How a test pipeline is built; [`Setup::build`] makes it.
struct Setup {
    /// `None`: no executor (front ends that only manage functions).
    executor: Option<FakeExecutor>,
    settings: Settings,
    permissions: PermissionsSection,
    admins: Vec<String>,
    rate_limit: (u32, Duration),
    broken_limiter: bool,
    broken_functions: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            executor: Some(FakeExecutor::new()),
            settings: Settings {
                timeout: Duration::from_secs(30),
                memory_mib: 1024,
                output_limit: 1 << 20,
                as_of: Some("latest".into()),
                max_code_bytes: 20_000,
                validator: Some(tradebox_validate::Rules::default()),
                per_user_running: 2,
                per_user_waiting: 8,
            },
            permissions: PermissionsSection::default(),
            admins: Vec::new(),
            rate_limit: (10, Duration::from_secs(60)),
            broken_limiter: false,
            broken_functions: false,
        }
    }
}

/// A pipeline, its executor and its store file.
struct Harness {
    _dir: TempDir,
    path: PathBuf,
    executor: Option<Arc<FakeExecutor>>,
    pipeline: Pipeline,
}

impl Setup {
    fn with(executor: FakeExecutor) -> Setup {
        Setup {
            executor: Some(executor),
            ..Setup::default()
        }
    }

    fn build(self) -> Harness {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("tradebox.db");
        let functions = if self.broken_functions {
            FunctionStore::new(Arc::new(Broken))
        } else {
            FunctionStore::open(&path).unwrap()
        };
        let (n, window) = self.rate_limit;
        let limiter = if self.broken_limiter {
            RateLimiter::new(Arc::new(Broken), n, window).unwrap()
        } else {
            RateLimiter::open(&path, n, window).unwrap()
        };
        let mut permissions = Permissions::new(&self.permissions);
        for admin in self.admins {
            permissions = permissions.with_admin(admin);
        }
        let executor = self.executor.map(Arc::new);
        let pipeline = Pipeline::new(
            executor.clone().map(|e| e as Arc<dyn Executor>),
            functions,
            AuditLog::open(&path).unwrap(),
            limiter,
            permissions,
            self.settings,
        );
        Harness {
            _dir: dir,
            path,
            executor,
            pipeline,
        }
    }
}

impl Harness {
    fn executor(&self) -> &FakeExecutor {
        self.executor.as_deref().unwrap()
    }

    /// Handles `line` typed by `user` in channel C1 (Slack); returns the
    /// reply and the placeholders shown.
    async fn run(&self, user: &str, line: &str) -> (Reply, Vec<Reply>) {
        self.send(&request(user, Input::Line(line.into()))).await
    }

    async fn send(&self, req: &Request) -> (Reply, Vec<Reply>) {
        let shown = Mutex::new(Vec::new());
        let reply = self
            .pipeline
            .handle(req, |p| shown.lock().unwrap().push(p))
            .await;
        (reply, shown.into_inner().unwrap())
    }

    /// The audit trail, oldest first.
    fn audit(&self) -> Vec<AuditRecord> {
        let mut rows = AuditLog::open(&self.path)
            .unwrap()
            .query(&AuditFilter::default())
            .unwrap();
        rows.reverse();
        rows
    }

    /// The only audit row.
    fn audited(&self) -> AuditEntry {
        let rows = self.audit();
        assert_eq!(rows.len(), 1, "{rows:#?}");
        rows[0].entry.clone()
    }

    fn save(&self, name: &str, description: &str, code: &str, user: &str) {
        FunctionStore::open(&self.path)
            .unwrap()
            .save(name, description, code, user, false)
            .unwrap();
    }
}

fn request(user: &str, input: Input) -> Request {
    Request {
        user: user.into(),
        channel: Some("C1".into()),
        source: Source::Slack,
        input,
    }
}

/// A store whose every transaction fails as a locked file does.
struct Broken;

fn locked() -> StoreError {
    StoreError::Db(DbError::Locked {
        path: "/srv/tradebox/tradebox.db".into(),
    })
}

impl FunctionBackend for Broken {
    fn write(&self, _: FunctionTx<'_>) -> Result<(), StoreError> {
        Err(locked())
    }
    fn read(&self, _: FunctionTx<'_>) -> Result<(), StoreError> {
        Err(locked())
    }
}

impl RateLimitBackend for Broken {
    fn write(&self, _: RateLimitTx<'_>) -> Result<(), StoreError> {
        Err(locked())
    }
    fn read(&self, _: RateLimitTx<'_>) -> Result<(), StoreError> {
        Err(locked())
    }
}

/// The texts of a reply's blocks, one string each, for comparisons.
fn texts(reply: &Reply) -> Vec<String> {
    reply
        .blocks
        .iter()
        .map(|b| match b {
            Block::Header { text } => format!("header: {text}"),
            Block::Text { text, button } => match button {
                Some(b) => format!("text: {text} [{}]", b.action_id),
                None => format!("text: {text}"),
            },
            Block::Code { label, text } => format!("code {label:?}: {text}"),
            Block::Result { label, text, .. } => format!("result {label:?}: {text}"),
            Block::Image { file, alt } => format!("image: {file} ({alt})"),
            Block::Context { items } => format!("context: {}", items.join(" | ")),
            Block::Buttons { .. } => "buttons".into(),
            Block::Divider => "divider".into(),
        })
        .collect()
}

/// Checks a refusal: ephemeral `:x: message`, nothing ran.
fn assert_refused(reply: &Reply, message: &str) {
    assert!(reply.error, "{reply:?}");
    assert_eq!(reply.visibility, Visibility::Ephemeral);
    assert_eq!(reply.fallback, format!(":x: {message}"));
}

// ---------------------------------------------------------------------------
// Success.

#[tokio::test]
async fn analyze_runs_the_job_and_replies_like_the_original_bot() {
    let h = Setup::with(FakeExecutor::new().answer(success("42", 12))).build();
    let (reply, shown) = h.run("U1", "/analyze result = 6 * 7").await;

    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].fallback, ":hourglass_flowing_sand: Analyzing...");
    assert!(!reply.error);
    assert_eq!(reply.visibility, Visibility::InChannel);
    assert_eq!(reply.fallback, "Analysis complete: 42");
    assert_eq!(
        texts(&reply),
        [
            "header: Analysis Result",
            "result None: 42",
            "context: Executed in 12ms by <@U1>",
        ]
    );

    let jobs = h.executor().jobs();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.code, "result = 6 * 7");
    assert_eq!(job.timeout, Duration::from_secs(30));
    assert_eq!((job.memory_mib, job.output_limit), (1024, 1 << 20));
    assert_eq!(job.as_of.as_deref(), Some("latest"));
    assert!(job.params.is_empty());

    let e = h.audited();
    assert_eq!(
        (e.action, e.outcome, e.source),
        (Action::Analyze, Outcome::Ok, Source::Slack)
    );
    assert_eq!(e.code.as_deref(), Some("result = 6 * 7"));
    assert_eq!(
        (e.user_id.as_str(), e.channel.as_deref()),
        ("U1", Some("C1"))
    );
    assert!(e.duration_ms.is_some());
    assert_eq!(h.pipeline.in_flight(), 0);
}

#[tokio::test]
async fn code_with_nothing_to_show_says_none() {
    let mut r = success("", 5);
    r.result = None;
    let h = Setup::with(FakeExecutor::new().answer(r)).build();
    let (reply, _) = h.run("U1", "/analyze x = 1").await;
    assert_eq!(
        texts(&reply),
        [
            "header: Analysis Result",
            "result None: None",
            "context: Executed in 5ms by <@U1>",
        ]
    );
}

#[tokio::test]
async fn code_without_a_result_shows_its_output_and_files_and_no_none_section() {
    let mut r = success("", 5);
    r.result = None;
    r.output = "hello\n".into();
    r.artifacts = vec![
        Artifact {
            kind: "png".into(),
            name: "figure-1.png".into(),
            mime: "image/png".into(),
            data_b64: "iVBORw0KGgo=".into(),
            size: 8,
            truncated: false,
        },
        Artifact {
            kind: "csv".into(),
            name: "table-1.csv".into(),
            mime: "text/csv".into(),
            data_b64: "YSxiCjEsMgo=".into(),
            size: 8,
            truncated: false,
        },
    ];
    let h = Setup::with(FakeExecutor::new().answer(r)).build();
    let (reply, _) = h.run("U1", "/analyze print('hello')").await;
    assert_eq!(reply.fallback, "Analysis complete: None");
    // No "None" section above what the code printed and drew.
    assert_eq!(
        texts(&reply),
        [
            "header: Analysis Result",
            "code Some(\"Output\"): hello",
            "image: figure-1.png (Figure 1)",
            "context: Executed in 5ms by <@U1>",
        ]
    );
    let files: Vec<(&str, &str, usize)> = reply
        .files
        .iter()
        .map(|f| (f.name.as_str(), f.title.as_str(), f.size))
        .collect();
    assert_eq!(
        files,
        [
            ("figure-1.png", "Figure 1", 8),
            ("table-1.csv", "Full table (CSV)", 8)
        ]
    );
}

/// A successful answer based on snapshot v3, whose newest trade is at
/// 2026-11-01 09:30 UTC.
fn success_on_data(result: &str, ms: u64) -> ExecResult {
    ExecResult {
        data_as_of: Some(DataAsOf {
            snapshot: 3,
            newest_trade: Some("2026-11-01T09:30:15Z".into()),
            as_of: None,
        }),
        ..success(result, ms)
    }
}

#[tokio::test]
async fn answers_say_what_data_they_are_based_on() {
    let h = Setup::with(
        FakeExecutor::new()
            .answer(success_on_data("42", 12))
            .answer(success_on_data("7", 3)),
    )
    .build();
    let (reply, _) = h.run("U1", "/analyze result = 6 * 7").await;
    assert_eq!(
        texts(&reply).last().map(String::as_str),
        Some("context: Executed in 12ms by <@U1> | data to 2026-11-01 09:30 UTC (snapshot v3)")
    );
    h.save("weekly", "Volume this week", "result = 7", "U2");
    let (reply, _) = h.run("U1", "/runfunc weekly").await;
    assert_eq!(
        texts(&reply).last().map(String::as_str),
        Some(
            "context: Executed in 3ms by <@U1> | data to 2026-11-01 09:30 UTC (snapshot v3) \
             | Created by <@U2> | Used 1x"
        )
    );
}

#[tokio::test]
async fn parameters_a_function_does_not_read_are_said_to_change_nothing() {
    let h = Setup::with(
        FakeExecutor::new()
            .answer(success("7", 3))
            .answer(success("7", 3))
            .answer(success("7", 3))
            .answer(success("7", 3)),
    )
    .build();
    h.save("fixed", "7 days", "result = len(load_trades(days=7))", "U2");
    h.save("some", "by days", "result = params.get('days', 7)", "U2");
    h.save("any", "all of them", "result = sorted(params)", "U2");

    let (reply, _) = h.run("U1", "/runfunc fixed days=14").await;
    let t = texts(&reply);
    assert_eq!(
        t[2],
        "text: :warning: `fixed` does not read `days` from `params`: it was ignored, \
         and this result does not depend on it."
    );
    assert!(t[4].contains("| Parameters: days=14 |"), "{t:?}");

    let (reply, _) = h.run("U1", "/runfunc some days=14 exchange=kraken").await;
    let t = texts(&reply);
    assert_eq!(
        t[2],
        "text: :warning: `some` does not read `exchange` from `params`: it was ignored, \
         and this result does not depend on it."
    );
    assert!(
        t[4].contains("| Parameters: days=14, exchange=kraken |"),
        "{t:?}"
    );

    // Read in a way that cannot be decided: no warning.
    let (reply, _) = h.run("U1", "/runfunc any days=14 x=1").await;
    assert!(
        !texts(&reply).iter().any(|l| l.contains(":warning:")),
        "{reply:?}"
    );
    // No parameters given: nothing to say.
    let (reply, _) = h.run("U1", "/runfunc fixed").await;
    let t = texts(&reply);
    assert!(
        !t.iter()
            .any(|l| l.contains(":warning:") || l.contains("Parameters")),
        "{t:?}"
    );

    // The cards say which parameters each function reads.
    let (reply, _) = h.run("U1", "/listfuncs").await;
    let t = texts(&reply).join("\n");
    assert!(t.contains("Parameters: `days`"), "{t}");
    assert!(t.contains("Parameters: any (`params`)"), "{t}");
}

#[tokio::test]
async fn runfunc_passes_params_counts_the_use_and_audits_the_version() {
    let h = Setup::with(FakeExecutor::new().answer(success("7", 3))).build();
    h.save(
        "weekly",
        "Volume this week",
        "result = params['days']",
        "U2",
    );
    let (reply, shown) = h.run("U1", "/runfunc weekly days=14").await;

    assert_eq!(
        shown[0].fallback,
        ":hourglass_flowing_sand: Executing `weekly`..."
    );
    assert_eq!(reply.fallback, "weekly: 7");
    assert_eq!(
        texts(&reply),
        [
            "header: weekly",
            "text: Volume this week",
            "result Some(\"Result\"): 7",
            "context: Executed in 3ms by <@U1> | Parameters: days=14 | Created by <@U2> | Used 1x",
        ]
    );
    let job = &h.executor().jobs()[0];
    assert_eq!(job.code, "result = params['days']");
    assert_eq!(job.params.get("days"), Some(&serde_json::json!(14)));

    let e = h.audited();
    assert_eq!((e.action, e.outcome), (Action::Runfunc, Outcome::Ok));
    assert_eq!(e.function_name.as_deref(), Some("weekly"));
    assert_eq!(e.function_version, Some(1));
    assert_eq!(e.detail.as_deref(), Some("params: {\"days\":14}"));
    assert_eq!(
        h.pipeline
            .functions()
            .get("weekly")
            .unwrap()
            .unwrap()
            .use_count,
        1
    );
}

#[tokio::test]
async fn the_run_button_runs_the_function_and_is_audited_as_a_button() {
    let h = Setup::default().build();
    h.save("pnl", "", "result = 1", "U1");
    let (reply, _) = h
        .send(&request(
            "U1",
            Input::Action {
                action_id: "run_func_pnl".into(),
                value: "pnl".into(),
            },
        ))
        .await;
    assert_eq!(reply.fallback, "pnl: 1");
    assert!(texts(&reply).contains(&"text: _no description_".to_string()));
    assert_eq!(h.audited().action, Action::RunButton);
}

#[tokio::test]
async fn a_failing_snippet_is_an_error_reply_and_an_error_row() {
    let h =
        Setup::with(FakeExecutor::new().answer(raised("ZeroDivisionError", "division by zero", 4)))
            .build();
    let (reply, _) = h.run("U1", "/analyze result = 1 / 0").await;
    assert!(reply.error);
    assert_eq!(reply.visibility, Visibility::InChannel);
    assert!(
        reply.fallback.starts_with("Analysis failed: Traceback"),
        "{}",
        reply.fallback
    );
    assert_eq!(texts(&reply)[0], "text: :x: *Error*");
    assert!(texts(&reply)[1].ends_with("ZeroDivisionError: division by zero"));
    let e = h.audited();
    assert_eq!(e.outcome, Outcome::Error);
    assert_eq!(e.error_type.as_deref(), Some("ZeroDivisionError"));
    assert_eq!(e.detail.as_deref(), Some("division by zero"));

    // A failing function says "Error", and still counts its use.
    let h = Setup::with(FakeExecutor::new().answer(raised("KeyError", "'x'", 4))).build();
    h.save("broken", "", "result = {}['x']", "U1");
    let (reply, _) = h.run("U1", "/runfunc broken").await;
    assert!(reply.fallback.starts_with("Error: Traceback"));
    assert_eq!(
        h.pipeline
            .functions()
            .get("broken")
            .unwrap()
            .unwrap()
            .use_count,
        1
    );
}

// ---------------------------------------------------------------------------
// Timeouts.

#[tokio::test]
async fn a_timeout_is_audited_as_a_timeout() {
    let limit = Duration::from_secs(30);
    let h = Setup::with(FakeExecutor::new().answer(timed_out(limit))).build();
    let (reply, _) = h.run("U1", "/analyze while True: pass").await;
    assert!(reply.error);
    assert_eq!(
        reply.fallback,
        "Analysis failed: Timeout: timed out: the code ran longer than its limit of 30 s and was stopped"
    );
    let e = h.audited();
    assert_eq!(e.outcome, Outcome::Timeout);
    assert_eq!(e.error_type.as_deref(), Some("Timeout"));

    // Only tradebox decides a timeout: a job that claims one made an error.
    let mut forged = timed_out(limit);
    if let Some(e) = &mut forged.error {
        e.origin = Origin::Job;
    }
    let h = Setup::with(FakeExecutor::new().answer(forged)).build();
    h.run("U1", "/analyze raise TimeoutError").await;
    let e = h.audited();
    assert_eq!(
        (e.outcome, e.error_type.as_deref()),
        (Outcome::Error, Some("Timeout"))
    );
}

#[tokio::test]
async fn run_code_may_shorten_the_timeout_but_not_lengthen_it() {
    let h = Setup::default().build();
    let req = request("U1", Input::Line(String::new()));
    let ten = Duration::from_secs(10);
    let result = h
        .pipeline
        .run_code(&req, "result = 1", Some(ten))
        .await
        .unwrap();
    assert_eq!(result.result.as_deref(), Some("1"));
    h.pipeline
        .run_code(&req, "result = 1", Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    h.pipeline.run_code(&req, "result = 1", None).await.unwrap();
    let timeouts: Vec<Duration> = h.executor().jobs().iter().map(|j| j.timeout).collect();
    assert_eq!(
        timeouts,
        [ten, Duration::from_secs(30), Duration::from_secs(30)]
    );
    let rows = h.audit();
    assert_eq!(rows.len(), 3);
    assert!(rows
        .iter()
        .all(|r| r.entry.action == Action::Analyze && r.entry.outcome == Outcome::Ok));
}

#[tokio::test]
async fn a_slow_answer_comes_after_the_placeholder() {
    let h = Setup::with(FakeExecutor::new().then(Step::delayed(
        success("slow", 250),
        Duration::from_millis(200),
    )))
    .build();
    let order = Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    let reply = h
        .pipeline
        .handle(
            &request("U1", Input::Line("/analyze result = 'slow'".into())),
            |p| order.lock().unwrap().push(p.fallback),
        )
        .await;
    order.lock().unwrap().push(reply.fallback);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        order.into_inner().unwrap(),
        [
            ":hourglass_flowing_sand: Analyzing...",
            "Analysis complete: slow"
        ]
    );
}

// ---------------------------------------------------------------------------
// Refusals: each is a reply for the user only, and an audit row.

#[tokio::test]
async fn refused_permission() {
    let h = Setup {
        permissions: PermissionsSection {
            execute_users: vec!["U9".into()],
            ..PermissionsSection::default()
        },
        admins: vec!["ADMIN".into()],
        ..Setup::default()
    }
    .build();
    let (reply, shown) = h.run("U1", "/analyze result = 1").await;
    assert!(shown.is_empty());
    assert!(reply.error && reply.visibility == Visibility::Ephemeral);
    assert!(
        reply
            .fallback
            .contains("not on the list of users allowed to run code"),
        "{}",
        reply.fallback
    );
    assert!(h.executor().jobs().is_empty());
    let e = h.audited();
    assert_eq!(e.outcome, Outcome::RefusedPermission);
    assert_eq!(Some(&reply.fallback[4..]), e.detail.as_deref());

    // The typed refusal of the API.
    let req = request("U1", Input::Line(String::new()));
    let refusal = h
        .pipeline
        .run_code(&req, "result = 1", None)
        .await
        .unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Permission);
    assert_eq!(h.audit().len(), 2);

    // An admin may.
    let (reply, _) = h.run("ADMIN", "/analyze result = 1").await;
    assert!(!reply.error);
}

#[tokio::test]
async fn a_syntax_error_shows_pythons_words_and_the_line_with_a_caret() {
    let h = Setup::default().build();
    let code = "df = load_trades(days=7)\nresult = df.groupby('exchange')['amount'].sum(";
    let (reply, _) = h.run("U1", &format!("/analyze {code}")).await;
    assert!(reply.error);
    assert_eq!(
        texts(&reply),
        [
            "text: :x: Code validation failed: line 2, column 46: '(' was never closed",
            "code None: result = df.groupby('exchange')['amount'].sum(\n\
             \x20                                            ^",
        ]
    );
    assert!(h.executor().jobs().is_empty());
}

#[tokio::test]
async fn refused_validation() {
    let h = Setup::default().build();
    let (reply, shown) = h.run("U1", "/analyze import os").await;
    assert!(shown.is_empty());
    assert!(
        reply
            .fallback
            .starts_with(":x: Code validation failed: line 1"),
        "{}",
        reply.fallback
    );
    assert!(reply.fallback.contains("os"));
    assert!(h.executor().jobs().is_empty());
    let e = h.audited();
    assert_eq!(e.outcome, Outcome::RefusedValidation);
    assert_eq!(e.error_type.as_deref(), Some("ValidationError"));
    assert_eq!(e.code.as_deref(), Some("import os"));

    let refusal = h
        .pipeline
        .run_code(
            &request("U1", Input::Line(String::new())),
            "import os",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Validation);

    // With the validator off, the same code runs.
    let h = Setup {
        settings: Settings {
            validator: None,
            ..Setup::default().settings
        },
        ..Setup::default()
    }
    .build();
    let (reply, _) = h.run("U1", "/analyze import os").await;
    assert!(!reply.error);
}

#[tokio::test]
async fn refused_rate_limit_with_the_limiters_numbers() {
    let h = Setup {
        rate_limit: (2, Duration::from_secs(90)),
        ..Setup::default()
    }
    .build();
    for _ in 0..2 {
        let (reply, _) = h.run("U1", "/analyze result = 1").await;
        assert!(!reply.error);
    }
    let (reply, shown) = h.run("U1", "/analyze result = 1").await;
    assert!(shown.is_empty());
    assert!(
        reply
            .fallback
            .starts_with(":x: Rate limit exceeded. Max 2 executions per 90s. Try again in "),
        "{}",
        reply.fallback
    );
    assert_eq!(h.executor().jobs().len(), 2);
    let rows = h.audit();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2].entry.outcome, Outcome::RefusedRateLimit);

    // Another user has their own window; the API gets the retry time.
    assert!(!h.run("U2", "/analyze result = 1").await.0.error);
    let refusal = h
        .pipeline
        .run_code(
            &request("U1", Input::Line(String::new())),
            "result = 1",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::RateLimit);
    let retry = refusal.retry_after_seconds.unwrap();
    assert!((1..=90).contains(&retry), "{retry}");
    assert_eq!(
        refusal.message,
        format!("Rate limit exceeded. Max 2 executions per 90s. Try again in {retry}s.")
    );
}

#[tokio::test]
async fn refused_when_the_rate_limiter_fails_and_audited() {
    let h = Setup {
        broken_limiter: true,
        ..Setup::default()
    }
    .build();
    let (reply, shown) = h.run("U1", "/analyze result = 1").await;
    assert!(shown.is_empty());
    assert_refused(
        &reply,
        "the rate limiter failed: store /srv/tradebox/tradebox.db is locked by another \
         process; nothing was changed, try again in a moment",
    );
    assert!(h.executor().jobs().is_empty());
    let e = h.audited();
    assert_eq!((e.action, e.outcome), (Action::Analyze, Outcome::Error));
    assert_eq!(e.detail.as_deref(), Some(&reply.fallback[4..]));

    let refusal = h
        .pipeline
        .run_code(
            &request("U1", Input::Line(String::new())),
            "result = 1",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Unavailable);
    assert_eq!(h.audit().len(), 2);
}

#[tokio::test]
async fn refused_when_the_users_running_and_waiting_places_are_taken() {
    let h = Setup {
        executor: Some(FakeExecutor::with_fallback(Step::Hold)),
        settings: Settings {
            per_user_running: 1,
            per_user_waiting: 1,
            ..Setup::default().settings
        },
        ..Setup::default()
    }
    .build();
    let h = Arc::new(h);
    let spawn = |user: &'static str| {
        let h = Arc::clone(&h);
        tokio::spawn(async move { h.run(user, "/analyze result = 1").await.0 })
    };
    // U1's first job runs (held by the executor), the second waits for it.
    let running = spawn("U1");
    let waiting = spawn("U1");
    wait_until(|| h.executor().held() == 1 && h.pipeline.in_flight() == 2).await;
    assert_eq!(
        h.executor().jobs().len(),
        1,
        "the waiting job is not submitted"
    );

    // A third finds both places taken (after the placeholder was shown).
    let (reply, shown) = h.run("U1", "/analyze result = 1").await;
    assert_eq!(shown.len(), 1);
    assert_refused(
        &reply,
        "You already have 1 jobs running and 1 waiting; try again when one has finished.",
    );
    let refused: Vec<AuditRecord> = h
        .audit()
        .into_iter()
        .filter(|r| r.entry.outcome == Outcome::RefusedQueueFull)
        .collect();
    assert_eq!(refused.len(), 1);
    let refusal = h
        .pipeline
        .run_code(
            &request("U1", Input::Line(String::new())),
            "result = 1",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Busy);

    // Another user is not held up by U1.
    let other = spawn("U2");
    wait_until(|| h.executor().held() == 2).await;

    // Answers free the places: the waiting job goes next.
    assert!(h.executor().release(success("first", 1)));
    assert_eq!(running.await.unwrap().fallback, "Analysis complete: first");
    assert!(h.executor().release(success("other", 1)));
    assert_eq!(other.await.unwrap().fallback, "Analysis complete: other");
    wait_until(|| h.executor().held() == 1).await;
    assert!(h.executor().release(success("second", 1)));
    assert_eq!(waiting.await.unwrap().fallback, "Analysis complete: second");
    assert_eq!(h.pipeline.in_flight(), 0);
    let jobs = h.executor().jobs().len();
    assert_eq!(jobs, 3);
}

#[tokio::test]
async fn refused_when_the_executors_queue_is_full() {
    let h = Setup::with(FakeExecutor::new().then(Step::QueueFull(64))).build();
    let (reply, shown) = h.run("U1", "/analyze result = 1").await;
    // The placeholder was already shown; the refusal replaces it.
    assert_eq!(shown.len(), 1);
    assert_refused(
        &reply,
        "The sandbox is busy (64 jobs waiting); try again in a moment.",
    );
    let e = h.audited();
    assert_eq!(e.outcome, Outcome::RefusedQueueFull);
    assert_eq!(h.pipeline.in_flight(), 0, "the place in line is freed");

    h.executor().push(Step::QueueFull(64));
    let refusal = h
        .pipeline
        .run_code(
            &request("U1", Input::Line(String::new())),
            "result = 1",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Overloaded);
}

#[tokio::test]
async fn refused_when_the_executor_is_unavailable() {
    let h = Setup::with(
        FakeExecutor::new()
            .then(Step::Unavailable("the sandbox pool has stopped".into()))
            .then(Step::Stop),
    )
    .build();
    let (reply, _) = h.run("U1", "/analyze result = 1").await;
    assert_refused(
        &reply,
        "the sandbox is unavailable: the sandbox pool has stopped",
    );
    assert_eq!(h.audited().outcome, Outcome::Error);

    // Accepted, then never answered.
    let (reply, _) = h.run("U1", "/analyze result = 1").await;
    assert_refused(&reply, "the sandbox stopped before answering");
    let rows = h.audit();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].entry.outcome, Outcome::Error);
    assert_eq!(
        rows[1].entry.detail.as_deref(),
        Some("the sandbox stopped before answering")
    );
    assert_eq!(h.pipeline.in_flight(), 0);
}

#[tokio::test]
async fn refused_when_no_executor_is_running() {
    let h = Setup {
        executor: None,
        ..Setup::default()
    }
    .build();
    let (reply, _) = h.run("U1", "/analyze result = 1").await;
    assert_refused(&reply, "code cannot run here: no sandbox pool is running");
    assert_eq!(h.audited().outcome, Outcome::Error);
    let refusal = h
        .pipeline
        .run_code(
            &request("U1", Input::Line(String::new())),
            "result = 1",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Unavailable);
    // Managing functions needs no executor.
    let (reply, _) = h.run("U1", "/savefunc f | d | result = 1").await;
    assert!(!reply.error, "{reply:?}");
}

#[tokio::test]
async fn refused_when_the_function_store_fails() {
    let h = Setup {
        broken_functions: true,
        ..Setup::default()
    }
    .build();
    let locked = "store /srv/tradebox/tradebox.db is locked by another process; nothing was \
                  changed, try again in a moment";

    let (reply, shown) = h.run("U1", "/runfunc pnl").await;
    assert!(shown.is_empty());
    assert_refused(&reply, locked);
    let e = h.audited();
    assert_eq!((e.action, e.outcome), (Action::Runfunc, Outcome::Error));
    assert_eq!(e.function_name.as_deref(), Some("pnl"));

    let (reply, _) = h.run("U1", "/savefunc pnl | d | result = 1").await;
    assert_refused(&reply, &format!("Failed to save function: {locked}"));
    let (reply, _) = h.run("U1", "/delfunc pnl").await;
    assert_refused(
        &reply,
        &format!("Failed to delete function `pnl`: {locked}"),
    );
    let rows = h.audit();
    let outcomes: Vec<(Action, Outcome)> = rows
        .iter()
        .map(|r| (r.entry.action.clone(), r.entry.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (Action::Runfunc, Outcome::Error),
            (Action::Savefunc, Outcome::Error),
            (Action::Delfunc, Outcome::Error)
        ]
    );

    // Lists answer with the failure (they are not audited).
    let (reply, _) = h.run("U1", "/listfuncs").await;
    assert_refused(&reply, locked);
    let (reply, _) = h.run("U1", "/runfunc").await;
    assert_refused(&reply, locked);
    assert_eq!(h.audit().len(), 3);
    assert!(h.executor().jobs().is_empty());
}

#[tokio::test]
async fn an_unknown_function_is_not_found_with_suggestions() {
    let h = Setup::default().build();
    h.save("daily_pnl", "", "result = 1", "U1");
    let (reply, shown) = h.run("U1", "/runfunc daly_pnl").await;
    assert!(shown.is_empty());
    assert_refused(
        &reply,
        "Function `daly_pnl` not found. Did you mean `daily_pnl`? Use `/runfunc` to see \
         available functions.",
    );
    let e = h.audited();
    assert_eq!(e.outcome, Outcome::NotFound);
    let (reply, _) = h.run("U1", "/runfunc zzz").await;
    assert_refused(
        &reply,
        "Function `zzz` not found. Use `/runfunc` to see available functions.",
    );
}

// ---------------------------------------------------------------------------
// Parsing and the code-size limit.

#[tokio::test]
async fn usage_errors_go_to_the_user_only_and_are_not_audited() {
    let h = Setup::default().build();
    let (reply, _) = h.run("U1", "/analyze").await;
    assert_eq!(reply.visibility, Visibility::Ephemeral);
    assert!(!reply.error, "a usage message is help, not an error");
    assert!(reply.fallback.contains("/analyze <python_code>"));
    let (reply, _) = h.run("U1", "/analyse x").await;
    assert!(reply.error);
    assert!(reply.fallback.starts_with(":x: Unknown command `/analyse`"));
    let (reply, _) = h
        .send(&request(
            "U1",
            Input::Slash {
                command: "/tradebox".into(),
                text: "help".into(),
            },
        ))
        .await;
    assert!(reply.fallback.contains("/savefunc"));
    assert!(h.audit().is_empty());
    assert!(h.executor().jobs().is_empty());
}

#[tokio::test]
async fn the_code_limit_comes_from_the_settings() {
    // 25,000 bytes: over the default, within a configured 30,000.
    let code = format!("result = '{}'", "a".repeat(24_989));
    assert_eq!(code.len(), 25_000);
    let h = Setup::default().build();
    let (reply, _) = h.run("U1", &format!("/analyze {code}")).await;
    assert_refused(
        &reply,
        "The code is 25000 bytes long; the limit is 20000 bytes. Shorten it.",
    );
    assert!(h.executor().jobs().is_empty());

    let h = Setup {
        settings: Settings {
            max_code_bytes: 30_000,
            ..Setup::default().settings
        },
        ..Setup::default()
    }
    .build();
    let (reply, _) = h.run("U1", &format!("/analyze {code}")).await;
    assert!(!reply.error, "{reply:?}");
    assert_eq!(h.executor().jobs()[0].code, code);

    // The validator applies the same limit, also to code that skips the
    // parser (the API).
    let h = Setup {
        settings: Settings {
            max_code_bytes: 10,
            ..Setup::default().settings
        },
        ..Setup::default()
    }
    .build();
    let refusal = h
        .pipeline
        .run_code(
            &request("U1", Input::Line(String::new())),
            "result = 12345",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Validation);
    assert!(
        refusal.message.contains("over the limit of 10 bytes"),
        "{}",
        refusal.message
    );
}

// ---------------------------------------------------------------------------
// Managing functions.

#[tokio::test]
async fn save_list_and_delete_reply_like_the_original_bot() {
    let h = Setup {
        admins: vec!["ADMIN".into()],
        ..Setup::default()
    }
    .build();
    let (reply, _) = h.run("U1", "/savefunc pnl | Daily PnL | result = 1").await;
    assert_eq!(reply.fallback, "Saved function: pnl");
    assert_eq!(
        texts(&reply),
        [
            "text: :white_check_mark: *Saved Function*\n*Name:* `pnl`\n*Description:* Daily PnL\n*Creator:* <@U1>",
            "code Some(\"Code\"): result = 1",
            "context: Use `/runfunc pnl` to execute | Version 1",
        ]
    );
    let e = h.audited();
    assert_eq!((e.action, e.outcome), (Action::Savefunc, Outcome::Ok));
    assert_eq!(e.function_version, Some(1));

    // Someone else may not save over it, or delete it.
    let (reply, _) = h.run("U2", "/savefunc pnl | x | result = 2").await;
    assert_refused(
        &reply,
        "`pnl` belongs to <@U1>; only they or an admin can change it",
    );
    let (reply, _) = h.run("U2", "/delfunc pnl").await;
    assert_refused(&reply, "Only the creator (<@U1>) can delete this function");
    let (reply, _) = h.run("U1", "/savefunc bad | d | import os").await;
    assert!(reply.fallback.starts_with(":x: Code validation failed"));

    h.run("U1", "/runfunc pnl").await;
    let (reply, _) = h.run("U1", "/listfuncs").await;
    assert_eq!(reply.fallback, "All Saved Functions");
    assert_eq!(
        texts(&reply),
        [
            "header: All Saved Functions",
            "text: *`pnl`*\nDaily PnL [run_func_pnl]",
            "context: Created by <@U1> | Used 1x",
            "divider",
            "context: Total: 1 functions | 1 total executions",
        ]
    );
    let (reply, _) = h.run("U1", "/listfuncs nothing").await;
    assert_eq!(reply.fallback, "No functions found.");
    let (reply, _) = h.run("U1", "/listfuncs page=2").await;
    assert_eq!(reply.fallback, "There is no page 2.");
    let (reply, _) = h.run("U1", "/runfunc").await;
    assert_eq!(
        texts(&reply),
        [
            "text: *Available Functions*\n• `pnl` - Daily PnL (used 1x)",
            "context: Use `/runfunc <name>` to execute",
        ]
    );

    let (reply, _) = h.run("ADMIN", "/delfunc pnl").await;
    assert_eq!(reply.fallback, ":white_check_mark: Deleted function `pnl`");
    let e = h.audit().pop().unwrap().entry;
    assert_eq!(
        (e.action, e.outcome, e.function_version),
        (Action::Delfunc, Outcome::Ok, Some(1)),
        "a delete is audited with the version it deleted"
    );
    let (reply, _) = h.run("U1", "/delfunc pnl").await;
    assert_refused(&reply, "Function `pnl` not found");
    let (reply, _) = h.run("U1", "/runfunc").await;
    assert_eq!(
        reply.fallback,
        "No saved functions. Use `/savefunc` to create one."
    );
    let outcomes: Vec<Outcome> = h.audit().into_iter().map(|r| r.entry.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Ok,
            Outcome::RefusedPermission,
            Outcome::RefusedPermission,
            Outcome::RefusedValidation,
            Outcome::Ok,
            Outcome::Ok,
            Outcome::NotFound,
        ]
    );
}

#[test]
fn settings_follow_the_configuration() {
    let mut config = crate::config::Config::default();
    config.limits.max_code_bytes = 50_000;
    config.validator.enabled = false;
    let s = Settings::from_config(&config);
    assert_eq!(s.max_code_bytes, 50_000);
    assert!(s.validator.is_none());
    config.validator.enabled = true;
    let s = Settings::from_config(&config);
    assert_eq!(s.validator.map(|r| r.max_code_bytes), Some(50_000));
}

#[test]
fn only_tradebox_decides_a_timeout_in_the_audit() {
    let entry = || AuditEntry::new("U1", Source::Cli, Action::Analyze, Outcome::Ok);
    let ours = ExecResult::failure("Timeout", "timed out", 30_000);
    let outcome = finish_entry(entry(), &ours, Instant::now()).outcome;
    assert_eq!(outcome, Outcome::Timeout);
    // A job that forges a `Timeout` answer is an error like any other.
    let mut forged = ours.clone();
    if let Some(e) = &mut forged.error {
        e.origin = Origin::Job;
    }
    let e = finish_entry(entry(), &forged, Instant::now());
    assert_eq!(e.outcome, Outcome::Error);
    assert_eq!(e.error_type.as_deref(), Some("Timeout"));
}

/// Polls `ready` until it holds (or fails the test after 5 s).
async fn wait_until(ready: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "timed out waiting"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn one_user_never_holds_every_worker() {
    let with = |running: usize, workers: usize| {
        Settings {
            per_user_running: running,
            ..Setup::default().settings
        }
        .fair_for(workers)
        .per_user_running
    };
    assert_eq!(with(2, 1), 2, "one worker: nothing to share");
    assert_eq!(with(2, 2), 1);
    assert_eq!(with(2, 3), 1);
    assert_eq!(with(8, 4), 2);
    assert_eq!(with(8, 9), 4);
    assert_eq!(with(3, 16), 3);
    for workers in 2..40 {
        for running in 1..50 {
            let n = with(running, workers);
            assert!(
                n >= 1 && n <= (workers / 2).max(1) && n <= running,
                "{running} on {workers}"
            );
            assert!(workers - n >= workers / 2, "half the pool left to others");
        }
    }
}

/// The sum of a counter family's samples in a metrics text.
fn metric_sum(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_every_audited_command_and_refusal() {
    let h = Setup {
        rate_limit: (2, Duration::from_secs(90)),
        ..Setup::default()
    }
    .build();
    h.run("U1", "/analyze result = 1").await;
    h.run("U1", "/savefunc vol | volume | result = 2").await;
    h.run("U1", "/runfunc vol").await;
    h.run("U1", "/analyze result = 3").await; // over the limit of 2
    h.run("U1", "/delfunc vol").await;
    h.run("U1", "/delfunc vol").await; // not found
    h.run("U2", "/analyze result = (").await; // refused by the validator
    let rows = h.audit();
    let text = h.pipeline.metrics().render(None, &Default::default());
    assert_eq!(
        metric_sum(&text, "tradebox_commands_total"),
        rows.len() as f64,
        "{text}"
    );
    for want in [
        "tradebox_commands_total{action=\"savefunc\",source=\"slack\",outcome=\"ok\"} 1",
        "tradebox_commands_total{action=\"delfunc\",source=\"slack\",outcome=\"ok\"} 1",
        "tradebox_commands_total{action=\"delfunc\",source=\"slack\",outcome=\"not_found\"} 1",
        "tradebox_commands_total{action=\"analyze\",source=\"slack\",outcome=\"refused_rate_limit\"} 1",
        "tradebox_refusals_total{kind=\"rate_limit\"} 1",
        "tradebox_refusals_total{kind=\"validation\"} 1",
    ] {
        assert!(text.lines().any(|l| l == want), "{want} missing:\n{text}");
    }
    // Runs of code that ran have a duration; refusals have none.
    for want in [
        "tradebox_command_duration_seconds_count{action=\"analyze\"} 1",
        "tradebox_command_duration_seconds_count{action=\"runfunc\"} 1",
    ] {
        assert!(text.lines().any(|l| l == want), "{want} missing:\n{text}");
    }
}

#[tokio::test]
async fn running_places_are_shared_by_every_pipeline_on_the_store() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tradebox.db");
    let settings = Settings {
        per_user_running: 1,
        per_user_waiting: 4,
        ..Setup::default().settings
    };
    // Two replicas on one store file, each with its own executor.
    let replica = |name: &str| {
        let executor = Arc::new(FakeExecutor::with_fallback(Step::Hold));
        let pipeline = Pipeline::new(
            Some(executor.clone() as Arc<dyn Executor>),
            FunctionStore::open(&path).unwrap(),
            AuditLog::open(&path).unwrap(),
            RateLimiter::open(&path, 100, Duration::from_secs(60)).unwrap(),
            Permissions::new(&PermissionsSection::default()),
            settings.clone(),
        )
        .with_leases(Leases::open(&path, name).unwrap());
        (Arc::new(pipeline), executor)
    };
    let ((a, on_a), (b, on_b)) = (replica("a"), replica("b"));
    let run = |p: &Arc<Pipeline>, user: &'static str| {
        let p = Arc::clone(p);
        tokio::spawn(async move {
            p.handle(
                &request(user, Input::Line("/analyze result = 1".into())),
                |_| {},
            )
            .await
        })
    };
    let first = run(&a, "U1");
    wait_until(|| on_a.held() == 1).await;
    // U1's one place is held on A: B's job waits, not submitted, for
    // several polls; another user's job on B runs meanwhile.
    let second = run(&b, "U1");
    let other = run(&b, "U2");
    wait_until(|| on_b.held() == 1).await;
    tokio::time::sleep(leases::POLL * 4).await;
    assert_eq!(on_b.jobs().len(), 1, "only U2's job reached B's executor");
    assert!(on_b.release(success("2", 1)));
    assert!(!other.await.unwrap().error);
    // A's job ends: its place is given back, and B's job runs.
    assert!(on_a.release(success("1", 1)));
    assert!(!first.await.unwrap().error);
    wait_until(|| on_b.held() == 1).await;
    assert_eq!(on_b.jobs().len(), 2);
    assert!(on_b.release(success("1", 1)));
    assert!(!second.await.unwrap().error);
    let leases = Leases::open(&path, "check").unwrap();
    assert_eq!(
        (leases.held("U1").unwrap(), leases.held("U2").unwrap()),
        (0, 0)
    );
}

/// An audit trail on a store that takes no rows (every append fails as if
/// the store had stopped answering); it reads as the store does.
struct RowsRefused(crate::audit::sqlite::SqliteAudit);

fn refused() -> StoreError {
    StoreError::Db(DbError::Unavailable {
        target: "test".into(),
        detail: "the store stopped answering".into(),
    })
}

impl crate::audit::AuditBackend for RowsRefused {
    fn append(&self, _: &AuditEntry, _: Micros) -> Result<i64, StoreError> {
        Err(refused())
    }
    fn append_once(&self, _: &AuditEntry, _: Micros) -> Result<bool, StoreError> {
        Err(refused())
    }
    fn append_releasing(
        &self,
        _: &AuditEntry,
        _: Micros,
        _: &str,
    ) -> Result<(i64, bool), StoreError> {
        Err(refused())
    }
    fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.0.query(filter)
    }
    fn prune(&self, before: Micros) -> Result<u64, StoreError> {
        self.0.prune(before)
    }
    fn count(&self) -> Result<u64, StoreError> {
        self.0.count()
    }
    fn ping(&self) -> Result<(), StoreError> {
        self.0.ping()
    }
}

#[tokio::test]
async fn a_job_s_running_place_is_given_back_with_its_audit_row_or_without_it() {
    for rows_refused in [false, true] {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("tradebox.db");
        let audit = if rows_refused {
            let store = crate::audit::sqlite::SqliteAudit::open(&path).unwrap();
            AuditLog::new(Arc::new(RowsRefused(store)))
        } else {
            AuditLog::open(&path).unwrap()
        };
        let pipeline = Pipeline::new(
            Some(Arc::new(FakeExecutor::new()) as Arc<dyn Executor>),
            FunctionStore::open(&path).unwrap(),
            audit,
            RateLimiter::open(&path, 100, Duration::from_secs(60)).unwrap(),
            Permissions::new(&PermissionsSection::default()),
            Setup::default().settings,
        )
        .with_leases(Leases::open(&path, "a").unwrap());
        let req = request("U1", Input::Line("/analyze result = 1".into()));
        for _ in 0..3 {
            let reply = pipeline.handle(&req, |_| {}).await;
            assert!(!reply.error, "{rows_refused}: {reply:?}");
        }
        let leases = Leases::open(&path, "check").unwrap();
        assert_eq!(
            leases.held("U1").unwrap(),
            0,
            "rows refused: {rows_refused}"
        );
        let written = AuditLog::open(&path).unwrap().count().unwrap();
        if rows_refused {
            // Kept for when the store answers again.
            assert_eq!((written, pipeline.audit().spooled()), (0, 3));
        } else {
            assert_eq!((written, pipeline.audit().spooled()), (3, 0));
        }
    }
}
