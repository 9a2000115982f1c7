//! The accept path every delivery takes, whichever door it came in by
//! (Socket Mode in [`crate::socket`], a signed HTTP request in
//! [`crate::http`]).
//!
//! [`Acceptor::accept`] is synchronous and quick: a repeat of a delivery
//! already taken (a redelivered envelope, an `X-Slack-Retry-Num` retry;
//! [`crate::dedupe`] in this process, then the pipeline's shared record of
//! deliveries, which other replicas on the same store claim in too) is
//! only acknowledged; anything else is spawned as a
//! task and acknowledged at once, whatever the sandbox is doing. The task
//! runs the pipeline and posts the reply ([`crate::deliver`]). Once
//! [`Acceptor::stop`] is called nothing more is taken (and nothing
//! acknowledged, so that Slack delivers it elsewhere); [`Acceptor::drain`]
//! waits for every task to post its reply.
//!
//! The transports depend on this module and it on neither of them; the
//! [`crate::SlackApp`] above them creates the [`Acceptor`] and hands it to
//! the transport it starts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tradebox_core::audit::Source;
use tradebox_core::pipeline::{Pipeline, Request};
use tradebox_core::reply::Reply;

use crate::dedupe::Seen;
use crate::deliver::{Delay, Deliverer, Placeholder};
use crate::payload::Incoming;

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// Taken: it runs now.
    Started,
    /// Taken before (a redelivery or a retry): acknowledged, not run again.
    Duplicate,
    /// Shutting down: not acknowledged, so that Slack can deliver it to
    /// another connection.
    Closed,
}

/// Takes deliveries and runs them; shared by the transports and the
/// running tasks.
pub(crate) struct Acceptor {
    pipeline: Arc<Pipeline>,
    deliver: Deliverer,
    seen: Mutex<Seen>,
    tasks: TaskTracker,
    accepting: AtomicBool,
}

impl Acceptor {
    /// An acceptor that runs deliveries through `pipeline` and posts the
    /// replies with `deliver`.
    pub(crate) fn new(pipeline: Arc<Pipeline>, deliver: Deliverer) -> Arc<Acceptor> {
        Arc::new(Acceptor {
            pipeline,
            deliver,
            seen: Mutex::new(Seen::default()),
            tasks: TaskTracker::new(),
            accepting: AtomicBool::new(true),
        })
    }

    /// Takes a delivery (see the module documentation).
    pub(crate) fn accept(self: &Arc<Self>, incoming: Incoming) -> Accepted {
        if !self.accepting.load(Ordering::SeqCst) {
            return Accepted::Closed;
        }
        let first = match self.seen.lock() {
            Ok(mut seen) => seen.first(&incoming.key, Instant::now()),
            Err(poisoned) => poisoned.into_inner().first(&incoming.key, Instant::now()),
        };
        if !first {
            tracing::info!(key = %incoming.key, "a delivery seen before: acknowledged, not run again");
            return Accepted::Duplicate;
        }
        // Other replicas on the same store may have taken it (a redelivery
        // to another connection, a retry behind a load balancer).
        if let Some(deliveries) = self.pipeline.deliveries() {
            match deliveries.claim(&incoming.key) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(key = %incoming.key, "a delivery another replica took: acknowledged, not run again");
                    return Accepted::Duplicate;
                }
                // The command will meet the same store and tell the user.
                Err(e) => tracing::warn!(key = %incoming.key, "claiming a delivery: {e}"),
            }
        }
        let this = Arc::clone(self);
        self.tasks.spawn(async move { this.run(incoming).await });
        Accepted::Started
    }

    /// Runs one request through the pipeline and posts its reply.
    async fn run(&self, incoming: Incoming) {
        let request = Request {
            user: incoming.user.clone(),
            channel: Some(incoming.channel.clone()),
            source: Source::Slack,
            input: incoming.input.clone(),
        };
        let (tx, rx) = oneshot::channel::<Reply>();
        let delay = Delay::default();
        let placeholder = {
            let deliver = self.deliver.clone();
            let to = incoming.clone();
            let delay = delay.clone();
            tokio::spawn(async move {
                match rx.await {
                    Ok(reply) => {
                        deliver
                            .patiently(&to, &delay, deliver.placeholder(&to, &reply))
                            .await
                    }
                    Err(_) => Placeholder::None,
                }
            })
        };
        let reply = self
            .pipeline
            .handle(&request, move |p: Reply| {
                let _ = tx.send(p);
            })
            .await;
        let posting = async {
            let placeholder = placeholder.await.unwrap_or(Placeholder::None);
            self.deliver.finish(&incoming, &reply, placeholder).await;
        };
        self.deliver.patiently(&incoming, &delay, posting).await;
    }

    /// Deliveries taken and still running or posting their reply.
    pub(crate) fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// Takes no more deliveries: from now on [`Acceptor::accept`] answers
    /// [`Accepted::Closed`].
    pub(crate) fn stop(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// Waits for every task taken to finish and post its reply (call
    /// [`Acceptor::stop`] first).
    pub(crate) async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}
