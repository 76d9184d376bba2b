//! Successful JSON responses. The body is serialized before the status is chosen, so a value
//! that cannot be serialized answers the usual 500 JSON error, never a 2xx with a text body
//! (axum's `Json` writes a plain-text 500 that a `(StatusCode, Json(..))` tuple then
//! overrides with its own status).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{ApiError, ApiResult};

/// `value` as an `application/json` response with `status`; an internal error if it does not
/// serialize.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> ApiResult<Response> {
    let body = serde_json::to_vec(value)
        .map_err(|err| ApiError::internal(format!("serializing the response body: {err}")))?;
    Ok((
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}
