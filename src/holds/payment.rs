//! Paying for a hold: three steps, so the provider is never called under a lock; the
//! recovery of payments a crash left in `payment_pending`; and the answer to a keyed retry
//! whose first attempt left its payment's outcome unknown.
//!
//! Step one (`reserved` → `payment_pending`) moves no count, so it takes only the holds' row
//! locks, never the event's: the [`Settler`] batches the begins that arrive together into one
//! statement (one commit), so payments of one hot event begin at the speed of holds. Step
//! three moves the tickets to `purchased` on the event and its quotas, so it needs the event
//! row lock; the [`Settler`] batches the settles of one event that arrive together into one
//! transaction that takes that lock once, as purchases are batched.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Tx, apply, commit, ensure_holder, expire, fill_admissions, get, lock_hold, record_answer,
};
use crate::db::allocations::{self, LockedAllocation, TransitionRecord};
use crate::db::events::{self, CountMove};
use crate::db::quotas;
use crate::domain::admission::CodeSigner;
use crate::domain::allocation::{Allocation, PendingPayment};
use crate::domain::confirmation::confirmation_code;
use crate::domain::fingerprint::FingerprintHash;
use crate::domain::idempotency::Claim;
use crate::domain::refusal::Refusal;
use crate::domain::stats::ChangeKind;
use crate::domain::status::AllocationStatus;
use crate::error::{Error, Result};
use crate::idempotency::{self, ParkedPayment, Recorder};
use crate::payment::{self, ChargeOutcome, PaymentProvider};
use crate::purchase::Batching;
use crate::purchase::coalescer::{BatchWork, Coalescer};
use crate::purchase::lock_runtime::LockRuntime;

/// One payment's step three as its batch sees it: the hold, the reference its step one
/// recorded, what the provider did, and how to record a purchase under the request's key.
#[derive(Clone)]
struct SettleRequest {
    id: Uuid,
    reference: String,
    outcome: ChargeOutcome,
    record: Option<Recorder<Allocation>>,
}

/// One payment's step one as its batch sees it: the hold, its buyer, the fresh reference.
struct BeginRequest {
    id: Uuid,
    buyer: String,
    reference: String,
}

/// The begins of all events share one queue: the request names only its hold, and finding
/// its event first would cost the round trip that batching saves. Safe across events, since
/// a begin takes no event lock and moves no count.
const BEGIN_QUEUE: Uuid = Uuid::nil();

/// Runs the database steps of payments ([`pay`]): step one, one statement per payment or one
/// per batch of the begins that arrive together, and step three, one transaction per payment
/// or one per batch of the settles of one event that arrive together ([`Batching`], from
/// `--purchase-mode` and `--purchase-batch-max`, as for purchases).
#[derive(Clone)]
pub struct Settler {
    pool: PgPool,
    /// Signs the codes of the admissions a settle answers with.
    signer: CodeSigner,
    begins: Option<Coalescer<BeginRequest, Result<Option<PendingPayment>>>>,
    batches: Option<Coalescer<SettleRequest, Result<Allocation>>>,
}

impl Settler {
    /// Begins and settles on `pool`, batched or one by one as `batching` says; the purchases
    /// it answers carry their admissions, their codes signed by `signer`. Settle batches,
    /// which hold the event row lock, run on `locks` with its pool, as purchase batches do.
    pub fn new(pool: PgPool, signer: CodeSigner, batching: Batching, locks: &LockRuntime) -> Self {
        let begins = match batching {
            Batching::Batched { max_batch } => {
                let pool = pool.clone();
                let work: BatchWork<BeginRequest, Result<Option<PendingPayment>>> =
                    Arc::new(move |_, requests| {
                        let pool = pool.clone();
                        Box::pin(async move {
                            match begin_batch(&pool, &requests).await {
                                Ok(answers) => answers.into_iter().map(Ok).collect(),
                                // The statement failed as a whole and changed nothing.
                                Err(err) => requests.iter().map(|_| Err(err.clone())).collect(),
                            }
                        })
                    });
                Some(Coalescer::new(max_batch, work))
            }
            Batching::PerRequest => None,
        };
        let batches = match batching {
            Batching::Batched { max_batch } => {
                let (pool, signer) = (locks.pool().clone(), signer.clone());
                let work: BatchWork<SettleRequest, Result<Allocation>> =
                    Arc::new(move |event_id, requests| {
                        let (pool, signer) = (pool.clone(), signer.clone());
                        Box::pin(async move {
                            match settle_batch(&pool, &signer, event_id, &requests).await {
                                Ok(answers) => answers
                                    .into_iter()
                                    .map(|answer| answer.map(|settled| settled.allocation))
                                    .collect(),
                                // The transaction failed as a whole and wrote nothing: every
                                // charged hold is still `payment_pending`, for recovery.
                                Err(err) => requests.iter().map(|_| Err(err.clone())).collect(),
                            }
                        })
                    });
                Some(Coalescer::on_runtime(locks.clone(), max_batch, work))
            }
            Batching::PerRequest => None,
        };
        Self {
            pool,
            signer,
            begins,
            batches,
        }
    }

