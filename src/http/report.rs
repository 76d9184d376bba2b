//! `GET /events/{id}/report`: the organiser's sales report. Admin-only whatever the
//! configuration ([`AdminOnly`]): it shows money.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::error::{ApiResult, ErrorBody};
use super::extract::{AdminOnly, IdPath};
use super::response::json;
use crate::catalogue;
use crate::domain::report::SalesReport;
use crate::http::state::AppState;

/// An event's sales per ticket type and in total: tickets held, sold and refunded, money
/// taken, given back and kept, in the event's currency's minor unit, from one snapshot of
/// committed rows. Needs `Authorization: Bearer <token>` with the admin token or an organiser token, always.
#[utoipa::path(
    get, path = "/events/{id}/report", tag = "catalogue",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "The report: every type of the event in creation order, and the totals", body = SalesReport),
        (status = 400, description = "BAD_REQUEST: id is not a UUID", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: no bearer token sent; or the server runs without --admin-token and the token is not a live organiser token (the message says how to configure one)", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: a door token; or, with --admin-token, a token that is neither it nor a live organiser token", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn sales_report(
    State(state): State<AppState>,
    _admin: AdminOnly,
    IdPath(event_id): IdPath,
) -> ApiResult<Response> {
    let report = catalogue::sales_report(&state.pool, event_id).await?;
    json(StatusCode::OK, &report)
}
