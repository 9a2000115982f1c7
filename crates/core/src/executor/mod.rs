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
}

impl Executor for Pool {
    fn submit(&self, job: Job) -> Result<Answer, SubmitError> {
        Pool::submit(self, job).map_err(|e| match e {
            PoolError::QueueFull(n) => SubmitError::QueueFull(n),
            e => SubmitError::Unavailable(e.to_string()),
        })
    }
}
