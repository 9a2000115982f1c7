//! The one pipeline every front end calls: command text in, reply out.
//!
//! For each request: parse (usage errors go back to the user only), check
//! permissions, validate code, apply the rate limit and the per-user job
//! limit, show a placeholder, run the code on the [`Executor`] (the sandbox
//! pool), build the reply the original bot gave (same texts and fields),
//! and write the audit trail — including every refusal.

mod slots;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tradebox_sandbox::{DataAsOf, ExecResult, Job, Origin};

use crate::audit::{Action, AuditEntry, AuditLog, Outcome, Source};
use crate::command::{self, Command, Grammar, UsageError};
use crate::deliveries::Deliveries;
use crate::executor::{Executor, ExecutorStatus, SubmitError};
use crate::functions::{Function, FunctionStore};
use crate::leases::{self, Leases};
use crate::metrics::Metrics;
use crate::permissions::Permissions;
use crate::ratelimit::{Decision, RateLimiter};
use crate::reply::{Block, Button, File, Reply, Visibility};
use crate::store::StoreError;
use slots::UserSlots;

/// Functions per page of `/listfuncs`, and in a bare `/runfunc`.
pub const LIST_PAGE: usize = 20;
pub const TOP_RUNFUNC: usize = 10;

/// Execution settings the pipeline applies to every job.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeout: Duration,
    pub memory_mib: u64,
    pub output_limit: usize,
    pub as_of: Option<String>,
    /// The largest code accepted, in bytes: the command parser's limit and
    /// the validator's (the pipeline sets `validator.max_code_bytes` to it).
    pub max_code_bytes: usize,
    /// `None`: the validator is off.
    pub validator: Option<tradebox_validate::Rules>,
    pub per_user_running: usize,
    pub per_user_waiting: usize,
}

impl Settings {
    /// The execution settings `tradebox.toml` (and its environment
    /// overrides) describe.
    pub fn from_config(config: &crate::config::Config) -> Settings {
        Settings {
            timeout: config.limits.timeout(),
            memory_mib: config.limits.memory_mb,
            output_limit: config.limits.output_limit(),
            as_of: config.data.as_of.clone(),
            max_code_bytes: config.limits.max_code_bytes,
            validator: config.validator.enabled.then(|| tradebox_validate::Rules {
                allowed_modules: config.validator.allowed_modules.iter().cloned().collect(),
                max_code_bytes: config.limits.max_code_bytes,
            }),
            per_user_running: config.pool.per_user_running,
            per_user_waiting: config.pool.per_user_waiting,
        }
    }

    /// These settings for a pool of `workers`: one user may run
    /// `per_user_running` jobs at once, but never more than half the
    /// workers (at least one) when there are two or more, so that one
    /// user's jobs (loops that run to their time limit, say) always leave
    /// the other half to everyone else. With one worker there is nothing to
    /// share.
    pub fn fair_for(mut self, workers: usize) -> Settings {
        if workers >= 2 {
            self.per_user_running = self.per_user_running.min((workers / 2).max(1));
        }
        self.per_user_running = self.per_user_running.max(1);
        self
    }
}

/// Why a request was not run, for front ends that answer with a status
/// (the HTTP API) rather than a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Not allowed for this user or channel.
    Permission,
    /// The courtesy validator refused the code.
    Validation,
    /// Over the rate limit.
    RateLimit,
    /// The user's own jobs fill their places in line.
    Busy,
    /// The pool's queue is full (everyone's jobs).
    Overloaded,
    /// The executor or the store failed.
    Unavailable,
}

impl RefusalKind {
    /// The kind's name in metrics (`rate_limit`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::Permission => "permission",
            RefusalKind::Validation => "validation",
            RefusalKind::RateLimit => "rate_limit",
            RefusalKind::Busy => "busy",
            RefusalKind::Overloaded => "overloaded",
            RefusalKind::Unavailable => "unavailable",
        }
    }
}

/// A refusal: the kind, the sentence for the user, and when to retry (for
/// the rate limit). Refusals are audited where they are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
    pub retry_after_seconds: Option<u64>,
    /// Code to show under the message (a syntax error's line and caret).
    pub excerpt: Option<String>,
}

impl Refusal {
    fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
            retry_after_seconds: None,
            excerpt: None,
        }
    }
}

impl From<Refusal> for Reply {
    fn from(r: Refusal) -> Reply {
        let mut reply = Reply::refusal(r.message);
        if let Some(text) = r.excerpt {
            reply.blocks.push(Block::Code { label: None, text });
        }
        reply
    }
}

