//! Coalescing: inside one instance, requests about the same event that arrive while that
//! event's previous batch is running join the next batch, and a batch does its work once.
//!
//! Two users: purchases, where a batch runs the purchase transaction once (one hot event
//! sells a batch per commit instead of one ticket per commit, while every guarantee still
//! comes from the same row lock), and fresh availability reads, where one read answers every
//! request that arrived before it started. Payments batch their settles per event the same
//! way, and their first steps and the simulated provider's ledger writes in one queue for
//! all events (keyed by the nil id: those statements take no event lock).
//!
//! There is no artificial waiting: a request that finds no batch running starts one at once.
//! A request always lands in a batch that starts after it arrived, which is what lets a
//! coalesced read count as "a read that started after the request arrived".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::lock_runtime::LockRuntime;
use crate::error::{Error, Result, panic_message};

/// The work a batch does: given the event and the batch's inputs in arrival order, one
/// answer per input, in the same order.
pub type BatchWork<I, O> = Arc<dyn Fn(Uuid, Vec<I>) -> BoxFuture<'static, Vec<O>> + Send + Sync>;

struct Waiting<I, O> {
    input: I,
    reply: oneshot::Sender<O>,
}

struct Inner<I, O> {
    work: BatchWork<I, O>,
    /// Where the workers run: the runtime current at submission, or the batches' own
    /// (kept alive by this clone while the coalescer exists).
    runtime: Option<LockRuntime>,
    max_batch: usize,
    /// Per event: requests not yet in a batch. An entry exists exactly while a worker runs
    /// for that event; the worker removes it when it finds the queue empty.
    queues: Mutex<HashMap<Uuid, Vec<Waiting<I, O>>>>,
}

/// Per-event batching of requests with inputs `I` and answers `O`.
pub struct Coalescer<I, O> {
    inner: Arc<Inner<I, O>>,
}

impl<I, O> Clone for Coalescer<I, O> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Coalescer<I, O> {
    /// Batches of at most `max_batch` inputs (at least 1), each handled by `work`.
    pub fn new(max_batch: usize, work: BatchWork<I, O>) -> Self {
        Self::with(None, max_batch, work)
    }

    /// Like [`Coalescer::new`], with the workers run on the batches' own runtime (see
    /// [`super::lock_runtime`]).
    pub fn on_runtime(runtime: LockRuntime, max_batch: usize, work: BatchWork<I, O>) -> Self {
        Self::with(Some(runtime), max_batch, work)
    }

    fn with(runtime: Option<LockRuntime>, max_batch: usize, work: BatchWork<I, O>) -> Self {
        Self {
            inner: Arc::new(Inner {
                work,
                runtime,
                max_batch: max_batch.max(1),
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Queues the request behind this event's running batch, or starts a batch for it, and
    /// waits for its answer. An internal error only if the batch ended without answering.
    pub async fn submit(&self, event_id: Uuid, input: I) -> Result<O> {
        let (reply, answer) = oneshot::channel();
        let start_worker = {
            let mut queues = self.inner.queues.lock().expect("queue lock poisoned");
            match queues.get_mut(&event_id) {
                Some(queue) => {
                    queue.push(Waiting { input, reply });
                    false
                }
                None => {
                    queues.insert(event_id, vec![Waiting { input, reply }]);
                    true
                }
            }
        };
        if start_worker {
            // The worker owns the batches; a caller that goes away does not stop them.
            let worker = run_batches(self.inner.clone(), event_id);
            match &self.inner.runtime {
                Some(runtime) => drop(runtime.handle().spawn(worker)),
                None => drop(tokio::spawn(worker)),
            }
        }
        answer
            .await
            .map_err(|_| Error::internal("the batch ended without an answer"))
    }
}

/// Runs batches for one event until its queue is empty.
async fn run_batches<I, O>(inner: Arc<Inner<I, O>>, event_id: Uuid) {
    loop {
        let batch: Vec<Waiting<I, O>> = {
            let mut queues = inner.queues.lock().expect("queue lock poisoned");
            let Some(queue) = queues.get_mut(&event_id) else {
                return;
            };
            if queue.is_empty() {
                queues.remove(&event_id);
                return;
            }
            let size = queue.len().min(inner.max_batch);
            queue.drain(..size).collect()
        };
        let (inputs, replies): (Vec<I>, Vec<_>) =
            batch.into_iter().map(|w| (w.input, w.reply)).unzip();
        // A panic in the work must not strand this event's queue without a worker: it is
        // logged, the batch's callers hear an internal error, and the next batch runs.
        let answers = AssertUnwindSafe((inner.work)(event_id, inputs))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                tracing::error!(panic = %panic_message(&*panic), %event_id, "a batch panicked");
                Vec::new()
            });
        // A missing answer drops its sender, and that caller hears an internal error.
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }
}