    /// Step one's single statement for one hold, alone or in the next batch of begins:
    /// the hold `payment_pending` under `reference`, or `None` if it was not a `reserved`,
    /// unlapsed hold of `buyer` (nothing changed).
    async fn try_begin(
        &self,
        id: Uuid,
        buyer: &FingerprintHash,
        reference: &str,
    ) -> Result<Option<PendingPayment>> {
        match &self.begins {
            Some(begins) => {
                let request = BeginRequest {
                    id,
                    buyer: buyer.as_str().to_owned(),
                    reference: reference.to_owned(),
                };
                begins.submit(BEGIN_QUEUE, request).await?
            }
            None => {
                let mut conn = self.pool.acquire().await?;
                let begun =
                    allocations::begin_payments(&mut conn, &[id], &[buyer.as_str()], &[reference])
                        .await?;
                Ok(begun.into_iter().next())
            }
        }
    }

    /// Records `request`'s outcome, alone or in the next batch of `event_id`'s settles.
    async fn settle(&self, event_id: Uuid, request: SettleRequest) -> Result<Allocation> {
        match &self.batches {
            Some(batches) => batches.submit(event_id, request).await?,
            None => settle_one(&self.pool, &self.signer, event_id, request)
                .await
                .map(|settled| settled.allocation),
        }
    }
}

