//! The one error type of the service. Every failure a request can meet is a variant here;
//! `http::error` maps each to its status and JSON body in one place.

use serde::Serialize;

use crate::domain::allocation::AllocationStatus;

/// A problem with one input field, reported in the `details` array of an error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, as named in the request (JSON body path, query or path parameter).
    pub field: String,
    /// What is wrong with it, for a person.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    BadRequest {
        message: String,
        details: Vec<FieldError>,
    },
    #[error("request validation failed")]
    Validation(Vec<FieldError>),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("an event with this name and date already exists")]
    EventExists,
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the event is sold out")]
    TicketsSoldOut,
    #[error(
        "only {} {} left",
        tickets(i64::from(*available)),
        if *available == 1 { "is" } else { "are" }
    )]
    InsufficientTickets { available: i32 },
    #[error(
        "this buyer may hold at most {} for the event and already holds {}",
        tickets(i64::from(*limit)),
        tickets(*held)
    )]
    FingerprintLimit { limit: i32, held: i64 },
    #[error("this allocation belongs to another buyer")]
    FingerprintMismatch,
    #[error("the reservation has expired")]
    ReservationExpired,
    #[error("the allocation is {0}, which does not allow this action")]
    InvalidStatus(AllocationStatus),
    #[error("the payment was declined")]
    PaymentDeclined,
    #[error("too many requests; retry in {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    #[error("this action needs an organiser token (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("the organiser token is not valid")]
    Forbidden,
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still being processed; retry shortly")]
    IdempotencyInProgress,
    #[error("the service is temporarily unavailable")]
    ServiceUnavailable,
    /// Anything unexpected: logged in full, answered without detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn bad_parameter(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self::BadRequest {
            message: format!("invalid parameter `{field}`: {message}"),
            details: vec![FieldError::new(field, message)],
        }
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }
}

/// Database failures: an unreachable server is a 503, a known constraint is a domain error,
/// anything else is internal.
impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => {
                tracing::warn!(error = %err, "database unavailable");
                Error::ServiceUnavailable
            }
            sqlx::Error::Database(db) => match db.constraint() {
                Some("events_name_date_key") => Error::EventExists,
                _ if is_connection_loss(db.code().as_deref()) => Error::ServiceUnavailable,
                _ => Error::internal(&err),
            },
            _ => Error::internal(&err),
        }
    }
}

/// SQLSTATEs that mean the server is gone, shutting down, full, refusing connections or too
/// slow (08 connection exceptions, 57P0x shutdowns, 53 insufficient resources, 55000 for a
/// database not accepting connections, 3D000 missing database, 28 authorization, 55P03
/// lock_timeout, 57014 statement_timeout): not bugs, and worth a retry.
fn is_connection_loss(code: Option<&str>) -> bool {
    matches!(code, Some(c) if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")
        || c.starts_with("28") || c == "55000" || c == "3D000" || c == "55P03" || c == "57014")
}

/// "1 ticket", "2 tickets": a count with its noun in the right number, for messages.
fn tickets(count: i64) -> String {
    if count == 1 {
        "1 ticket".to_owned()
    } else {
        format!("{count} tickets")
    }
}

/// The message a panic was raised with (`panic!("…")` carries a `&str` or a `String`), for
/// the log.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_nouns() {
        let one = Error::InsufficientTickets { available: 1 };
        assert_eq!(one.to_string(), "only 1 ticket is left");
        let two = Error::InsufficientTickets { available: 2 };
        assert_eq!(two.to_string(), "only 2 tickets are left");
        let capped = Error::FingerprintLimit { limit: 1, held: 1 };
        assert_eq!(
            capped.to_string(),
            "this buyer may hold at most 1 ticket for the event and already holds 1 ticket"
        );
        let capped = Error::FingerprintLimit { limit: 4, held: 3 };
        assert_eq!(
            capped.to_string(),
            "this buyer may hold at most 4 tickets for the event and already holds 3 tickets"
        );
    }
}
