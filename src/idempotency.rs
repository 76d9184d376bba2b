//! Idempotent retries with the semantics payment APIs use: the same `Idempotency-Key` with
//! the same request within 24 hours gets the first response and has no second effect; with
//! a different request it is refused (422 `IDEMPOTENCY_KEY_REUSED`); a duplicate that arrives
//! while the first is running waits for it, or gets 409 `IDEMPOTENCY_IN_PROGRESS`.
//!
//! A first attempt claims the key (a committed `in_progress` row, so duplicates can see it).
//! A response that has an effect (a hold made, a payment captured) is recorded in the same
//! transaction as the effect, so it exists if and only if the effect does. Refusals, which
//! have no effect, are recorded after the fact. A claim is released only when the effect is
//! known not to have happened: a failure (5xx) with no effect gives it up so a retry runs
//! again (a release removes only a claim still in progress, so it never undoes a recorded
//! effect). A payment whose provider call failed may have been charged: its claim is
//! [parked](park) on the payment instead, and a retry resolves it from the allocation
//! (see `holds::payment`). The HTTP layer runs a keyed request's work to its end even when
//! the request is cut off, so only a dead process leaves a claim unsettled: a claim still
//! `in_progress` (and not parked) long after any attempt could have committed belongs to a
//! crashed attempt whose effect never committed, and is taken over.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db;
use crate::domain::fingerprint::FingerprintHash;
use crate::domain::idempotency::{IdempotencyKey, KeyRef};
use crate::error::{Error, Result};

/// How long a duplicate waits for the first attempt before answering 409.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(25);
/// Age after which an `in_progress` claim is taken to be abandoned: longer than any attempt
/// can run (request, lock and statement timeouts are all shorter).
const STALE_CLAIM_SECONDS: f64 = 120.0;

/// What to do with a keyed request.
#[derive(Debug)]
pub enum Attempt {
    /// Run it; the key is claimed for this attempt.
    First(KeyRef),
    /// An earlier attempt's payment has an unknown outcome and the claim is parked on it:
    /// resolve it from the allocation before anything runs again.
    Parked(KeyRef, ParkedPayment),
    /// Answer with the first attempt's response.
    Replay { status: u16, body: String },
}

/// Claims the key for this request, or finds the first attempt's outcome.
pub async fn begin(
    pool: &PgPool,
    buyer: &FingerprintHash,
    key: &IdempotencyKey,
    request_hash: &str,
) -> Result<Attempt> {
    let key = KeyRef::new(buyer, key);
    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    loop {
        if db::idempotency::claim(pool, &key, request_hash).await? {
            return Ok(Attempt::First(key));
        }
        let stored = db::idempotency::find(pool, &key).await?;
        // A parked claim is never stale: its payment may have been charged.
        let abandoned = stored.as_ref().is_some_and(|s| {
            s.expired
                || (!s.completed
                    && s.awaiting_allocation.is_none()
                    && s.claim_age_seconds >= STALE_CLAIM_SECONDS)
        });
        if abandoned
            && db::idempotency::reclaim(pool, &key, request_hash, STALE_CLAIM_SECONDS).await?
        {
            return Ok(Attempt::First(key));
        }
        match stored {
            // Expired or abandoned, and another attempt took it over first: look again.
            Some(_) if abandoned => {}
            Some(stored) if stored.request_hash != request_hash => {
                return Err(Error::IdempotencyKeyReused);
            }
            Some(stored) if stored.completed => {
                let status = stored.response_status.and_then(|s| u16::try_from(s).ok());
                return match (status, stored.response_body) {
                    (Some(status), Some(body)) => Ok(Attempt::Replay { status, body }),
                    _ => Err(Error::internal(
                        "a completed idempotency key without its response",
                    )),
                };
            }
            Some(db::idempotency::StoredKey {
                awaiting_allocation: Some(allocation),
                awaiting_reference: Some(reference),
                ..
            }) => {
                return Ok(Attempt::Parked(
                    key,
                    ParkedPayment {
                        allocation,
                        reference,
                    },
                ));
            }
            // In progress (or released a moment ago): wait for the first attempt.
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::IdempotencyInProgress);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A response as stored under a key and replayed to a retry: the HTTP layer renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The JSON body.
    pub body: String,
}

/// Renders a service's result as the response a retry will be answered with.
pub type Render<T> = Arc<dyn Fn(&T) -> std::result::Result<StoredResponse, String> + Send + Sync>;

/// The payment a parked claim waits for: its allocation and its provider reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedPayment {
    /// The allocation paid for.
    pub allocation: Uuid,
    /// The reference the provider was called with; its outcome is unknown.
    pub reference: String,
}

