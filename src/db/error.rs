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
    /// No connection could be had or used (pool timeout or closed, I/O, TLS, worker crash).
    Unreachable,
    /// The server answered, but is gone, shutting down, full, refusing us or too slow:
    /// worth a retry, not a bug.
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
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => DbFailure::Unreachable,
        sqlx::Error::Database(db) => match db.constraint() {
            Some("events_name_date_key") => DbFailure::Conflict(Conflict::EventNameDate),
            Some("ticket_types_event_name_key") => DbFailure::Conflict(Conflict::TicketTypeName),
            Some("waiting_list_entries_one_live_per_buyer") => {
                DbFailure::Conflict(Conflict::WaitingListBuyer)
            }
            Some(name) => backstop(name).map_or(DbFailure::Other, DbFailure::Backstop),
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

/// SQLSTATEs that mean the server is gone, shutting down, full, refusing connections or too
/// slow (08 connection exceptions, 57P0x shutdowns, 53 insufficient resources, 55000 for a
/// database not accepting connections, 3D000 missing database, 28 authorization, 55P03
/// lock_timeout, 57014 statement_timeout): not bugs, and worth a retry.
fn is_connection_loss(code: Option<&str>) -> bool {
    matches!(code, Some(c) if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")
        || c.starts_with("28") || c == "55000" || c == "3D000" || c == "55P03" || c == "57014")
}
