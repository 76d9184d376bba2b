//! Expiry: lapsed holds of one event go back to the pool, under the event row lock.

use sqlx::PgPool;
use uuid::Uuid;

use super::{Tx, commit};
use crate::db::events::{self, CountMove};
use crate::db::{allocations, quotas};
use crate::domain::stats::{ChangeKind, actor_tag};
use crate::error::{Error, Result};

/// Expires up to `batch` lapsed holds of one event and returns how many it expired.
pub async fn expire_lapsed(pool: &PgPool, event_id: Uuid, batch: i64) -> Result<i64> {
    let mut tx = pool.begin().await?;
    let outcome = expire_lapsed_in(&mut tx, event_id, batch).await;
    commit(tx, outcome).await
}

async fn expire_lapsed_in(tx: &mut Tx, event_id: Uuid, batch: i64) -> Result<i64> {
    // Event lock first, as everywhere; then its quota rows in id order; then the lapsed
    // allocation rows.
    if events::lock(tx, event_id).await?.is_none() {
        return Ok(0);
    }
    quotas::lock_for_event(tx, event_id).await?;
    let expired = allocations::expire_lapsed(tx, event_id, batch).await?;
    if let Some(actor) = expired.last_holder.as_deref() {
        let kind = ChangeKind::TicketExpired;
        events::move_counts(
            tx,
            event_id,
            CountMove::Release,
            i32::try_from(expired.tickets).map_err(Error::internal)?,
            &expired.by_type,
            kind,
            actor,
        )
        .await?;
        // The expired tickets go to the waiting list first, under the same locks.
        crate::offers::offer_returned(tx, event_id, &actor_tag(actor)).await?;
    }
    Ok(expired.holds)
}
