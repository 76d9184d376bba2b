//! Refunding a purchase, in three steps like a payment, so the provider is never called
//! under a lock: commit a `pending` refund (its tickets count as refunded from then on, so
//! parallel refunds of one order can never give back a ticket twice), ask the provider,
//! commit the outcome. The tickets return to the event's and their quotas' pools in the
//! transaction that completes the refund. The sweeper settles a refund a crash or a failing
//! provider left pending ([`recover_refund`]).

use sqlx::PgPool;
use uuid::Uuid;

use super::{Tx, commit, fill_admissions, lock_hold, record_answer};
use crate::db::events::{self, CountMove};
use crate::db::refunds::{self, PendingRefund};
use crate::db::{allocations, idempotency};
use crate::domain::admission::CodeSigner;
use crate::domain::allocation::{Allocation, RefundStatus};
use crate::domain::idempotency::KeyRef;
use crate::domain::refund::{RefundAsk, plan};
use crate::domain::refusal::Refusal;
use crate::domain::stats::{ChangeKind, actor_tag};
use crate::domain::status::AllocationStatus;
use crate::error::{Error, Result};
use crate::idempotency::Recorder;
use crate::payment::{self, PaymentProvider, RefundOutcome};

/// Refunds `ask`'s tickets of the purchase `id` as the request `prefix` (see
/// `payment::refund_reference`; a keyed request's retry has the same prefix): a refund of
/// that request still pending is resumed instead of starting another, one completed is
/// answered as done, one failed is tried afresh. A completed refund is recorded under the
/// request's key (as `record` renders it) in the transaction that completes it. The answer
/// carries the order's admissions (the refunded ones revoked), their codes signed by
/// `signer`.
///
/// Errors: `NotFound`; `InvalidStatus` (not `purchased`); `Validation` (a line names no line
/// of the order); `RefundExceedsPurchase`; `RefundOutcomeUnknown` when the refund was left
/// pending (the provider failed, or the database went away while the refund was begun or
/// recorded): recovery settles it, a keyed retry resumes it, and a keyed request's claim is
/// parked on it (see `http::idempotent`).
pub async fn refund(
    pool: &PgPool,
    signer: &CodeSigner,
    provider: &dyn PaymentProvider,
    id: Uuid,
    ask: &RefundAsk,
    prefix: &str,
    record: Option<&Recorder<Allocation>>,
) -> Result<Allocation> {
    let mut tx = pool.begin().await?;
    let key = record.map(|recorder| &recorder.claim().key);
    let begun = begin_refund_in(&mut tx, id, ask, prefix, key).await;
    let (pending, allocation) = match commit(tx, begun).await {
        Ok(Begun::Pending(pending, allocation)) => (pending, allocation),
        // A retry of a refund already settled: the order as it is now, recorded under the
        // key (a claim parked on that refund ends here).
        Ok(Begun::Settled(allocation)) => {
            let allocation = read(pool, signer, allocation.id).await?;
            let Some(recorder) = record else {
                return Ok(allocation);
            };
            let mut tx = pool.begin().await?;
            let recorded = record_answer(&mut tx, allocation, recorder).await;
            return commit(tx, recorded).await;
        }
        // Step one cut off in flight may have begun a refund under this request's prefix:
        // the claim is kept for the retry that resumes it.
        Err(Error::DatabaseCutOff) => {
            return Err(Error::RefundOutcomeUnknown {
                allocation: id,
                reference: prefix.to_owned(),
            });
        }
        Err(err) => return Err(err),
    };
    let left_pending = || Error::RefundOutcomeUnknown {
        allocation: id,
        reference: pending.reference.clone(),
    };

    // No lock is held here. If this process dies now, the sweeper finds the refund pending
    // and settles it from the provider's record. A free order has nothing to give back.
    let reference = pending.reference.as_str();
    let outcome = match (pending.amount, allocation.payment_reference.as_deref()) {
        (0, _) => RefundOutcome::Refunded,
        (amount, Some(charge)) => provider
            .refund(reference, charge, amount, allocation.currency)
            .await
            .map_err(|err| {
                tracing::error!(allocation = %id, %reference, error = %err, "refund provider failed; left for recovery");
                left_pending()
            })?,
        (_, None) => return Err(Error::internal("a purchase without a payment reference")),
    };
    // Recording the outcome cut off (or refused for want of a connection) leaves the refund
    // pending, as a provider failure does.
    match settle(pool, signer, &pending, outcome, record).await.answer {
        Err(Error::ServiceUnavailable | Error::DatabaseCutOff) => {
            tracing::warn!(allocation = %id, %reference, "recording a refund's outcome failed; left for recovery");
            Err(left_pending())
        }
        other => other,
    }
}

