//! Buying and managing holds: purchase, pay, cancel, read, list.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ErrorBody;
use super::extract::{
    ApiJson, ApiQuery, BuyerHeaders, Caller, IdPath, IdempotencyHeader, KeyedBuyerHeaders,
};
use super::response::json;
use super::wire::{PageQuery, PaymentRequest, PurchaseRequest};
use crate::domain::allocation::{Allocation, Quantity};
use crate::domain::fingerprint::FingerprintHash;
use crate::domain::idempotency::{IdempotencyKey, KeyRef, request_hash};
use crate::domain::page::{Page, PageRequest};
use crate::domain::refusal::FieldError;
use crate::error::{Error, Result};
use crate::holds;
use crate::http::state::AppState;
use crate::idempotency::{self, Attempt};

/// Reserve tickets: a hold that lasts until paid, cancelled or lapsed.
#[utoipa::path(
    post, path = "/events/{id}/tickets", tag = "tickets",
    params(
        ("id" = uuid::Uuid, Path, description = "Event id"),
        KeyedBuyerHeaders,
    ),
    request_body = PurchaseRequest,
    responses(
        (status = 201, description = "The hold, status `reserved`", body = Allocation),
        (status = 400, description = "BAD_REQUEST", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event", body = ErrorBody),
        (status = 409, description = "TICKETS_SOLD_OUT, INSUFFICIENT_TICKETS (with availableTickets), FINGERPRINT_LIMIT or IDEMPOTENCY_IN_PROGRESS", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: quantity missing or out of range; IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED, with Retry-After", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn purchase_tickets(
    State(state): State<AppState>,
    IdPath(event_id): IdPath,
    caller: Caller,
    IdempotencyHeader(key): IdempotencyHeader,
    ApiJson(request): ApiJson<PurchaseRequest>,
) -> Result<Response> {
    let quantity = Quantity::parse(request.quantity, state.rules.max_tickets_per_purchase)
        .map_err(|message| Error::Validation(vec![FieldError::new("quantity", message)]))?;
    let buyer = caller.identify(&state.fingerprint_key, request.user_fingerprint.as_deref())?;
    state.limits.check(&buyer, caller.address())?;
    let path = format!("/events/{event_id}/tickets");
    let canonical = json!({ "quantity": quantity.get() }).to_string();
    let claim = match begin_keyed(&state, &buyer, key, &path, &canonical).await? {
        Keyed::Replay(response) => return Ok(response),
        Keyed::Run(claim) => claim,
    };
    let outcome = state
        .purchaser
        .purchase(event_id, quantity, buyer, claim.clone())
        .await;
    crate::metrics::purchase_outcome(match &outcome {
        Ok(_) => "reserved",
        Err(err) => err.status_and_code().1,
    });
    respond(&state, claim, StatusCode::CREATED, outcome).await
}

/// Pay for a hold. Only its holder may pay.
#[utoipa::path(
    post, path = "/tickets/{id}/payment", tag = "tickets",
    params(
        ("id" = uuid::Uuid, Path, description = "Allocation id"),
        KeyedBuyerHeaders,
    ),
    request_body(content = Option<PaymentRequest>, description = "Optional; no token pays with the default test card"),
    responses(
        (status = 200, description = "Paid: status `purchased` with purchasedAt and confirmationCode", body = Allocation),
        (status = 400, description = "BAD_REQUEST", body = ErrorBody),
        (status = 402, description = "PAYMENT_DECLINED: the hold is `reserved` again (or `expired` if it lapsed meanwhile)", body = ErrorBody),
        (status = 403, description = "FINGERPRINT_MISMATCH", body = ErrorBody),
        (status = 404, description = "NOT_FOUND", body = ErrorBody),
        (status = 409, description = "INVALID_STATUS: not `reserved`; IDEMPOTENCY_IN_PROGRESS", body = ErrorBody),
        (status = 410, description = "RESERVATION_EXPIRED", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR; IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED, with Retry-After", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn pay_for_tickets(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    caller: Caller,
    IdempotencyHeader(key): IdempotencyHeader,
    ApiJson(request): ApiJson<PaymentRequest>,
) -> Result<Response> {
    let buyer = caller.identify(&state.fingerprint_key, request.user_fingerprint.as_deref())?;
    state.limits.check(&buyer, caller.address())?;
    let token = request
        .payment_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let path = format!("/tickets/{id}/payment");
    let canonical = json!({ "paymentToken": token }).to_string();
    let claim = match begin_keyed(&state, &buyer, key, &path, &canonical).await? {
        Keyed::Replay(response) => return Ok(response),
        Keyed::Run(claim) => claim,
    };
    let outcome = holds::pay(
        &state.pool,
        state.payments.as_ref(),
        id,
        &buyer,
        token,
        claim.as_ref(),
    )
    .await;
    respond(&state, claim, StatusCode::OK, outcome).await
}

/// What an idempotency key says to do with a request.
enum Keyed {
    /// Run the request (under this claim, if it has a key).
    Run(Option<KeyRef>),
    /// Answer with the first attempt's response.
    Replay(Response),
}

async fn begin_keyed(
    state: &AppState,
    buyer: &FingerprintHash,
    key: Option<IdempotencyKey>,
    path: &str,
    canonical_body: &str,
) -> Result<Keyed> {
    let Some(key) = key else {
        return Ok(Keyed::Run(None));
    };
    let hash = request_hash("POST", path, canonical_body);
    Ok(
        match idempotency::begin(&state.pool, buyer, &key, &hash).await? {
            Attempt::First(claim) => Keyed::Run(Some(claim)),
            Attempt::Replay { status, body } => {
                let status = StatusCode::from_u16(status).map_err(Error::internal)?;
                let mut response =
                    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                Keyed::Replay(response)
            }
        },
    )
}

/// Answers a keyed or unkeyed request. A success was recorded under its key by the
/// transaction that made its effect (the purchase batch, the payment's settlement); a
/// refusal is recorded here, and a failure gives the claim up.
async fn respond(
    state: &AppState,
    claim: Option<KeyRef>,
    success: StatusCode,
    outcome: Result<Allocation>,
) -> Result<Response> {
    if let (Some(claim), Err(err)) = (&claim, &outcome) {
        let body = serde_json::to_string(&err.body()).map_err(Error::internal)?;
        idempotency::finish(&state.pool, claim, err.status_and_code().0.as_u16(), &body).await;
    }
    json(success, &outcome?)
}

/// Cancel a `reserved` hold; its tickets return to the pool.
#[utoipa::path(
    delete, path = "/tickets/{id}/payment", tag = "tickets",
    params(
        ("id" = uuid::Uuid, Path, description = "Allocation id"),
        BuyerHeaders,
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
) -> Result<Response> {
    let buyer = caller.identify(&state.fingerprint_key, None)?;
    json(
        StatusCode::OK,
        &holds::cancel(&state.pool, id, &buyer).await?,
    )
}

/// Read one of the caller's allocations.
#[utoipa::path(
    get, path = "/tickets/{id}", tag = "tickets",
    params(
        ("id" = uuid::Uuid, Path, description = "Allocation id"),
        BuyerHeaders,
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
) -> Result<Response> {
    let buyer = caller.identify(&state.fingerprint_key, None)?;
    json(StatusCode::OK, &holds::get(&state.pool, id, &buyer).await?)
}

/// The caller's allocations, newest first.
#[utoipa::path(
    get, path = "/tickets", tag = "tickets",
    params(
        PageQuery,
        BuyerHeaders,
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
) -> Result<Response> {
    let page = PageRequest::parse(query.page.as_deref(), query.limit.as_deref())
        .map_err(|(field, message)| Error::bad_parameter(field, message))?;
    let buyer = caller.identify(&state.fingerprint_key, None)?;
    json(
        StatusCode::OK,
        &holds::list(&state.pool, &buyer, page).await?,
    )
}
