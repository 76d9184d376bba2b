//! The HTTP side of idempotent retries, shared by both keyed endpoints: claim the key or
//! replay the first response, run the effect with a recorder that renders its success the
//! way this endpoint answers, record a refusal, give the claim up after a failure. The
//! protocol itself (claim, wait, takeover, storage) is `crate::idempotency`'s.

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
use crate::idempotency::{self, Attempt, Recorder, StoredResponse};

/// Answers a `POST` to `path` whose effect is `effect`, honouring the `Idempotency-Key` if
/// one was sent. `canonical_body` is the request as it counts for sameness; `success` the
/// status of a successful answer. `effect` gets the recorder that stores its success in the
/// effect's own transaction (`None` for an unkeyed request).
pub async fn keyed<T, F, Fut>(
    state: &AppState,
    buyer: &FingerprintHash,
    key: Option<IdempotencyKey>,
    (path, canonical_body): (&str, &str),
    success: StatusCode,
    effect: F,
) -> ApiResult<Response>
where
    T: Serialize + 'static,
    F: FnOnce(Option<Recorder<T>>) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let claim = match key {
        None => None,
        Some(key) => {
            let hash = request_hash("POST", path, canonical_body);
            match idempotency::begin(&state.pool, buyer, &key, &hash).await? {
                Attempt::First(claim) => Some(claim),
                Attempt::Replay { status, body } => return replay(status, body),
            }
        }
    };
    let recorder = claim.clone().map(|claim| {
        let render = move |value: &T| {
            serde_json::to_string(value)
                .map(|body| StoredResponse {
                    status: success.as_u16(),
                    body,
                })
                .map_err(|err| err.to_string())
        };
        Recorder::new(claim, Arc::new(render))
    });
    let outcome = effect(recorder).await.map_err(ApiError::from);
    // A success was recorded by the transaction that made its effect; a refusal is recorded
    // here, as it is answered, and a failure gives the claim up.
    if let (Some(claim), Err(err)) = (&claim, &outcome) {
        let body = serde_json::to_string(&err.body()).map_err(ApiError::internal)?;
        idempotency::finish(&state.pool, claim, err.status_and_code().0.as_u16(), &body).await;
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
