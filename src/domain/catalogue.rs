//! The catalogue of an event: the ticket types it sells, at their prices and in their sales
//! windows, and the quotas that share tickets among types.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::money::Currency;

/// Name of the type every event is made with, which `{quantity}` without a `ticketTypeId`
/// buys.
pub const DEFAULT_TICKET_TYPE_NAME: &str = "General admission";

/// When something is on sale: from `start` (inclusive) to `end` (exclusive); an open end
/// is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SalesWindow {
    pub start: Option<OffsetDateTime>,
    pub end: Option<OffsetDateTime>,
}

impl SalesWindow {
    /// Whether `now` lies in the window: `start <= now < end`.
    pub fn contains(self, now: OffsetDateTime) -> bool {
        self.start.is_none_or(|start| start <= now) && self.end.is_none_or(|end| now < end)
    }
}

/// A ticket type as stored: what a buyer can pick, at what price, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketType {
    pub id: Uuid,
    pub event_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    /// Price of one ticket in the event currency's minor unit (0 to `money::PRICE_MAX`).
    pub price: i64,
    /// Most tickets of this type one order may hold (`None`: only the purchase limit).
    pub max_per_order: Option<i32>,
    pub sales: SalesWindow,
    /// An inactive type is listed but not sold.
    pub active: bool,
    /// The event's "General admission" type.
    pub is_default: bool,
    pub created_at: OffsetDateTime,
}

/// A quota as stored and locked: a pool of `size` tickets shared by its types, with counts
/// that balance like the event's (`available + reserved + purchased = size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub id: Uuid,
    pub event_id: Uuid,
    pub name: String,
    pub size: i32,
    pub available_tickets: i32,
    pub reserved_tickets: i32,
    pub purchased_tickets: i32,
    /// The types that count against it, in id order.
    pub ticket_type_ids: Vec<Uuid>,
}

/// What the public sees of a type: the type, its event's currency, and how many tickets of
/// it can be bought now (the least of the event's available tickets and those of every
/// quota containing it).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketTypeView {
    pub id: Uuid,
    pub event_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    /// Price of one ticket, an integer in the currency's minor unit (cents for EUR).
    pub price: i64,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    pub max_per_order: Option<i32>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sales_start_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sales_end_at: Option<OffsetDateTime>,
    pub active: bool,
    pub available: i32,
}

/// Tickets of `ticket_type` that can be bought now, given the event's available tickets and
/// the event's quotas: the least of the event's and of every quota that contains the type.
pub fn available_of(ticket_type: Uuid, event_available: i32, quotas: &[Quota]) -> i32 {
    quotas
        .iter()
        .filter(|quota| quota.ticket_type_ids.contains(&ticket_type))
        .map(|quota| quota.available_tickets)
        .fold(event_available, i32::min)
}

/// One line of an order as stored: a type, how many, at the price it had when the order was
/// made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllocationLine {
    pub ticket_type_id: Uuid,
    pub ticket_type_name: String,
    pub quantity: i32,
    /// Price of one ticket when the order was made, in minor units.
    pub unit_price: i64,
    /// `unit_price × quantity`, in minor units.
    pub amount: i64,
    /// Tickets of this line refunded so far.
    pub refunded_quantity: i32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_window_includes_its_start_and_excludes_its_end() {
        let window = SalesWindow {
            start: Some(datetime!(2027-01-01 10:00 UTC)),
            end: Some(datetime!(2027-01-01 12:00 UTC)),
        };
        assert!(!window.contains(datetime!(2027-01-01 09:59:59.999999 UTC)));
        assert!(window.contains(datetime!(2027-01-01 10:00 UTC)));
        assert!(window.contains(datetime!(2027-01-01 11:59:59.999999 UTC)));
        assert!(!window.contains(datetime!(2027-01-01 12:00 UTC)));
        assert!(SalesWindow::default().contains(datetime!(1970-01-01 00:00 UTC)));
    }

    fn quota(available: i32, types: &[Uuid]) -> Quota {
        Quota {
            id: Uuid::now_v7(),
            event_id: Uuid::nil(),
            name: "q".into(),
            size: available,
            available_tickets: available,
            reserved_tickets: 0,
            purchased_tickets: 0,
            ticket_type_ids: types.to_vec(),
        }
    }

    #[test]
    fn a_type_has_the_least_of_the_event_and_its_quotas() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let quotas = [quota(60, &[a]), quota(40, &[a, b])];
        assert_eq!(available_of(a, 150, &quotas), 40);
        assert_eq!(available_of(b, 150, &quotas), 40);
        assert_eq!(available_of(c, 150, &quotas), 150);
        assert_eq!(available_of(a, 10, &quotas), 10);
    }
}