/// How a keyed request records its success inside the transaction that makes its effect: the
/// claimed key, and the rendering the HTTP layer chose. The service says what happened (the
/// value); it never picks a status or a body itself.
#[derive(Clone)]
pub struct Recorder<T> {
    key: KeyRef,
    render: Render<T>,
    parked: Option<ParkedPayment>,
}

impl<T> std::fmt::Debug for Recorder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("key", &self.key)
            .field("parked", &self.parked)
            .finish()
    }
}

impl<T> Recorder<T> {
    /// Records under `key` (claimed by [`begin`]) what `render` makes of the result; `parked`
    /// is the payment the claim is parked on, if [`begin`] found it parked.
    pub fn new(key: KeyRef, render: Render<T>, parked: Option<ParkedPayment>) -> Self {
        Self {
            key,
            render,
            parked,
        }
    }

    /// The claimed key.
    pub fn key(&self) -> &KeyRef {
        &self.key
    }

    /// The payment an earlier attempt left with an unknown outcome, which this attempt must
    /// resolve before it runs anything.
    pub fn parked(&self) -> Option<&ParkedPayment> {
        self.parked.as_ref()
    }

    /// The response to store for `value`.
    pub fn render(&self, value: &T) -> std::result::Result<StoredResponse, String> {
        (self.render)(value)
    }
}

/// Records the responses of keyed requests whose effect the caller's transaction `conn` is
/// making, in one statement: a response is stored if and only if its effect commits. Takes
/// the row lock of each `idempotency_keys` row; callers hold the event row lock already, and
/// no transaction takes the two the other way round (a claim or a refusal's record runs
/// outside any event lock), so the order event, then key cannot deadlock.
pub async fn record_in(
    conn: &mut PgConnection,
    responses: &[(&KeyRef, StoredResponse)],
) -> Result<()> {
    if responses.is_empty() {
        return Ok(());
    }
    let rows: Vec<(&KeyRef, u16, &str)> = responses
        .iter()
        .map(|(key, response)| (*key, response.status, response.body.as_str()))
        .collect();
    db::idempotency::complete(conn, &rows).await?;
    Ok(())
}

/// Records a response with no effect (a refusal), or gives the claim up after a failure so
/// that a retry runs again (a parked claim stays parked).
pub async fn finish(pool: &PgPool, key: &KeyRef, status: u16, body: &str) {
    let recorded = if status >= 500 {
        db::idempotency::release(pool, key).await
    } else {
        match pool.acquire().await {
            Ok(mut conn) => db::idempotency::complete(&mut conn, &[(key, status, body)]).await,
            Err(err) => Err(err),
        }
    };
    if let Err(err) = recorded {
        // The claim stays in progress and is taken over once stale: a retry still works.
        tracing::warn!(error = %err, "could not record an idempotent response");
    }
}

/// Parks the claim on a payment whose provider outcome is unknown, instead of releasing it:
/// the payment may have been charged, so a retry must learn its outcome from the allocation
/// rather than run again.
pub async fn park(pool: &PgPool, key: &KeyRef, payment: &ParkedPayment) {
    if let Err(err) = db::idempotency::park(pool, key, payment.allocation, &payment.reference).await
    {
        // The claim stays in progress, unparked: it is taken over once stale, and the retry
        // then finds the hold `payment_pending` or settled and is refused 409 INVALID_STATUS.
        tracing::warn!(error = %err, "could not park an idempotency claim");
    }
}

/// Makes a claim parked on `payment` this attempt's own fresh claim, once that payment is
/// known not to have been charged. Errors with `IdempotencyInProgress` if another retry took
/// it first; the claim is then that retry's, and this attempt must leave it alone.
pub async fn unpark(pool: &PgPool, key: &KeyRef, payment: &ParkedPayment) -> Result<()> {
    if db::idempotency::unpark(pool, key, &payment.reference).await? {
        Ok(())
    } else {
        Err(Error::IdempotencyInProgress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logs show a recorder by its key (never its rendering closure); it renders through the
    /// closure the HTTP layer gave it.
    #[test]
    fn a_recorder_shows_its_key_and_renders_through_its_closure() {
        let key = KeyRef {
            fingerprint_hash: "buyer-hash".into(),
            key: "order-1".into(),
        };
        let recorder: Recorder<u8> = Recorder::new(
            key.clone(),
            Arc::new(|value| {
                Ok(StoredResponse {
                    status: 201,
                    body: value.to_string(),
                })
            }),
            None,
        );
        let shown = format!("{recorder:?}");
        assert!(shown.contains("order-1"), "{shown}");
        assert_eq!(recorder.key(), &key);
        assert_eq!(
            recorder.render(&7),
            Ok(StoredResponse {
                status: 201,
                body: "7".into(),
            })
        );
    }
}
