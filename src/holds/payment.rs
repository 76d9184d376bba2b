//! Paying for a hold: three steps, so the provider is never called under a lock; the
//! recovery of payments a crash left in `payment_pending`; and the answer to a keyed retry
//! whose first attempt left its payment's outcome unknown.

use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Tx, apply, commit, ensure_holder, expire, get, lock_hold};
use crate::db::allocations::{LockedAllocation, TransitionRecord};
use crate::domain::allocation::Allocation;
use crate::domain::confirmation::confirmation_code;
use crate::domain::fingerprint::FingerprintHash;
use crate::domain::refusal::Refusal;
use crate::domain::status::AllocationStatus;
use crate::error::{Error, Result};
use crate::idempotency::{self, ParkedPayment, Recorder};
use crate::payment::{self, ChargeOutcome, PaymentProvider};

/// Pays for a hold in three steps, so the provider is never called under a lock:
/// commit `payment_pending`, call the provider, commit the outcome.
///
/// If the provider fails, whether it charged is unknown: the error is
/// `PaymentOutcomeUnknown`, so that a keyed request's claim is parked on this payment. A
/// keyed retry that finds its claim parked (`record`'s [`Recorder::parked`]) first resolves
/// that payment (see [`resolve_parked`]) and pays afresh only if it was not charged.
/// `recovery_window` is how long after a payment begins recovery may take to settle it
/// (`Sweeper::recovery_window`): the error says when that is.
pub async fn pay(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    recovery_window: Duration,
    id: Uuid,
    buyer: &FingerprintHash,
    token: Option<&str>,
    record: Option<&Recorder<Allocation>>,
) -> Result<Allocation> {
    if let Some(recorder) = record
        && let Some(parked) = recorder.parked()
        && let Some(purchased) =
            resolve_parked(pool, recovery_window, id, buyer, parked, recorder).await?
    {
        return Ok(purchased);
    }
    let reference = payment::new_reference(id);
    let pending = begin_payment(pool, id, buyer, &reference).await?;

    // No lock is held here. If this process dies now, the sweeper finds the allocation in
    // payment_pending and settles it from the provider's record (see `recover_payment`). A
    // free order is confirmed without the provider: there is nothing to charge.
    let outcome = match pending.total {
        0 => ChargeOutcome::Charged,
        total => provider
            .charge(&reference, token, total, pending.currency)
            .await
            .map_err(|err| {
                tracing::error!(allocation = %id, %reference, error = %err, "payment provider failed; left for recovery");
                outcome_unknown(&pending, &reference, recovery_window)
            })?,
    };

    let settled = settle_payment(pool, id, &reference, outcome, record).await?;
    match (outcome, settled.status) {
        (ChargeOutcome::Charged, _) | (_, AllocationStatus::Purchased) => Ok(settled),
        _ => Err(Refusal::PaymentDeclined.into()),
    }
}

/// A keyed retry whose claim is parked on `parked`, an earlier attempt's payment with an
/// unknown outcome: it never pays again while that outcome is unknown. Charged (the hold is
/// `purchased` under that reference): the purchase is recorded under the key and returned,
/// and replayed to later retries. Still `payment_pending` under it: `PaymentOutcomeUnknown`
/// again, the claim stays parked. Anything else means recovery or the request settled it
/// uncharged (a charged reference always ends `purchased`): the claim becomes this
/// attempt's, and `None` lets it pay afresh.
async fn resolve_parked(
    pool: &PgPool,
    recovery_window: Duration,
    id: Uuid,
    buyer: &FingerprintHash,
    parked: &ParkedPayment,
    recorder: &Recorder<Allocation>,
) -> Result<Option<Allocation>> {
    if parked.allocation != id {
        return Err(Error::internal(format!(
            "a payment key for allocation {id} is parked on allocation {}",
            parked.allocation
        )));
    }
    // No lock: a settled payment's outcome never changes, and an unsettled one is only
    // reported as unsettled, so a read that is a moment old answers truly.
    let allocation = get(pool, id, buyer).await?;
    let this_payment = allocation.payment_reference.as_deref() == Some(parked.reference.as_str());
    match allocation.status {
        AllocationStatus::Purchased if this_payment => {
            let mut tx = pool.begin().await?;
            let recorded = record_purchase(&mut tx, allocation, recorder).await;
            commit(tx, recorded).await.map(Some)
        }
        AllocationStatus::PaymentPending if this_payment => Err(outcome_unknown(
            &allocation,
            &parked.reference,
            recovery_window,
        )),
        _ => {
            idempotency::unpark(pool, recorder.claim(), parked).await?;
            Ok(None)
        }
    }
}

/// The payment of `allocation` under `reference` has an unknown outcome: recovery settles
/// it by `recovery_window` after it began (`payment_pending_at`, which a `payment_pending`
/// hold always has; now, should it be missing).
fn outcome_unknown(allocation: &Allocation, reference: &str, recovery_window: Duration) -> Error {
    let began = allocation
        .payment_pending_at
        .unwrap_or_else(OffsetDateTime::now_utc);
    Error::PaymentOutcomeUnknown {
        allocation: allocation.id,
        reference: reference.to_owned(),
        settled_by: began + recovery_window,
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
    let settled = match (
        settle_payment_in(&mut tx, id, reference, outcome).await,
        record,
    ) {
        (Ok(allocation), Some(recorder)) if allocation.status == AllocationStatus::Purchased => {
            record_purchase(&mut tx, allocation, recorder).await
        }
        (settled, _) => settled,
    };
    commit(tx, settled).await
}

/// Records a purchased hold under the request's key (as `recorder` renders it), in the
/// caller's transaction.
async fn record_purchase(
    tx: &mut Tx,
    allocation: Allocation,
    recorder: &Recorder<Allocation>,
) -> Result<Allocation> {
    let response = recorder.render(&allocation).map_err(Error::internal)?;
    idempotency::record_in(tx, &[(recorder.claim(), response)]).await?;
    Ok(allocation)
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
/// reference's outcome, voiding it if it was never charged, then record that outcome. A free
/// order never reached the provider, and is confirmed as its payment would have been.
pub async fn recover_payment(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    id: Uuid,
    reference: &str,
    total: i64,
) -> Result<Allocation> {
    let outcome = match total {
        0 => ChargeOutcome::Charged,
        _ => provider.resolve(reference).await.map_err(|err| {
            tracing::warn!(allocation = %id, %reference, error = %err, "payment recovery could not reach the provider");
            Error::ServiceUnavailable
        })?,
    };
    settle_payment(pool, id, reference, outcome, None).await
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(Error::internal)?;
    Ok(bytes)
}
