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
//! the request is cut off, and a graceful shutdown waits for it, so a claim is left unsettled
//! only by a dead process, a panic, a release that failed on every try, or work still running
//! when the shutdown stops waiting: a claim still `in_progress` (and not parked) for longer
//! than the request timeout plus [`CLAIM_MARGIN`] ([`stale_claim_age`]) is taken to be
//! abandoned, and is taken over: no client still waits for it, so after a crash or a failover
//! a retry gets its answer within seconds of that age, not minutes. The age does not bound the
//! work (a cut-off request's work runs on, and may still wait for a lock or the provider), so
//! the claim carries its attempt's id, a fencing
//! token: a takeover gives the claim a new id, and the attempt it was taken from can then no
//! longer record, release or park it. Its record fails its effect's transaction (a batched
//! purchase leaves just that request out, under the lock, before it writes anything), so a
//! key never gets two effects.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db;
use crate::domain::fingerprint::FingerprintHash;
use crate::domain::idempotency::{Claim, IdempotencyKey, KeyRef};
use crate::error::{Error, Result};

/// How long a duplicate waits for the first attempt before answering 409.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(25);
/// What a claim's age must exceed beyond the request timeout before it is taken over: time
/// for an answer to leave the server after the timeout fired.
pub const CLAIM_MARGIN: Duration = Duration::from_secs(5);

/// Age after which an `in_progress` claim is taken to be abandoned: `request_timeout` (by
/// then the client of the attempt has had its answer, 503 at the latest) plus
/// [`CLAIM_MARGIN`]. Its work may run longer (a cut-off request's work runs to its end): the
/// claim's attempt id keeps such an attempt from recording over its successor.
pub fn stale_claim_age(request_timeout: Duration) -> Duration {
    request_timeout + CLAIM_MARGIN
}
/// How long [`finish`] and [`park`] keep trying their write before leaving the claim to go
/// stale: longer than a database failover takes (a primary's postmaster killed: about 5 s;
/// its whole node: about 12 s, see docs/reliability.md), so that a claim cut off by one is
/// still released or parked once the new primary is up.
const SETTLE_FOR: Duration = Duration::from_secs(30);
/// The longest pause between two tries of such a write.
const SETTLE_PAUSE_MAX: Duration = Duration::from_secs(2);

/// What to do with a keyed request.
#[derive(Debug)]
pub enum Attempt {
    /// Run it; the key is claimed for this attempt.
    First(Claim),
    /// Run it; the key is claimed for this attempt, taken over from the attempt whose id this
    /// is, which left it unsettled and unparked (its process died, see [`stale_claim_age`]).
    /// A payment first resolves whatever that attempt's payment did (its reference is
    /// derived from that id: `payment::attempt_reference`), so a charge it made is answered,
    /// not refused.
    TakenOver(Claim, Uuid),
    /// An earlier attempt's payment has an unknown outcome and the claim is parked on it:
    /// resolve it from the allocation before anything runs again. The claim keeps that
    /// attempt's id: retries that find it parked race to [`unpark`] it, and only the winner
    /// goes on.
    Parked(Claim, ParkedPayment),
    /// Answer with the first attempt's response.
    Replay { status: u16, body: String },
}

