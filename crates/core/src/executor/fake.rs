//! A scripted [`Executor`] for tests: each submitted job takes the next
//! [`Step`] of its script (answer now, answer after a delay, refuse as
//! unavailable or queue full, accept and never answer, or hold until the
//! test releases it); with the script used up, jobs get
//! [`FakeExecutor::fallback`]. It keeps every job it accepted, so tests can
//! check what the pipeline asked for.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Answer, ExecResult, Executor, Job, SubmitError};

/// What the fake does with one job.
#[derive(Debug, Clone)]
pub enum Step {
    /// Answers `result` after `delay` (at once when zero).
    Answer {
        result: Box<ExecResult>,
        delay: Duration,
    },
    /// Refuses the job: [`SubmitError::Unavailable`] with this text.
    Unavailable(String),
    /// Refuses the job: [`SubmitError::QueueFull`] with this many waiting.
    QueueFull(usize),
    /// Accepts the job and drops it unanswered (the executor "stopped").
    Stop,
    /// Accepts the job and answers when [`FakeExecutor::release`] is called.
    Hold,
}

impl Step {
    /// Answers `result` at once.
    pub fn answer(result: ExecResult) -> Step {
        Step::delayed(result, Duration::ZERO)
    }

    /// Answers `result` after `delay`.
    pub fn delayed(result: ExecResult, delay: Duration) -> Step {
        Step::Answer {
            result: Box::new(result),
            delay,
        }
    }
}

/// A scripted executor; see the module documentation.
#[derive(Debug)]
pub struct FakeExecutor {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    script: VecDeque<Step>,
    fallback: Step,
    jobs: Vec<Job>,
    held: VecDeque<oneshot::Sender<ExecResult>>,
}

impl Default for FakeExecutor {
    fn default() -> Self {
        FakeExecutor::new()
    }
}

impl FakeExecutor {
    /// An executor whose every job succeeds with the result `"1"` in 7 ms.
    pub fn new() -> FakeExecutor {
        FakeExecutor::with_fallback(Step::answer(success("1", 7)))
    }

    /// An executor that does `fallback` with every job once the script is
    /// used up.
    pub fn with_fallback(fallback: Step) -> FakeExecutor {
        FakeExecutor {
            state: Mutex::new(State {
                script: VecDeque::new(),
                fallback,
                jobs: Vec::new(),
                held: VecDeque::new(),
            }),
        }
    }

    /// Adds `step` to the end of the script.
    pub fn then(self, step: Step) -> FakeExecutor {
        self.push(step);
        self
    }

    /// Adds `step` to the end of the script.
    pub fn push(&self, step: Step) {
        self.lock().script.push_back(step);
    }

    /// Adds an answer of `result` (no delay) to the script.
    pub fn answer(self, result: ExecResult) -> FakeExecutor {
        self.then(Step::answer(result))
    }

    /// What is done once the script is used up.
    pub fn fallback(&self) -> Step {
        self.lock().fallback.clone()
    }

    /// Every job accepted so far, oldest first.
    pub fn jobs(&self) -> Vec<Job> {
        self.lock().jobs.clone()
    }

    /// How many held jobs wait for [`FakeExecutor::release`].
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }

    /// Answers the oldest held job with `result`; false when none is held
    /// (or its requester has gone).
    pub fn release(&self, result: ExecResult) -> bool {
        let sender = self.lock().held.pop_front();
        sender.is_some_and(|tx| tx.send(result).is_ok())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Executor for FakeExecutor {
    fn submit(&self, job: Job) -> Result<Answer, SubmitError> {
        let mut state = self.lock();
        let step = match state.script.pop_front() {
            Some(step) => step,
            None => state.fallback.clone(),
        };
        let (tx, rx) = oneshot::channel();
        match step {
            Step::Unavailable(why) => return Err(SubmitError::Unavailable(why)),
            Step::QueueFull(n) => return Err(SubmitError::QueueFull(n)),
            Step::Stop => drop(tx),
            Step::Hold => state.held.push_back(tx),
            Step::Answer { result, delay } if delay.is_zero() => {
                let _ = tx.send(*result);
            }
            Step::Answer { result, delay } => later(tx, *result, delay),
        }
        state.jobs.push(job);
        Ok(rx)
    }
}

/// Sends `result` after `delay`, on the runtime when there is one.
fn later(tx: oneshot::Sender<ExecResult>, result: ExecResult, delay: Duration) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(result);
            });
        }
        Err(_) => {
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = tx.send(result);
            });
        }
    }
}

/// A successful result: `result` as text, no output, `ms` milliseconds.
pub fn success(result: &str, ms: u64) -> ExecResult {
    ExecResult {
        success: true,
        result: Some(result.to_string()),
        value: None,
        output: String::new(),
        error: None,
        execution_time_ms: ms,
        artifacts: Vec::new(),
        data_as_of: None,
    }
}

/// A failure the job raised: a Python exception `kind` with `message` and a
/// traceback.
pub fn raised(kind: &str, message: &str, ms: u64) -> ExecResult {
    let mut r = ExecResult::failure(kind, message, ms);
    if let Some(e) = &mut r.error {
        e.origin = tradebox_sandbox::Origin::Job;
        e.traceback = Some(format!(
            "Traceback (most recent call last):\n  File \"<snippet>\", line 1, in <module>\n{kind}: {message}\n"
        ));
    }
    r
}

/// The timeout the executor reports when a job ran out of time.
pub fn timed_out(limit: Duration) -> ExecResult {
    let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    ExecResult::failure(
        "Timeout",
        format!(
            "timed out: the code ran longer than its limit of {} s and was stopped",
            limit.as_secs_f64()
        ),
        ms,
    )
}
