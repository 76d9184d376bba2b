//! What a database error means to the rest of the app. The SQLSTATEs and constraint names
//! are known here, next to the SQL that can raise them, and nowhere else.

/// A constraint whose violation is an expected answer rather than a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// `events_name_date_key`: an event with this name and date exists already.
    EventNameDate,
    /// `ticket_types_event_name_key`: the event has a ticket type of this name already.
    TicketTypeName,
    /// `waiting_list_entries_one_live_per_buyer`: the buyer waits for this type already.
    WaitingListBuyer,
}

/// The constraints that back up a promise the code keeps on its own: the code decides first
/// and should never reach them, so a violation means a bug, stopped before it was stored.
/// See docs/concurrency.md, "Backstops in the schema".
pub const BACKSTOPS: [&str; 7] = [
    "buyer_tickets_within_cap",
    "ticket_allocations_status_transition",
    "waiting_list_entries_status_transition",
    "events_available_range",
    "events_reserved_range",
    "events_purchased_range",
    "events_counts_balance",
];

/// The kind of a database failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// No connection could be had (pool timeout or closed): nothing was sent, so nothing
    /// the request asked for was done.
    Unreachable,
    /// The connection broke with a statement in flight (I/O, TLS, the connection's worker
    /// gone), or the server said the statement's completion is unknown (40003): whatever it
    /// asked for, a commit included, may or may not have happened.
    CutOff,
    /// The server answered, but is gone, shutting down, full, refusing us or too slow: the
    /// statement failed, so nothing of its transaction was committed. Worth a retry, not a
    /// bug.
    ConnectionLoss,
    /// A known constraint refused the write.
    Conflict(Conflict),
    /// One of the [`BACKSTOPS`] refused the write (named here): a bug in the code that the
    /// schema stopped.
    Backstop(&'static str),
    /// Anything else: a bug or an unexpected state.
    Other,
}

/// Classifies `err`.
pub fn classify(err: &sqlx::Error) -> DbFailure {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => DbFailure::Unreachable,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => DbFailure::CutOff,
        sqlx::Error::Database(db) => match db.constraint() {
            Some("events_name_date_key") => DbFailure::Conflict(Conflict::EventNameDate),
            Some("ticket_types_event_name_key") => DbFailure::Conflict(Conflict::TicketTypeName),
            Some("waiting_list_entries_one_live_per_buyer") => {
                DbFailure::Conflict(Conflict::WaitingListBuyer)
            }
            Some(name) => backstop(name).map_or(DbFailure::Other, DbFailure::Backstop),
            None if db.code().as_deref() == Some(COMPLETION_UNKNOWN) => DbFailure::CutOff,
            None if is_connection_loss(db.code().as_deref()) => DbFailure::ConnectionLoss,
            None => DbFailure::Other,
        },
        _ => DbFailure::Other,
    }
}

/// The backstop named `constraint`, if it is one.
fn backstop(constraint: &str) -> Option<&'static str> {
    BACKSTOPS.into_iter().find(|name| *name == constraint)
}

/// `statement_completion_unknown`: the server cannot tell whether the statement finished.
const COMPLETION_UNKNOWN: &str = "40003";

/// SQLSTATEs that mean "not here, not now, try again": the server is gone, shutting down,
/// full, refusing connections, too slow, or not (yet) a primary that takes writes. 08
/// connection exceptions, 57P0x shutdowns, 53 insufficient resources, 55000 a database not
/// accepting connections, 3D000 missing database, 28 authorization, 55P03 lock_timeout,
/// 57014 statement_timeout; 25006 a read-only transaction (a standby, or a primary still in
/// recovery, behind a proxy that sent the write there: seen in failover trials); 25P03 a
/// session ended for idling in a transaction; 40001 serialization failure (also a query
/// cancelled by a conflict with recovery), 40P01 deadlock; 72000 snapshot too old. None is a
/// bug in the request, and every one is worth a retry: each answers 503 with `Retry-After`,
/// never 500. (40003, a statement whose completion is unknown, is one too, but classified
/// apart: [`DbFailure::CutOff`].)
fn is_connection_loss(code: Option<&str>) -> bool {
    matches!(code, Some(c) if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")
        || c.starts_with("28")
        || matches!(c, "55000" | "3D000" | "55P03" | "57014" | "25006" | "25P03" | "40001"
            | "40P01" | "72000"))
}

#[cfg(test)]
mod tests {
    use super::{DbFailure, classify, is_connection_loss};

    #[test]
    fn a_statement_cut_off_is_told_apart_from_one_never_sent() {
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), DbFailure::Unreachable);
        assert_eq!(classify(&sqlx::Error::PoolClosed), DbFailure::Unreachable);
        let broken = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(classify(&sqlx::Error::Io(broken)), DbFailure::CutOff);
        assert_eq!(classify(&sqlx::Error::WorkerCrashed), DbFailure::CutOff);
    }

    #[test]
    fn not_here_not_now_errors_are_retryable_and_request_errors_are_not() {
        for code in [
            "08006", "57P01", "57P03", "53300", "28P01", "55000", "3D000", "55P03", "57014",
            "25006", "25P03", "40001", "40P01", "72000",
        ] {
            assert!(is_connection_loss(Some(code)), "{code}");
        }
        for code in ["23505", "23514", "22P02", "42601", "P0001", "40002"] {
            assert!(!is_connection_loss(Some(code)), "{code}");
        }
        assert!(!is_connection_loss(None));
    }
}