/// What came in.
#[derive(Debug, Clone)]
pub enum Input {
    /// A slash command and its text (`/analyze`, `result = 1`).
    Slash { command: String, text: String },
    /// A whole line as typed in the console or `tradebox chat`.
    Line(String),
    /// A button press (`run_func_<name>`, value).
    Action { action_id: String, value: String },
}

/// One request from a front end.
#[derive(Debug, Clone)]
pub struct Request {
    pub user: String,
    pub channel: Option<String>,
    pub source: Source,
    pub input: Input,
}

/// The command layer, shared by all front ends.
pub struct Pipeline {
    /// `None` for front ends that only manage functions (`tradebox func list`).
    executor: Option<Arc<dyn Executor>>,
    functions: FunctionStore,
    audit: AuditLog,
    limiter: RateLimiter,
    permissions: Permissions,
    settings: Settings,
    grammar: Grammar,
    slots: UserSlots,
    metrics: Metrics,
    deliveries: Option<Deliveries>,
    leases: Option<Leases>,
}

impl Pipeline {
    /// The pipeline over `executor` (normally the sandbox pool; `None` when
    /// code cannot run here), the stores, and the settings. The rate limit
    /// is the limiter's.
    pub fn new(
        executor: Option<Arc<dyn Executor>>,
        functions: FunctionStore,
        audit: AuditLog,
        limiter: RateLimiter,
        permissions: Permissions,
        mut settings: Settings,
    ) -> Pipeline {
        let slots = UserSlots::new(settings.per_user_running, settings.per_user_waiting);
        let grammar = Grammar::new(settings.max_code_bytes);
        if let Some(rules) = &mut settings.validator {
            rules.max_code_bytes = settings.max_code_bytes;
        }
        Pipeline {
            executor,
            functions,
            audit,
            limiter,
            permissions,
            settings,
            grammar,
            slots,
            metrics: Metrics::new(),
            deliveries: None,
            leases: None,
        }
    }

    /// The pipeline with running places shared by every replica on the
    /// store: a user's `per_user_running` holds across all of them. A job's
    /// place is given back in the write of its audit row when both are on
    /// one store (as `serve` opens them), else on its own.
    pub fn with_leases(mut self, leases: Leases) -> Pipeline {
        self.leases = Some(leases);
        self
    }

    /// The pipeline with a shared record of deliveries taken, which front
    /// ends that can be delivered to twice (Slack, across replicas) claim
    /// each delivery in.
    pub fn with_deliveries(mut self, deliveries: Deliveries) -> Pipeline {
        self.deliveries = Some(deliveries);
        self
    }

    /// The shared record of deliveries taken, when there is one.
    pub fn deliveries(&self) -> Option<&Deliveries> {
        self.deliveries.as_ref()
    }

