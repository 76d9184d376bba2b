//! The purchase path: how a hold is made without ever overselling.
//!
//! [`transaction`] is the one transaction that makes holds, under the event row lock.
//! [`coalescer`] batches concurrent requests for one event into that transaction. The
//! [`Purchaser`] chooses between the two (`--purchase-mode`) and answers sold-out events
//! without taking the lock, from a read that started after the request arrived.

pub mod coalescer;
pub mod transaction;

use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use crate::config::PurchaseMode;
use crate::db;
use crate::domain::allocation::{Allocation, Quantity};
use crate::domain::fingerprint::FingerprintHash;
use crate::domain::grant::Ask;
use crate::domain::idempotency::KeyRef;
use crate::domain::refusal::Refusal;
use crate::error::{Error, Result};
use crate::live::LiveStats;
use coalescer::{BatchWork, Coalescer};

/// Makes holds: decides sold-out without the lock when a fresh read shows it, and sends
/// every other request to the purchase transaction (batched or one by one).
#[derive(Clone)]
pub struct Purchaser {
    pool: PgPool,
    live: LiveStats,
    hold_seconds: u32,
    fresh_reads: Coalescer<(), Result<Option<i32>>>,
    batches: Option<Coalescer<Ask, Result<Allocation>>>,
}

impl Purchaser {
    /// `hold_seconds`: how long a new hold lasts; `max_batch`: most requests in one batched
    /// transaction (batched mode only).
    pub fn new(
        pool: PgPool,
        live: LiveStats,
        hold_seconds: u32,
        mode: PurchaseMode,
        max_batch: usize,
    ) -> Self {
        let batches = match mode {
            PurchaseMode::Batched => {
                let pool = pool.clone();
                let work: BatchWork<Ask, Result<Allocation>> = Arc::new(move |event_id, asks| {
                    let pool = pool.clone();
                    Box::pin(async move {
                        match transaction::reserve(&pool, event_id, &asks, hold_seconds).await {
                            Ok(answers) => answers,
                            // The transaction failed as a whole and wrote nothing: everyone
                            // in it hears so.
                            Err(err) => asks.iter().map(|_| Err(err.clone())).collect(),
                        }
                    })
                });
                Some(Coalescer::new(max_batch, work))
            }
            PurchaseMode::PerRequest => None,
        };
        let read_pool = pool.clone();
        let read: BatchWork<(), Result<Option<i32>>> = Arc::new(move |event_id, waiting| {
            let pool = read_pool.clone();
            Box::pin(async move {
                let available = db::events::available_tickets(&pool, event_id)
                    .await
                    .map_err(Error::from);
                waiting.iter().map(|()| available.clone()).collect()
            })
        });
        Self {
            pool,
            live,
            hold_seconds,
            // One read answers everyone who arrived before it started, however many.
            fresh_reads: Coalescer::new(usize::MAX, read),
            batches,
        }
    }

    /// Reserves `quantity` tickets of `event_id` for `buyer`.
    ///
    /// Errors: `NotFound` (no such event), `TicketsSoldOut`, `InsufficientTickets`,
    /// `FingerprintLimit`, or a database failure.
    pub async fn purchase(
        &self,
        event_id: Uuid,
        quantity: Quantity,
        buyer: FingerprintHash,
        idempotency: Option<KeyRef>,
    ) -> Result<Allocation> {
        // A refusal must rest on state at least as new as this request: a client that saw a
        // cancellation commit and then asks must not hear "sold out". The count heard through
        // the change listener arrives some time after its commit was acknowledged, so it may
        // only let a request through to the lock, never refuse it. Sold out is answered
        // without the lock only from a committed read that started after the request arrived
        // (coalesced: one read answers every request that was already waiting for one).
        let maybe_available = self
            .live
            .known_available(event_id)
            .is_some_and(|known| known > 0);
        if !maybe_available {
            let available = self
                .fresh_reads
                .submit(event_id, ())
                .await??
                .ok_or(Error::NotFound("event"))?;
            if available == 0 {
                return Err(Refusal::TicketsSoldOut.into());
            }
        }
        let ask = Ask {
            quantity: quantity.get(),
            buyer,
            idempotency,
        };
        match &self.batches {
            Some(batches) => batches.submit(event_id, ask).await?,
            None => {
                let mut answers =
                    transaction::reserve(&self.pool, event_id, &[ask], self.hold_seconds).await?;
                answers
                    .pop()
                    .unwrap_or_else(|| Err(Error::internal("no answer for the purchase")))
            }
        }
    }
}
