//! The one place where failures become HTTP responses:
//! `{"error": "...", "code": "...", "details": [...]}` with the status that matches the code.
//! [`ApiError`] is what handlers, extractors and layers answer with: a failure of the app
//! (`crate::error::Error`, from the services) or one that only HTTP knows.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::response::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::checkin::ScanRefusal;
use crate::domain::refusal::{FieldError, LineAvailability, Refusal};
use crate::domain::status::AllocationStatus;
use crate::error::Error;

/// Why a request is answered with an error: the app's own failure, or one of the transport,
/// the request's form or its credentials. `Display` is the message the body carries (except
/// for an internal error, whose detail goes to the log only).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// A failure or refusal from the services, the domain or the database.
    #[error(transparent)]
    App(#[from] Error),
    /// The request is malformed (JSON, content type, a parameter): `details` names fields.
    #[error("{message}")]
    BadRequest {
        message: String,
        details: Vec<FieldError>,
    },
    /// The route exists, without this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is over `limit` bytes.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The request's time (`--request-timeout-ms`) ran out while its body was still
    /// arriving: the client held it up, not the server.
    #[error("the request body did not arrive within the request timeout")]
    RequestTimeout,
    /// Over a rate limit; retry after the given number of seconds.
    #[error("too many requests; retry in {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    /// A connection from a client address that already holds `--max-connections-per-address`
    /// open ones: answered by the accept loop (`http::serve`) before its request is read.
    #[error("too many open connections from this address; close some and retry")]
    TooManyConnections,
    /// A route that needs a token (an organiser route on a server with `--admin-token`, an
    /// admin-only route, a check-in route) and none was sent.
    #[error("this action needs a token (Authorization: Bearer <token>)")]
    Unauthorized,
    /// An admin-only route on a server started without an admin token, with no token or one
    /// it does not know.
    #[error(
        "this action needs an organiser token, and the server has no admin token: start it \
         with --admin-token <token> (or BOXOFFICE_ADMIN_TOKEN), or make one with `boxoffice \
         tokens create --scope organiser`, and send Authorization: Bearer <token>"
    )]
    AdminTokenNotConfigured,
    /// The token sent is unknown, revoked, or not allowed this action (a door token on an
    /// organiser route, or at another event than its own).
    #[error("the token sent is not valid for this action")]
    Forbidden,
}

/// What handlers and extractors return.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    /// A 400 with `message` and no field details.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// A 400 about one parameter, named in the message and in `details`.
    pub fn bad_parameter(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self::BadRequest {
            message: format!("invalid parameter `{field}`: {message}"),
            details: vec![FieldError::new(field, message)],
        }
    }

    /// An unexpected failure; `detail` is logged, never answered.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::App(Error::internal(detail))
    }
}

/// Database failures met by a handler, classified as the services classify them.
impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::App(err.into())
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// What went wrong, for a person.
    #[schema(example = "no tickets of this type are left")]
    pub error: String,
    /// A stable machine-readable code (see docs/errors.md).
    #[schema(example = "TICKETS_SOLD_OUT")]
    pub code: &'static str,
    /// Problems with individual fields, when the request was at fault.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(nullable = false)]
    pub details: Vec<FieldError>,
    /// With `INSUFFICIENT_TICKETS`: how many tickets are left.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub available_tickets: Option<i32>,
    /// With `TICKETS_AVAILABLE`: what the public can buy of the type now.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub available: Option<i32>,
    /// With `FINGERPRINT_LIMIT`: the event's cap per buyer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub limit: Option<i32>,
    /// With `FINGERPRINT_LIMIT`: tickets this buyer already holds for the event; with
    /// `CAPACITY_BELOW_SOLD` about `maxTicketsPerFingerprint`: the most one buyer holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub held: Option<i64>,
    /// With `CAPACITY_BELOW_SOLD` about a capacity: tickets held by live reservations.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reserved_tickets: Option<i32>,
    /// With `CAPACITY_BELOW_SOLD` about a capacity: tickets purchased (and not refunded).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub purchased_tickets: Option<i32>,
    /// With `INVALID_STATUS`: the allocation's current status.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub status: Option<AllocationStatus>,
    /// With `TICKETS_SOLD_OUT` and `SALES_CLOSED`: the ticket type refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub ticket_type_id: Option<Uuid>,
    /// With `SALES_CLOSED`: the sales window that closes the type now (null ends are open).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(inline)]
    pub sales_window: Option<SalesWindowBody>,
    /// With `REFUND_EXCEEDS_PURCHASE`: how many tickets of the type named (or of the whole
    /// order, when none is) are left to refund.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub refundable: Option<i32>,
    /// With `INSUFFICIENT_TICKETS`: how many tickets each requested type has left.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub lines: Option<Vec<LineAvailability>>,
    /// With `ALREADY_CHECKED_IN`: when the admission was checked in. Plain optional fields
    /// rather than a flattened object, so that the document's error schema still matches
    /// every other error (a flattened object's required fields would be required of all).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub checked_in_at: Option<OffsetDateTime>,
    /// With `ALREADY_CHECKED_IN`: where it was checked in (null: no gate given).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub gate: Option<Option<String>>,
}