/// Pays for a hold in three steps, so the provider is never called under a lock:
/// commit `payment_pending`, call the provider, commit the outcome.
///
/// If the provider fails, whether it charged is unknown; if the database goes away while its
/// outcome is recorded, whether that record committed is: either way the error is
/// `PaymentOutcomeUnknown`, so that a keyed request's claim is parked on this payment. A
/// keyed retry that finds its claim parked (`record`'s [`Recorder::parked`]) first resolves
/// that payment (see [`resolve_parked`]) and pays afresh only if it was not charged; one that
/// took over the claim of an attempt that died ([`Recorder::abandoned_by`]) first resolves
/// that attempt's payment the same way, found under the reference derived from its id.
/// `recovery_window` is how long after a payment begins recovery may take to settle it
/// (`Sweeper::recovery_window`): the error says when that is.
pub async fn pay(
    settler: &Settler,
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
            resolve_parked(settler, recovery_window, id, buyer, parked, recorder).await?
    {
        return Ok(purchased);
    }
    // A claim taken over from an attempt that died: that attempt's payment, if it made one,
    // is under the reference derived from its id, and is resolved the same way.
    if let Some(recorder) = record
        && let Some(attempt) = recorder.abandoned_by()
    {
        let earlier = ParkedPayment {
            allocation: id,
            reference: payment::attempt_reference(id, attempt),
        };
        if let Some(purchased) =
            resolve_earlier(settler, recovery_window, id, buyer, &earlier, recorder).await?
        {
            return Ok(purchased);
        }
    }
    // A keyed attempt's reference is derived from its claim's id, so that an attempt taking
    // over its claim can find its payment. A claim that was parked keeps the id of the attempt
    // that held it when it parked, whose derived reference may be spent at the provider: a
    // fresh one then, as for an unkeyed payment.
    let reference = match record {
        Some(recorder) if recorder.parked().is_none() => {
            payment::attempt_reference(id, recorder.claim().attempt)
        }
        _ => payment::new_reference(id),
    };
    let pending = match begin_payment(settler, id, buyer, &reference).await {
        Ok(pending) => pending,
        // Step one cut off by the database going away (a failover: the connection died with
        // its statement in flight) may have committed, leaving the hold `payment_pending`
        // under this reference. A keyed request's claim is then parked on this payment, as
        // for a provider failure, so that a retry learns its outcome from recovery rather
        // than begin afresh and be refused `INVALID_STATUS` by it; if it never began, the
        // retry finds the hold `reserved` and pays. (An unkeyed request has no claim: its
        // 503 stays the plain one.) A step one that surely did nothing (no connection to be
        // had, or the database's own refusal: a lock or statement timeout, a shutdown) is
        // the plain 503, and its claim is released.
        Err(Error::DatabaseCutOff) if record.is_some() => {
            tracing::warn!(allocation = %id, %reference, "beginning a payment was cut off; left for recovery");
            return Err(Error::PaymentOutcomeUnknown {
                allocation: id,
                reference,
                settled_by: OffsetDateTime::now_utc() + recovery_window,
            });
        }
        Err(err) => return Err(err),
    };

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
                outcome_unknown(&pending, recovery_window)
            })?,
    };

    let request = SettleRequest {
        id,
        reference: reference.clone(),
        outcome,
        record: record.cloned(),
    };
    // Step three cut off by the database going away (a failover, a restart: its commit may
    // or may not have happened) leaves the payment's record unknown. Like a provider failure,
    // that parks a keyed request's claim on this payment, so that a retry answers from the
    // allocation once recovery has settled it, rather than run afresh and be refused
    // `INVALID_STATUS` by the purchase its first attempt made. (An unexpected error stays a
    // 500, as everywhere; its claim is released.)
    let settled = match settler.settle(pending.event_id, request).await {
        Ok(settled) => settled,
        Err(Error::ServiceUnavailable | Error::DatabaseCutOff) => {
            tracing::warn!(allocation = %id, %reference, "recording a payment's outcome was cut off; left for recovery");
            return Err(outcome_unknown(&pending, recovery_window));
        }
        Err(err) => return Err(err),
    };
    match (outcome, settled.status) {
        (ChargeOutcome::Charged, _) | (_, AllocationStatus::Purchased) => Ok(settled),
        _ => Err(Refusal::PaymentDeclined.into()),
    }
}

/// A keyed retry whose claim is parked on `parked`, an earlier attempt's payment with an
/// unknown outcome: it never pays again while that outcome is unknown ([`resolve_earlier`]).
/// If that payment was settled uncharged, the claim becomes this attempt's, and `None` lets
/// it pay afresh.
async fn resolve_parked(
    settler: &Settler,
    recovery_window: Duration,
    id: Uuid,
    buyer: &FingerprintHash,
    parked: &ParkedPayment,
    recorder: &Recorder<Allocation>,
) -> Result<Option<Allocation>> {
    let resolved = resolve_earlier(settler, recovery_window, id, buyer, parked, recorder).await?;
    if resolved.is_none() {
        idempotency::unpark(&settler.pool, recorder.claim(), parked).await?;
    }
    Ok(resolved)
}

/// What an earlier attempt's payment `earlier` (under the same key) did. Charged (the hold is
/// `purchased` under that reference): the purchase is recorded under the key and returned,
/// and replayed to later retries. Still `payment_pending` under it: `PaymentOutcomeUnknown`,
/// which parks the claim on it. Anything else (settled uncharged: a charged reference
/// always ends `purchased`; or never begun): `None`, nothing is recorded.
async fn resolve_earlier(
    settler: &Settler,
    recovery_window: Duration,
    id: Uuid,
    buyer: &FingerprintHash,
    earlier: &ParkedPayment,
    recorder: &Recorder<Allocation>,
) -> Result<Option<Allocation>> {
    if earlier.allocation != id {
        return Err(Error::internal(format!(
            "a payment key for allocation {id} names a payment of allocation {}",
            earlier.allocation
        )));
    }
    // No lock: a settled payment's outcome never changes, and an unsettled one is only
    // reported as unsettled, so a read that is a moment old answers truly.
    let pool = &settler.pool;
    let allocation = get(pool, &settler.signer, id, buyer).await?;
    let this_payment = allocation.payment_reference.as_deref() == Some(earlier.reference.as_str());
    match allocation.status {
        AllocationStatus::Purchased if this_payment => {
            let mut tx = pool.begin().await?;
            let recorded = record_answer(&mut tx, allocation, recorder).await;
            commit(tx, recorded).await.map(Some)
        }
        AllocationStatus::PaymentPending if this_payment => Err(outcome_unknown(
            &pending_payment(&allocation)?,
            recovery_window,
        )),
        _ => Ok(None),
    }
}

