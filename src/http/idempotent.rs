//! The HTTP side of idempotent retries, shared by both keyed endpoints: claim the key or
//! replay the first response, run the effect with a recorder that renders its success the
//! way this endpoint answers, record a refusal, give the claim up after a failure with no
//! effect, or park it on a payment whose outcome is unknown. The protocol itself (claim,
//! wait, takeover, parking, storage) is `crate::idempotency`'s.
//!
//! A keyed request's work runs in a task of its own, which the handler awaits. A request cut
//! off (by the request timeout, or a client that hangs up) drops only the waiting: the claim,
//! the effect and the record or release that ends the claim run to their end, so no claim is
//! left `in_progress` by a request that went away, and a retry with the key gets what was
//! done, or runs afresh.

use std::future::Future;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{ApiError, ApiResult};
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
    let (state, buyer) = (state.clone(), buyer.clone());
    // Spawned from before the claim to after its record or release: once the key may be
    // claimed, nothing the client does can stop the work before the claim is settled.
    let work =
        tokio::spawn(async move { claimed(&state, &buyer, &key, &hash, success, effect).await });
    match work.await {
        Ok(answer) => answer,
        // A panic in the work is answered like a panic in the handler (the panic layer's 500).
        // Its claim stays in progress and is taken over once stale.
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => Err(ApiError::internal(format!("keyed request's task: {err}"))),
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
    let (claim, parked) = match idempotency::begin(&state.pool, buyer, key, hash).await? {
        Attempt::First(claim) => (claim, None),
        // The effect resolves the parked payment before it runs anything.
        Attempt::Parked(claim, payment) => (claim, Some(payment)),
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
    let outcome = effect(Some(recorder)).await;
    // A success was recorded by the transaction that made its effect; a refusal is recorded
    // here, as it is answered. A failure gives the claim up, unless it may have had an effect:
    // a payment the provider may have charged keeps the claim, parked on that payment, so
    // that a retry answers from its outcome and never pays again while it is unknown.
    match &outcome {
        // The claim went to another attempt (two retries of a parked claim raced to take it
        // over, and this one lost): its record or release is that attempt's, not ours.
        Ok(_) | Err(Error::IdempotencyInProgress) => {}
        Err(Error::PaymentOutcomeUnknown {
            allocation,
            reference,
            ..
        }) => {
            let payment = ParkedPayment {
                allocation: *allocation,
                reference: reference.clone(),
            };
            idempotency::park(&state.pool, &claim, &payment).await;
        }
        Err(err) => {
            let err = ApiError::from(err.clone());
            let body = serde_json::to_string(&err.body()).map_err(ApiError::internal)?;
            idempotency::finish(&state.pool, &claim, err.status_and_code().0.as_u16(), &body).await;
        }
    }
    json(success, &outcome?)
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