/// Claims the key for this request, or finds the first attempt's outcome. A claim left
/// unsettled (not parked) for `stale_after` ([`stale_claim_age`]) is taken over.
pub async fn begin(
    pool: &PgPool,
    buyer: &FingerprintHash,
    key: &IdempotencyKey,
    request_hash: &str,
    stale_after: Duration,
) -> Result<Attempt> {
    let stale_seconds = stale_after.as_secs_f64();
    let key = KeyRef::new(buyer, key);
    let ours = Claim {
        key: key.clone(),
        attempt: Uuid::new_v4(),
    };
    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    loop {
        if db::idempotency::claim(pool, &ours, request_hash).await? {
            return Ok(Attempt::First(ours));
        }
        let stored = db::idempotency::find(pool, &key).await?;
        // A parked claim is never stale: its payment may have been charged.
        let abandoned = stored.as_ref().is_some_and(|s| {
            s.expired
                || (!s.completed
                    && s.awaiting_allocation.is_none()
                    && s.claim_age_seconds >= stale_seconds)
        });
        if abandoned && db::idempotency::reclaim(pool, &ours, request_hash, stale_seconds).await? {
            // An expired key (over 24 hours old) starts afresh; an abandoned one names the
            // attempt it was taken from.
            return Ok(match stored {
                Some(stored) if !stored.expired => Attempt::TakenOver(ours, stored.attempt),
                _ => Attempt::First(ours),
            });
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
                attempt,
                ..
            }) => {
                return Ok(Attempt::Parked(
                    Claim {
                        key: key.clone(),
                        attempt,
                    },
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
    claim: Claim,
    render: Render<T>,
    parked: Option<ParkedPayment>,
    abandoned_by: Option<Uuid>,
}

impl<T> std::fmt::Debug for Recorder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("claim", &self.claim)
            .field("parked", &self.parked)
            .field("abandoned_by", &self.abandoned_by)
            .finish()
    }
}

impl<T> Recorder<T> {
    /// Records under `claim` (made by [`begin`]) what `render` makes of the result; `parked`
    /// is the payment the claim is parked on, if [`begin`] found it parked.
    pub fn new(claim: Claim, render: Render<T>, parked: Option<ParkedPayment>) -> Self {
        Self {
            claim,
            render,
            parked,
            abandoned_by: None,
        }
    }

    /// The same, for a claim taken over from `attempt` ([`Attempt::TakenOver`]).
    pub fn taken_over_from(mut self, attempt: Uuid) -> Self {
        self.abandoned_by = Some(attempt);
        self
    }

    /// The claim this attempt records under.
    pub fn claim(&self) -> &Claim {
        &self.claim
    }

    /// The payment an earlier attempt left with an unknown outcome, which this attempt must
    /// resolve before it runs anything.
    pub fn parked(&self) -> Option<&ParkedPayment> {
        self.parked.as_ref()
    }

    /// The attempt this claim was taken over from, if it was: it left the key unsettled, and
    /// a payment it began may have been charged.
    pub fn abandoned_by(&self) -> Option<Uuid> {
        self.abandoned_by
    }

    /// The response to store for `value`.
    pub fn render(&self, value: &T) -> std::result::Result<StoredResponse, String> {
        (self.render)(value)
    }
}

/// For each request of a batch whose effect the caller's transaction `conn` is about to make
/// (its claim, `None` for a request without a key), whether its claim is no longer held by
/// its attempt: taken over (see [`stale_claim_age`]), so the request must make no effect.
/// The claims still held are row-locked until that transaction ends. Callers hold the event
/// row lock already, and no transaction takes the two the other way round (a claim or a
/// refusal's record runs outside any event lock), so the order event, then key cannot
/// deadlock.
pub async fn lost_claims(conn: &mut PgConnection, claims: &[Option<&Claim>]) -> Result<Vec<bool>> {
    let keyed: Vec<&Claim> = claims.iter().flatten().copied().collect();
    let held = match keyed.is_empty() {
        true => Vec::new(),
        false => db::idempotency::lock_held(conn, &keyed).await?,
    };
    // `held` indexes `keyed`, in order: walk the requests, counting the keyed ones.
    let mut keyed_so_far = 0;
    Ok(claims
        .iter()
        .map(|claim| match claim {
            None => false,
            Some(_) => {
                let n = keyed_so_far;
                keyed_so_far += 1;
                held.binary_search(&n).is_err()
            }
        })
        .collect())
}

/// Records the responses of keyed requests whose effect the caller's transaction `conn` is
/// making, in one statement: a response is stored if and only if its effect commits. A claim
/// no longer held by its attempt fails with `IdempotencyInProgress`, and the caller's
/// transaction must roll back: the claim is another attempt's, and so is the effect. Lock
/// order as in [`lost_claims`].
pub async fn record_in(
    conn: &mut PgConnection,
    responses: &[(&Claim, StoredResponse)],
) -> Result<()> {
    if responses.is_empty() {
        return Ok(());
    }
    let rows: Vec<(&Claim, u16, &str)> = responses
        .iter()
        .map(|(claim, response)| (*claim, response.status, response.body.as_str()))
        .collect();
    let recorded = db::idempotency::complete(conn, &rows).await?;
    if recorded == rows.len() as u64 {
        Ok(())
    } else {
        Err(Error::IdempotencyInProgress)
    }
}

/// Records a response with no effect (a refusal), or gives the claim up after a failure so
/// that a retry runs again (a parked claim stays parked). Either only while this attempt
/// still holds the claim. A failed write is tried again a few times: a claim left behind
/// answers its retries 409 until it goes stale.
pub async fn finish(pool: &PgPool, claim: &Claim, status: u16, body: &str) {
    settle("record an idempotent response", || async {
        if status >= 500 {
            db::idempotency::release(pool, claim).await
        } else {
            let mut conn = pool.acquire().await?;
            db::idempotency::complete(&mut conn, &[(claim, status, body)])
                .await
                .map(drop)
        }
    })
    .await;
}

/// Runs `write`, which settles a claim, until it succeeds or [`SETTLE_FOR`] has passed; a
/// write that still fails is logged, and the claim stays in progress until it is taken over
/// as stale.
async fn settle<F, Fut>(what: &str, write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), sqlx::Error>>,
{
    settle_within(what, SETTLE_FOR, write).await;
}

/// [`settle`] with a time limit of `limit`.
async fn settle_within<F, Fut>(what: &str, limit: Duration, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), sqlx::Error>>,
{
    let give_up = tokio::time::Instant::now() + limit;
    for tried in 1u32.. {
        match write().await {
            Ok(()) => return,
            // A closed pool will not open again: trying again only delays shutdown.
            Err(err)
                if tokio::time::Instant::now() >= give_up
                    || matches!(err, sqlx::Error::PoolClosed) =>
            {
                tracing::warn!(error = %err, tried, "could not {what}; the claim stays in progress until stale");
                return;
            }
            Err(err) => {
                tracing::info!(error = %err, tried, "could not {what}; trying again");
                tokio::time::sleep((Duration::from_millis(200) * tried).min(SETTLE_PAUSE_MAX))
                    .await;
            }
        }
    }
}

/// Parks the claim on a payment whose provider outcome is unknown, instead of releasing it:
/// the payment may have been charged, so a retry must learn its outcome from the allocation
/// rather than run again.
/// Tried like [`finish`]'s write. If it never succeeds, the claim stays in progress, unparked:
/// it is taken over once stale ([`Attempt::TakenOver`]), and the retry looks for the payment
/// of the attempt that held the claim under the reference derived from its id; a payment
/// under another reference (this claim's attempt was itself a takeover, or unparked the
/// claim) is not found, and the retry is refused 409 INVALID_STATUS.
pub async fn park(pool: &PgPool, claim: &Claim, payment: &ParkedPayment) {
    settle("park an idempotency claim", || {
        db::idempotency::park(pool, claim, payment.allocation, &payment.reference)
    })
    .await;
}

/// Makes a claim parked on `payment` this attempt's own fresh claim, once that payment is
/// known not to have been charged. Errors with `IdempotencyInProgress` if another retry took
/// it first; the claim is then that retry's, and this attempt must leave it alone.
pub async fn unpark(pool: &PgPool, claim: &Claim, payment: &ParkedPayment) -> Result<()> {
    if db::idempotency::unpark(pool, &claim.key, &payment.reference).await? {
        Ok(())
    } else {
        Err(Error::IdempotencyInProgress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls a settling write that always fails with `failure`, with a limit of 1.5 s:
    /// (calls made, time taken).
    async fn settle_failing(failure: fn() -> sqlx::Error) -> (u32, std::time::Duration) {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let started = std::time::Instant::now();
        settle_within("settle in a test", Duration::from_millis(1500), || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Err(failure()))
        })
        .await;
        (calls.into_inner(), started.elapsed())
    }

    /// A failing write is tried until its time limit has passed, waiting 200 ms, 400 ms,
    /// 600 ms, … between tries (a database in failover gets time to come back): within
    /// 1.5 s, tries at 0, 0.2, 0.6 and 1.2 s, then one at 2.0 s that finds the limit passed.
    #[tokio::test]
    async fn a_failing_settle_is_tried_until_its_limit_with_growing_pauses() {
        let (calls, took) = settle_failing(|| sqlx::Error::PoolTimedOut).await;
        assert_eq!(calls, 5);
        assert!(took >= Duration::from_millis(2000), "{took:?}");
        assert!(took < Duration::from_millis(2600), "{took:?}");
    }

    /// A closed pool will not open again: one try, no pause, so shutdown is not delayed.
    #[tokio::test]
    async fn a_closed_pool_is_tried_once() {
        let (calls, took) = settle_failing(|| sqlx::Error::PoolClosed).await;
        assert_eq!(calls, 1);
        assert!(took < Duration::from_millis(150), "{took:?}");
    }

    /// Logs show a recorder by its key (never its rendering closure); it renders through the
    /// closure the HTTP layer gave it.
    #[test]
    fn a_recorder_shows_its_key_and_renders_through_its_closure() {
        let claim = Claim {
            key: KeyRef {
                fingerprint_hash: "buyer-hash".into(),
                key: "order-1".into(),
            },
            attempt: Uuid::nil(),
        };
        let recorder: Recorder<u8> = Recorder::new(
            claim.clone(),
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
        assert_eq!(recorder.claim(), &claim);
        assert_eq!(
            recorder.render(&7),
            Ok(StoredResponse {
                status: 201,
                body: "7".into(),
            })
        );
    }
}
