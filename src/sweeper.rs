//! The background job that returns lapsed holds to the pool and settles payments that a
//! crash left in `payment_pending`. Several instances may sweep one database at once: a batch
//! locks the holds it expires, after their event's row, so a hold is counted back exactly
//! once. It also purges idempotency keys older than 24 hours.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::domain::admission::CodeSigner;
use crate::error::panic_message;
use crate::holds;
use crate::payment::PaymentProvider;

/// What the sweeper needs, and nothing more: it runs beside the HTTP server, not inside it.
#[derive(Clone)]
pub struct Sweeper {
    pub pool: PgPool,
    /// Asked for the outcome of payments a crash left in `payment_pending`.
    pub payments: Arc<dyn PaymentProvider>,
    /// Signs the codes of the admissions in the allocations recovery settles (as every
    /// service that answers with a purchased allocation does).
    pub signer: CodeSigner,
    /// Seconds a payment may stay `payment_pending` before the sweeper settles it from the
    /// provider's record (longer than any payment request can run).
    pub payment_recovery_seconds: u32,
    /// The period of the sweep rounds (`--sweep-interval-ms`).
    pub interval: Duration,
}

impl Sweeper {
    /// How long after a payment went `payment_pending` recovery will have settled it at the
    /// latest (if the provider answers): the recovery age, plus one round for the sweeper to
    /// come by.
    pub fn recovery_window(&self) -> Duration {
        Duration::from_secs(self.payment_recovery_seconds.into()) + self.interval
    }
}

/// Most events visited per round, and most holds expired per event per transaction: bounded
/// so one round never holds an event lock for long.
const EVENTS_PER_ROUND: i64 = 100;
const HOLDS_PER_BATCH: i64 = 500;
const PAYMENTS_PER_ROUND: i64 = 100;
const KEYS_PER_ROUND: i64 = 1000;

/// Sweeps every `sweeper.interval` until `shutdown` changes.
pub async fn run(sweeper: Sweeper, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(sweeper.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        // A panic in one round must not end the sweeper (lapsed holds would then never
        // return to the pool): it is logged like a failed round, and the next round runs.
        match AssertUnwindSafe(sweep_once(&sweeper)).catch_unwind().await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "sweep failed; retrying next round"),
            Err(panic) => tracing::error!(
                panic = %panic_message(&*panic),
                "sweep panicked; retrying next round"
            ),
        }
    }
}

/// One round: expire lapsed holds, settle stale payments and refunds, purge old idempotency
/// keys. Returns (holds expired, payments and refunds settled).
///
/// Each job, and each event within the expiry, runs whatever another one met: a failure is
/// logged with what it concerns and the round goes on, so one event whose expiry keeps
/// failing (a backstop refusing it, say) never stops the holds of every other event from
/// returning, nor payment recovery or the purge. The round then answers the first failure.
pub async fn sweep_once(state: &Sweeper) -> crate::error::Result<(i64, usize)> {
    let mut failure = None;
    let expired = expire_round(state, &mut failure).await;
    if expired > 0 {
        tracing::info!(expired, "expired lapsed holds");
        crate::metrics::holds_expired(expired);
    }
    let settled =
        recover_round(state, &mut failure).await + recover_refunds_round(state, &mut failure).await;
    crate::metrics::payments_recovered(settled);
    // Idempotency keys live 24 hours.
    match crate::db::idempotency::purge_expired(&state.pool, KEYS_PER_ROUND).await {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "purged idempotency keys older than 24 hours"),
        Err(err) => keep_first(&mut failure, err.into()),
    }
    match failure {
        Some(err) => Err(err),
        None => Ok((expired, settled)),
    }
}

/// Keeps the round's first failure.
fn keep_first(failure: &mut Option<crate::error::Error>, err: crate::error::Error) {
    failure.get_or_insert(err);
}

/// Whether `err` is the database being away or refusing (503): the rest of the round would
/// fail the same way, and the database's own warning (`crate::error`, once a second) has
/// named the cause, so the round stops there, with one line for it, rather than a line for
/// each event, payment or refund it would have tried.
fn database_away(err: &crate::error::Error) -> bool {
    matches!(
        err,
        crate::error::Error::ServiceUnavailable | crate::error::Error::DatabaseCutOff
    )
}

/// Expires the lapsed holds of each event, event by event; returns the holds expired.
async fn expire_round(state: &Sweeper, failure: &mut Option<crate::error::Error>) -> i64 {
    let events =
        match crate::db::allocations::events_with_lapsed_holds(&state.pool, EVENTS_PER_ROUND).await
        {
            Ok(events) => events,
            Err(err) => {
                keep_first(failure, err.into());
                return 0;
            }
        };
    let mut expired = 0;
    for event_id in events {
        loop {
            match holds::expire_lapsed(&state.pool, event_id, HOLDS_PER_BATCH).await {
                Ok(n) => {
                    expired += n;
                    if n < HOLDS_PER_BATCH {
                        break;
                    }
                }
                Err(err) if database_away(&err) => {
                    keep_first(failure, err);
                    return expired;
                }
                Err(err) => {
                    tracing::error!(event = %event_id, error = %err, "could not expire the event's lapsed holds; other events go on");
                    keep_first(failure, err);
                    break;
                }
            }
        }
    }
    expired
}

/// Settles refunds left pending longer than the recovery age (the provider failed or the
/// request died); returns how many.
async fn recover_refunds_round(
    state: &Sweeper,
    failure: &mut Option<crate::error::Error>,
) -> usize {
    let stale = match crate::db::refunds::stale(
        &state.pool,
        state.payment_recovery_seconds,
        PAYMENTS_PER_ROUND,
    )
    .await
    {
        Ok(stale) => stale,
        Err(err) => {
            keep_first(failure, err.into());
            return 0;
        }
    };
    let mut settled = 0;
    for (id, reference) in stale {
        let payments = state.payments.as_ref();
        match holds::recover_refund(&state.pool, &state.signer, payments, id, &reference).await {
            Ok(Some(_)) => {
                settled += 1;
                tracing::info!(allocation = %id, %reference, "settled a stale refund");
            }
            // Another instance's recovery settled it first: counted there.
            Ok(None) => {}
            Err(err) if database_away(&err) => {
                keep_first(failure, err);
                return settled;
            }
            Err(err) => {
                tracing::warn!(allocation = %id, %reference, error = %err, "could not settle a stale refund")
            }
        }
    }
    settled
}

/// Settles payments left `payment_pending` longer than the recovery age; returns how many.
async fn recover_round(state: &Sweeper, failure: &mut Option<crate::error::Error>) -> usize {
    let stale = match crate::db::allocations::stale_payments(
        &state.pool,
        state.payment_recovery_seconds,
        PAYMENTS_PER_ROUND,
    )
    .await
    {
        Ok(stale) => stale,
        Err(err) => {
            keep_first(failure, err.into());
            return 0;
        }
    };
    let mut settled = 0;
    for (id, reference, total) in stale {
        let payments = state.payments.as_ref();
        match holds::recover_payment(&state.pool, &state.signer, payments, id, &reference, total)
            .await
        {
            Ok(Some(allocation)) => {
                settled += 1;
                tracing::info!(allocation = %id, status = %allocation.status, "settled a stale payment");
            }
            // Another instance's recovery settled it first: counted there.
            Ok(None) => {}
            Err(err) if database_away(&err) => {
                keep_first(failure, err);
                return settled;
            }
            Err(err) => {
                tracing::warn!(allocation = %id, error = %err, "could not settle a stale payment")
            }
        }
    }
    settled
}