/// The payment `pending` has an unknown outcome: recovery settles it by `recovery_window`
/// after it began.
fn outcome_unknown(pending: &PendingPayment, recovery_window: Duration) -> Error {
    Error::PaymentOutcomeUnknown {
        allocation: pending.id,
        reference: pending.reference.clone(),
        settled_by: pending.began + recovery_window,
    }
}

/// Step one of a payment: a `reserved`, unlapsed hold of this buyer becomes
/// `payment_pending` under a fresh payment reference.
///
/// No count moves, so the event row stays free for the purchases and settles of a hot
/// event: first one statement that makes the move if the hold can make it, under the hold's
/// row lock alone ([`Settler::try_begin`]: `db::allocations::begin_payments`, for this
/// hold alone or with the begins that arrive together). If it cannot, the
/// hold's row is locked ([`begin_alone`]) to tell why. Only a lapsed hold, which this
/// payment expires and so must return to the pool, needs the event lock: that transaction
/// is rolled back, releasing the hold's row before the event's is asked for (taking them
/// the other way round could deadlock), and the step runs again under the full lock order.
async fn begin_payment(
    settler: &Settler,
    id: Uuid,
    buyer: &FingerprintHash,
    reference: &str,
) -> Result<PendingPayment> {
    if let Some(pending) = settler.try_begin(id, buyer, reference).await? {
        return Ok(pending);
    }
    let pool = &settler.pool;
    let mut tx = pool.begin().await?;
    let outcome = match begin_alone(&mut tx, id, buyer, reference).await {
        Ok(Some(pending)) => Ok(pending),
        Ok(None) => {
            tx.rollback().await?;
            let mut tx = pool.begin().await?;
            let outcome = begin_payment_in(&mut tx, id, buyer, reference).await;
            return commit(tx, outcome).await;
        }
        Err(err) => Err(err),
    };
    commit(tx, outcome).await
}

/// Step one's single statement for the begins `requests` that arrived together, in one
/// statement and so one commit (`db::allocations::begin_payments`). One answer per request,
/// in order: its hold `payment_pending` under its reference, or `None` if the statement did
/// not move it (the caller then finds out why under the row lock). The error means the
/// statement failed and changed nothing.
async fn begin_batch(
    pool: &PgPool,
    requests: &[BeginRequest],
) -> Result<Vec<Option<PendingPayment>>> {
    let ids: Vec<Uuid> = requests.iter().map(|r| r.id).collect();
    let buyers: Vec<&str> = requests.iter().map(|r| r.buyer.as_str()).collect();
    let references: Vec<&str> = requests.iter().map(|r| r.reference.as_str()).collect();
    let mut conn = pool.acquire().await?;
    let mut begun: HashMap<Uuid, PendingPayment> =
        allocations::begin_payments(&mut conn, &ids, &buyers, &references)
            .await?
            .into_iter()
            .map(|row| (row.id, row))
            .collect();
    // A hold asked twice in one batch was moved under one of its references: the request
    // whose reference the row records gets it, the other finds it `payment_pending`.
    Ok(requests
        .iter()
        .map(|request| {
            let recorded = begun.get(&request.id).map(|row| row.reference.as_str());
            if recorded == Some(request.reference.as_str()) {
                begun.remove(&request.id)
            } else {
                None
            }
        })
        .collect())
}

