//! The life of a hold after the purchase: pay, cancel, read, expire.
//!
//! Lock order, everywhere: the event row first, then the allocation row. Every transaction
//! that writes an allocation or an event's counts takes the locks in that order (see
//! [`lock_hold`] and `purchase`), so no two transactions can each hold a lock the other
//! waits for: the system is free of deadlocks by construction.
//!
//! Parallel requests on one hold (two cancels, a payment and a cancel) queue on those locks;
//! the first to get them changes the status, and the others re-read the new status under
//! the lock and are refused. Exactly one wins, and each caller's answer matches the row.

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::db::allocations::{self, LockedAllocation, TransitionRecord};
use crate::db::events::{self, CountMove};
use crate::domain::allocation::{Allocation, AllocationStatus, confirmation_code};
use crate::domain::fingerprint::FingerprintHash;
use crate::domain::page::{Page, PageRequest};
use crate::domain::refusal::Refusal;
use crate::domain::stats::ChangeKind;
use crate::error::{Error, Result};
use crate::idempotency::{self, Recorder};
use crate::payment::{ChargeOutcome, PaymentProvider};

type Tx = Transaction<'static, Postgres>;

/// Locks a hold the deadlock-free way: its event row first, then the allocation row.
async fn lock_hold(tx: &mut Tx, id: Uuid) -> Result<LockedAllocation> {
    // event_id never changes, so reading it before any lock is safe.
    let event_id = allocations::event_of(tx, id)
        .await?
        .ok_or(Error::NotFound("allocation"))?;
    events::lock(tx, event_id).await?;
    allocations::lock(tx, id)
        .await?
        .ok_or(Error::NotFound("allocation"))
}

/// Only the buyer who made the hold may see or act on it.
fn ensure_holder(allocation: &Allocation, buyer: &FingerprintHash) -> Result<()> {
    if allocation.fingerprint_hash == buyer.as_str() {
        Ok(())
    } else {
        Err(Refusal::FingerprintMismatch.into())
    }
}

/// Applies a transition and the count move it implies, inside the locked transaction.
async fn apply(
    tx: &mut Tx,
    allocation: &Allocation,
    next: AllocationStatus,
    record: TransitionRecord<'_>,
) -> Result<Allocation> {
    debug_assert!(
        allocation.status.can_become(next),
        "{} -> {next}",
        allocation.status
    );
    let updated = allocations::transition(tx, allocation.id, next, record).await?;
    let (event_id, quantity, actor) = (
        allocation.event_id,
        i64::from(allocation.quantity),
        &allocation.fingerprint_hash,
    );
    match next {
        AllocationStatus::Cancelled => {
            events::move_counts(
                tx,
                event_id,
                CountMove::Release,
                quantity,
                ChangeKind::TicketCancelled,
                actor,
            )
            .await?
        }
        AllocationStatus::Expired => {
            events::move_counts(
                tx,
                event_id,
                CountMove::Release,
                quantity,
                ChangeKind::TicketExpired,
                actor,
            )
            .await?
        }
        AllocationStatus::Purchased => {
            events::move_counts(
                tx,
                event_id,
                CountMove::Purchase,
                quantity,
                ChangeKind::TicketPurchased,
                actor,
            )
            .await?
        }
        // A declined payment puts the hold back: no tickets move, but watchers hear of it.
        // It bumps the event's change sequence, which relies on the event row lock that every
        // caller took through `lock_hold`.
        AllocationStatus::Reserved => {
            events::announce(tx, event_id, ChangeKind::TicketAllocated, actor).await?
        }
        // payment_pending counts as reserved: nothing moves and nothing is announced.
        AllocationStatus::PaymentPending => {}
    }
    Ok(updated)
}

/// A lapsed hold becomes `expired` and its tickets return to the pool.
async fn expire(tx: &mut Tx, allocation: &Allocation) -> Result<Allocation> {
    apply(
        tx,
        allocation,
        AllocationStatus::Expired,
        TransitionRecord::default(),
    )
    .await
}

/// Commits whatever the transaction wrote, even when the outcome is an error: a payment
/// that finds its hold lapsed expires it and still answers 410.
async fn commit<T>(tx: Tx, outcome: Result<T>) -> Result<T> {
    tx.commit().await?;
    outcome
}

