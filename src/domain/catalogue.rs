//! The catalogue of an event: the ticket types it sells, at their prices and in their sales
//! windows, and the quotas that share tickets among types.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::event::{Event, parse_date_time, parse_name};
use super::event_name::is_blank;
use super::money::{Currency, parse_price};
use super::patch::{Patch, nullable, required};
use super::refusal::FieldError;
use super::waiting_list::{TypeLine, public_available};

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
    /// Of `available_tickets`, those set aside for the head of a waiting list (written only
    /// under the event lock by `waiting_list::offer_returned`).
    pub set_aside_tickets: i32,
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
    /// What the public can buy of the type now: nothing while anyone who could be served
    /// waits for it (`db::entry_closes_its_type`), else the
    /// least of the event's and its quotas' available tickets less what each has set aside
    /// for a waiting list.
    pub available: i32,
    /// Entries waiting for the type.
    pub waiting: i64,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

impl SalesWindow {
    /// This window with its ends changed by a partial update (`salesStartAt`,
    /// `salesEndAt`: absent keeps an end, null opens it), pushing a problem per field onto
    /// `errors`: each new end must parse, and the resulting end must come after the start.
    pub fn patched(
        self,
        start: Patch<String>,
        end: Patch<String>,
        errors: &mut Vec<FieldError>,
    ) -> SalesWindow {
        let window = SalesWindow {
            start: nullable(
                "salesStartAt",
                start,
                self.start,
                |t| parse_date_time(&t),
                errors,
            ),
            end: nullable("salesEndAt", end, self.end, |t| parse_date_time(&t), errors),
        };
        if let (Some(start), Some(end)) = (window.start, window.end)
            && end <= start
        {
            errors.push(FieldError::new("salesEndAt", "must be after salesStartAt"));
        }
        window
    }
}

/// Longest description of a ticket type, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 2000;
/// Highest `maxPerOrder` of a ticket type (an event has at most this many tickets).
pub const MAX_PER_ORDER_MAX: i64 = 1_000_000;
/// Largest quota (an event has at most this many tickets).
pub const QUOTA_SIZE_MAX: i64 = 1_000_000;
/// Most ticket types one quota may contain: far more than any event sells, and it bounds
/// the work of the recount a quota change makes under the event lock.
pub const QUOTA_TYPES_MAX: usize = 100;

/// The fields of a ticket type an organiser sets, as they will be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketTypeSettings {
    pub name: String,
    pub description: Option<String>,
    /// In the event currency's minor unit, 0 to `money::PRICE_MAX`.
    pub price: i64,
    pub max_per_order: Option<i32>,
    pub sales: SalesWindow,
    pub active: bool,
}

/// A ticket type's fields as a client gave them (`POST` or `PATCH
/// /events/{id}/ticket-types…`): each absent, null or a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketTypePatch {
    pub name: Patch<String>,
    pub description: Patch<String>,
    pub price: Patch<i64>,
    pub max_per_order: Patch<i64>,
    pub sales_start_at: Patch<String>,
    pub sales_end_at: Patch<String>,
    pub active: Patch<bool>,
}

/// A type's description as stored: up to [`DESCRIPTION_MAX_CHARS`] characters, not blank
/// (with a visible character; null is "none"), with no control characters but line breaks
/// and tabs, as every other text the API takes: it is shown to the public, where an escape
/// sequence or a bell has no place.
fn parse_description(text: String) -> Result<String, String> {
    if text.chars().count() > DESCRIPTION_MAX_CHARS {
        Err(format!(
            "must be at most {DESCRIPTION_MAX_CHARS} characters"
        ))
    } else if is_blank(&text) {
        // Blank as a name is blank: nothing that shows, whitespace or not (a zero-width
        // space, a soft hyphen), since the public would read an empty description.
        Err(
            "must not be blank: give a description with a visible character, or null for none"
                .to_owned(),
        )
    } else if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        Err("must not contain control characters other than line breaks and tabs".to_owned())
    } else {
        Ok(text)
    }
}

/// Refuses a ticket type's `currency` as a client sent it (absent passes) unless it is the
/// event's `currency`: a type is priced in its event's currency, which never changes, and a
/// 201 or 200 in the event's currency would silently ignore another.
///
/// # Errors
/// The field's error, naming the event's currency.
pub fn refuse_other_currency(asked: Patch<String>, currency: Currency) -> Result<(), FieldError> {
    match asked {
        Some(code) if code.as_deref() != Some(currency.code()) => Err(FieldError::new(
            "currency",
            format!(
                "a ticket type is priced in its event's currency, {currency}; make a new event to sell in another"
            ),
        )),
        _ => Ok(()),
    }
}

impl TicketTypeSettings {
    /// A new type from a client's fields: `name` and `price` are required; it is active and
    /// on sale with its event unless told otherwise.
    pub fn create(fields: TicketTypePatch) -> Result<Self, Vec<FieldError>> {
        Self::merge(None, fields)
    }

