//! The purchase path: how a hold is made without ever overselling.
//!
//! [`transaction`] is the one transaction that makes holds, under the event row lock.
//! [`coalescer`] batches concurrent requests for one event into that transaction. The
//! [`Purchaser`] chooses between the two ([`Batching`], from `--purchase-mode`) and answers
//! sold-out events without taking the lock, from a read that started after the request
//! arrived.

pub mod catalogue_cache;
pub mod coalescer;
pub mod lock_runtime;
pub mod transaction;

use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use crate::db;
use crate::domain::allocation::Allocation;
use crate::domain::fingerprint::FingerprintHash;
use crate::domain::grant::{Ask, LineAsk, SaleState, decide};
use crate::error::{Error, Result};
use crate::idempotency::Recorder;
use crate::live::AvailabilityHint;
use catalogue_cache::CatalogueCache;
use coalescer::{BatchWork, Coalescer};

/// How purchase requests reach the purchase transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// One transaction per request.
    PerRequest,
    /// Requests for one event that arrive while its previous transaction runs share the
    /// next one, up to `max_batch` requests.
    Batched { max_batch: usize },
}

/// One purchase request as the transaction sees it: the ask, and how to record its answer
/// under its idempotency key if it has one.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub ask: Ask,
    /// Given for keyed requests: the hold is recorded under the key in the transaction that
    /// makes it.
    pub record: Option<Recorder<Allocation>>,
}

/// Makes holds: decides sold-out without the lock when a fresh read shows it, and sends
/// every other request to the purchase transaction (batched or one by one).
#[derive(Clone)]
pub struct Purchaser {
    pool: PgPool,
    availability: AvailabilityHint,
    hold_seconds: u32,
    /// The ticket types each event's transactions read last (see [`CatalogueCache`]).
    catalogue: CatalogueCache,
    fresh_reads: Coalescer<(), Result<Option<FreshRead>>>,
    batches: Option<Coalescer<HoldRequest, Result<Allocation>>>,
}

impl Purchaser {
    /// `availability`: the change listener's hint, read to skip a database read for events
    /// that surely have tickets; `hold_seconds`: how long a new hold lasts.
    pub fn new(
        pool: PgPool,
        availability: AvailabilityHint,
        hold_seconds: u32,
        batching: Batching,
        locks: &lock_runtime::LockRuntime,
    ) -> Self {
        let catalogue = CatalogueCache::default();
        let batches = match batching {
            Batching::Batched { max_batch } => {
                let pool = locks.pool().clone();
                let catalogue = catalogue.clone();
                let work: BatchWork<HoldRequest, Result<Allocation>> =
                    Arc::new(move |event_id, requests| {
                        let pool = pool.clone();
                        let catalogue = catalogue.clone();
                        Box::pin(async move {
                            match transaction::reserve(
                                &pool,
                                event_id,
                                &requests,
                                hold_seconds,
                                &catalogue,
                            )
                            .await
                            {
                                Ok(answers) => answers,
                                // The transaction failed as a whole and wrote nothing: everyone
                                // in it hears so.
                                Err(err) => requests.iter().map(|_| Err(err.clone())).collect(),
                            }
                        })
                    });
                Some(Coalescer::on_runtime(locks.clone(), max_batch, work))
            }
            Batching::PerRequest => None,
        };
        let read_pool = pool.clone();
        let read: BatchWork<(), Result<Option<FreshRead>>> = Arc::new(move |event_id, waiting| {
            let pool = read_pool.clone();
            Box::pin(async move {
                let read = FreshRead::of(&pool, event_id).await;
                waiting.iter().map(|()| read.clone()).collect()
            })
        });
        Self {
            pool,
            availability,
            hold_seconds,
            catalogue,
            // One read answers everyone who arrived before it started, however many.
            fresh_reads: Coalescer::new(usize::MAX, read),
            batches,
        }
    }

    /// Reserves the order's `lines` of `event_id` for `buyer`, all or nothing; a keyed
    /// request's `record` says how its hold is recorded under its key, in the same
    /// transaction.
    ///
    /// Errors: `NotFound` (no such event), `Validation` (a line names no active type of the
    /// event, or more than its `maxPerOrder`), the refusals `SalesClosed`, `TicketsSoldOut`,
    /// `InsufficientTickets` and `FingerprintLimit`, or a database failure.
    pub async fn reserve(
        &self,
        event_id: Uuid,
        lines: Vec<LineAsk>,
        buyer: FingerprintHash,
        record: Option<Recorder<Allocation>>,
    ) -> Result<Allocation> {
        let ask = Ask { lines, buyer };
        // A refusal must rest on state at least as new as this request: a client that saw a
        // cancellation commit and then asks must not hear "sold out". The count heard through
        // the change listener arrives some time after its commit was acknowledged, so it may
        // only let a request through to the lock, never refuse it. Sold out is answered
        // without the lock only from a committed read that started after the request arrived
        // (coalesced: one read answers every request that was already waiting for one).
        let maybe_available = self
            .availability
            .known_available(event_id)
            .is_some_and(|known| known > 0);
        if !maybe_available {
            let read = self
                .fresh_reads
                .submit(event_id, ())
                .await??
                .ok_or(Error::NotFound("event"))?;
            if let Some(rejection) = read.sold_out_answer(&ask) {
                return Err(rejection);
            }
        }
        let request = HoldRequest { ask, record };
        match &self.batches {
            Some(batches) => batches.submit(event_id, request).await?,
            None => {
                let mut answers = transaction::reserve(
                    &self.pool,
                    event_id,
                    &[request],
                    self.hold_seconds,
                    &self.catalogue,
                )
                .await?;
                answers
                    .pop()
                    .unwrap_or_else(|| Err(Error::internal("no answer for the purchase")))
            }
        }
    }
}

/// A committed read of an event's sale state that started after the requests it answers
/// arrived; the types are read only when the event has no ticket left.
#[derive(Debug, Clone)]
struct FreshRead {
    sale: db::events::SaleRead,
    /// Present when the event is sold out.
    types: Option<Vec<crate::domain::catalogue::TicketType>>,
}

impl FreshRead {
    async fn of(pool: &PgPool, event_id: Uuid) -> Result<Option<Self>> {
        let Some(sale) = db::events::sale_read(pool, event_id).await? else {
            return Ok(None);
        };
        let types = match sale.available_tickets {
            0 => {
                let mut conn = pool.acquire().await?;
                Some(db::ticket_types::for_event(&mut conn, event_id).await?)
            }
            _ => None,
        };
        Ok(Some(Self { sale, types }))
    }

    /// The answer for `ask` when the event had no ticket left at the read: the same checks
    /// as under the lock (`decide`), in the same order, so a line naming no active type is
    /// still a field error and a closed window still `SALES_CLOSED`; with nothing available,
    /// every valid order is `TICKETS_SOLD_OUT`. `None` when the event had tickets: only the
    /// locked transaction may decide then.
    fn sold_out_answer(&self, ask: &Ask) -> Option<Error> {
        let types = self.types.as_deref()?;
        let sale = SaleState {
            now: self.sale.now,
            event_sales: self.sale.sales,
            available: 0,
            set_aside: 0,
            cap: None,
            types,
            quotas: &[],
            waiting_types: &std::collections::HashSet::new(),
        };
        let decision = decide(sale, &std::collections::HashMap::new(), [ask]).pop()?;
        decision.err().map(Error::from)
    }
}
