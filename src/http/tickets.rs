//! Buying and managing holds: purchase, pay, cancel, read, list.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use serde_json::json;

use super::error::{ApiError, ApiResult, ErrorBody, app_status_and_code};
use super::extract::{
    AdminOnly, AdmissionPath, AllocationReader, ApiJson, ApiQuery, BuyerHeaders, Caller, IdPath,
    IdempotencyHeader, KeyedBuyerHeaders,
};
use super::idempotent::keyed;
use super::response::json;
use super::wire::{
    OrdersQuery, PageQuery, PaymentRequest, PurchaseBody, PurchaseRequest, RefundRequest,
};
use crate::domain::allocation::Allocation;
use crate::domain::confirmation::{ConfirmationCode, OrderFilter};
use crate::domain::fingerprint::FingerprintSource;
use crate::domain::order::parse_lines;
use crate::domain::page::{Page, PageRequest};
use crate::domain::refund::RefundAsk;
use crate::domain::status::AllocationStatus;
use crate::error::Error;
use crate::holds;
use crate::http::state::AppState;
use crate::payment;

/// Reserve tickets: a hold that lasts until paid, cancelled or lapsed.
#[utoipa::path(
    post, path = "/events/{id}/tickets", tag = "tickets",
    params(
        ("id" = uuid::Uuid, Path, description = "Event id"),
        KeyedBuyerHeaders,
    ),
    request_body = PurchaseBody,
    responses(
        (status = 201, description = "The hold, status `reserved`", body = Allocation),
        (status = 400, description = "BAD_REQUEST", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event", body = ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT: the body stopped arriving within the request timeout; the connection is closed", body = ErrorBody),
        (status = 409, description = "SALES_CLOSED (with ticketTypeId, salesStartAt and salesEndAt), TICKETS_SOLD_OUT, INSUFFICIENT_TICKETS (with availableTickets), FINGERPRINT_LIMIT or IDEMPOTENCY_IN_PROGRESS", body = ErrorBody),
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
) -> ApiResult<Response> {
    let lines = parse_lines(request.order(), state.rules.max_tickets_per_purchase)
        .map_err(Error::Validation)?;
    let buyer = caller.identify(&state.fingerprint_key, request.user_fingerprint.as_deref())?;
    state.limits.check(&buyer, caller.address())?;
    let path = format!("/events/{event_id}/tickets");
    // The request as the idempotency record compares it: a one-line order of the default
    // type keeps the form it had before ticket types existed.
    let canonical = match lines.as_slice() {
        [line] if line.ticket_type_id.is_none() => json!({ "quantity": line.quantity.get() }),
        _ => json!({
            "lines": lines
                .iter()
                .map(|line| json!({ "ticketTypeId": line.ticket_type_id, "quantity": line.quantity.get() }))
                .collect::<Vec<_>>()
        }),
    }
    .to_string();
    let request = (path.as_str(), canonical.as_str());
    let purchaser = state.purchaser.clone();
    keyed(
        &state,
        &buyer.clone(),
        key,
        request,
        StatusCode::CREATED,
        async move |record| {
            let outcome = purchaser.reserve(event_id, lines, buyer, record).await;
            crate::metrics::purchase_outcome(match &outcome {
                Ok(_) => "reserved",
                Err(err) => app_status_and_code(err).1,
            });
            outcome
        },
    )
    .await
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
        (status = 408, description = "REQUEST_TIMEOUT: the body stopped arriving within the request timeout; the connection is closed", body = ErrorBody),
        (status = 409, description = "INVALID_STATUS: not `reserved`; IDEMPOTENCY_IN_PROGRESS", body = ErrorBody),
        (status = 410, description = "RESERVATION_EXPIRED", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR; IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED, with Retry-After", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE, with Retry-After. If the provider failed, the payment's outcome is unknown until recovery settles it; a retry with the same Idempotency-Key gets 503 until then, and Retry-After is the seconds left until recovery will have settled it", body = ErrorBody),
    )
)]
pub async fn pay_for_tickets(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    caller: Caller,
    IdempotencyHeader(key): IdempotencyHeader,
    ApiJson(request): ApiJson<PaymentRequest>,
) -> ApiResult<Response> {
    let buyer = caller.identify(&state.fingerprint_key, request.user_fingerprint.as_deref())?;
    state.limits.check(&buyer, caller.address())?;
    let token = request
        .payment_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let path = format!("/tickets/{id}/payment");
    let canonical = json!({ "paymentToken": token }).to_string();
    let request = (path.as_str(), canonical.as_str());
    let (settler, payments) = (state.settler.clone(), state.payments.clone());
    let recovery_window = state.sweeper.recovery_window();
    keyed(
        &state,
        &buyer.clone(),
        key,
        request,
        StatusCode::OK,
        async move |record| {
            let token = token.as_deref();
            let record = record.as_ref();
            holds::pay(
                &settler,
                payments.as_ref(),
                recovery_window,
                id,
                &buyer,
                token,
                record,
            )
            .await
        },
    )
    .await
}

