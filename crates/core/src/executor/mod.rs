//! The seam between the pipeline and whatever runs code: an [`Executor`]
//! takes a [`Job`] at once or refuses it, and answers later through a
//! channel. [`tradebox_sandbox::Pool`] is the executor of every front end;
//! `fake::FakeExecutor` (tests, or the `test-support` feature) answers
//! from a script, so the pipeline can be tested without a sandbox or
//! Python.

#[cfg(any(test, feature = "test-support"))]
pub mod fake;

use tokio::sync::oneshot;
use tradebox_sandbox::{Pool, PoolError};

pub use tradebox_sandbox::{ExecResult, Job};

/// Where an accepted job's result arrives. It closes without a value when
/// the executor stopped before answering.
pub type Answer = oneshot::Receiver<ExecResult>;

/// Why an executor did not take a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Every place in the executor's queue is taken; `0` jobs are waiting.
    #[error("the job queue is full ({0} waiting)")]
    QueueFull(usize),
    /// The executor cannot run anything (stopped, or never set up); the
    /// text says why.
    #[error("{0}")]
    Unavailable(String),
}

/// Runs jobs. Implementations must not block in `submit`: a job is either
/// queued (and answered through the [`Answer`]) or refused at once. The
/// executor enforces the job's own limits (timeout, memory, output) and
/// reports them in the result; a timeout is an [`ExecResult`] whose error is
/// `Timeout` from [`tradebox_sandbox::Origin::Tradebox`].
pub trait Executor: Send + Sync {
    /// Queues `job`.
    fn submit(&self, job: Job) -> Result<Answer, SubmitError>;

    /// What the executor is doing now, for readiness and metrics; `None`
    /// when it cannot tell.
    fn status(&self) -> Option<ExecutorStatus> {
        None
    }
}

/// A moment's view of an executor's workers and queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutorStatus {
    /// Workers it runs when whole.
    pub workers: usize,
    /// Workers able to take a job now.
    pub up: usize,
    /// Workers running a job now.
    pub busy: usize,
    /// Jobs waiting for a worker.
    pub queued: usize,
    /// Jobs answered since the start.
    pub jobs: u64,
    /// Workers replaced since the start (died, stuck, or retired).
    pub restarts: u64,
    /// The snapshot versions the workers that are up serve (one entry
    /// per such worker; empty entries are workers without data).
    pub versions: Vec<Option<u64>>,
}

impl Executor for Pool {
    fn submit(&self, job: Job) -> Result<Answer, SubmitError> {
        Pool::submit(self, job).map_err(|e| match e {
            PoolError::QueueFull(n) => SubmitError::QueueFull(n),
            e => SubmitError::Unavailable(e.to_string()),
        })
    }

    fn status(&self) -> Option<ExecutorStatus> {
        let slots = Pool::status(self);
        let up: Vec<_> = slots.iter().filter(|s| s.up).collect();
        Some(ExecutorStatus {
            workers: slots.len(),
            up: up.len(),
            busy: slots.iter().filter(|s| s.busy).count(),
            queued: self.queued(),
            jobs: slots.iter().map(|s| s.jobs).sum(),
            restarts: slots.iter().map(|s| s.restarts).sum(),
            versions: up.iter().map(|s| s.version).collect(),
        })
    }
}