/// What step one found or made.
enum Begun {
    Pending(PendingRefund, Allocation),
    Settled(Allocation),
}

/// Step one, for the request `prefix` sent under `key` (if keyed).
async fn begin_refund_in(
    tx: &mut Tx,
    id: Uuid,
    ask: &RefundAsk,
    prefix: &str,
    key: Option<&KeyRef>,
) -> Result<Begun> {
    // Lock order as everywhere: event, its quotas, then the allocation; then its refunds.
    let allocation = lock_hold(tx, id).await?.allocation;
    // A key's prefix is the same in each of its lives, but after its 24 hours the key is a
    // new request: only a refund begun in its present life is this request's. (A refund of
    // its last life found here answered 200 and refunded nothing.)
    let since = match key {
        Some(key) => idempotency::lifetime_start(tx, key).await?,
        None => None,
    };
    match refunds::lock_latest_with_prefix(tx, id, prefix, since).await? {
        Some((pending, RefundStatus::Pending)) => return Ok(Begun::Pending(pending, allocation)),
        Some((_, RefundStatus::Completed)) => return Ok(Begun::Settled(allocation)),
        Some((_, RefundStatus::Failed)) | None => {}
    }
    if allocation.status != AllocationStatus::Purchased {
        return Err(Refusal::InvalidStatus(allocation.status).into());
    }
    let under_way = refunds::pending_by_type(tx, id).await?;
    let lines = plan(&allocation.lines, &under_way, ask)?;
    let pending = refunds::insert_pending(
        tx,
        id,
        &payment::refund_attempt_reference(prefix),
        allocation.currency,
        &lines,
        ask.reason.as_deref(),
    )
    .await?;
    Ok(Begun::Pending(pending, allocation))
}

/// Step three: record the provider's outcome if the refund is still pending, with its
/// admissions as this transaction leaves them. Recovery may have settled it first: a refund
/// it completed answers the order as it is; one it voided (or the provider's voided
/// answer) is `RefundVoided`, the refund `failed`.
async fn settle(
    pool: &PgPool,
    signer: &CodeSigner,
    pending: &PendingRefund,
    outcome: RefundOutcome,
    record: Option<&Recorder<Allocation>>,
) -> RefundSettled {
    let mut decided = false;
    let answer = settle_recording(pool, signer, pending, outcome, record, &mut decided).await;
    // A refund the provider refused or voided is failed, and so settled, here (`commit`
    // commits a refusal's writes too). Any other error is a statement or commit that failed,
    // and PostgreSQL rolled the transaction back.
    let settled_here =
        decided && matches!(answer, Ok(_) | Err(Error::Refused(_) | Error::RefundVoided));
    RefundSettled {
        answer,
        settled_here,
    }
}

/// What [`settle`] did: its answer, and whether this call settled the refund (its outcome
/// committed by this transaction), where `false` means it was settled before (by recovery,
/// on this instance or another) or nothing was committed.
struct RefundSettled {
    answer: Result<Allocation>,
    settled_here: bool,
}

/// [`settle`]'s transaction: the outcome recorded ([`settle_in`], which sets `decided`), the
/// order's admissions, a keyed request's answer, then commit.
async fn settle_recording(
    pool: &PgPool,
    signer: &CodeSigner,
    pending: &PendingRefund,
    outcome: RefundOutcome,
    record: Option<&Recorder<Allocation>>,
    decided: &mut bool,
) -> Result<Allocation> {
    let mut tx = pool.begin().await?;
    let mut settled = settle_in(&mut tx, pending, outcome, decided).await;
    if let Ok(allocation) = &mut settled {
        fill_admissions(&mut tx, signer, [allocation]).await?;
    }
    let settled = match (settled, record) {
        (Ok(allocation), Some(recorder)) => record_answer(&mut tx, allocation, recorder).await,
        (settled, _) => settled,
    };
    commit(tx, settled).await
}