    pub fn functions(&self) -> &FunctionStore {
        &self.functions
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// What the pipeline counted (see [`crate::metrics`]).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The executor's state now; `None` without an executor or when it
    /// cannot tell.
    pub fn executor_status(&self) -> Option<ExecutorStatus> {
        self.executor.as_ref().and_then(|e| e.status())
    }

    /// Whether code can run here at all (an executor is set).
    pub fn runs_code(&self) -> bool {
        self.executor.is_some()
    }

    /// One read of the store the commands use (for readiness checks).
    pub fn check_store(&self) -> Result<(), StoreError> {
        self.audit.ping()
    }

    /// Handles a request. `placeholder` is called (at most once) before a
    /// job runs, with the message to show until the final reply replaces it.
    pub async fn handle(&self, req: &Request, placeholder: impl FnOnce(Reply) + Send) -> Reply {
        let parsed = match &req.input {
            Input::Slash { command, text } => self.grammar.parse(command, text),
            Input::Line(line) => self.grammar.parse_line(line),
            Input::Action { action_id, value } => command::parse_action(action_id, value),
        };
        let cmd = match parsed {
            Ok(cmd) => cmd,
            Err(e) => return usage_reply(&e),
        };
        let button = matches!(req.input, Input::Action { .. });
        self.handle_command(req, cmd, button, placeholder).await
    }

    /// Handles an already parsed command (`req.input` is not read again).
    pub async fn handle_command(
        &self,
        req: &Request,
        cmd: Command,
        button: bool,
        placeholder: impl FnOnce(Reply) + Send,
    ) -> Reply {
        match cmd {
            Command::Help { topic } => help_reply(topic.as_deref()),
            Command::Analyze { code } => self.analyze(req, code, placeholder).await,
            Command::RunFunc { name: None, .. } => self.top_functions(),
            Command::RunFunc {
                name: Some(name),
                params,
            } => {
                self.run_function(req, &name, params, button, placeholder)
                    .await
            }
            Command::RunAction { name } => {
                self.run_function(req, &name, serde_json::Map::new(), true, placeholder)
                    .await
            }
            Command::SaveFunc {
                name,
                description,
                code,
            } => self.save(req, &name, &description, &code),
            Command::ListFuncs { query, page } => self.list(query.as_deref(), page),
            Command::DelFunc { name } => self.delete(req, &name),
        }
    }

    fn entry(&self, req: &Request, action: Action, outcome: Outcome) -> AuditEntry {
        let mut e = AuditEntry::new(req.user.clone(), req.source.clone(), action, outcome);
        e.channel = req.channel.clone();
        e.replica = self.audit.replica().map(str::to_string);
        e
    }

    fn record(&self, entry: AuditEntry) {
        self.metrics.command(&entry);
        if let Err(e) = self.audit.record(&entry) {
            audit_failed(&e);
        }
    }

    /// Writes a finished job's audit row; the running place it held, if
    /// any, is given back in the same write (one transaction instead of
    /// two), or on its own when that write fails.
    fn record_end(&self, entry: AuditEntry, lease: Option<LeaseGuard>) {
        let Some(lease) = lease else {
            return self.record(entry);
        };
        self.metrics.command(&entry);
        lease.give_back_with(|id| match self.audit.record_releasing(&entry, id) {
            Ok((_, given_back)) => given_back,
            Err(e) => {
                audit_failed(&e);
                false
            }
        });
    }

    /// Refuses with `message`, writing the refusal to the audit trail.
    fn refuse(&self, mut entry: AuditEntry, outcome: Outcome, message: String) -> Reply {
        entry.outcome = outcome;
        entry.detail = Some(message.clone());
        self.record(entry);
        Reply::refusal(message)
    }

    /// [`Pipeline::refuse`], typed for callers that need the kind.
    fn refusal(
        &self,
        entry: AuditEntry,
        outcome: Outcome,
        kind: RefusalKind,
        message: String,
    ) -> Refusal {
        self.metrics.refused(kind);
        self.refuse(entry, outcome, message.clone());
        Refusal::new(kind, message)
    }

    /// Reports a store failure to the user, with an `error` audit row.
    fn failed(&self, entry: AuditEntry, message: String) -> Reply {
        self.refuse(entry, Outcome::Error, message)
    }

    /// The courtesy validator, when on; `Err` is the refusal (audited).
    fn validate(&self, code: &str, entry: &AuditEntry) -> Result<(), Refusal> {
        let Some(rules) = &self.settings.validator else {
            return Ok(());
        };
        tradebox_validate::validate(code, rules).map_err(|e| {
            let mut entry = entry.clone();
            entry.error_type = Some("ValidationError".into());
            let found: Vec<String> = e.findings.iter().map(|f| f.summary()).collect();
            let mut refusal = self.refusal(
                entry,
                Outcome::RefusedValidation,
                RefusalKind::Validation,
                format!("Code validation failed: {}", found.join("\n")),
            );
            refusal.excerpt = e.findings.iter().find_map(|f| f.excerpt.clone());
            refusal
        })
    }

    /// The checks before any execution; `Err` is the refusal to send.
    fn admit(&self, req: &Request, code: &str, entry: &AuditEntry) -> Result<(), Refusal> {
        if let Err(refusal) = self
            .permissions
            .check_execute(&req.user, req.channel.as_deref())
        {
            return Err(self.refusal(
                entry.clone(),
                Outcome::RefusedPermission,
                RefusalKind::Permission,
                refusal.to_string(),
            ));
        }
        self.validate(code, entry)?;
        match self
            .limiter
            .check_and_record(&req.user, tradebox_data::timestamp::now())
        {
            Ok(Decision::Allowed { .. }) => Ok(()),
            Ok(Decision::Limited {
                retry_after_seconds,
            }) => {
                let mut refusal = self.refusal(
                    entry.clone(),
                    Outcome::RefusedRateLimit,
                    RefusalKind::RateLimit,
                    self.limiter.limited_message(retry_after_seconds),
                );
                refusal.retry_after_seconds = Some(retry_after_seconds);
                Err(refusal)
            }
            Err(e) => Err(self.refusal(
                entry.clone(),
                Outcome::Error,
                RefusalKind::Unavailable,
                format!("the rate limiter failed: {e}"),
            )),
        }
    }

    /// One of the user's running places on the shared store, when replicas
    /// share one: waits (asking every [`leases::POLL`]) while every place
    /// is held, here or on another replica, for at most `wait` (the time
    /// a job holding one may take).
    async fn lease(
        &self,
        req: &Request,
        entry: &AuditEntry,
        wait: Duration,
    ) -> Result<Option<LeaseGuard>, Refusal> {
        let Some(leases) = &self.leases else {
            return Ok(None);
        };
        let limit = u32::try_from(self.settings.per_user_running).unwrap_or(u32::MAX);
        let deadline = Instant::now() + wait;
        loop {
            match leases.try_take(&req.user, limit) {
                Ok(Some(id)) => return Ok(Some(LeaseGuard::start(leases.clone(), id))),
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(leases::POLL).await,
                Ok(None) => {
                    return Err(self.refusal(
                        entry.clone(),
                        Outcome::RefusedQueueFull,
                        RefusalKind::Busy,
                        format!(
                            "You already have {limit} jobs running (on this server or another); try again when one has finished."
                        ),
                    ))
                }
                Err(e) => {
                    return Err(self.refusal(
                        entry.clone(),
                        Outcome::Error,
                        RefusalKind::Unavailable,
                        format!("the store failed: {e}"),
                    ))
                }
            }
        }
    }

    /// Runs `code` on the executor with the user's job slot held, and
    /// writes its audit row (`entry`, finished with the result).
    async fn execute(
        &self,
        req: &Request,
        code: &str,
        params: serde_json::Map<String, serde_json::Value>,
        entry: AuditEntry,
    ) -> Result<ExecResult, Refusal> {
        self.execute_with(req, code, params, entry, self.settings.timeout)
            .await
    }

    /// [`Pipeline::execute`] with a time limit. The audit row is written
    /// before the user's places are left, and with the running place given
    /// back in the same write: a job of the same user waiting here finds
    /// the place free once its own slot opens.
    async fn execute_with(
        &self,
        req: &Request,
        code: &str,
        params: serde_json::Map<String, serde_json::Value>,
        entry: AuditEntry,
        timeout: Duration,
    ) -> Result<ExecResult, Refusal> {
        let started = Instant::now();
        let Some(slot) = self.slots.enter(&req.user) else {
            let (running, waiting) = (
                self.settings.per_user_running,
                self.settings.per_user_waiting,
            );
            return Err(self.refusal(
                entry.clone(),
                Outcome::RefusedQueueFull,
                RefusalKind::Busy,
                format!(
                    "You already have {running} jobs running and {waiting} waiting; try again when one has finished."
                ),
            ));
        };
        let _running = slot.run().await;
        let lease = self.lease(req, &entry, timeout).await?;
        let job = Job {
            code: code.to_string(),
            timeout,
            memory_mib: self.settings.memory_mib,
            output_limit: self.settings.output_limit,
            params,
            as_of: self.settings.as_of.clone(),
        };
        let Some(executor) = &self.executor else {
            return Err(self.refusal(
                entry.clone(),
                Outcome::Error,
                RefusalKind::Unavailable,
                "code cannot run here: no sandbox pool is running".into(),
            ));
        };
        let receiver = match executor.submit(job) {
            Ok(rx) => rx,
            Err(SubmitError::QueueFull(n)) => {
                return Err(self.refusal(
                    entry.clone(),
                    Outcome::RefusedQueueFull,
                    RefusalKind::Overloaded,
                    format!("The sandbox is busy ({n} jobs waiting); try again in a moment."),
                ))
            }
            Err(SubmitError::Unavailable(why)) => {
                return Err(self.refusal(
                    entry.clone(),
                    Outcome::Error,
                    RefusalKind::Unavailable,
                    format!("the sandbox is unavailable: {why}"),
                ))
            }
        };
        let result = receiver.await.map_err(|_| {
            self.refusal(
                entry.clone(),
                Outcome::Error,
                RefusalKind::Unavailable,
                "the sandbox stopped before answering".into(),
            )
        })?;
        self.record_end(finish_entry(entry, &result, started), lease);
        Ok(result)
    }

    /// Runs code as `/analyze` does (permissions, validator, rate limit,
    /// per-user slots, audit) but answers with the executor's own result,
    /// for the HTTP API's `POST /api/v1/run`. `timeout` may only shorten the
    /// configured limit. `Err` is a refusal, already audited.
    pub async fn run_code(
        &self,
        req: &Request,
        code: &str,
        timeout: Option<Duration>,
    ) -> Result<ExecResult, Refusal> {
        let mut entry = self.entry(req, Action::Analyze, Outcome::Ok);
        entry.code = Some(code.to_string());
        self.admit(req, code, &entry)?;
        let timeout = timeout.map_or(self.settings.timeout, |t| t.min(self.settings.timeout));
        self.execute_with(req, code, serde_json::Map::new(), entry, timeout)
            .await
    }

    /// Jobs admitted and not yet answered, across all users (for draining
    /// on shutdown).
    pub fn in_flight(&self) -> usize {
        self.slots.total()
    }

    async fn analyze(&self, req: &Request, code: String, placeholder: impl FnOnce(Reply)) -> Reply {
        let mut entry = self.entry(req, Action::Analyze, Outcome::Ok);
        entry.code = Some(code.clone());
        if let Err(refusal) = self.admit(req, &code, &entry) {
            return refusal.into();
        }
        placeholder(Reply::placeholder("Analyzing"));
        let result = match self
            .execute(req, &code, serde_json::Map::new(), entry)
            .await
        {
            Ok(r) => r,
            Err(refusal) => return refusal.into(),
        };
        if !result.success {
            return failure_reply("Analysis failed", &result);
        }
        let text = result_text(&result);
        let mut blocks = vec![Block::Header {
            text: "Analysis Result".into(),
        }];
        if shows_result(&result) {
            blocks.push(Block::Result {
                label: None,
                text: text.clone(),
                value: result.value.clone(),
            });
        }
        push_output(&mut blocks, &result);
        let files = files_of(&result, &mut blocks);
        let mut items = vec![format!(
            "Executed in {}ms by <@{}>",
            result.execution_time_ms, req.user
        )];
        items.extend(result.data_as_of.as_ref().map(DataAsOf::footer));
        blocks.push(Block::Context { items });
        Reply {
            files,
            ..Reply::in_channel(format!("Analysis complete: {text}"), blocks)
        }
    }

    async fn run_function(
        &self,
        req: &Request,
        name: &str,
        params: serde_json::Map<String, serde_json::Value>,
        button: bool,
        placeholder: impl FnOnce(Reply),
    ) -> Reply {
        let action = if button {
            Action::RunButton
        } else {
            Action::Runfunc
        };
        let mut entry = self.entry(req, action, Outcome::Ok);
        entry.function_name = Some(name.to_string());
        let func = match self.functions.get(name) {
            Ok(Some(f)) => f,
            Ok(None) => {
                let mut message = format!("Function `{name}` not found.");
                if let Ok(close) = self.functions.suggest(name, 3) {
                    if !close.is_empty() {
                        let names: Vec<String> = close.iter().map(|n| format!("`{n}`")).collect();
                        message.push_str(&format!(" Did you mean {}?", names.join(", ")));
                    }
                }
                message.push_str(" Use `/runfunc` to see available functions.");
                return self.refuse(entry, Outcome::NotFound, message);
            }
            Err(e) => return self.failed(entry, e.to_string()),
        };
        entry.function_version = Some(func.version);
        entry.code = Some(func.code.clone());
        if !params.is_empty() {
            entry.detail = Some(format!(
                "params: {}",
                serde_json::Value::Object(params.clone())
            ));
        }
        if let Err(refusal) = self.admit(req, &func.code, &entry) {
            return refusal.into();
        }
        placeholder(Reply::placeholder(&format!("Executing `{name}`")));
        let given = params_text(&params);
        let ignored: Vec<String> = tradebox_validate::params_read(&func.code)
            .ignored(params.keys().map(String::as_str))
            .into_iter()
            .map(|k| format!("`{k}`"))
            .collect();
        let result = match self.execute(req, &func.code, params, entry).await {
            Ok(r) => r,
            Err(refusal) => return refusal.into(),
        };
        // Counted whether or not the code succeeded, as the original did.
        let used = self
            .functions
            .record_use(name)
            .map_or(func.use_count + 1, |f| f.use_count);
        if !result.success {
            return failure_reply("Error", &result);
        }
        let text = result_text(&result);
        let mut blocks = vec![
            Block::Header {
                text: func.name.clone(),
            },
            Block::Text {
                text: if func.description.is_empty() {
                    "_no description_".into()
                } else {
                    func.description.clone()
                },
                button: None,
            },
        ];
        if shows_result(&result) {
            blocks.push(Block::Result {
                label: Some("Result".into()),
                text: text.clone(),
                value: result.value.clone(),
            });
        }
        if !ignored.is_empty() {
            let (them, verb) = if ignored.len() == 1 {
                ("it", "was")
            } else {
                ("they", "were")
            };
            blocks.insert(
                2, // under the description, above the result
                Block::Text {
                    text: format!(
                        ":warning: `{}` does not read {} from `params`: {them} {verb} ignored, \
                     and this result does not depend on {them}.",
                        func.name,
                        ignored.join(", ")
                    ),
                    button: None,
                },
            );
        }
        push_output(&mut blocks, &result);
        let files = files_of(&result, &mut blocks);
        let mut items = vec![format!(
            "Executed in {}ms by <@{}>",
            result.execution_time_ms, req.user
        )];
        items.extend(result.data_as_of.as_ref().map(DataAsOf::footer));
        if !given.is_empty() {
            items.push(format!("Parameters: {given}"));
        }
        items.push(format!("Created by <@{}>", func.created_by));
        items.push(format!("Used {used}x"));
        blocks.push(Block::Context { items });
        Reply {
            files,
            ..Reply::in_channel(format!("{}: {text}", func.name), blocks)
        }
    }

    fn top_functions(&self) -> Reply {
        let funcs = match self.functions.list(TOP_RUNFUNC, 0) {
            Ok(f) => f,
            Err(e) => return Reply::refusal(e.to_string()),
        };
        if funcs.is_empty() {
            return Reply::text(
                Visibility::Ephemeral,
                "No saved functions. Use `/savefunc` to create one.",
            );
        }
        let list: Vec<String> = funcs
            .iter()
            .map(|f| format!("• `{}` - {} (used {}x)", f.name, f.description, f.use_count))
            .collect();
        Reply::ephemeral(
            "Available functions",
            vec![
                Block::Text {
                    text: format!("*Available Functions*\n{}", list.join("\n")),
                    button: None,
                },
                Block::Context {
                    items: vec!["Use `/runfunc <name>` to execute".into()],
                },
            ],
        )
    }

    fn save(&self, req: &Request, name: &str, description: &str, code: &str) -> Reply {
        let mut entry = self.entry(req, Action::Savefunc, Outcome::Ok);
        entry.function_name = Some(name.to_string());
        entry.code = Some(code.to_string());
        if let Err(refusal) = self
            .permissions
            .check_save(&req.user, req.channel.as_deref())
        {
            return self.refuse(entry, Outcome::RefusedPermission, refusal.to_string());
        }
        if let Err(refusal) = self.validate(code, &entry) {
            return refusal.into();
        }
        let admin = self.permissions.is_admin(&req.user);
        let saved = self
            .functions
            .save_audited(name, description, code, &req.user, admin, &entry);
        let saved = match saved {
            Ok(s) => {
                self.metrics.command(&entry); // its row landed with the save
                s
            }
            Err(StoreError::NotOwner { owner, .. }) => {
                return self.refuse(
                    entry,
                    Outcome::RefusedPermission,
                    format!("`{name}` belongs to <@{owner}>; only they or an admin can change it"),
                )
            }
            Err(e) => return self.failed(entry, format!("Failed to save function: {e}")),
        };
        let f = &saved.function;
        Reply::in_channel(
            format!("Saved function: {name}"),
            vec![
                Block::Text {
                    text: format!(
                        ":white_check_mark: *Saved Function*\n*Name:* `{}`\n*Description:* {}\n*Creator:* <@{}>",
                        f.name, f.description, f.created_by
                    ),
                    button: None,
                },
                Block::Code {
                    label: Some("Code".into()),
                    text: f.code.clone(),
                },
                Block::Context {
                    items: vec![
                        format!("Use `/runfunc {}` to execute", f.name),
                        format!("Version {}", f.version),
                    ],
                },
            ],
        )
    }

    fn list(&self, query: Option<&str>, page: usize) -> Reply {
        let page = page.max(1);
        let offset = (page - 1) * LIST_PAGE;
        let (funcs, matching, header) = match query {
            Some(q) => (
                self.functions.search(q, LIST_PAGE, offset),
                self.functions.search_count(q),
                format!("Functions matching '{q}'"),
            ),
            None => (
                self.functions.list(LIST_PAGE, offset),
                self.functions.count(),
                "All Saved Functions".to_string(),
            ),
        };
        let (funcs, matching, stats) = match (funcs, matching, self.functions.stats()) {
            (Ok(f), Ok(m), Ok(s)) => (f, m, s),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                return Reply::refusal(e.to_string())
            }
        };
        if funcs.is_empty() {
            let text = match (query, page) {
                (_, p) if p > 1 && matching > 0 => format!("There is no page {p}."),
                (Some(_), _) => "No functions found.".into(),
                (None, _) => "No saved functions.".into(),
            };
            return Reply::text(Visibility::InChannel, text);
        }
        let mut blocks = vec![Block::Header {
            text: header.clone(),
        }];
        for f in &funcs {
            blocks.push(Block::Text {
                text: format!("*`{}`*\n{}", f.name, f.description),
                button: Some(run_button(f)),
            });
            let mut items = vec![
                format!("Created by <@{}>", f.created_by),
                format!("Used {}x", f.use_count),
            ];
            items.extend(params_card(&f.code));
            blocks.push(Block::Context { items });
        }
        blocks.push(Block::Divider);
        let mut totals = vec![
            format!("Total: {} functions", stats.total_functions),
            format!("{} total executions", stats.total_uses),
        ];
        let pages = (matching as usize).div_ceil(LIST_PAGE);
        if pages > 1 {
            totals.push(format!("Page {page} of {pages}"));
        }
        blocks.push(Block::Context { items: totals });
        Reply::in_channel(header, blocks)
    }