/// Step one under the hold's row lock only. `None`: the hold is `reserved` but lapsed, and
/// only a transaction holding the event lock may expire it.
///
/// Safe without the event lock: every other writer of this hold (cancel, expiry, settle,
/// refund) locks its row too, after the event's, so the status read here cannot change until
/// commit; and this transaction asks for no lock after the hold's, so it never waits while
/// holding it, and no cycle of waits can pass through it. The sweeper picks lapsed holds
/// with `SKIP LOCKED`, and only lapsed ones, which this leaves alone.
async fn begin_alone(
    tx: &mut Tx,
    id: Uuid,
    buyer: &FingerprintHash,
    reference: &str,
) -> Result<Option<PendingPayment>> {
    let LockedAllocation { allocation, lapsed } = allocations::lock(tx, id)
        .await?
        .ok_or(Error::NotFound("allocation"))?;
    ensure_holder(&allocation, buyer)?;
    match allocation.status {
        AllocationStatus::Reserved if lapsed => Ok(None),
        AllocationStatus::Reserved => {
            let record = TransitionRecord {
                payment_reference: Some(reference),
                ..TransitionRecord::default()
            };
            let pending = apply(tx, &allocation, AllocationStatus::PaymentPending, record).await?;
            pending_payment(&pending).map(Some)
        }
        AllocationStatus::Expired => Err(Refusal::ReservationExpired.into()),
        other => Err(Refusal::InvalidStatus(other).into()),
    }
}

/// Step one under the full lock order (event, quotas, hold), for a hold found lapsed.
async fn begin_payment_in(
    tx: &mut Tx,
    id: Uuid,
    buyer: &FingerprintHash,
    reference: &str,
) -> Result<PendingPayment> {
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
            let pending = apply(tx, &allocation, AllocationStatus::PaymentPending, record).await?;
            pending_payment(&pending)
        }
        AllocationStatus::Expired => Err(Refusal::ReservationExpired.into()),
        other => Err(Refusal::InvalidStatus(other).into()),
    }
}

/// The payment a `payment_pending` hold waits for; an internal error for a hold in any
/// other status (its callers have just moved it there or found it there).
fn pending_payment(allocation: &Allocation) -> Result<PendingPayment> {
    PendingPayment::of(allocation)
        .ok_or_else(|| Error::internal("a hold waiting for a payment has no pending payment"))
}

/// A settle's answer: the hold as it stands once the batch has committed, and whether this
/// settle changed it (`false`: it was settled before, by recovery on this or another
/// instance, or by a later payment's settle in the same batch).
struct Settled {
    allocation: Allocation,
    changed: bool,
}

/// Step three for one payment, in a transaction of its own (a batch of one).
async fn settle_one(
    pool: &PgPool,
    signer: &CodeSigner,
    event_id: Uuid,
    request: SettleRequest,
) -> Result<Settled> {
    settle_batch(pool, signer, event_id, std::slice::from_ref(&request))
        .await?
        .pop()
        .unwrap_or_else(|| Err(Error::internal("no answer for the settle")))
}

