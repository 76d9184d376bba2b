//! Idempotent retries with the semantics payment APIs use: the same `Idempotency-Key` with
//! the same request within 24 hours gets the first response and has no second effect; with
//! a different request it is refused (422 `IDEMPOTENCY_KEY_REUSED`); a duplicate that arrives
//! while the first is running waits for it, or gets 409 `IDEMPOTENCY_IN_PROGRESS`.
//!
//! A first attempt claims the key (a committed `in_progress` row, so duplicates can see it).
//! A response that has an effect (a hold made, a payment captured) is recorded in the same
//! transaction as the effect, so it exists if and only if the effect does. Refusals, which
//! have no effect, are recorded after the fact; failures (5xx) give the claim up so a retry
//! runs again. A claim still `in_progress` long after any attempt could have committed
//! belongs to a crashed attempt whose effect never committed, and is taken over.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};

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
        let abandoned = stored.as_ref().is_some_and(|s| {
            s.expired || (!s.completed && s.claim_age_seconds >= STALE_CLAIM_SECONDS)
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

/// How a keyed request records its success inside the transaction that makes its effect: the
/// claimed key, and the rendering the HTTP layer chose. The service says what happened (the
/// value); it never picks a status or a body itself.
#[derive(Clone)]
pub struct Recorder<T> {
    key: KeyRef,
    render: Render<T>,
}

impl<T> std::fmt::Debug for Recorder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("key", &self.key).finish()
    }
}

impl<T> Recorder<T> {
    /// Records under `key` (claimed by [`begin`]) what `render` makes of the result.
    pub fn new(key: KeyRef, render: Render<T>) -> Self {
        Self { key, render }
    }

    /// The claimed key.
    pub fn key(&self) -> &KeyRef {
        &self.key
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
/// that a retry runs again.
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