    fn delete(&self, req: &Request, name: &str) -> Reply {
        let mut entry = self.entry(req, Action::Delfunc, Outcome::Ok);
        entry.function_name = Some(name.to_string());
        let admin = self.permissions.is_admin(&req.user);
        match self
            .functions
            .delete_audited(name, &req.user, admin, &entry)
        {
            Ok(_) => {
                self.metrics.command(&entry); // its row landed with the delete
                Reply::text(
                    Visibility::InChannel,
                    format!(":white_check_mark: Deleted function `{name}`"),
                )
            }
            Err(StoreError::NotFound { .. }) => self.refuse(
                entry,
                Outcome::NotFound,
                format!("Function `{name}` not found"),
            ),
            Err(StoreError::NotOwner { owner, .. }) => self.refuse(
                entry,
                Outcome::RefusedPermission,
                format!("Only the creator (<@{owner}>) can delete this function"),
            ),
            Err(e) => self.failed(entry, format!("Failed to delete function `{name}`: {e}")),
        }
    }
}

/// Logs a failed write of an audit row (kept for later when the store was
/// only unavailable, see [`AuditLog::record_at`]).
fn audit_failed(e: &StoreError) {
    if e.is_locked() {
        tracing::warn!("audit trail: {e}; the row is kept and written once the store answers");
    } else {
        tracing::error!("audit trail: {e}");
    }
}

