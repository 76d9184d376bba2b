//! Live statistics of an event: what changed, and the message subscribers receive.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::event::{Event, to_stored_precision};

/// The kind of change that moved an event's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A hold was made (or a declined payment put one back to reserved).
    TicketAllocated,
    TicketPurchased,
    TicketCancelled,
    TicketExpired,
    /// Tickets of a purchase were refunded and returned to the pool.
    TicketRefunded,
    /// An organiser changed the event (`PATCH /events/{id}`: its total may have moved) or its
    /// catalogue (a type added or changed: what it costs or whether it sells may have moved; a
    /// quota made, changed or deleted: what a type can sell may have moved).
    EventUpdated,
    /// The event's waiting list changed: an entry joined or left, tickets that came back were
    /// offered to it, or what is set aside for its head moved.
    WaitingListChanged,
}

impl ChangeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TicketAllocated => "ticket_allocated",
            Self::TicketPurchased => "ticket_purchased",
            Self::TicketCancelled => "ticket_cancelled",
            Self::TicketExpired => "ticket_expired",
            Self::TicketRefunded => "ticket_refunded",
            Self::EventUpdated => "event_updated",
            Self::WaitingListChanged => "waiting_list_changed",
        }
    }
}

/// A change as broadcast through PostgreSQL `NOTIFY` to every instance: the event's counts
/// right after the change (notifications arrive in commit order, so the last one is current).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CountsChanged {
    pub event_id: Uuid,
    pub total: i32,
    pub available: i32,
    pub reserved: i32,
    pub purchased: i32,
    /// Entries waiting on the event's waiting list. Absent from a notification of an older
    /// instance, hence the default.
    #[serde(default)]
    pub waiting_list_length: i32,
    /// Of `available`, the tickets set aside for the head of a waiting list (sold to nobody
    /// else). Absent from a notification of an older instance, hence the default.
    #[serde(default)]
    pub set_aside: i32,
    /// The event's change sequence after this change (`events.change_seq`): it numbers the
    /// event's changes in commit order, the same on every instance and across restarts.
    pub seq: u64,
    /// The change sequence of the event's latest organiser change (`event_updated`) as of
    /// this change (`events.organiser_change_seq`); 0 if it has had none. Absent from a
    /// notification of an older instance, hence the default.
    #[serde(default)]
    pub organiser_change_seq: u64,
    #[serde(rename = "type")]
    pub kind: ChangeKind,
    /// First 8 hex characters of the acting buyer's fingerprint hash.
    pub actor: String,
    /// What each ticket type of the event has available after the change, in creation order
    /// (at most the first `db::events::STREAM_TICKET_TYPES_MAX` types). Absent from a
    /// notification sent before types existed, hence the default.
    #[serde(default)]
    pub ticket_types: Vec<TypeAvailability>,
    /// When the database made the change: the clock of the statement that moved the counts,
    /// in the committing transaction, just before its commit. Absent from a notification of
    /// an older instance, hence the default.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub changed_at: Option<OffsetDateTime>,
}

/// How many tickets of one type the public can buy (none while anyone who could be served
/// waits for it; else
/// the least of the event's available tickets and those of every quota containing the type,
/// less what is set aside for the waiting list), and how many wait for it.
///
/// Answered (and written to streams) as `{id, available, waiting}`; read also from the
/// compact `[id, available, waiting]` the database's change notifications carry, which keeps
/// 100 types' worth under `pg_notify`'s 8,000-byte limit (`db::events::STREAM_TICKET_TYPES_MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(from = "TypeAvailabilityWire")]
pub struct TypeAvailability {
    /// The ticket type's id.
    pub id: Uuid,
    /// Tickets of the type that can be bought in this state.
    pub available: i32,
    /// Entries waiting for the type (0 when read from an older instance's notification).
    pub waiting: i64,
}

/// The forms a [`TypeAvailability`] is read from.
#[derive(Deserialize)]
#[serde(untagged)]
enum TypeAvailabilityWire {
    Compact(Uuid, i32, i64),
    Named {
        id: Uuid,
        available: i32,
        #[serde(default)]
        waiting: i64,
    },
}

impl From<TypeAvailabilityWire> for TypeAvailability {
    fn from(wire: TypeAvailabilityWire) -> Self {
        match wire {
            TypeAvailabilityWire::Compact(id, available, waiting)
            | TypeAvailabilityWire::Named {
                id,
                available,
                waiting,
            } => Self {
                id,
                available,
                waiting,
            },
        }
    }
}

/// `statistics` of a stream message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    pub total_tickets: i32,
    pub remaining_tickets: i32,
    /// Reserved, including holds whose payment is in progress.
    pub allocated_tickets: i32,
    /// Purchased.
    pub confirmed_tickets: i32,
    /// Admissions checked in at the door, ever: one refunded after its holder entered still
    /// counts (docs/admission.md). Only grows.
    pub checked_in: u64,
}