pub async fn get(pool: &PgPool, id: Uuid, buyer: &FingerprintHash) -> Result<Allocation> {
    let allocation = allocations::find(pool, id)
        .await?
        .ok_or(Error::NotFound("allocation"))?;
    ensure_holder(&allocation, buyer)?;
    Ok(allocation)
}

pub async fn list(
    pool: &PgPool,
    buyer: &FingerprintHash,
    page: PageRequest,
) -> Result<Page<Allocation>> {
    let (rows, total) = allocations::list_for_fingerprint(pool, buyer, page).await?;
    Ok(Page::new(rows, total, page))
}

/// The holder gives a `reserved` hold back; its tickets return to the pool.
pub async fn cancel(pool: &PgPool, id: Uuid, buyer: &FingerprintHash) -> Result<Allocation> {
    let mut tx = pool.begin().await?;
    let outcome = cancel_in(&mut tx, id, buyer).await;
    commit(tx, outcome).await
}

async fn cancel_in(tx: &mut Tx, id: Uuid, buyer: &FingerprintHash) -> Result<Allocation> {
    let LockedAllocation { allocation, lapsed } = lock_hold(tx, id).await?;
    ensure_holder(&allocation, buyer)?;
    match allocation.status {
        AllocationStatus::Reserved if lapsed => {
            // Too late to cancel: it is expired, and its tickets go back all the same.
            expire(tx, &allocation).await?;
            Err(Refusal::InvalidStatus(AllocationStatus::Expired).into())
        }
        AllocationStatus::Reserved => {
            apply(
                tx,
                &allocation,
                AllocationStatus::Cancelled,
                TransitionRecord::default(),
            )
            .await
        }
        other => Err(Refusal::InvalidStatus(other).into()),
    }
}

/// Pays for a hold in three steps, so the provider is never called under a lock:
/// commit `payment_pending`, call the provider, commit the outcome.
pub async fn pay(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    id: Uuid,
    buyer: &FingerprintHash,
    token: Option<&str>,
    record: Option<&Recorder<Allocation>>,
) -> Result<Allocation> {
    let reference = format!("pay_{}", Uuid::new_v4().simple());
    let pending = begin_payment(pool, id, buyer, &reference).await?;

    // No lock is held here. If this process dies now, the sweeper finds the allocation in
    // payment_pending and settles it from the provider's record (see `recover_payment`).
    let outcome = provider
        .charge(&reference, token, pending.quantity)
        .await
        .map_err(|err| {
            tracing::error!(allocation = %id, %reference, error = %err, "payment provider failed; left for recovery");
            Error::ServiceUnavailable
        })?;

    let settled = settle_payment(pool, id, &reference, outcome, record).await?;
    match (outcome, settled.status) {
        (ChargeOutcome::Charged, _) | (_, AllocationStatus::Purchased) => Ok(settled),
        _ => Err(Refusal::PaymentDeclined.into()),
    }
}

/// Step one of a payment: a `reserved`, unlapsed hold of this buyer becomes
/// `payment_pending` under a fresh payment reference.
async fn begin_payment(
    pool: &PgPool,
    id: Uuid,
    buyer: &FingerprintHash,
    reference: &str,
) -> Result<Allocation> {
    let mut tx = pool.begin().await?;
    let outcome = begin_payment_in(&mut tx, id, buyer, reference).await;
    commit(tx, outcome).await
}

async fn begin_payment_in(
    tx: &mut Tx,
    id: Uuid,
    buyer: &FingerprintHash,
    reference: &str,
) -> Result<Allocation> {
    let LockedAllocation { allocation, lapsed } = lock_hold(tx, id).await?;
    ensure_holder(&allocation, buyer)?;
    match allocation.status {
        AllocationStatus::Reserved if lapsed => {
            // The sweeper has not reached it yet: expire it now, then refuse.
            expire(tx, &allocation).await?;
            Err(Refusal::ReservationExpired.into())
        }
        AllocationStatus::Reserved => {
            let record = TransitionRecord {
                payment_reference: Some(reference),
                ..TransitionRecord::default()
            };
            apply(tx, &allocation, AllocationStatus::PaymentPending, record).await
        }
        AllocationStatus::Expired => Err(Refusal::ReservationExpired.into()),
        other => Err(Refusal::InvalidStatus(other).into()),
    }
}