    /// The settings of a stored type.
    pub fn of(ticket_type: &TicketType) -> Self {
        Self {
            name: ticket_type.name.clone(),
            description: ticket_type.description.clone(),
            price: ticket_type.price,
            max_per_order: ticket_type.max_per_order,
            sales: ticket_type.sales,
            active: ticket_type.active,
        }
    }

    /// These settings changed by `patch`; all problems at once.
    pub fn apply(&self, patch: TicketTypePatch) -> Result<Self, Vec<FieldError>> {
        Self::merge(Some(self), patch)
    }

    fn merge(current: Option<&Self>, patch: TicketTypePatch) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = required(
            "name",
            patch.name,
            current.map(|c| c.name.clone()),
            |raw| parse_name(&raw),
            &mut errors,
        );
        let price = required(
            "price",
            patch.price,
            current.map(|c| c.price),
            parse_price,
            &mut errors,
        );
        let description = nullable(
            "description",
            patch.description,
            current.and_then(|c| c.description.clone()),
            parse_description,
            &mut errors,
        );
        let max_per_order = nullable(
            "maxPerOrder",
            patch.max_per_order,
            current.and_then(|c| c.max_per_order),
            |n| {
                if (1..=MAX_PER_ORDER_MAX).contains(&n) {
                    Ok(n as i32)
                } else {
                    Err(format!(
                        "must be between 1 and {MAX_PER_ORDER_MAX}, or null for no limit"
                    ))
                }
            },
            &mut errors,
        );
        let sales = current
            .map_or_else(SalesWindow::default, |c| c.sales)
            .patched(patch.sales_start_at, patch.sales_end_at, &mut errors);
        // Absent or null on creation both mean the default: on sale.
        let active = match (patch.active, current) {
            (Some(Some(active)), _) => active,
            (None, Some(current)) => current.active,
            (None | Some(None), None) => true,
            (Some(None), Some(current)) => {
                errors.push(FieldError::new("active", "must not be null"));
                current.active
            }
        };
        match (name, price) {
            (Some(name), Some(price)) if errors.is_empty() => Ok(Self {
                name,
                description,
                price,
                max_per_order,
                sales,
                active,
            }),
            _ => Err(errors),
        }
    }
}

/// The fields of a quota an organiser sets: its types are distinct and in id order (whether
/// they belong to the event is checked against the stored types, under the event lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSettings {
    pub name: String,
    pub size: i32,
    pub ticket_type_ids: Vec<Uuid>,
}

/// A quota's fields as a client gave them (`POST` or `PATCH /events/{id}/quotas…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaPatch {
    pub name: Patch<String>,
    pub size: Patch<i64>,
    pub ticket_type_ids: Patch<Vec<String>>,
}

impl QuotaSettings {
    /// A new quota from a client's fields, all three required.
    pub fn create(fields: QuotaPatch) -> Result<Self, Vec<FieldError>> {
        Self::merge(None, fields)
    }

    /// The settings of a stored quota.
    pub fn of(quota: &Quota) -> Self {
        Self {
            name: quota.name.clone(),
            size: quota.size,
            ticket_type_ids: quota.ticket_type_ids.clone(),
        }
    }

    /// These settings changed by `patch`; all problems at once.
    pub fn apply(&self, patch: QuotaPatch) -> Result<Self, Vec<FieldError>> {
        Self::merge(Some(self), patch)
    }

    fn merge(current: Option<&Self>, patch: QuotaPatch) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = required(
            "name",
            patch.name,
            current.map(|c| c.name.clone()),
            |raw| parse_name(&raw),
            &mut errors,
        );
        let size = required(
            "size",
            patch.size,
            current.map(|c| c.size),
            |n| {
                if (0..=QUOTA_SIZE_MAX).contains(&n) {
                    Ok(n as i32)
                } else {
                    Err(format!("must be between 0 and {QUOTA_SIZE_MAX}"))
                }
            },
            &mut errors,
        );
        let ticket_type_ids = required(
            "ticketTypeIds",
            patch.ticket_type_ids,
            current.map(|c| c.ticket_type_ids.clone()),
            parse_type_ids,
            &mut errors,
        );
        match (name, size, ticket_type_ids) {
            (Some(name), Some(size), Some(ticket_type_ids)) if errors.is_empty() => Ok(Self {
                name,
                size,
                ticket_type_ids,
            }),
            _ => Err(errors),
        }
    }
}

/// A quota's type ids: UUIDs, distinct, at most [`QUOTA_TYPES_MAX`], returned in id order.
fn parse_type_ids(raw: Vec<String>) -> Result<Vec<Uuid>, String> {
    if raw.len() > QUOTA_TYPES_MAX {
        return Err(format!(
            "must hold at most {QUOTA_TYPES_MAX} ticket type ids"
        ));
    }
    let mut ids = raw
        .iter()
        .map(|text| Uuid::parse_str(text).map_err(|_| format!("{text:?} is not a UUID")))
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort();
    let count = ids.len();
    ids.dedup();
    if ids.len() == count {
        Ok(ids)
    } else {
        Err("must not name a ticket type twice".into())
    }
}

