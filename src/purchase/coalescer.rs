//! Coalesced purchases: inside one instance, requests for the same event that arrive while
//! that event's previous batch is committing join the next batch, and a batch runs the
//! purchase transaction once. One hot event then sells a batch per commit instead of one
//! ticket per commit, while every guarantee still comes from the same row lock.
//!
//! There is no artificial waiting: a request that finds no batch running starts one at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::transaction;
use crate::domain::allocation::Allocation;
use crate::domain::grant::Ask;
use crate::error::{Error, Result};

struct Waiting {
    ask: Ask,
    reply: oneshot::Sender<Result<Allocation>>,
}

struct Inner {
    pool: PgPool,
    hold_seconds: u32,
    max_batch: usize,
    /// Per event: requests not yet in a batch. An entry exists exactly while a worker runs
    /// for that event; the worker removes it when it finds the queue empty.
    queues: Mutex<HashMap<Uuid, Vec<Waiting>>>,
}

#[derive(Clone)]
pub struct Coalescer {
    inner: Arc<Inner>,
}

impl Coalescer {
    pub fn new(pool: PgPool, hold_seconds: u32, max_batch: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                hold_seconds,
                max_batch: max_batch.max(1),
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Queues the request behind this event's running batch, or starts a batch for it.
    pub async fn submit(&self, event_id: Uuid, ask: Ask) -> Result<Allocation> {
        let (reply, answer) = oneshot::channel();
        let start_worker = {
            let mut queues = self.inner.queues.lock().expect("queue lock poisoned");
            match queues.get_mut(&event_id) {
                Some(queue) => {
                    queue.push(Waiting { ask, reply });
                    false
                }
                None => {
                    queues.insert(event_id, vec![Waiting { ask, reply }]);
                    true
                }
            }
        };
        if start_worker {
            // The worker owns the batches; a caller that goes away does not stop them.
            tokio::spawn(run_batches(self.inner.clone(), event_id));
        }
        answer
            .await
            .map_err(|_| Error::internal("the purchase batch ended without an answer"))?
    }
}

/// Runs batches for one event until its queue is empty.
async fn run_batches(inner: Arc<Inner>, event_id: Uuid) {
    loop {
        let batch: Vec<Waiting> = {
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
        let asks: Vec<Ask> = batch.iter().map(|w| w.ask.clone()).collect();
        match transaction::reserve(&inner.pool, event_id, &asks, inner.hold_seconds).await {
            Ok(answers) => {
                for (waiting, answer) in batch.into_iter().zip(answers) {
                    let _ = waiting.reply.send(answer);
                }
            }
            Err(err) => {
                // The transaction failed as a whole and wrote nothing: everyone in it hears so.
                for waiting in batch {
                    let _ = waiting.reply.send(Err(err.clone()));
                }
            }
        }
    }
}
