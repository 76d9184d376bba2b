//! Buying and managing holds: purchase, pay, cancel, read, list.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::error::ErrorBody;
use super::extract::{ApiJson, ApiQuery, Caller, IdPath};
use crate::domain::allocation::{Allocation, PaymentRequest, PurchaseRequest, Quantity};
use crate::domain::page::{Page, PageQuery, PageRequest};
use crate::error::{Error, FieldError, Result};
use crate::holds;
use crate::state::AppState;

/// Reserve tickets: a hold that lasts until paid, cancelled or lapsed.
#[utoipa::path(
    post, path = "/events/{id}/tickets", tag = "tickets",
    params(
        ("id" = uuid::Uuid, Path, description = "Event id"),
        ("X-Device-Fingerprint" = Option<String>, Header, description = "The buyer's device fingerprint"),
    ),
    request_body = PurchaseRequest,
    responses(
        (status = 201, description = "The hold, status `reserved`", body = Allocation),
        (status = 400, description = "BAD_REQUEST", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event", body = ErrorBody),
        (status = 409, description = "TICKETS_SOLD_OUT, INSUFFICIENT_TICKETS (with availableTickets) or FINGERPRINT_LIMIT", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: quantity missing or out of range", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED, with Retry-After", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn purchase_tickets(
    State(state): State<AppState>,
    IdPath(event_id): IdPath,
    caller: Caller,
    ApiJson(request): ApiJson<PurchaseRequest>,
) -> Result<(StatusCode, Json<Allocation>)> {
    let quantity = Quantity::parse(request.quantity, state.rules.max_tickets_per_purchase)
        .map_err(|message| Error::Validation(vec![FieldError::new("quantity", message)]))?;
    let buyer = caller.identify(&state.fingerprint_key, request.user_fingerprint.as_deref())?;
    state.limits.check(&buyer, caller.address())?;
    let outcome = state.purchaser.purchase(event_id, quantity, buyer).await;
    crate::metrics::purchase_outcome(match &outcome {
        Ok(_) => "reserved",
        Err(err) => err.status_and_code().1,
    });
    Ok((StatusCode::CREATED, Json(outcome?)))
}

/// Pay for a hold. Only its holder may pay.
#[utoipa::path(
    post, path = "/tickets/{id}/payment", tag = "tickets",
    params(
        ("id" = uuid::Uuid, Path, description = "Allocation id"),
        ("X-Device-Fingerprint" = Option<String>, Header, description = "The buyer's device fingerprint"),
    ),
    request_body(content = PaymentRequest, description = "Optional; no token pays with the default test card"),
    responses(
        (status = 200, description = "Paid: status `purchased` with purchasedAt and confirmationCode", body = Allocation),
        (status = 400, description = "BAD_REQUEST", body = ErrorBody),
        (status = 402, description = "PAYMENT_DECLINED: the hold is `reserved` again (or `expired` if it lapsed meanwhile)", body = ErrorBody),
        (status = 403, description = "FINGERPRINT_MISMATCH", body = ErrorBody),
        (status = 404, description = "NOT_FOUND", body = ErrorBody),
        (status = 409, description = "INVALID_STATUS: not `reserved`", body = ErrorBody),
        (status = 410, description = "RESERVATION_EXPIRED", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED, with Retry-After", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn pay_for_tickets(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    caller: Caller,
    ApiJson(request): ApiJson<PaymentRequest>,
) -> Result<Json<Allocation>> {
    let buyer = caller.identify(&state.fingerprint_key, request.user_fingerprint.as_deref())?;
    state.limits.check(&buyer, caller.address())?;
    let token = request
        .payment_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let allocation = holds::pay(&state.pool, state.payments.as_ref(), id, &buyer, token).await?;
    Ok(Json(allocation))
}

/// Cancel a `reserved` hold; its tickets return to the pool.
#[utoipa::path(
    delete, path = "/tickets/{id}/payment", tag = "tickets",
    params(
        ("id" = uuid::Uuid, Path, description = "Allocation id"),
        ("X-Device-Fingerprint" = Option<String>, Header, description = "The buyer's device fingerprint"),
    ),
    responses(
        (status = 200, description = "Cancelled", body = Allocation),
        (status = 400, description = "BAD_REQUEST", body = ErrorBody),
        (status = 403, description = "FINGERPRINT_MISMATCH", body = ErrorBody),
        (status = 404, description = "NOT_FOUND", body = ErrorBody),
        (status = 409, description = "INVALID_STATUS: not `reserved`", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn cancel_tickets(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    caller: Caller,
) -> Result<Json<Allocation>> {
    let buyer = caller.identify(&state.fingerprint_key, None)?;
    Ok(Json(holds::cancel(&state.pool, id, &buyer).await?))
}

/// Read one of the caller's allocations.
#[utoipa::path(
    get, path = "/tickets/{id}", tag = "tickets",
    params(
        ("id" = uuid::Uuid, Path, description = "Allocation id"),
        ("X-Device-Fingerprint" = Option<String>, Header, description = "The buyer's device fingerprint"),
    ),
    responses(
        (status = 200, description = "The allocation", body = Allocation),
        (status = 400, description = "BAD_REQUEST", body = ErrorBody),
        (status = 403, description = "FINGERPRINT_MISMATCH", body = ErrorBody),
        (status = 404, description = "NOT_FOUND", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn get_ticket(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    caller: Caller,
) -> Result<Json<Allocation>> {
    let buyer = caller.identify(&state.fingerprint_key, None)?;
    Ok(Json(holds::get(&state.pool, id, &buyer).await?))
}

/// The caller's allocations, newest first.
#[utoipa::path(
    get, path = "/tickets", tag = "tickets",
    params(
        PageQuery,
        ("X-Device-Fingerprint" = Option<String>, Header, description = "The buyer's device fingerprint"),
    ),
    responses(
        (status = 200, description = "One page of the caller's allocations", body = Page<Allocation>),
        (status = 400, description = "BAD_REQUEST", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn list_tickets(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<Allocation>>> {
    let page = PageRequest::parse(&query)
        .map_err(|(field, message)| Error::bad_parameter(field, message))?;
    let buyer = caller.identify(&state.fingerprint_key, None)?;
    Ok(Json(holds::list(&state.pool, &buyer, page).await?))
}