/// A quota as the API answers it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaView {
    pub id: Uuid,
    pub event_id: Uuid,
    pub name: String,
    /// Tickets the quota shares among its types; available + reserved + purchased = size.
    pub size: i32,
    pub available_tickets: i32,
    /// Held by live orders' lines of its types (reserved or payment pending).
    pub reserved_tickets: i32,
    /// Bought and not refunded.
    pub purchased_tickets: i32,
    /// Of `availableTickets`, those set aside for the head of a waiting list.
    pub set_aside_tickets: i32,
    /// The types that count against it, in id order.
    pub ticket_type_ids: Vec<Uuid>,
}

impl From<Quota> for QuotaView {
    fn from(quota: Quota) -> Self {
        Self {
            id: quota.id,
            event_id: quota.event_id,
            name: quota.name,
            size: quota.size,
            available_tickets: quota.available_tickets,
            reserved_tickets: quota.reserved_tickets,
            purchased_tickets: quota.purchased_tickets,
            set_aside_tickets: quota.set_aside_tickets,
            ticket_type_ids: quota.ticket_type_ids,
        }
    }
}

impl TicketTypeView {
    /// The public view of `ticket_type` in `event` (read together with `quotas` and
    /// `waiting`, each type's line; absent means nobody waits): what the public can buy of it
    /// (`waiting_list::public_available`, closed by a line that could be served) and how many
    /// wait for it.
    pub fn of(
        ticket_type: &TicketType,
        event: &Event,
        quotas: &[Quota],
        waiting: &HashMap<Uuid, TypeLine>,
    ) -> Self {
        let waiting_for_type = waiting.get(&ticket_type.id).map_or(0, |line| line.waiting);
        let waiting_types: HashSet<Uuid> = waiting
            .iter()
            .filter(|(_, line)| line.closed)
            .map(|(id, _)| *id)
            .collect();
        Self {
            id: ticket_type.id,
            event_id: ticket_type.event_id,
            name: ticket_type.name.clone(),
            description: ticket_type.description.clone(),
            price: ticket_type.price,
            currency: event.currency,
            max_per_order: ticket_type.max_per_order,
            sales_start_at: ticket_type.sales.start,
            sales_end_at: ticket_type.sales.end,
            active: ticket_type.active,
            available: public_available(
                ticket_type.id,
                event.available_tickets,
                event.set_aside_tickets,
                quotas,
                &waiting_types,
            ),
            waiting: waiting_for_type,
        }
    }

    /// The views of an event's types, in the order given, from one consistent reading of the
    /// event and its quotas.
    pub fn all(
        event: &Event,
        ticket_types: &[TicketType],
        quotas: &[Quota],
        waiting: &HashMap<Uuid, TypeLine>,
    ) -> Vec<Self> {
        ticket_types
            .iter()
            .map(|t| Self::of(t, event, quotas, waiting))
            .collect()
    }
}

/// `GET /events/{id}`: the event with the public view of each of its types, in creation
/// order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventDetails {
    #[serde(flatten)]
    pub event: Event,
    pub ticket_types: Vec<TicketTypeView>,
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
            set_aside_tickets: 0,
            ticket_type_ids: types.to_vec(),
        }
    }

    #[test]
    fn quota_type_ids_are_uuids_distinct_sorted_and_few() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(
            parse_type_ids(vec![b.to_string(), a.to_string()]),
            Ok(vec![a, b])
        );
        assert!(parse_type_ids(vec![a.to_string(), a.to_string()]).is_err());
        assert!(parse_type_ids(vec!["x".into()]).is_err());
        let many = (0..=QUOTA_TYPES_MAX).map(|_| Uuid::now_v7().to_string());
        assert!(parse_type_ids(many.collect()).is_err());
    }

    #[test]
    fn a_new_type_is_active_and_null_clears_only_what_may_be_empty() {
        let created = TicketTypeSettings::create(TicketTypePatch {
            name: Some(Some("VIP".into())),
            price: Some(Some(100)),
            description: Some(Some("front row".into())),
            active: Some(None),
            ..TicketTypePatch::default()
        })
        .expect("valid");
        assert!(created.active);
        let cleared = created
            .apply(TicketTypePatch {
                description: Some(None),
                ..TicketTypePatch::default()
            })
            .expect("valid");
        assert_eq!((cleared.description, cleared.price), (None, 100));
        let refused = created.apply(TicketTypePatch {
            active: Some(None),
            price: Some(None),
            ..TicketTypePatch::default()
        });
        let fields: Vec<String> = refused.unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["price", "active"]);
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
