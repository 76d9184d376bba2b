//! What the domain says when it refuses: a business rule that does not allow the action
//! ([`Refusal`]), or an input field that is not valid ([`FieldError`]). The app's error type
//! wraps both; how they are answered over HTTP is decided in `http/error.rs` alone.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::status::AllocationStatus;
use super::waiting_list::EntryStatus;

/// A problem with one input field, reported in the `details` array of an error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, as named in the request (JSON body path, query or path parameter).
    pub field: String,
    /// What is wrong with it, for a person.
    pub message: String,
}

impl FieldError {
    /// A problem with `field` (named as the client sent it), described by `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A rule of the sale or of a hold's lifecycle that refuses a request. Each is a normal
/// answer, not a failure: nothing was written, or only what the rule itself requires (a
/// lapsed hold found by a payment is expired, then refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A requested ticket type (`ticket_type_id`) has nothing left: the event, or a quota
    /// that contains the type, is sold out.
    #[error("no tickets of this type are left")]
    TicketsSoldOut { ticket_type_id: Uuid },
    /// Every requested type has tickets left, but not enough for the whole order;
    /// `available` is how many the order could get (for a one-line order, of its type), and
    /// `lines` how many each requested type has left.
    #[error(
        "only {} {} left",
        tickets(i64::from(*available)),
        if *available == 1 { "is" } else { "are" }
    )]
    InsufficientTickets {
        available: i32,
        lines: Vec<LineAvailability>,
    },
    /// A requested ticket type (or its event) is not on sale now: `sales_start_at` and
    /// `sales_end_at` are the window that closes it.
    #[error("ticket sales for this type are closed now")]
    SalesClosed {
        ticket_type_id: Uuid,
        sales_start_at: Option<OffsetDateTime>,
        sales_end_at: Option<OffsetDateTime>,
    },
    /// The buyer would exceed the event's per-buyer cap: `limit` is the cap, `held` the
    /// tickets the buyer already holds or has bought for the event.
    #[error(
        "this buyer may hold at most {} for the event and already holds {}",
        tickets(i64::from(*limit)),
        tickets(*held)
    )]
    FingerprintLimit { limit: i32, held: i64 },
    /// The hold, admission or waiting-list entry belongs to another buyer.
    #[error("this belongs to another buyer")]
    FingerprintMismatch,
    /// The hold lapsed before it was paid.
    #[error("the reservation has expired")]
    ReservationExpired,
    /// The hold's status (given) does not allow the action.
    #[error("the allocation is {0}, which does not allow this action")]
    InvalidStatus(AllocationStatus),
    /// A refund asks for more than the order has left to refund (`refundable` of the type
    /// `ticket_type_id`, or nothing at all when no type is named); refunds under way count
    /// as refunded.
    #[error("the refund asks for more than is left to refund ({refundable} left)")]
    RefundExceedsPurchase {
        ticket_type_id: Option<Uuid>,
        refundable: i32,
    },
    /// The payment provider declined the charge; the hold is `reserved` again (or expired).
    #[error("the payment was declined")]
    PaymentDeclined,
    /// A capacity (an event's `totalTickets`, a quota's `size`) would drop below the tickets
    /// already held against it: `reserved` (live holds) plus `purchased`.
    #[error(
        "the capacity cannot go below the {} already held ({reserved} reserved, {purchased} purchased)",
        tickets(i64::from(*reserved) + i64::from(*purchased))
    )]
    CapacityBelowSold { reserved: i32, purchased: i32 },
    /// A waiting-list join for a quantity the type (`ticket_type_id`) can serve now
    /// (`available` is what the public can buy of it): buy instead.
    #[error(
        "{} of this type can be bought now: buy them instead of joining the waiting list",
        tickets(i64::from(*available))
    )]
    TicketsAvailable {
        ticket_type_id: Uuid,
        available: i32,
    },
    /// The waiting-list entry has ended (its status given): it can no longer be left.
    #[error("the waiting list entry is {0}, which does not allow this action")]
    EntryEnded(EntryStatus),
    /// The per-buyer cap would drop below what a buyer already holds (`held`) for the event.
    #[error(
        "maxTicketsPerFingerprint cannot go below the {} one buyer already holds for the event",
        tickets(*held)
    )]
    CapBelowHeld { held: i64 },
}

/// How many tickets of one requested type are left, as an `INSUFFICIENT_TICKETS` refusal
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineAvailability {
    pub ticket_type_id: Uuid,
    pub available: i32,
}

/// "1 ticket", "2 tickets": a count with its noun in the right number, for messages.
fn tickets(count: i64) -> String {
    if count == 1 {
        "1 ticket".to_owned()
    } else {
        format!("{count} tickets")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_nouns() {
        let one = Refusal::InsufficientTickets {
            available: 1,
            lines: Vec::new(),
        };
        assert_eq!(one.to_string(), "only 1 ticket is left");
        let two = Refusal::InsufficientTickets {
            available: 2,
            lines: Vec::new(),
        };
        assert_eq!(two.to_string(), "only 2 tickets are left");
        let capped = Refusal::FingerprintLimit { limit: 1, held: 1 };
        assert_eq!(
            capped.to_string(),
            "this buyer may hold at most 1 ticket for the event and already holds 1 ticket"
        );
        let capped = Refusal::FingerprintLimit { limit: 4, held: 3 };
        assert_eq!(
            capped.to_string(),
            "this buyer may hold at most 4 tickets for the event and already holds 3 tickets"
        );
    }
}
