//! Coalesced reads of one event (`GET /events/{id}`): during an on-sale the most frequent
//! request is a buyer refreshing the event, so concurrent reads of one event share one
//! database read and one rendering of its JSON.
//!
//! The consistency rule: a read reflects every change committed before its request arrived.
//! So a request never joins a read that is already running (it may have taken its snapshot
//! before the change the buyer just saw committed); it joins the *next* read of the event,
//! which starts only once the running one has finished and no request can join it any more.
//! Per event there is at most one read running and one waiting to run; every request that
//! arrives while one runs rides on the waiting one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::catalogue;
use crate::domain::catalogue::EventDetails;
use crate::error::{Error, Result};

/// One read of an event, shared by every request it answers, with its JSON rendered at most
/// once.
#[derive(Debug)]
pub struct EventRead {
    /// The event as read, from one snapshot taken after every sharing request arrived.
    pub details: EventDetails,
    json: OnceLock<std::result::Result<Bytes, String>>,
}

impl EventRead {
    /// The details as JSON, rendered by the first caller and shared by the others; the
    /// serializer's message if they do not serialize.
    pub fn json(&self) -> std::result::Result<Bytes, String> {
        self.json
            .get_or_init(|| {
                serde_json::to_vec(&self.details)
                    .map(Bytes::from)
                    .map_err(|err| err.to_string())
            })
            .clone()
    }
}

/// What one read gave its requests.
type Outcome = Result<Arc<EventRead>>;

/// One read and the requests waiting for it: `None` until it has run.
type Batch = watch::Sender<Option<Outcome>>;

/// An event's reads: the one running (if any) and the one waiting to start after it.
#[derive(Default)]
struct Reads {
    running: Option<Batch>,
    next: Option<Batch>,
}

/// The coalescer of event reads; cheap to clone, clones share the reads in flight.
#[derive(Clone)]
pub struct EventReads {
    pool: PgPool,
    events: Arc<Mutex<HashMap<Uuid, Reads>>>,
}

impl EventReads {
    /// A coalescer reading through `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            events: Arc::default(),
        }
    }

    /// The event with its ticket types, from a snapshot taken after this call began (see the
    /// module's consistency rule). The read itself runs in its own task, so a request that
    /// goes away does not strand the others sharing it.
    pub async fn event(&self, id: Uuid) -> Result<Arc<EventRead>> {
        let mut outcome = {
            // Held only to pick the batch, never across an await.
            let mut events = self.events.lock().expect("event reads poisoned");
            let reads = events.entry(id).or_default();
            if let Some(next) = &reads.next {
                // Not yet started (it waits for the running one), so it will see our arrival.
                next.subscribe()
            } else if let Some(running) = &reads.running {
                // Too late for the running read: start the next one once it has finished.
                let after = running.subscribe();
                let batch = watch::channel(None).0;
                let outcome = batch.subscribe();
                reads.next = Some(batch.clone());
                tokio::spawn(self.clone().run_after(id, batch, after));
                outcome
            } else {
                let batch = watch::channel(None).0;
                let outcome = batch.subscribe();
                reads.running = Some(batch.clone());
                tokio::spawn(self.clone().run(id, batch));
                outcome
            }
        };
        match outcome.wait_for(Option::is_some).await {
            Ok(done) => done.clone().expect("waited for an outcome"),
            Err(_) => Err(Error::internal("an event read ended without an answer")),
        }
    }

    /// Runs the waiting read once the running one has answered: the waiting read was moved
    /// to running (closed to new requests) before that answer was sent, so its snapshot is
    /// taken after every request in it arrived.
    async fn run_after(self, id: Uuid, batch: Batch, mut after: watch::Receiver<Option<Outcome>>) {
        // An error only means the running read's task died; its handover has happened anyway.
        let _ = after.wait_for(Option::is_some).await;
        self.run(id, batch).await;
    }

    /// Reads the event for `batch`, hands the event's waiting read over to running, and only
    /// then answers the batch (see [`EventReads::run_after`] for why in this order).
    async fn run(self, id: Uuid, batch: Batch) {
        let handover = Handover { reads: &self, id };
        let outcome = catalogue::event_details(&self.pool, id)
            .await
            .map(|details| {
                Arc::new(EventRead {
                    details,
                    json: OnceLock::new(),
                })
            });
        drop(handover);
        batch.send_replace(Some(outcome));
    }
}

/// Moves the event's waiting read to running when the running read ends, however it ends
/// (a panic included), so no later read waits forever.
struct Handover<'a> {
    reads: &'a EventReads,
    id: Uuid,
}

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        let mut events = self.reads.events.lock().expect("event reads poisoned");
        if let Some(reads) = events.get_mut(&self.id) {
            reads.running = reads.next.take();
            if reads.running.is_none() {
                events.remove(&self.id);
            }
        }
    }
}
