//! The waiting list's routes: a buyer joins, reads, lists and leaves (identified by
//! fingerprint, as for a purchase); the organiser lists an event's line. Thin: parse, call
//! `crate::waiting_list`, answer.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, BuyerHeaders, Caller, IdPath, Organiser};
use super::response::json;
use super::wire::{JoinWaitingListRequest, PageQuery};
use crate::domain::order::{OrderDraft, parse_lines};
use crate::domain::page::{Page, PageRequest};
use crate::domain::waiting_list::WaitingEntry;
use crate::error::Error;
use crate::http::state::AppState;
use crate::waiting_list;

/// Join the waiting list of a sold-out ticket type.
#[utoipa::path(
    post, path = "/events/{id}/waiting-list", tag = "waiting-list",
    params(
        ("id" = uuid::Uuid, Path, description = "Event id"),
        BuyerHeaders,
    ),
    request_body = JoinWaitingListRequest,
    responses(
        (status = 201, description = "The entry, `waiting`, with its position (from 1)", body = WaitingEntry),
        (status = 400, description = "BAD_REQUEST", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event", body = ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT: the body stopped arriving within the request timeout; the connection is closed", body = ErrorBody),
        (status = 409, description = "TICKETS_AVAILABLE: the type can serve this quantity now, buy instead (carries available); ALREADY_WAITING: this buyer has a live entry for the type; SALES_CLOSED; FINGERPRINT_LIMIT", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: quantity missing or out of range, ticketTypeId names no active type of the event", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED, with Retry-After", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn join_waiting_list(
    State(state): State<AppState>,
    IdPath(event_id): IdPath,
    caller: Caller,
    ApiJson(request): ApiJson<JoinWaitingListRequest>,
) -> ApiResult<Response> {
    let draft = OrderDraft {
        quantity: request.quantity,
        ticket_type_id: request.ticket_type_id,
        lines: None,
    };
    let line = parse_lines(draft, state.rules.max_tickets_per_purchase)
        .map_err(Error::Validation)?
        .pop()
        .ok_or_else(|| Error::internal("a one-line order without its line"))?;
    let buyer = caller.identify(&state.fingerprint_key, request.user_fingerprint.as_deref())?;
    state.limits.check(&buyer, caller.address())?;
    let entry = waiting_list::join(
        &state.pool,
        event_id,
        line,
        &buyer,
        state.rules.waiting_list_offer_seconds,
    )
    .await?;
    Ok((
        [(header::LOCATION, format!("/waiting-list/{}", entry.id))],
        json(StatusCode::CREATED, &entry)?,
    )
        .into_response())
}

/// Read one of the caller's waiting-list entries, with its position or its offer.
#[utoipa::path(
    get, path = "/waiting-list/{id}", tag = "waiting-list",
    params(
        ("id" = uuid::Uuid, Path, description = "Entry id"),
        BuyerHeaders,
    ),
    responses(
        (status = 200, description = "The entry", body = WaitingEntry),
        (status = 400, description = "BAD_REQUEST", body = ErrorBody),
        (status = 403, description = "FINGERPRINT_MISMATCH: another buyer's entry", body = ErrorBody),
        (status = 404, description = "NOT_FOUND", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn get_entry(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    caller: Caller,
) -> ApiResult<Response> {
    let buyer = caller.identify(&state.fingerprint_key, None)?;
    json(
        StatusCode::OK,
        &waiting_list::get(&state.pool, id, &buyer).await?,
    )
}

/// Leave the waiting list: a waiting entry becomes `left`; an offered one `declined`, its
/// hold released and its tickets offered to the next in line.
#[utoipa::path(
    delete, path = "/waiting-list/{id}", tag = "waiting-list",
    params(
        ("id" = uuid::Uuid, Path, description = "Entry id"),
        BuyerHeaders,
    ),
    responses(
        (status = 200, description = "The entry as it now is", body = WaitingEntry),
        (status = 400, description = "BAD_REQUEST", body = ErrorBody),
        (status = 403, description = "FINGERPRINT_MISMATCH: another buyer's entry", body = ErrorBody),
        (status = 404, description = "NOT_FOUND", body = ErrorBody),
        (status = 409, description = "INVALID_STATUS: the entry has ended, or its offer's payment is under way", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn leave_waiting_list(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    caller: Caller,
) -> ApiResult<Response> {
    let buyer = caller.identify(&state.fingerprint_key, None)?;
    json(
        StatusCode::OK,
        &waiting_list::leave(&state.pool, id, &buyer).await?,
    )
}

/// The caller's waiting-list entries, newest first.
#[utoipa::path(
    get, path = "/waiting-list", tag = "waiting-list",
    params(
        PageQuery,
        BuyerHeaders,
    ),
    responses(
        (status = 200, description = "One page of the caller's entries", body = Page<WaitingEntry>),
        (status = 400, description = "BAD_REQUEST", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn list_entries(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let page = PageRequest::parse(query.page.as_deref(), query.limit.as_deref())
        .map_err(|(field, message)| ApiError::bad_parameter(field, message))?;
    let buyer = caller.identify(&state.fingerprint_key, None)?;
    json(
        StatusCode::OK,
        &waiting_list::list(&state.pool, &buyer, page).await?,
    )
}

/// An event's waiting list in join order, every status (organiser).
#[utoipa::path(
    get, path = "/events/{id}/waiting-list", tag = "waiting-list",
    security((), ("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Event id"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "One page of the event's entries in join order", body = Page<WaitingEntry>),
        (status = 400, description = "BAD_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: the server runs with --admin-token and no token was sent", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: the token is neither the admin token nor a live organiser token", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn list_event_entries(
    State(state): State<AppState>,
    _organiser: Organiser,
    IdPath(event_id): IdPath,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let page = PageRequest::parse(query.page.as_deref(), query.limit.as_deref())
        .map_err(|(field, message)| ApiError::bad_parameter(field, message))?;
    json(
        StatusCode::OK,
        &waiting_list::list_for_event(&state.pool, event_id, page).await?,
    )
}