/// Step three for the payments `requests` of one event, in one transaction: record each
/// provider's outcome, if its hold is still waiting for that reference (otherwise recovery
/// settled it first, and the recorded state is its answer). One answer per request, in
/// order. The outer error means the transaction failed and wrote nothing.
///
/// 1. Lock the event row, then its quota rows in id order: the lock order of every
///    transaction that moves counts. The event lock is held once for the whole batch, and
///    keeps any other transaction from locking several of this event's holds meanwhile.
/// 2. The charged payments whose holds are waiting under their references become
///    `purchased` together, in one statement that locks and judges each hold
///    (`db::allocations::purchase_waiting`), and their tickets move from reserved to
///    purchased on the event and its quotas in one count move. In a sale this is every
///    request of the batch, so their holds are read and written once.
/// 3. Every other request's hold is locked, in id order, and decided on its own, in arrival
///    order: a declined or voided payment puts its hold back to `reserved` (or `expired`, if
///    it lapsed meanwhile); a hold that is not waiting for its reference is answered as it
///    stands and fails no other.
/// 4. Lock the claims of keyed requests (as the purchase transaction does): a request whose
///    claim was taken over still settles (its charge is real) but records nothing and
///    answers `IdempotencyInProgress`.
/// 5. Read the admissions of every purchased hold the batch answers with (those its
///    statement made, by trigger, and those recovery purchased first), in one read, and sign
///    their codes with `signer`.
/// 6. Record the purchases of keyed requests under their keys, and commit.
///
/// A captured payment that this transaction fails to record stays `payment_pending`, and
/// recovery settles it from the provider's record: no charge is lost.
async fn settle_batch(
    pool: &PgPool,
    signer: &CodeSigner,
    event_id: Uuid,
    requests: &[SettleRequest],
) -> Result<Vec<Result<Settled>>> {
    // Step 1: the event row (the count move needs it), its quotas.
    let mut tx = pool.begin().await?;
    if events::lock(&mut tx, event_id).await?.is_none() {
        tx.rollback().await?;
        return Ok(requests
            .iter()
            .map(|_| Err(Error::NotFound("event")))
            .collect());
    }
    quotas::lock_for_event(&mut tx, event_id).await?;

    // Step 2: the charged holds still waiting under their references, bought together.
    let mut charged = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        if request.outcome == ChargeOutcome::Charged {
            charged.push((i, request.id, confirmation_code(random_bytes()?)));
        }
    }
    let mut purchased: HashMap<Uuid, Allocation> = HashMap::new();
    if !charged.is_empty() {
        let ids: Vec<Uuid> = charged.iter().map(|(_, id, _)| *id).collect();
        let references: Vec<&str> = charged
            .iter()
            .map(|(i, _, _)| requests[*i].reference.as_str())
            .collect();
        let codes: Vec<&str> = charged.iter().map(|(_, _, code)| code.as_str()).collect();
        purchased = allocations::purchase_waiting(&mut tx, event_id, &ids, &references, &codes)
            .await?
            .into_iter()
            .map(|row| (row.id, row))
            .collect();
        move_purchased(&mut tx, event_id, purchased.values()).await?;
    }
    // The requests the statement bought for: each hold's row records the one reference
    // whose payment it waited for.
    let bought: Vec<bool> = requests
        .iter()
        .map(|request| {
            purchased.get(&request.id).is_some_and(|row| {
                row.payment_reference.as_deref() == Some(request.reference.as_str())
            })
        })
        .collect();

    // Step 3: every other hold, locked in id order and decided on its own.
    let mut ids: Vec<Uuid> = requests
        .iter()
        .zip(&bought)
        .filter(|(_, bought)| !**bought)
        .map(|(request, _)| request.id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let locked: HashMap<Uuid, LockedAllocation> = if ids.is_empty() {
        HashMap::new()
    } else {
        allocations::lock_many(&mut tx, event_id, &ids)
            .await?
            .into_iter()
            .map(|locked| (locked.allocation.id, locked))
            .collect()
    };
    let mut answers: Vec<Option<Result<Settled>>> = requests.iter().map(|_| None).collect();
    let mut decided = HashSet::new();
    for (i, request) in requests.iter().enumerate() {
        if bought[i] {
            continue;
        }
        let Some(LockedAllocation { allocation, lapsed }) = locked.get(&request.id) else {
            answers[i] = Some(Err(Error::NotFound("allocation")));
            continue;
        };
        let waiting = allocation.status == AllocationStatus::PaymentPending
            && allocation.payment_reference.as_deref() == Some(request.reference.as_str());
        if !waiting {
            // Settled already: by recovery, or by this batch for a later payment of the hold
            // (then this request's reference is an earlier one, declined or voided).
            answers[i] = Some(Ok(Settled {
                allocation: allocation.clone(),
                changed: false,
            }));
            continue;
        }
        if !decided.insert(request.id) {
            // One hold has one payment waiting at a time, under one reference.
            answers[i] = Some(Err(Error::internal("one hold settled twice in one batch")));
            continue;
        }
        let decided = match request.outcome {
            // Waiting under its reference now, under the lock, and so when the statement
            // above judged it under the same lock: a hold it missed is a bug.
            ChargeOutcome::Charged => Err(Error::internal("a charged hold was not purchased")),
            // Declined or voided: the hold goes back to reserved with its original expiry,
            // or straight to expired if that expiry has passed meanwhile.
            ChargeOutcome::Declined | ChargeOutcome::Voided if *lapsed => {
                expire(&mut tx, allocation).await
            }
            ChargeOutcome::Declined | ChargeOutcome::Voided => {
                apply(
                    &mut tx,
                    allocation,
                    AllocationStatus::Reserved,
                    TransitionRecord::default(),
                )
                .await
            }
        };
        answers[i] = Some(decided.map(|allocation| Settled {
            allocation,
            changed: true,
        }));
    }

    // Step 4: the claims still held by their attempts, locked until commit.
    let claims: Vec<Option<&Claim>> = requests
        .iter()
        .map(|request| request.record.as_ref().map(|r| r.claim()))
        .collect();
    let lost_claims = idempotency::lost_claims(&mut tx, &claims).await?;

    // Step 5: before rendering, so a keyed request's recorded answer carries them too. The
    // bought holds have no answer yet; the others are answered as they stand.
    let standing = answers
        .iter_mut()
        .flatten()
        .filter_map(|a| a.as_mut().ok().map(|settled| &mut settled.allocation));
    fill_admissions(&mut tx, signer, purchased.values_mut().chain(standing)).await?;

    let mut keyed_responses = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        if !bought[i] {
            continue;
        }
        let Some(row) = purchased.remove(&request.id) else {
            answers[i] = Some(Err(Error::internal("a bought hold answered twice")));
            continue;
        };
        answers[i] = Some(
            match &request.record {
                Some(_) if lost_claims[i] => Err(Error::IdempotencyInProgress),
                Some(recorder) => match recorder.render(&row) {
                    Ok(response) => {
                        keyed_responses.push((recorder.claim(), response));
                        Ok(row)
                    }
                    Err(err) => Err(Error::internal(err)),
                },
                None => Ok(row),
            }
            .map(|allocation| Settled {
                allocation,
                changed: true,
            }),
        );
    }

    // Step 6.
    idempotency::record_in(&mut tx, &keyed_responses).await?;
    tx.commit().await?;
    Ok(answers
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|| Err(Error::internal("a settle left unanswered"))))
        .collect())
}