/// `lastEvent` of a stream message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LastEvent {
    #[serde(rename = "type")]
    pub kind: ChangeKind,
    #[schema(example = "3fa85f64")]
    pub actor: String,
}

/// The data of one `stats` message on `GET /events/{id}/stream`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsMessage {
    pub event_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    pub statistics: Statistics,
    /// The change that produced this message; null for the snapshot sent on connect.
    pub last_event: Option<LastEvent>,
    /// What the public can buy of each ticket type now, and how many wait for it, in creation
    /// order (see [`TypeAvailability`]). Only the first 100
    /// types of an event are listed (a change notification must stay under PostgreSQL's
    /// 8,000-byte limit).
    pub ticket_types: Vec<TypeAvailability>,
    /// Entries waiting on the event's waiting list (over all its types), beside
    /// `statistics` as `ticketTypes` is.
    pub waiting_list_length: i32,
    /// Of `statistics.remainingTickets`, those set aside for the head of a waiting list that
    /// waits for more than came back (strict order: sold to nobody else).
    pub set_aside_tickets: i32,
    /// When the database made the change this message shows: the clock of the statement that
    /// moved the counts, just before its commit; `timestamp` minus this is how long the change
    /// took to reach the stream. Null for the snapshot sent on connect.
    #[serde(with = "time::serde::rfc3339::option")]
    pub changed_at: Option<OffsetDateTime>,
    /// The change sequence (`id` less `checkedIn`) of the latest change an organiser made to
    /// the event (a `lastEvent` of type `event_updated`), as of the state this message shows;
    /// 0 if it has had none. Messages are coalesced and `lastEvent` names only the last
    /// change, so an organiser's change may be folded into a later sale's message: this says
    /// it happened all the same, and a watcher that read the event before it knows to read
    /// it again.
    pub organiser_change_seq: u64,
}

/// The one place a stream message is built, from whichever source told of the counts.
impl StatsMessage {
    /// The message for a change heard through `NOTIFY`, with the event's check-ins as last
    /// counted. Both instants are rendered as every API timestamp is (UTC, `Z`, at most six
    /// fractional digits): the clock's nanoseconds and the notification's `+00:00` are not
    /// the documented shape.
    pub fn from_change(change: &CountsChanged, checked_in: u64, timestamp: OffsetDateTime) -> Self {
        Self {
            event_id: change.event_id,
            timestamp: to_stored_precision(timestamp),
            statistics: Statistics {
                total_tickets: change.total,
                remaining_tickets: change.available,
                allocated_tickets: change.reserved,
                confirmed_tickets: change.purchased,
                checked_in,
            },
            last_event: Some(LastEvent {
                kind: change.kind,
                actor: change.actor.clone(),
            }),
            ticket_types: change.ticket_types.clone(),
            waiting_list_length: change.waiting_list_length,
            set_aside_tickets: change.set_aside,
            changed_at: change.changed_at.map(to_stored_precision),
            organiser_change_seq: change.organiser_change_seq,
        }
    }

    /// This message as built again at `timestamp` with `checked_in` admissions: a check-in
    /// moves no sale count and sends no notification (it is counted, see `live`), so the sale
    /// part, its `lastEvent` and `changedAt` included, is the last one heard.
    pub fn with_checked_in(&self, checked_in: u64, timestamp: OffsetDateTime) -> Self {
        let mut message = self.clone();
        message.statistics.checked_in = checked_in;
        message.timestamp = to_stored_precision(timestamp);
        message
    }

    /// The snapshot message of an event as read from the database (no change behind it),
    /// with its types' availability and its check-ins read in the same statement.
    pub fn snapshot(
        event: &Event,
        ticket_types: Vec<TypeAvailability>,
        checked_in: u64,
        timestamp: OffsetDateTime,
    ) -> Self {
        Self {
            event_id: event.id,
            timestamp: to_stored_precision(timestamp),
            statistics: Statistics {
                total_tickets: event.total_tickets,
                remaining_tickets: event.available_tickets,
                allocated_tickets: event.reserved_tickets,
                confirmed_tickets: event.purchased_tickets,
                checked_in,
            },
            last_event: None,
            ticket_types,
            waiting_list_length: event.waiting_list_length,
            set_aside_tickets: event.set_aside_tickets,
            changed_at: None,
            organiser_change_seq: event.organiser_change_seq,
        }
    }
}

/// The short actor tag of a stored fingerprint hash.
pub fn actor_tag(fingerprint_hash: &str) -> String {
    fingerprint_hash.chars().take(8).collect()
}
