//! The life of a hold after the purchase: read and cancel (this file), pay ([`payment`]),
//! expire ([`expiry`]). The locking helpers here are shared by all three.
//!
//! Lock order, everywhere: the event row first, then the event's quota rows in id order,
//! then the allocation rows (in id order when several, except the holds the settle batch in
//! [`payment`] buys in one `UPDATE`: every transaction that locks several of an event's holds
//! and may wait for them holds the event row first, so no two of them lock that event's
//! holds at once). Every transaction that writes an event's counts takes the locks in that
//! order (see [`lock_hold`], `purchase` and the settle batch). The one transaction that
//! locks a hold without its event and may wait, a payment's first step for one hold, moves
//! no count and asks for no lock after the hold's, so it never waits while holding one; the
//! batched first step never waits at all (`SKIP LOCKED`). No two transactions can each hold
//! a lock the other waits for: the system is free of deadlocks by construction.
//!
//! Parallel requests on one hold (two cancels, a payment and a cancel) queue on those locks;
//! the first to get them changes the status, and the others re-read the new status under
//! the lock and are refused. Exactly one wins, and each caller's answer matches the row.

pub mod expiry;
pub mod offers;
pub mod payment;
pub mod refund;

pub use expiry::expire_lapsed;
pub use payment::{Settler, pay, recover_payment};
pub use refund::{recover_refund, refund};

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::db::admissions;
use crate::db::allocations::{self, LockedAllocation, TransitionRecord};
use crate::db::events::{self, CountMove};
use crate::db::quotas;
use crate::domain::admission::{Admission, CodeSigner};
use crate::domain::allocation::Allocation;
use crate::domain::confirmation::OrderFilter;
use crate::domain::fingerprint::FingerprintHash;
use crate::domain::page::{Page, PageRequest};
use crate::domain::refusal::Refusal;
use crate::domain::stats::{ChangeKind, actor_tag};
use crate::domain::status::AllocationStatus;
use crate::error::{Error, Result};
use crate::idempotency::{self, Recorder};

type Tx = Transaction<'static, Postgres>;

