//! Operations endpoints: liveness and readiness.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{ApiResult, ErrorBody};
use super::response::json;
use crate::db;
use crate::error::Error;
use crate::http::state::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process is up", body = Status)))]
pub async fn health() -> ApiResult<Response> {
    json(StatusCode::OK, &Status { status: "ok" })
}

/// How long readiness waits for the database's answer. A request that needs the database
/// waits up to the pool's 5 s for a connection while it is away; a readiness probe is given
/// less (Kubernetes' default probe timeout is 1 s) and must hear 503, not time out.
const READY_WAIT: Duration = Duration::from_secs(1);

/// Readiness: 200 when the database answers within [`READY_WAIT`], 503 when it does not.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = Status),
        (status = 503, description = "SERVICE_UNAVAILABLE: the database did not answer within 1 s", body = ErrorBody),
    ))]
pub async fn ready(State(state): State<AppState>) -> ApiResult<Response> {
    let answered = tokio::time::timeout(READY_WAIT, db::ping(&state.pool)).await;
    if answered == Ok(true) {
        json(StatusCode::OK, &Status { status: "ok" })
    } else {
        Err(Error::ServiceUnavailable.into())
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&state.pool),
    )
}