/// Records `outcome` under the refund's row lock. `decided` is set once the refund is found
/// still pending, so this transaction is the one that settles it.
async fn settle_in(
    tx: &mut Tx,
    pending: &PendingRefund,
    outcome: RefundOutcome,
    decided: &mut bool,
) -> Result<Allocation> {
    let allocation = lock_hold(tx, pending.allocation_id).await?.allocation;
    match refunds::lock_by_reference(tx, &pending.reference).await? {
        Some((_, RefundStatus::Pending)) => *decided = true,
        // Recovery settled it first, as the provider's record had it: done, or not made
        // (voided), which must not be answered as done.
        Some((_, RefundStatus::Completed)) => return Ok(allocation),
        Some((_, RefundStatus::Failed)) => return Err(Error::RefundVoided),
        None => return Err(Error::internal("a begun refund without its row")),
    }
    match outcome {
        RefundOutcome::Refunded => {
            if !refunds::complete(tx, pending).await? {
                return Err(Error::internal(format!(
                    "refund {} completed on an allocation that is not purchased",
                    pending.id
                )));
            }
            // The tickets go back to the pools of the event and of their types' quotas in
            // the transaction that records the refund.
            let by_type: Vec<(Uuid, i32)> = pending
                .lines
                .iter()
                .map(|line| (line.ticket_type_id, line.quantity))
                .collect();
            events::move_counts(
                tx,
                allocation.event_id,
                CountMove::Refund,
                by_type.iter().map(|(_, n)| n).sum(),
                &by_type,
                ChangeKind::TicketRefunded,
                &allocation.fingerprint_hash,
            )
            .await?;
            // Refunded tickets go to the waiting list first, under the same locks.
            crate::offers::offer_returned(
                tx,
                allocation.event_id,
                &actor_tag(&allocation.fingerprint_hash),
            )
            .await?;
            read_in(tx, allocation.id).await
        }
        RefundOutcome::Refused | RefundOutcome::Voided => {
            refunds::fail(tx, pending.id).await?;
            match outcome {
                RefundOutcome::Refused => Err(Refusal::RefundExceedsPurchase {
                    ticket_type_id: None,
                    refundable: 0,
                }
                .into()),
                _ => Err(Error::RefundVoided),
            }
        }
    }
}

/// The allocation as this transaction sees it, after its changes.
async fn read_in(tx: &mut Tx, id: Uuid) -> Result<Allocation> {
    allocations::find_in(tx, id)
        .await?
        .ok_or(Error::NotFound("allocation"))
}

/// The allocation as committed, with its admissions, their codes signed by `signer`.
async fn read(pool: &PgPool, signer: &CodeSigner, id: Uuid) -> Result<Allocation> {
    let mut conn = pool.acquire().await?;
    let mut allocation = allocations::find_in(&mut conn, id)
        .await?
        .ok_or(Error::NotFound("allocation"))?;
    fill_admissions(&mut conn, signer, [&mut allocation]).await?;
    Ok(allocation)
}

/// Settles a refund left pending (crash, failing provider): ask the provider for the
/// reference's outcome, voiding it if it never arrived, then record that outcome. The
/// answer is the order as this call left it, its admissions' codes signed by `signer`, or
/// `None` if the refund was settled before (the recovery of another instance got there
/// first), so that each refund is counted and logged as recovered once over all instances.
pub async fn recover_refund(
    pool: &PgPool,
    signer: &CodeSigner,
    provider: &dyn PaymentProvider,
    allocation_id: Uuid,
    reference: &str,
) -> Result<Option<Allocation>> {
    // A read: settling locks again, and settles only what is still pending then.
    let found = refunds::lock_by_reference(&mut *pool.acquire().await?, reference).await?;
    let Some((pending, RefundStatus::Pending)) = found else {
        return Ok(None);
    };
    let allocation = read(pool, signer, allocation_id).await?;
    let outcome = match (pending.amount, allocation.payment_reference.as_deref()) {
        (0, _) => RefundOutcome::Refunded,
        (_, Some(charge)) => provider
            .resolve_refund(reference, charge, allocation.currency)
            .await
            .map_err(|err| {
                tracing::warn!(allocation = %allocation_id, %reference, error = %err, "refund recovery could not reach the provider");
                Error::ServiceUnavailable
            })?,
        (_, None) => return Err(Error::internal("a purchase without a payment reference")),
    };
    let settled = settle(pool, signer, &pending, outcome, None).await;
    let answer = match settled.answer {
        // The provider refused the refund, or never made it (voided): it is failed, and
        // that settles it.
        Err(Error::Refused(_) | Error::RefundVoided) => read(pool, signer, allocation_id).await,
        other => other,
    }?;
    Ok(settled.settled_here.then_some(answer))
}
