//! The HTTP side of idempotent retries, shared by both keyed endpoints: claim the key or
//! replay the first response, run the effect with a recorder that renders its success the
//! way this endpoint answers, record a refusal, give the claim up after a failure with no
//! effect, or park it on a payment whose outcome is unknown. The protocol itself (claim,
//! wait, takeover, parking, storage) is `crate::idempotency`'s.
//!
//! A keyed request's work runs in a task of its own, which the handler awaits. A request cut
//! off by the request timeout drops only the waiting (a client that hangs up no longer cuts
//! its request off: `http::serve` does not read during a response): the claim, the effect
//! and the record or release that ends the claim run to their end, so no claim is left
//! `in_progress` by a request that went away, and a retry with the key gets what was done,
//! or runs afresh. The tasks are counted ([`KeyedTasks`]) so that a graceful shutdown
//! waits for them before it closes the pool; a task whose request is gone logs its own 500.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use serde::Serialize;
use tokio::sync::{oneshot, watch};

use super::error::{ApiError, ApiResult, InternalCause};
use super::response::json;
use super::state::AppState;
use crate::domain::fingerprint::FingerprintHash;
use crate::domain::idempotency::{IdempotencyKey, request_hash};
use crate::error::Error;
use crate::idempotency::{self, Attempt, ParkedPayment, Recorder, StoredResponse};

/// Answers a `POST` to `path` whose effect is `effect`, honouring the `Idempotency-Key` if
/// one was sent. `canonical_body` is the request as it counts for sameness; `success` the
/// status of a successful answer. `effect` gets the recorder that stores its success in the
/// effect's own transaction (`None` for an unkeyed request).
///
/// Without a key the effect runs in the request, and a request cut off takes its unfinished
/// work with it. With a key everything runs in a spawned task that outlives the request.
pub async fn keyed<T, F, Fut>(
    state: &AppState,
    buyer: &FingerprintHash,
    key: Option<IdempotencyKey>,
    (path, canonical_body): (&str, &str),
    success: StatusCode,
    effect: F,
) -> ApiResult<Response>
where
    T: Serialize + Send + 'static,
    F: FnOnce(Option<Recorder<T>>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Error>> + Send + 'static,
{
    let Some(key) = key else {
        return json(success, &effect(None).await?);
    };
    let hash = request_hash("POST", path, canonical_body);
    let (state, buyer, path) = (state.clone(), buyer.clone(), path.to_owned());
    let started = Instant::now();
    let (answer, answered) = oneshot::channel();
    // Spawned from before the claim to after its record or release: once the key may be
    // claimed, nothing the client does can stop the work before the claim is settled.
    state.keyed_tasks.clone().spawn(async move {
        let outcome = AssertUnwindSafe(claimed(&state, &buyer, &key, &hash, success, effect))
            .catch_unwind()
            .await;
        // The request was cut off: no response will carry this outcome to the request log,
        // so a failure is logged here, in the request log's shape.
        if let Err(unanswered) = answer.send(outcome) {
            log_unanswered(&path, started, unanswered);
        }
    });
    match answered.await {
        Ok(Ok(answer)) => answer,
        // A panic in the work is answered like a panic in the handler (the panic layer's 500).
        // Its claim stays in progress and is taken over once stale.
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => Err(ApiError::internal(
            "keyed request's task ended without an answer",
        )),
    }
}

/// What a keyed request's task produced: its answer, or the payload of its panic.
type Outcome = std::thread::Result<ApiResult<Response>>;

/// Logs a keyed request's outcome that no response carries (the request was cut off) the way
/// the request log logs a 500 (`log_request` in `http/mod.rs`): at error level, with method,
/// path, status, latency and cause. Anything but a 500 is left to the request's own 503 line.
fn log_unanswered(path: &str, started: Instant, outcome: Outcome) {
    let latency_ms = super::milliseconds(started.elapsed());
    let (status, cause) = match outcome {
        Ok(answer) => {
            let response = answer.into_response();
            match response.extensions().get::<InternalCause>() {
                Some(InternalCause(cause)) => (response.status().as_u16(), cause.clone()),
                None => return,
            }
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with no message".to_owned());
            (500, format!("panic: {message}"))
        }
    };
    tracing::error!(
        target: "boxoffice::request",
        method = "POST",
        %path,
        status,
        latency_ms,
        %cause,
        "keyed request failed after its request was cut off"
    );
}

/// The keyed requests' tasks still running, so that a graceful shutdown can wait for them to
/// settle their claims before it closes the pool. Cheap to clone; every clone counts the same.
#[derive(Debug, Clone)]
pub struct KeyedTasks {
    running: Arc<watch::Sender<usize>>,
}

impl Default for KeyedTasks {
    fn default() -> Self {
        Self {
            running: Arc::new(watch::Sender::new(0)),
        }
    }
}

/// Counts one task as running until it is dropped, however the task ends (a panic included).
struct Running(Arc<watch::Sender<usize>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|running| *running -= 1);
    }
}

