//! The one error type the services and handlers return. Every failure a request can meet is
//! a variant here: the domain's refusals and field errors are wrapped, database errors are
//! classified by `db::error`, and `http::error` maps each variant to its status and JSON body
//! in one place.

use crate::db::error::{Conflict, DbFailure, classify};
use crate::domain::refusal::{FieldError, Refusal};

/// Why a request or job failed. `Display` is the message an error body carries (except for
/// `Internal`, whose detail goes to the log only).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed (JSON, content type, a parameter): `details` names fields.
    #[error("{message}")]
    BadRequest {
        message: String,
        details: Vec<FieldError>,
    },
    /// Well-formed, but fields break their rules: one entry per problem.
    #[error("request validation failed")]
    Validation(Vec<FieldError>),
    /// No such resource; the text names its kind ("event", "allocation", "route").
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The route exists, without this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// An event with this name and date exists already.
    #[error("an event with this name and date already exists")]
    EventExists,
    /// The body is over `limit` bytes.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// A rule of the sale refused the request (sold out, cap, lifecycle, declined payment).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Over a rate limit; retry after the given number of seconds.
    #[error("too many requests; retry in {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    /// An organiser token is configured and none was sent.
    #[error("this action needs an organiser token (Authorization: Bearer <token>)")]
    Unauthorized,
    /// The organiser token sent is wrong.
    #[error("the organiser token is not valid")]
    Forbidden,
    /// The idempotency key was first used with a different request.
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// The first attempt with this key is still running.
    #[error("a request with this Idempotency-Key is still being processed; retry shortly")]
    IdempotencyInProgress,
    /// The database or the payment provider cannot be reached now; worth a retry.
    #[error("the service is temporarily unavailable")]
    ServiceUnavailable,
    /// Anything unexpected: logged in full, answered without detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
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
        Self::Internal(detail.to_string())
    }
}

/// Database failures, as `db::error` classifies them: an unreachable server is a 503, a
/// known constraint is the answer it stands for, anything else is internal.
impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match classify(&err) {
            DbFailure::Unreachable => {
                tracing::warn!(error = %err, "database unavailable");
                Error::ServiceUnavailable
            }
            DbFailure::ConnectionLoss => Error::ServiceUnavailable,
            DbFailure::Conflict(Conflict::EventNameDate) => Error::EventExists,
            DbFailure::Other => Error::internal(&err),
        }
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

/// The app's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
