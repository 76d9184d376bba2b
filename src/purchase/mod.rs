//! The purchase path: how a hold is made without ever overselling.
//!
//! [`transaction`] is the one transaction that makes holds, under the event row lock.
//! [`coalescer`] batches concurrent requests for one event into that transaction. The
//! [`Purchaser`] chooses between the two (`--purchase-mode`) and answers sold-out events
//! without taking the lock.

pub mod coalescer;
pub mod transaction;

use sqlx::PgPool;
use uuid::Uuid;

use crate::config::PurchaseMode;
use crate::db;
use crate::domain::allocation::{Allocation, Quantity};
use crate::domain::fingerprint::FingerprintHash;
use crate::domain::grant::Ask;
use crate::domain::idempotency::KeyRef;
use crate::error::{Error, Result};
use crate::live::LiveStats;
use coalescer::Coalescer;

#[derive(Clone)]
pub struct Purchaser {
    pool: PgPool,
    live: LiveStats,
    hold_seconds: u32,
    coalescer: Option<Coalescer>,
}

impl Purchaser {
    pub fn new(
        pool: PgPool,
        live: LiveStats,
        hold_seconds: u32,
        mode: PurchaseMode,
        max_batch: usize,
    ) -> Self {
        let coalescer = match mode {
            PurchaseMode::Batched => Some(Coalescer::new(pool.clone(), hold_seconds, max_batch)),
            PurchaseMode::PerRequest => None,
        };
        Self {
            pool,
            live,
            hold_seconds,
            coalescer,
        }
    }

    /// Reserves `quantity` tickets of `event_id` for `buyer`.
    pub async fn purchase(
        &self,
        event_id: Uuid,
        quantity: Quantity,
        buyer: FingerprintHash,
        idempotency: Option<KeyRef>,
    ) -> Result<Allocation> {
        // Sold out needs no lock: a committed zero is a true answer at the instant it was
        // committed, and a request that saw it could equally have arrived just before the
        // next cancellation. Only a "yes" must be decided under the lock. The count heard
        // through the change listener spares the read for events that are changing now.
        let available = match self.live.known_available(event_id) {
            Some(known) => known,
            None => db::events::available_tickets(&self.pool, event_id)
                .await?
                .ok_or(Error::NotFound("event"))?,
        };
        if available == 0 {
            return Err(Error::TicketsSoldOut);
        }
        let ask = Ask {
            quantity: quantity.get(),
            buyer,
            idempotency,
        };
        match &self.coalescer {
            Some(coalescer) => coalescer.submit(event_id, ask).await,
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