/// Moves the tickets of the holds just `purchased` from reserved to purchased on the event
/// and its quotas, in one count move, announced once (as the last hold's buyer). Call under
/// the event's and its quotas' row locks.
async fn move_purchased<'a>(
    tx: &mut Tx,
    event_id: Uuid,
    purchased: impl Iterator<Item = &'a Allocation>,
) -> Result<()> {
    let (mut tickets, mut by_type, mut actor) = (0, BTreeMap::new(), None);
    for allocation in purchased {
        // Cannot overflow: these tickets are all among the event's reserved ones.
        tickets += allocation.quantity - allocation.refunded_quantity;
        for (ticket_type, count) in allocation.tickets_by_type() {
            *by_type.entry(ticket_type).or_insert(0) += count;
        }
        actor = Some(allocation.fingerprint_hash.as_str());
    }
    let Some(actor) = actor else {
        return Ok(());
    };
    let by_type: Vec<(Uuid, i32)> = by_type.into_iter().collect();
    events::move_counts(
        tx,
        event_id,
        CountMove::Pay,
        tickets,
        &by_type,
        ChangeKind::TicketPurchased,
        actor,
    )
    .await?;
    Ok(())
}

/// Settles a payment whose request never finished (crash, hang): ask the provider for the
/// reference's outcome, voiding it if it was never charged, then record that outcome. A free
/// order never reached the provider, and is confirmed as its payment would have been. The
/// answer is the hold as this call settled it, its admissions' codes signed by `signer`, or
/// `None` if it was settled before (the recovery of another instance got there first), so
/// that each payment is counted and logged as recovered once over all instances.
pub async fn recover_payment(
    pool: &PgPool,
    signer: &CodeSigner,
    provider: &dyn PaymentProvider,
    id: Uuid,
    reference: &str,
    total: i64,
) -> Result<Option<Allocation>> {
    let outcome = match total {
        0 => ChargeOutcome::Charged,
        _ => provider.resolve(reference).await.map_err(|err| {
            tracing::warn!(allocation = %id, %reference, error = %err, "payment recovery could not reach the provider");
            Error::ServiceUnavailable
        })?,
    };
    // event_id never changes, so reading it without a lock is safe.
    let mut conn = pool.acquire().await?;
    let event_id = allocations::event_of(&mut conn, id)
        .await?
        .ok_or(Error::NotFound("allocation"))?;
    drop(conn);
    let request = SettleRequest {
        id,
        reference: reference.to_owned(),
        outcome,
        record: None,
    };
    let settled = settle_one(pool, signer, event_id, request).await?;
    Ok(settled.changed.then_some(settled.allocation))
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(Error::internal)?;
    Ok(bytes)
}