/// A held running place: renewed every [`leases::RENEW`] while it lives,
/// given back when dropped (or by [`LeaseGuard::give_back_with`]).
struct LeaseGuard {
    leases: Leases,
    /// `None` once given back.
    id: Option<String>,
    renewing: Option<tokio::task::JoinHandle<()>>,
}

impl LeaseGuard {
    fn start(leases: Leases, id: String) -> LeaseGuard {
        let renewing = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let (leases, id) = (leases.clone(), id.clone());
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(leases::RENEW).await;
                    match leases.renew(&id) {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(lease = %id, "a running place expired before its job ended");
                            return;
                        }
                        Err(e) => tracing::warn!(lease = %id, "renewing a running place: {e}"),
                    }
                }
            })
        });
        LeaseGuard {
            leases,
            id: Some(id),
            renewing,
        }
    }

    /// Stops renewing the place and lets `write` give it back (the job's
    /// audit row, in the same transaction); when `write` says it did not
    /// (it failed, or found no such place: the leases are on another
    /// store), gives it back on its own.
    fn give_back_with(mut self, write: impl FnOnce(&str) -> bool) {
        self.stop_renewing();
        if let Some(id) = self.id.take() {
            if !write(&id) {
                self.id = Some(id); // given back by the drop
            }
        }
    }

    fn stop_renewing(&mut self) {
        if let Some(task) = self.renewing.take() {
            task.abort();
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.stop_renewing();
        let Some(id) = self.id.take() else {
            return;
        };
        // Not given back (the store is down): it expires after leases::TTL.
        if let Err(e) = self.leases.release(&id) {
            tracing::warn!(lease = %id, "giving back a running place: {e}");
        }
    }
}

