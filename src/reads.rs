//! Coalesced reads of one event (`GET /events/{id}`): during an on-sale the most frequent
//! request is a buyer refreshing the event, so concurrent reads of one event share one
//! database read and one rendering of its JSON.
//!
//! The consistency rule: a read reflects every change committed before its request arrived.
//! So a request never joins a read that is already running (it may have taken its snapshot
//! before the change the buyer just saw committed); it joins the *next* read of the event,
//! which starts only once the running one has finished and no request can join it any more.
//! That is the purchase path's coalescer (`purchase::coalescer`): per event, one read runs at
//! a time, and every request that arrives while it runs rides on the next one.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use sqlx::PgPool;
use uuid::Uuid;

use crate::catalogue;
use crate::domain::catalogue::EventDetails;
use crate::error::Result;
use crate::purchase::coalescer::{BatchWork, Coalescer};

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

/// The coalescer of event reads; cheap to clone, clones share the reads in flight.
#[derive(Clone)]
pub struct EventReads {
    reads: Coalescer<(), Result<Arc<EventRead>>>,
}

impl EventReads {
    /// A coalescer reading through `pool`: the purchase path's [`Coalescer`], whose every
    /// batch starts after each of its requests arrived, with no bound on a batch (one read
    /// answers everyone waiting).
    pub fn new(pool: PgPool) -> Self {
        let read: BatchWork<(), Result<Arc<EventRead>>> = Arc::new(move |id, waiting| {
            let pool = pool.clone();
            Box::pin(async move {
                let read = catalogue::event_details(&pool, id).await.map(|details| {
                    Arc::new(EventRead {
                        details,
                        json: OnceLock::new(),
                    })
                });
                waiting.iter().map(|()| read.clone()).collect()
            })
        });
        Self {
            reads: Coalescer::new(usize::MAX, read),
        }
    }

    /// The event with its ticket types, from a snapshot taken after this call began (see the
    /// module's consistency rule). The read runs in the coalescer's own task, so a request
    /// that goes away does not strand the others sharing it.
    pub async fn event(&self, id: Uuid) -> Result<Arc<EventRead>> {
        self.reads.submit(id, ()).await?
    }
}