/// Refund some or all of a purchase (organiser only: the admin token or an organiser token). The tickets return to
/// the event's and their quotas' pools when the provider has given the money back.
#[utoipa::path(
    post, path = "/tickets/{id}/refund", tag = "tickets",
    security(("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Allocation id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: a retry with the same key gets the first answer, or resumes the refund its first attempt began"),
    ),
    request_body(content = Option<RefundRequest>, description = "Optional; no lines refunds everything not yet refunded"),
    responses(
        (status = 200, description = "Refunded: the order with its refunds; `refunded` once nothing is left, `purchased` after a partial refund", body = Allocation),
        (status = 400, description = "BAD_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: no bearer token sent; or the server runs without --admin-token and the token is not a live organiser token (the message says how to configure one)", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: a door token; or, with --admin-token, a token that is neither it nor a live organiser token", body = ErrorBody),
        (status = 404, description = "NOT_FOUND", body = ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT: the body stopped arriving within the request timeout; the connection is closed", body = ErrorBody),
        (status = 409, description = "INVALID_STATUS: not `purchased`; REFUND_EXCEEDS_PURCHASE (with refundable); IDEMPOTENCY_IN_PROGRESS", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR (a line names no line of the order, quantity below 1, reason too long); IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE, with Retry-After: the provider failed; the refund stays pending until recovery settles it, and a retry with the same Idempotency-Key resumes it; or recovery voided the refund while its provider call was under way (nothing refunded; a retry refunds afresh)", body = ErrorBody),
    )
)]
pub async fn refund_tickets(
    State(state): State<AppState>,
    // Extractors run in this order: the token is checked before the path's id, so a caller
    // without the right token learns nothing of ids (as on the check-in routes).
    _admin: AdminOnly,
    IdPath(id): IdPath,
    IdempotencyHeader(key): IdempotencyHeader,
    ApiJson(request): ApiJson<RefundRequest>,
) -> ApiResult<Response> {
    let ask = RefundAsk::parse(request.draft()).map_err(Error::Validation)?;
    let prefix = payment::refund_reference(id, key.as_ref().map(|key| key.as_str()));
    let path = format!("/tickets/{id}/refund");
    let canonical = json!({
        "lines": ask.lines.as_ref().map(|lines| lines
            .iter()
            .map(|(ticket_type, quantity, _)| json!({ "ticketTypeId": ticket_type, "quantity": quantity }))
            .collect::<Vec<_>>()),
        "reason": ask.reason,
    })
    .to_string();
    let request = (path.as_str(), canonical.as_str());
    let organiser = state.fingerprint_key.hash(&FingerprintSource::Organiser);
    let (pool, payments) = (state.pool.clone(), state.payments.clone());
    let signer = state.admission_keys.signer().clone();
    keyed(
        &state,
        &organiser,
        key,
        request,
        StatusCode::OK,
        async move |record| {
            let (payments, record) = (payments.as_ref(), record.as_ref());
            holds::refund(&pool, &signer, payments, id, &ask, &prefix, record).await
        },
    )
    .await
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
) -> ApiResult<Response> {
    let buyer = caller.identify(&state.fingerprint_key, None)?;
    json(
        StatusCode::OK,
        &holds::cancel(&state.pool, id, &buyer).await?,
    )
}

/// Read one allocation: the caller's own (by fingerprint), or any with the organiser's token.
/// Without `Authorization`, the buyer's read. With `Authorization: Bearer <token>` carrying the
/// admin token or a live organiser token, any allocation (the fingerprint is then not read);
/// any other token is 403 FORBIDDEN, checked before the id.
#[utoipa::path(
    get, path = "/tickets/{id}", tag = "tickets",
    security((), ("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Allocation id"),
        BuyerHeaders,
    ),
    responses(
        (status = 200, description = "The allocation, the same body for its holder and the organiser", body = Allocation),
        (status = 400, description = "BAD_REQUEST: id is not a UUID (for a caller with the right token, when one is sent), or a bad X-Device-Fingerprint", body = ErrorBody),
        (status = 403, description = "FINGERPRINT_MISMATCH: without a token, another buyer's allocation; FORBIDDEN: a token that is neither the admin token nor a live organiser token (a door token, an unknown or revoked one)", body = ErrorBody),
        (status = 404, description = "NOT_FOUND", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn get_ticket(
    State(state): State<AppState>,
    reader: AllocationReader,
) -> ApiResult<Response> {
    let signer = state.admission_keys.signer();
    let allocation = match reader {
        AllocationReader::Buyer { id, caller } => {
            let buyer = caller.identify(&state.fingerprint_key, None)?;
            holds::get(&state.pool, signer, id, &buyer).await?
        }
        AllocationReader::Organiser { id } => {
            holds::get_for_organiser(&state.pool, signer, id).await?
        }
    };
    json(StatusCode::OK, &allocation)
}

/// An event's orders (every buyer's allocations), newest first, for the organiser's support
/// desk: find an order by the confirmation code its buyer was given, or list them by status.
/// Needs `Authorization: Bearer <token>` with the admin token or an organiser token, always.
#[utoipa::path(
    get, path = "/events/{id}/orders", tag = "tickets",
    security(("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Event id"),
        OrdersQuery,
    ),
    responses(
        (status = 200, description = "One page of the event's orders, newest first (createdAt, then id, descending), as the filters narrow them", body = Page<Allocation>),
        (status = 400, description = "BAD_REQUEST: id is not a UUID; bad page, limit, confirmationCode or status (naming the parameter)", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: no bearer token sent; or the server runs without --admin-token and the token is not a live organiser token (the message says how to configure one)", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: a door token; or, with --admin-token, a token that is neither it nor a live organiser token", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn list_event_orders(
    State(state): State<AppState>,
    // The token is checked before the path's id, as on the report and refunds.
    _admin: AdminOnly,
    IdPath(event_id): IdPath,
    ApiQuery(query): ApiQuery<OrdersQuery>,
) -> ApiResult<Response> {
    let page = PageRequest::parse(query.page.as_deref(), query.limit.as_deref())
        .map_err(|(field, message)| ApiError::bad_parameter(field, message))?;
    let confirmation_code = query
        .confirmation_code
        .as_deref()
        .map(ConfirmationCode::parse)
        .transpose()
        .map_err(|message| ApiError::bad_parameter("confirmationCode", message))?;
    let status = query
        .status
        .as_deref()
        .map(|text| {
            text.parse::<AllocationStatus>().map_err(|_| {
                ApiError::bad_parameter(
                    "status",
                    "must be one of reserved, payment_pending, purchased, cancelled, expired, refunded",
                )
            })
        })
        .transpose()?;
    let filter = OrderFilter {
        confirmation_code,
        status,
    };
    let signer = state.admission_keys.signer();
    json(
        StatusCode::OK,
        &holds::list_for_event(&state.pool, signer, event_id, &filter, page).await?,
    )
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
) -> ApiResult<Response> {
    let page = PageRequest::parse(query.page.as_deref(), query.limit.as_deref())
        .map_err(|(field, message)| ApiError::bad_parameter(field, message))?;
    let buyer = caller.identify(&state.fingerprint_key, None)?;
    let signer = state.admission_keys.signer();
    json(
        StatusCode::OK,
        &holds::list(&state.pool, signer, &buyer, page).await?,
    )
}

/// The QR code of one admission of one of the caller's allocations, as SVG.
#[utoipa::path(
    get, path = "/tickets/{id}/admissions/{admissionId}/qr.svg", tag = "tickets",
    params(
        ("id" = uuid::Uuid, Path, description = "Allocation id"),
        ("admissionId" = uuid::Uuid, Path, description = "Admission id, from the allocation's `admissions`"),
        BuyerHeaders,
    ),
    responses(
        (status = 200, description = "The admission's code as a QR code (SVG, with its quiet zone), whatever the admission's status; `Cache-Control: private, no-store`", content_type = "image/svg+xml", body = String),
        (status = 400, description = "BAD_REQUEST: an id is not a UUID, or a bad fingerprint", body = ErrorBody),
        (status = 403, description = "FINGERPRINT_MISMATCH", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such allocation, or no such admission of it", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn admission_qr(
    State(state): State<AppState>,
    path: AdmissionPath,
    caller: Caller,
) -> ApiResult<Response> {
    let buyer = caller.identify(&state.fingerprint_key, None)?;
    let signer = state.admission_keys.signer();
    let (allocation, admission) = (path.allocation_id, path.admission_id);
    let admission = holds::admission(&state.pool, signer, allocation, admission, &buyer).await?;
    let svg = qr_svg(&admission.code)?;
    // Only the holder may see it, and a refund may revoke it: never kept by a shared cache,
    // nor by the browser, which asks again each time (the image is small and cheap).
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            ),
        ],
        svg,
    )
        .into_response())
}

/// `text` as a QR code in SVG, with the standard quiet zone of four modules. Error
/// correction level M (about 15% of the symbol may be damaged): a 135-character code then
/// fits a version 8 symbol (49 modules) at most, easily read from a phone screen at a door.
fn qr_svg(text: &str) -> ApiResult<String> {
    let code = QrCode::with_error_correction_level(text, EcLevel::M)
        .map_err(|err| ApiError::internal(format!("rendering a ticket's QR code: {err}")))?;
    Ok(code
        .render::<svg::Color>()
        .quiet_zone(true)
        .min_dimensions(264, 264)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_code_is_a_version_8_symbol_in_svg() {
        let signer = crate::domain::admission::CodeSigner::from_seed(&[5; 32]);
        let code = signer.code(uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        let symbol = QrCode::with_error_correction_level(&code, EcLevel::M).unwrap();
        assert_eq!(symbol.version(), qrcode::Version::Normal(8));
        assert_eq!(symbol.width(), 49);
        let svg = qr_svg(&code).unwrap();
        assert!(svg.starts_with("<?xml"), "{svg}");
        assert!(svg.contains("<svg"), "{svg}");
    }
}