/// `days=14, exchange=kraken`: the parameters as the user gave them.
fn params_text(params: &serde_json::Map<String, serde_json::Value>) -> String {
    params
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a function's card says of the parameters its code reads, if any.
fn params_card(code: &str) -> Option<String> {
    match tradebox_validate::params_read(code) {
        tradebox_validate::ParamsUse::Unused => None,
        tradebox_validate::ParamsUse::Any => Some("Parameters: any (`params`)".into()),
        tradebox_validate::ParamsUse::Keys(keys) => Some(format!(
            "Parameters: {}",
            keys.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn run_button(f: &Function) -> Button {
    Button {
        text: "Run".into(),
        action_id: format!("{}{}", command::RUN_ACTION_PREFIX, f.name),
        value: f.name.clone(),
    }
}

fn usage_reply(e: &UsageError) -> Reply {
    if e.is_usage() {
        Reply::ephemeral(
            e.to_string(),
            vec![Block::Text {
                text: e.to_string(),
                button: None,
            }],
        )
    } else {
        Reply::refusal(e.to_string())
    }
}

fn help_reply(topic: Option<&str>) -> Reply {
    let text = topic
        .and_then(command::CommandKind::from_name)
        .map_or_else(command::help_text, command::help_topic);
    Reply::ephemeral(text.clone(), vec![Block::Text { text, button: None }])
}

/// The result as text: the original showed `None` for code without a result.
/// Whether a reply shows the result section: not for a `None` result when
/// the code printed something or drew a figure (that is the answer then).
fn shows_result(r: &ExecResult) -> bool {
    r.result.is_some() || (r.output.is_empty() && r.artifacts.is_empty())
}

fn result_text(r: &ExecResult) -> String {
    r.result.clone().unwrap_or_else(|| "None".into())
}

fn push_output(blocks: &mut Vec<Block>, r: &ExecResult) {
    if !r.output.is_empty() {
        blocks.push(Block::Code {
            label: Some("Output".into()),
            text: r.output.trim_end().to_string(),
        });
    }
}

/// Artifacts as reply files; each PNG also gets an image block.
fn files_of(r: &ExecResult, blocks: &mut Vec<Block>) -> Vec<File> {
    let mut files = Vec::new();
    for (i, a) in r.artifacts.iter().enumerate() {
        let Some(bytes) = a.bytes() else { continue };
        let title = match a.kind.as_str() {
            "png" => format!("Figure {}", i + 1),
            _ => "Full table (CSV)".to_string(),
        };
        if a.kind == "png" {
            blocks.push(Block::Image {
                file: a.name.clone(),
                alt: title.clone(),
            });
        }
        files.push(File {
            name: a.name.clone(),
            mime: a.mime.clone(),
            title,
            size: bytes.len(),
            bytes,
        });
    }
    files
}

fn error_text(r: &ExecResult) -> String {
    match &r.error {
        Some(e) => match &e.traceback {
            Some(tb) if !tb.is_empty() => tb.trim_end().to_string(),
            _ => format!("{}: {}", e.kind, e.message),
        },
        None => "unknown error".into(),
    }
}

fn failure_reply(fallback: &str, r: &ExecResult) -> Reply {
    let text = error_text(r);
    let mut blocks = vec![
        Block::Text {
            text: ":x: *Error*".into(),
            button: None,
        },
        Block::Code {
            label: None,
            text: text.clone(),
        },
    ];
    push_output(&mut blocks, r);
    Reply {
        error: true,
        ..Reply::in_channel(format!("{fallback}: {text}"), blocks)
    }
}

fn finish_entry(mut entry: AuditEntry, r: &ExecResult, started: Instant) -> AuditEntry {
    entry.duration_ms = Some(started.elapsed().as_millis() as u64);
    if let Some(e) = &r.error {
        // Only tradebox decides a timeout: a job may claim any error type.
        entry.outcome = if e.kind == "Timeout" && e.origin == Origin::Tradebox {
            Outcome::Timeout
        } else {
            Outcome::Error
        };
        entry.error_type = Some(e.kind.clone());
        entry.detail = Some(e.message.chars().take(500).collect());
    }
    entry
}