impl KeyedTasks {
    /// Spawns `work`, counted as running until it ends.
    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.running.send_modify(|running| *running += 1);
        let running = Running(self.running.clone());
        tokio::spawn(async move {
            let _running = running;
            work.await;
        });
    }

    /// How many tasks are running.
    pub fn running(&self) -> usize {
        *self.running.borrow()
    }

    /// Waits until no task runs, or `limit` has passed; true if none runs.
    pub async fn wait(&self, limit: Duration) -> bool {
        let mut running = self.running.subscribe();
        tokio::time::timeout(limit, running.wait_for(|n| *n == 0))
            .await
            .is_ok()
    }
}

/// A keyed request from its claim to the settled claim: replayed, or run and then recorded
/// (a success by its effect's transaction, a refusal here), released (a failure with no
/// effect) or parked (a payment whose outcome is unknown).
async fn claimed<T, F, Fut>(
    state: &AppState,
    buyer: &FingerprintHash,
    key: &IdempotencyKey,
    hash: &str,
    success: StatusCode,
    effect: F,
) -> ApiResult<Response>
where
    T: Serialize + 'static,
    F: FnOnce(Option<Recorder<T>>) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let (claim, parked, abandoned_by) =
        match idempotency::begin(&state.pool, buyer, key, hash, state.rules.stale_claim_age).await?
        {
            Attempt::First(claim) => (claim, None, None),
            // The effect resolves what the abandoned attempt did before it runs anything.
            Attempt::TakenOver(claim, attempt) => (claim, None, Some(attempt)),
            // The effect resolves the parked payment before it runs anything.
            Attempt::Parked(claim, payment) => (claim, Some(payment), None),
            Attempt::Replay { status, body } => return replay(status, body),
        };
    let render = move |value: &T| {
        serde_json::to_string(value)
            .map(|body| StoredResponse {
                status: success.as_u16(),
                body,
            })
            .map_err(|err| err.to_string())
    };
    let recorder = Recorder::new(claim.clone(), Arc::new(render), parked);
    let recorder = match abandoned_by {
        Some(attempt) => recorder.taken_over_from(attempt),
        None => recorder,
    };
    let outcome = effect(Some(recorder)).await;
    // A success was recorded by the transaction that made its effect; a refusal is recorded
    // here, as it is answered. A failure gives the claim up, unless it may have had an effect:
    // a payment the provider may have charged keeps the claim, parked on that payment, so
    // that a retry answers from its outcome and never pays again while it is unknown; a
    // refund left pending keeps it too, parked on the refund, so that no other request can
    // take the key while its retry may still resume that refund.
    match &outcome {
        // The claim went to another attempt (two retries of a parked claim raced to take it
        // over, and this one lost): its record or release is that attempt's, not ours.
        Ok(_) | Err(Error::IdempotencyInProgress) => {}
        Err(
            Error::PaymentOutcomeUnknown {
                allocation,
                reference,
                ..
            }
            | Error::RefundOutcomeUnknown {
                allocation,
                reference,
            },
        ) => {
            let payment = ParkedPayment {
                allocation: *allocation,
                reference: reference.clone(),
            };
            let (pool, claim) = (state.pool.clone(), claim.clone());
            settle_claim(state, async move {
                idempotency::park(&pool, &claim, &payment).await;
            })
            .await;
        }
        Err(err) => {
            let err = ApiError::from(err.clone());
            let body = serde_json::to_string(&err.body()).map_err(ApiError::internal)?;
            let status = err.status_and_code().0.as_u16();
            let (pool, claim) = (state.pool.clone(), claim.clone());
            settle_claim(state, async move {
                idempotency::finish(&pool, &claim, status, &body).await;
            })
            .await;
        }
    }
    json(success, &outcome?)
}

/// How long an answer waits for the write that settles its claim. A write that takes
/// longer is waiting for the database (gone away in a failover: `idempotency::finish` and
/// `idempotency::park` keep trying until it is back), and the client should have its 503
/// now, not then; the write goes on in the background, and a retry meanwhile finds the claim
/// in progress and waits for it like for any first attempt.
const SETTLE_WAIT: Duration = Duration::from_secs(1);

/// Runs `write`, which settles a claim, as a keyed task of its own, and waits for it at most
/// [`SETTLE_WAIT`].
async fn settle_claim(state: &AppState, write: impl Future<Output = ()> + Send + 'static) {
    let (done, settled) = oneshot::channel();
    state.keyed_tasks.spawn(async move {
        write.await;
        let _ = done.send(());
    });
    let _ = tokio::time::timeout(SETTLE_WAIT, settled).await;
}

/// The first attempt's response, marked as a replay.
fn replay(status: u16, body: String) -> ApiResult<Response> {
    let status = StatusCode::from_u16(status).map_err(ApiError::internal)?;
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}