/// Step three: record the provider's outcome, if the allocation is still waiting for this
/// reference. If recovery settled it first, the recorded state is returned unchanged.
/// A captured payment is recorded under the request's idempotency key (as `record` renders
/// it) in the same transaction.
async fn settle_payment(
    pool: &PgPool,
    id: Uuid,
    reference: &str,
    outcome: ChargeOutcome,
    record: Option<&Recorder<Allocation>>,
) -> Result<Allocation> {
    let mut tx = pool.begin().await?;
    let mut settled = settle_payment_in(&mut tx, id, reference, outcome).await;
    if let (Ok(allocation), Some(recorder)) = (&settled, record)
        && allocation.status == AllocationStatus::Purchased
    {
        settled = match recorder.render(allocation).map_err(Error::internal) {
            Ok(response) => idempotency::record_in(&mut tx, &[(recorder.key(), response)])
                .await
                .map(|()| allocation.clone()),
            Err(err) => Err(err),
        };
    }
    commit(tx, settled).await
}

async fn settle_payment_in(
    tx: &mut Tx,
    id: Uuid,
    reference: &str,
    outcome: ChargeOutcome,
) -> Result<Allocation> {
    let LockedAllocation { allocation, lapsed } = lock_hold(tx, id).await?;
    let waiting = allocation.status == AllocationStatus::PaymentPending
        && allocation.payment_reference.as_deref() == Some(reference);
    if !waiting {
        return Ok(allocation);
    }
    settle_in(tx, &allocation, outcome, lapsed).await
}

async fn settle_in(
    tx: &mut Tx,
    allocation: &Allocation,
    outcome: ChargeOutcome,
    lapsed: bool,
) -> Result<Allocation> {
    match outcome {
        ChargeOutcome::Charged => {
            let code = confirmation_code(random_bytes()?);
            let record = TransitionRecord {
                confirmation_code: Some(&code),
                ..TransitionRecord::default()
            };
            apply(tx, allocation, AllocationStatus::Purchased, record).await
        }
        // Declined or voided: the hold goes back to reserved with its original expiry,
        // or straight to expired if that expiry has passed meanwhile.
        ChargeOutcome::Declined | ChargeOutcome::Voided if lapsed => expire(tx, allocation).await,
        ChargeOutcome::Declined | ChargeOutcome::Voided => {
            apply(
                tx,
                allocation,
                AllocationStatus::Reserved,
                TransitionRecord::default(),
            )
            .await
        }
    }
}

/// Settles a payment whose request never finished (crash, hang): ask the provider for the
/// reference's outcome, voiding it if it was never charged, then record that outcome.
pub async fn recover_payment(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    id: Uuid,
    reference: &str,
) -> Result<Allocation> {
    let outcome = provider.resolve(reference).await.map_err(|err| {
        tracing::warn!(allocation = %id, %reference, error = %err, "payment recovery could not reach the provider");
        Error::ServiceUnavailable
    })?;
    settle_payment(pool, id, reference, outcome, None).await
}

/// Expires up to `batch` lapsed holds of one event and returns how many it expired.
pub async fn expire_lapsed(pool: &PgPool, event_id: Uuid, batch: i64) -> Result<i64> {
    let mut tx = pool.begin().await?;
    let outcome = expire_lapsed_in(&mut tx, event_id, batch).await;
    commit(tx, outcome).await
}

async fn expire_lapsed_in(tx: &mut Tx, event_id: Uuid, batch: i64) -> Result<i64> {
    // Event lock first, as everywhere; then the lapsed allocation rows.
    if events::lock(tx, event_id).await?.is_none() {
        return Ok(0);
    }
    let expired = allocations::expire_lapsed(tx, event_id, batch).await?;
    if let Some(actor) = expired.last_holder.as_deref() {
        let kind = ChangeKind::TicketExpired;
        events::move_counts(
            tx,
            event_id,
            CountMove::Release,
            expired.tickets,
            kind,
            actor,
        )
        .await?;
    }
    Ok(expired.holds)
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(Error::internal)?;
    Ok(bytes)
}