/// Locks a hold the deadlock-free way: its event row first, then the event's quota rows (in
/// id order: a status change moves their counts too), then the allocation row.
async fn lock_hold(tx: &mut Tx, id: Uuid) -> Result<LockedAllocation> {
    // event_id never changes, so reading it before any lock is safe.
    let event_id = allocations::event_of(tx, id)
        .await?
        .ok_or(Error::NotFound("allocation"))?;
    events::lock(tx, event_id).await?;
    quotas::lock_for_event(tx, event_id).await?;
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

/// Applies a transition and the count move it implies, inside the locked transaction. Every
/// status change of a single hold goes through here. A move the status machine does not allow
/// is refused as an internal error before anything is written, in every build; the
/// statement itself also matches only the allowed predecessors, and the trigger
/// `ticket_allocations_status_transition` refuses what both would miss.
async fn apply(
    tx: &mut Tx,
    allocation: &Allocation,
    next: AllocationStatus,
    record: TransitionRecord<'_>,
) -> Result<Allocation> {
    let illegal = || {
        Error::internal(format!(
            "allocation {} cannot go from {} to {next}",
            allocation.id, allocation.status
        ))
    };
    if !allocation.status.can_become(next) {
        return Err(illegal());
    }
    let updated = allocations::transition(tx, allocation.id, next, record)
        .await?
        .ok_or_else(illegal)?;
    let (event_id, actor) = (allocation.event_id, &allocation.fingerprint_hash);
    let by_type = allocation.tickets_by_type();
    let (quantity, by_type) = (
        allocation.quantity - allocation.refunded_quantity,
        by_type.as_slice(),
    );
    match next {
        AllocationStatus::Cancelled => {
            events::move_counts(
                tx,
                event_id,
                CountMove::Release,
                quantity,
                by_type,
                ChangeKind::TicketCancelled,
                actor,
            )
            .await?;
            // The tickets go to the waiting list first; a declined offer's go to the next in
            // line (the trigger `waiting_list_entries_follow_hold` has ended its entry).
            crate::offers::offer_returned(tx, event_id, &actor_tag(actor))
                .await
                .map(drop)?
        }
        AllocationStatus::Expired => {
            events::move_counts(
                tx,
                event_id,
                CountMove::Release,
                quantity,
                by_type,
                ChangeKind::TicketExpired,
                actor,
            )
            .await?;
            crate::offers::offer_returned(tx, event_id, &actor_tag(actor))
                .await
                .map(drop)?
        }
        AllocationStatus::Purchased => {
            events::move_counts(
                tx,
                event_id,
                CountMove::Pay,
                quantity,
                by_type,
                ChangeKind::TicketPurchased,
                actor,
            )
            .await?
        }
        // A declined payment puts the hold back: no tickets move, but watchers hear of it.
        // It bumps the event's change sequence, which relies on the event row lock that every
        // caller holds (taken by `lock_hold`, or by the settle batch).
        AllocationStatus::Reserved => {
            events::announce(tx, event_id, ChangeKind::TicketAllocated, actor).await?
        }
        // payment_pending counts as reserved: nothing moves and nothing is announced. The one
        // transition that needs no event lock (see `payment::begin_payment`).
        AllocationStatus::PaymentPending => {}
        // A refund gives back some of a purchase's lines and moves their tickets itself
        // (`refunds`); no single-hold transition ends in `refunded`.
        AllocationStatus::Refunded => {
            return Err(Error::internal(
                "a refund moves its own tickets; it is not a hold transition",
            ));
        }
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

/// Records `allocation`, a keyed request's answer, under its key (as `recorder` renders it),
/// in the caller's transaction: stored if and only if the transaction commits.
async fn record_answer(
    tx: &mut Tx,
    allocation: Allocation,
    recorder: &Recorder<Allocation>,
) -> Result<Allocation> {
    let response = recorder.render(&allocation).map_err(Error::internal)?;
    idempotency::record_in(tx, &[(recorder.claim(), response)]).await?;
    Ok(allocation)
}

/// Fills the admissions of those of `allocations` that have them
/// ([`Allocation::has_admissions`]), their codes signed by `signer`, with one read on `conn`
/// whatever their number. Inside a transaction, it sees the admissions that transaction's
/// purchase made and the revocations its refund made.
async fn fill_admissions<'a>(
    conn: &mut PgConnection,
    signer: &CodeSigner,
    allocations: impl IntoIterator<Item = &'a mut Allocation>,
) -> Result<()> {
    let allocations: Vec<&mut Allocation> = allocations
        .into_iter()
        .filter(|allocation| allocation.has_admissions())
        .collect();
    if allocations.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = allocations.iter().map(|allocation| allocation.id).collect();
    let mut by_allocation: HashMap<Uuid, Vec<Admission>> = HashMap::new();
    for stored in admissions::of_allocations(conn, &ids).await? {
        by_allocation
            .entry(stored.allocation_id)
            .or_default()
            .push(Admission::signed(stored, signer));
    }
    for allocation in allocations {
        allocation.admissions = by_allocation.remove(&allocation.id).unwrap_or_default();
    }
    Ok(())
}

/// One of `buyer`'s holds, with its admissions (codes signed by `signer`). Errors:
/// `NotFound`, `FingerprintMismatch` (another buyer's).
///
/// Two reads without a transaction: a refund committing between them shows its revoked
/// admissions before its refund. Each part is true as of its read, and the next read shows
/// both.
pub async fn get(
    pool: &PgPool,
    signer: &CodeSigner,
    id: Uuid,
    buyer: &FingerprintHash,
) -> Result<Allocation> {
    let mut conn = pool.acquire().await?;
    let mut allocation = allocations::find_in(&mut conn, id)
        .await?
        .ok_or(Error::NotFound("allocation"))?;
    ensure_holder(&allocation, buyer)?;
    fill_admissions(&mut conn, signer, [&mut allocation]).await?;
    Ok(allocation)
}

/// Any allocation, whoever holds it, for the organiser (the caller proved it with a token),
/// with its admissions (codes signed by `signer`): the same view its holder gets.
pub async fn get_for_organiser(pool: &PgPool, signer: &CodeSigner, id: Uuid) -> Result<Allocation> {
    let mut conn = pool.acquire().await?;
    let mut allocation = allocations::find_in(&mut conn, id)
        .await?
        .ok_or(Error::NotFound("allocation"))?;
    fill_admissions(&mut conn, signer, [&mut allocation]).await?;
    Ok(allocation)
}

/// One page of an event's orders (every buyer's), newest first, narrowed by `filter`, with
/// their admissions read for the whole page at once, for the organiser. `NotFound` for an
/// unknown event.
pub async fn list_for_event(
    pool: &PgPool,
    signer: &CodeSigner,
    event_id: Uuid,
    filter: &OrderFilter,
    page: PageRequest,
) -> Result<Page<Allocation>> {
    if events::sale_read(pool, event_id).await?.is_none() {
        return Err(Error::NotFound("event"));
    }
    let mut conn = pool.acquire().await?;
    let (mut rows, total) = allocations::list_for_event(&mut conn, event_id, filter, page).await?;
    fill_admissions(&mut conn, signer, &mut rows).await?;
    Ok(Page::new(rows, total, page))
}

/// One page of `buyer`'s holds, newest first, with their admissions (codes signed by
/// `signer`), read for the whole page at once.
pub async fn list(
    pool: &PgPool,
    signer: &CodeSigner,
    buyer: &FingerprintHash,
    page: PageRequest,
) -> Result<Page<Allocation>> {
    let (mut rows, total) = allocations::list_for_fingerprint(pool, buyer, page).await?;
    fill_admissions(&mut *pool.acquire().await?, signer, &mut rows).await?;
    Ok(Page::new(rows, total, page))
}

/// The admission `admission_id` of `buyer`'s hold `id`, its code signed by `signer`.
/// Errors: `NotFound` (no such hold, or no such admission of it), `FingerprintMismatch`
/// (another buyer's hold), checked in the order `get` checks them.
pub async fn admission(
    pool: &PgPool,
    signer: &CodeSigner,
    id: Uuid,
    admission_id: Uuid,
    buyer: &FingerprintHash,
) -> Result<Admission> {
    let mut conn = pool.acquire().await?;
    let allocation = allocations::find_in(&mut conn, id)
        .await?
        .ok_or(Error::NotFound("allocation"))?;
    ensure_holder(&allocation, buyer)?;
    let stored = admissions::find_of_allocation(&mut conn, id, admission_id)
        .await?
        .ok_or(Error::NotFound("admission"))?;
    Ok(Admission::signed(stored, signer))
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