/// A sales window in an error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesWindowBody {
    /// When sales open (null: no start).
    #[serde(with = "time::serde::rfc3339::option")]
    pub sales_start_at: Option<OffsetDateTime>,
    /// When sales close, exclusive (null: no end).
    #[serde(with = "time::serde::rfc3339::option")]
    pub sales_end_at: Option<OffsetDateTime>,
}

impl ApiError {
    /// The status and machine code of each error; docs/errors.md lists the same table.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::App(error) => app_status_and_code(error),
            ApiError::BadRequest { .. } => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
            }
            ApiError::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            ApiError::TooManyConnections => (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_CONNECTIONS"),
            ApiError::Unauthorized | ApiError::AdminTokenNotConfigured => {
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
            }
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "FORBIDDEN"),
        }
    }

    /// The JSON body this error is answered with (no internal detail, ever).
    pub fn body(&self) -> ErrorBody {
        let (_, code) = self.status_and_code();
        let error = match self {
            ApiError::App(Error::Internal(_)) => "an internal error occurred".to_owned(),
            other => other.to_string(),
        };
        let mut body = ErrorBody {
            error,
            code,
            details: Vec::new(),
            available_tickets: None,
            available: None,
            limit: None,
            held: None,
            reserved_tickets: None,
            purchased_tickets: None,
            status: None,
            ticket_type_id: None,
            refundable: None,
            sales_window: None,
            lines: None,
            checked_in_at: None,
            gate: None,
        };
        match self {
            ApiError::BadRequest { details, .. } | ApiError::App(Error::Validation(details)) => {
                body.details = details.clone()
            }
            ApiError::App(Error::Refused(Refusal::InsufficientTickets { available, lines })) => {
                body.available_tickets = Some(*available);
                body.lines = Some(lines.clone());
            }
            ApiError::App(Error::Refused(Refusal::RefundExceedsPurchase {
                ticket_type_id,
                refundable,
            })) => {
                body.ticket_type_id = *ticket_type_id;
                body.refundable = Some(*refundable);
            }
            ApiError::App(Error::Refused(Refusal::TicketsSoldOut { ticket_type_id })) => {
                body.ticket_type_id = Some(*ticket_type_id)
            }
            ApiError::App(Error::Refused(Refusal::SalesClosed {
                ticket_type_id,
                sales_start_at,
                sales_end_at,
            })) => {
                body.ticket_type_id = Some(*ticket_type_id);
                body.sales_window = Some(SalesWindowBody {
                    sales_start_at: *sales_start_at,
                    sales_end_at: *sales_end_at,
                });
            }
            ApiError::App(Error::Refused(Refusal::FingerprintLimit { limit, held })) => {
                body.limit = Some(*limit);
                body.held = Some(*held);
            }
            ApiError::App(Error::Refused(Refusal::CapacityBelowSold {
                reserved,
                purchased,
            })) => {
                body.reserved_tickets = Some(*reserved);
                body.purchased_tickets = Some(*purchased);
            }
            ApiError::App(Error::Refused(Refusal::CapBelowHeld { held })) => {
                body.held = Some(*held)
            }
            ApiError::App(Error::Refused(Refusal::TicketsAvailable {
                ticket_type_id,
                available,
            })) => {
                body.ticket_type_id = Some(*ticket_type_id);
                body.available = Some(*available);
            }
            ApiError::App(Error::Refused(Refusal::InvalidStatus(status))) => {
                body.status = Some(*status)
            }
            ApiError::App(Error::Scan(ScanRefusal::AlreadyCheckedIn { first })) => {
                body.checked_in_at = Some(first.at);
                body.gate = Some(first.gate.clone());
            }
            _ => {}
        }
        body
    }
}

