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
use crate::error::{Error, Result};
use coalescer::Coalescer;

#[derive(Clone)]
pub struct Purchaser {
    pool: PgPool,
    hold_seconds: u32,
    coalescer: Option<Coalescer>,
}

impl Purchaser {
    pub fn new(pool: PgPool, hold_seconds: u32, mode: PurchaseMode, max_batch: usize) -> Self {
        let coalescer = match mode {
            PurchaseMode::Batched => Some(Coalescer::new(pool.clone(), hold_seconds, max_batch)),
            PurchaseMode::PerRequest => None,
        };
        Self {
            pool,
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
    ) -> Result<Allocation> {
        // Sold out needs no lock: a committed zero is a true answer at the instant it was
        // read, and a request that saw it could equally have arrived just before the last
        // cancellation. Only a "yes" must be decided under the lock.
        match db::events::available_tickets(&self.pool, event_id).await? {
            None => return Err(Error::NotFound("event")),
            Some(0) => return Err(Error::TicketsSoldOut),
            Some(_) => {}
        }
        let ask = Ask {
            quantity: quantity.get(),
            buyer,
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
