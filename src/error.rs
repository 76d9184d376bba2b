//! The error type the services return. Every failure of the app itself is a variant here:
//! the domain's refusals and field errors are wrapped, database errors are classified by
//! `db::error`. Failures only HTTP knows (a malformed request, a transport limit, a missing
//! token, a rate limit) are `http::error::ApiError`'s, which wraps this type and maps both to
//! a status and a JSON body in one place.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::db::error::{Conflict, DbFailure, classify};
use crate::domain::checkin::ScanRefusal;
use crate::domain::grant::Rejection;
use crate::domain::refusal::{FieldError, Refusal};

/// Why a request or job failed. `Display` is the message an error body carries (except for
/// `Internal`, whose detail goes to the log only).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Well-formed, but fields break their rules: one entry per problem.
    #[error("request validation failed")]
    Validation(Vec<FieldError>),
    /// No such resource; the text names its kind ("event", "allocation", "route").
    #[error("{0} not found")]
    NotFound(&'static str),
    /// An event with this name and date exists already.
    #[error("an event with this name and date already exists")]
    EventExists,
    /// The event has a ticket type with this name already.
    #[error("this event already has a ticket type with this name")]
    TicketTypeExists,
    /// The buyer already has a live (waiting or offered) waiting-list entry for this type.
    #[error("this buyer is already on the waiting list for this ticket type")]
    AlreadyWaiting,
    /// A rule of the sale refused the request (sold out, cap, lifecycle, declined payment).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A scan at the door that does not admit (an invalid code, another event's, a revoked
    /// or already checked-in admission, a reused nonce).
    #[error(transparent)]
    Scan(#[from] ScanRefusal),
    /// The idempotency key was first used with a different request.
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// The first attempt with this key is still running.
    #[error("a request with this Idempotency-Key is still being processed; retry shortly")]
    IdempotencyInProgress,
    /// The database or the payment provider cannot be reached now; worth a retry.
    #[error("the service is temporarily unavailable")]
    ServiceUnavailable,
    /// The database went away with a statement of this request in flight, so what it asked
    /// for may have been done, a commit included (`db::error::DbFailure::CutOff`). Answered
    /// as `ServiceUnavailable`; a payment's first step tells it apart (see
    /// `holds::payment::pay`).
    #[error("the service is temporarily unavailable")]
    DatabaseCutOff,
    /// A refund was left `pending`: the provider failed while refunding it, or the database
    /// went away while it was begun or recorded. Recovery settles it; a retry with the same
    /// key resumes it (the refund's reference is derived from the key). Answered like
    /// `ServiceUnavailable` (`Retry-After: 1`), but a keyed request's claim is parked on the
    /// refund rather than released, so that the key stays this request's: no other request
    /// can take it while the refund it began may still complete.
    #[error("the service is temporarily unavailable")]
    RefundOutcomeUnknown {
        /// The order refunded.
        allocation: uuid::Uuid,
        /// The refund's reference, or the request's reference prefix when step one was cut
        /// off before it was known.
        reference: String,
    },
    /// A refund that was not made: the provider's answer came after recovery had voided the
    /// refund's reference (the call outlived `--payment-recovery-seconds`), so the refund is
    /// `failed` and nothing went back. Answered like `ServiceUnavailable` (`Retry-After: 1`),
    /// the key released: a retry refunds afresh.
    #[error("the payment provider did not answer in time and the refund was not made; retry")]
    RefundVoided,
    /// The payment provider failed while charging this payment: whether it charged is
    /// unknown until recovery settles it. Answered like `ServiceUnavailable`, but a keyed
    /// request's claim is parked on the payment rather than released.
    #[error("the service is temporarily unavailable")]
    PaymentOutcomeUnknown {
        /// The allocation paid for, left `payment_pending`.
        allocation: uuid::Uuid,
        /// The reference the provider was called with.
        reference: String,
        /// When recovery will have settled it at the latest: the payment's start plus the
        /// recovery age and one sweep interval. A retry before then gets this error again.
        settled_by: time::OffsetDateTime,
    },
    /// Anything unexpected: logged in full, answered without detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An unexpected failure; `detail` is logged, never answered.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }
}

/// An order's rejection: a line that names nothing sellable is a field error, a rule of the
/// sale a refusal.
impl From<Rejection> for Error {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::Invalid(field) => Self::Validation(vec![field]),
            Rejection::Refused(refusal) => Self::Refused(refusal),
        }
    }
}

/// Database failures, as `db::error` classifies them: an unreachable server is a 503, a
/// known constraint is the answer it stands for, anything else is internal.
impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match classify(&err) {
            DbFailure::Unreachable => {
                DATABASE_WARNINGS.warn(&err, "database unavailable");
                Error::ServiceUnavailable
            }
            DbFailure::CutOff => {
                DATABASE_WARNINGS.warn(&err, "database connection cut off");
                Error::DatabaseCutOff
            }
            DbFailure::ConnectionLoss => {
                DATABASE_WARNINGS.warn(&err, "database refused the statement");
                Error::ServiceUnavailable
            }
            DbFailure::Conflict(Conflict::EventNameDate) => Error::EventExists,
            DbFailure::Conflict(Conflict::TicketTypeName) => Error::TicketTypeExists,
            DbFailure::Conflict(Conflict::WaitingListBuyer) => Error::AlreadyWaiting,
            DbFailure::Backstop(constraint) => {
                Error::internal(format!("the schema's backstop {constraint} refused: {err}"))
            }
            DbFailure::Other => Error::internal(&err),
        }
    }
}

/// The warnings of database failures that answer 503, at most one a second for the process:
/// a full disk, a database refusing connections or a failover fails every request, and a
/// line per request would flood the log (and the disk it may share) with thousands of the
/// same line a second. The first failure of each second is logged with its cause (the
/// server's message and SQLSTATE: `could not extend file … No space left on device`,
/// `sorry, too many clients already`) and how many were left unlogged since the last line.
static DATABASE_WARNINGS: WarningBudget = WarningBudget::new();

/// At most one warning a second, counting those it holds back.
struct WarningBudget {
    /// The second (since the Unix epoch) of the last warning logged.
    last_second: AtomicU64,
    /// Warnings held back since then.
    held_back: AtomicU64,
}

impl WarningBudget {
    const fn new() -> Self {
        Self {
            last_second: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// Logs `what` at WARN with `err` as its cause, unless a warning was logged this second.
    fn warn(&self, err: &sqlx::Error, what: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let last = self.last_second.load(Ordering::Relaxed);
        let claimed = last != now
            && self
                .last_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if !claimed {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let held_back = self.held_back.swap(0, Ordering::Relaxed);
        let code = match err {
            sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
            _ => None,
        };
        tracing::warn!(error = %err, sqlstate = code.as_deref(), held_back, "{what}");
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