/// The status and machine code of each failure of the app (the code also labels the
/// purchase outcome metric).
pub fn app_status_and_code(error: &Error) -> (StatusCode, &'static str) {
    match error {
        Error::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"),
        Error::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        Error::EventExists => (StatusCode::CONFLICT, "EVENT_EXISTS"),
        Error::TicketTypeExists => (StatusCode::CONFLICT, "TICKET_TYPE_EXISTS"),
        Error::AlreadyWaiting => (StatusCode::CONFLICT, "ALREADY_WAITING"),
        Error::Refused(refusal) => match refusal {
            Refusal::TicketsSoldOut { .. } => (StatusCode::CONFLICT, "TICKETS_SOLD_OUT"),
            Refusal::SalesClosed { .. } => (StatusCode::CONFLICT, "SALES_CLOSED"),
            Refusal::RefundExceedsPurchase { .. } => {
                (StatusCode::CONFLICT, "REFUND_EXCEEDS_PURCHASE")
            }
            Refusal::InsufficientTickets { .. } => (StatusCode::CONFLICT, "INSUFFICIENT_TICKETS"),
            Refusal::FingerprintLimit { .. } => (StatusCode::CONFLICT, "FINGERPRINT_LIMIT"),
            Refusal::FingerprintMismatch => (StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH"),
            Refusal::ReservationExpired => (StatusCode::GONE, "RESERVATION_EXPIRED"),
            Refusal::InvalidStatus(_) | Refusal::EntryEnded(_) => {
                (StatusCode::CONFLICT, "INVALID_STATUS")
            }
            Refusal::TicketsAvailable { .. } => (StatusCode::CONFLICT, "TICKETS_AVAILABLE"),
            Refusal::PaymentDeclined => (StatusCode::PAYMENT_REQUIRED, "PAYMENT_DECLINED"),
            Refusal::CapacityBelowSold { .. } | Refusal::CapBelowHeld { .. } => {
                (StatusCode::CONFLICT, "CAPACITY_BELOW_SOLD")
            }
        },
        Error::Scan(refusal) => match refusal {
            ScanRefusal::InvalidCode => (StatusCode::UNPROCESSABLE_ENTITY, "INVALID_TICKET_CODE"),
            ScanRefusal::WrongEvent => (StatusCode::CONFLICT, "WRONG_EVENT"),
            ScanRefusal::Revoked => (StatusCode::CONFLICT, "TICKET_REVOKED"),
            ScanRefusal::AlreadyCheckedIn { .. } => (StatusCode::CONFLICT, "ALREADY_CHECKED_IN"),
            ScanRefusal::NonceReused => (StatusCode::UNPROCESSABLE_ENTITY, "NONCE_REUSED"),
        },
        Error::IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"),
        Error::IdempotencyInProgress => (StatusCode::CONFLICT, "IDEMPOTENCY_IN_PROGRESS"),
        Error::ServiceUnavailable
        | Error::DatabaseCutOff
        | Error::RefundOutcomeUnknown { .. }
        | Error::RefundVoided
        | Error::PaymentOutcomeUnknown { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE")
        }
        Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    }
}

/// Whole seconds from now until `moment`, rounded up, and at least 1.
fn seconds_until(moment: time::OffsetDateTime) -> u64 {
    let left = (moment - time::OffsetDateTime::now_utc())
        .as_seconds_f64()
        .ceil();
    // A float-to-int `as` saturates: a moment past (negative) becomes 0, then 1.
    (left as u64).max(1)
}

/// The cause of a 500, carried as a response extension (never in the body) so that the
/// request log line (`log_request` in `http/mod.rs`) can name it: one error line per 500, with
/// method, path and cause together.
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

/// Answered should an error body itself fail to serialize (it holds only strings, numbers and
/// an enum, so this is not expected).
const FALLBACK_BODY: &str = r#"{"error":"an internal error occurred","code":"INTERNAL_ERROR"}"#;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_code();
        let retry_after = match &self {
            ApiError::RateLimited {
                retry_after_seconds,
            } => Some(retry_after_seconds.to_string()),
            ApiError::TooManyConnections => Some("1".to_owned()),
            ApiError::App(
                Error::ServiceUnavailable
                | Error::DatabaseCutOff
                | Error::RefundOutcomeUnknown { .. }
                | Error::RefundVoided,
            ) => Some("1".to_owned()),
            // Retrying a payment of unknown outcome gets this 503 again until recovery has
            // settled it: wait for that, not a second.
            ApiError::App(Error::PaymentOutcomeUnknown { settled_by, .. }) => {
                Some(seconds_until(*settled_by).to_string())
            }
            _ => None,
        };
        let challenge = matches!(
            self,
            ApiError::Unauthorized | ApiError::AdminTokenNotConfigured
        );
        let mut cause = match &self {
            ApiError::App(Error::Internal(detail)) => Some(detail.clone()),
            _ => None,
        };
        let mut response = json(status, &self.body()).unwrap_or_else(|err| {
            cause = Some(err.to_string());
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "application/json")],
                FALLBACK_BODY,
            )
                .into_response()
        });
        if let Some(cause) = cause {
            // The detail goes to the log only; the client learns nothing internal.
            response.extensions_mut().insert(InternalCause(cause));
        }
        let headers = response.headers_mut();
        if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(header::RETRY_AFTER, value);
        }
        if challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
