//! The purchase path: how a hold is made without ever overselling.
//!
//! One transaction per purchase, in this order (ADR-004):
//! 1. begin;
//! 2. lock the event row (`SELECT … FOR UPDATE`): purchases of one event queue here, one
//!    at a time, so each sees the counts the previous one committed;
//! 3. check availability and the buyer's per-event cap against those locked counts;
//! 4. insert the `reserved` allocation;
//! 5. move the tickets from available to reserved;
//! 6. commit, which releases the lock.
//!
//! Only database statements run while the lock is held. Isolation is READ COMMITTED: the row
//! lock, not the snapshot, serializes buyers, and `FOR UPDATE` always returns the latest
//! committed row. Were the code ever wrong, the CHECK constraints on `events` still refuse
//! any count below zero or any total that does not balance.

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::db::events::CountMove;
use crate::db::{allocations, events};
use crate::domain::allocation::{Allocation, Quantity};
use crate::domain::fingerprint::FingerprintHash;
use crate::error::{Error, Result};

/// Reserves `quantity` tickets of `event_id` for `buyer`, holding them for `hold_seconds`.
pub async fn purchase(
    pool: &PgPool,
    event_id: Uuid,
    quantity: Quantity,
    buyer: &FingerprintHash,
    hold_seconds: u32,
) -> Result<Allocation> {
    let mut tx = pool.begin().await?;
    match reserve_in(&mut tx, event_id, quantity.get(), buyer, hold_seconds).await {
        Ok(allocation) => {
            tx.commit().await?;
            Ok(allocation)
        }
        Err(err) => {
            // Roll back now rather than on drop, so the event lock is released at once.
            tx.rollback().await?;
            Err(err)
        }
    }
}

/// Steps 2 to 5, inside the caller's transaction.
async fn reserve_in(
    tx: &mut Transaction<'static, Postgres>,
    event_id: Uuid,
    quantity: i32,
    buyer: &FingerprintHash,
    hold_seconds: u32,
) -> Result<Allocation> {
    // Step 2: the event row lock. Held until commit or rollback.
    let event = events::lock(tx, event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;

    // Step 3: checks against the locked, current counts.
    if event.available_tickets == 0 {
        return Err(Error::TicketsSoldOut);
    }
    if event.available_tickets < quantity {
        return Err(Error::InsufficientTickets {
            available: event.available_tickets,
        });
    }
    if let Some(limit) = event.max_tickets_per_fingerprint {
        // The event lock also serializes this buyer's concurrent requests for the event,
        // so the sum cannot change between this read and the insert.
        let held = allocations::held_by_fingerprint(tx, event_id, buyer).await?;
        if held + i64::from(quantity) > i64::from(limit) {
            return Err(Error::FingerprintLimit { limit, held });
        }
    }

    // Steps 4 and 5: the hold and the counts, under the same lock and transaction.
    let allocation =
        allocations::insert_reserved(tx, event_id, quantity, buyer, hold_seconds).await?;
    events::move_counts(tx, event_id, CountMove::Reserve, i64::from(quantity)).await?;
    Ok(allocation)
}
