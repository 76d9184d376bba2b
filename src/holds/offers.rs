//! Giving back a hold offered from the waiting list (the offers themselves are made by
//! `crate::offers`, which every path that returns tickets calls).

use uuid::Uuid;

use super::{Tx, apply, expire};
use crate::db::allocations;
use crate::db::allocations::{LockedAllocation, TransitionRecord};
use crate::domain::refusal::Refusal;
use crate::domain::status::AllocationStatus;
use crate::error::{Error, Result};

/// The buyer gives back the hold offered to their waiting-list entry (`DELETE
/// /waiting-list/{id}` of an `offered` entry): a `reserved` hold is cancelled (its entry
/// becomes `declined`), one that has lapsed is expired (`expired`), and either way its
/// tickets move on to the next in line, in this transaction. A hold whose payment is under
/// way cannot be given back: `INVALID_STATUS`. Call holding the event's row lock and its
/// quota locks; this locks the hold.
pub async fn decline(tx: &mut Tx, allocation_id: Uuid) -> Result<()> {
    let LockedAllocation { allocation, lapsed } = allocations::lock(tx, allocation_id)
        .await?
        .ok_or(Error::NotFound("allocation"))?;
    match allocation.status {
        AllocationStatus::Reserved if lapsed => expire(tx, &allocation).await.map(drop),
        AllocationStatus::Reserved => apply(
            tx,
            &allocation,
            AllocationStatus::Cancelled,
            TransitionRecord::default(),
        )
        .await
        .map(drop),
        other => Err(Refusal::InvalidStatus(other).into()),
    }
}
