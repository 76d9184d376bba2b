//! The request shapes as they arrive on the wire, with their serde and OpenAPI annotations.
//! Every field is optional text or number, so that each problem can be reported against its
//! field; the handlers turn them into the domain's validated types.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::domain::catalogue::{QuotaPatch, TicketTypePatch};
use crate::domain::event::{EventDraft, EventPatch};
use crate::domain::order::{LineDraft, OrderDraft};
use crate::domain::patch::Patch;
use crate::domain::refund::{RefundDraft, RefundLineDraft};

/// The body of `POST /events/{id}/tickets` as it arrives: one line (`quantity`, and
/// `ticketTypeId` or the event's default type) or several (`lines`), never both. Every field
/// is optional here so that each problem is reported against its field; [`PurchaseBody`] is
/// how the document states the two shapes.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseRequest {
    pub quantity: Option<i64>,
    pub ticket_type_id: Option<String>,
    #[serde(default, deserialize_with = "objects")]
    pub lines: Option<Vec<OrderLineRequest>>,
    pub user_fingerprint: Option<String>,
}

/// The body of `POST /events/{id}/waiting-list`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinWaitingListRequest {
    /// Tickets wanted, all offered at once: 1 to the server's per-purchase maximum (default
    /// 10) and the type's maxPerOrder.
    #[schema(value_type = i64, example = 2, minimum = 1)]
    pub quantity: Option<i64>,
    /// The ticket type to wait for (default: the event's "General admission").
    #[schema(value_type = Option<uuid::Uuid>)]
    pub ticket_type_id: Option<String>,
    /// The buyer's device fingerprint, as for a purchase (the `X-Device-Fingerprint` header
    /// wins when both are present).
    #[schema(max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub user_fingerprint: Option<String>,
}

/// The body of `POST /events/{id}/tickets`, as documented: one line, or several.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum PurchaseBody {
    OneLine(OneLinePurchase),
    Lines(LinesPurchase),
}

/// An order of one ticket type.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OneLinePurchase {
    /// How many tickets to hold, 1 to the server's per-purchase maximum (default 10) and
    /// the type's maxPerOrder.
    #[schema(example = 2, minimum = 1)]
    pub quantity: i64,
    /// The ticket type to buy (default: the event's "General admission").
    pub ticket_type_id: Option<uuid::Uuid>,
    /// The buyer's device fingerprint, for clients that cannot send the
    /// `X-Device-Fingerprint` header (the header wins when both are present): up to 256
    /// characters, no control characters.
    #[schema(max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub user_fingerprint: Option<String>,
}

/// An order of several ticket types, all held or none.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinesPurchase {
    /// 1 to 20 lines of distinct types; their quantities add up to at most the per-purchase
    /// maximum.
    #[schema(min_items = 1, max_items = 20)]
    pub lines: Vec<OrderLineRequest>,
    /// As in the one-line order.
    #[schema(max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub user_fingerprint: Option<String>,
}

/// One line of an order.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineRequest {
    /// A ticket type of the event.
    #[schema(value_type = uuid::Uuid, required = true, nullable = false)]
    pub ticket_type_id: Option<String>,
    /// 1 to the type's maxPerOrder and the per-purchase maximum.
    #[schema(example = 2, required = true, nullable = false, minimum = 1)]
    pub quantity: Option<i64>,
}

impl PurchaseRequest {
    /// The order's fields for the domain's checks; `user_fingerprint` stays with the caller.
    pub fn order(&self) -> OrderDraft {
        OrderDraft {
            quantity: self.quantity,
            ticket_type_id: self.ticket_type_id.clone(),
            lines: self.lines.as_ref().map(|lines| {
                lines
                    .iter()
                    .map(|line| LineDraft {
                        ticket_type_id: line.ticket_type_id.clone(),
                        quantity: line.quantity,
                    })
                    .collect()
            }),
        }
    }
}

/// The body of `POST /tickets/{id}/refund`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundRequest {
    /// The tickets to refund, 1 to 20 lines of distinct types of the order; absent: every
    /// ticket not yet refunded. `null` is refused (422 naming `lines`): a client that meant
    /// some tickets and sent none must not refund everything.
    #[serde(default, deserialize_with = "objects_not_null")]
    #[schema(nullable = false, min_items = 1, max_items = 20)]
    pub lines: Option<Vec<OrderLineRequest>>,
    /// Why, for the organiser's records: up to 500 characters.
    #[schema(example = "event moved", max_length = 500)]
    pub reason: Option<String>,
}

impl RefundRequest {
    /// The refund's fields for the domain's checks.
    pub fn draft(&self) -> RefundDraft {
        RefundDraft {
            lines: self.lines.as_ref().map(|lines| {
                lines
                    .iter()
                    .map(|line| RefundLineDraft {
                        ticket_type_id: line.ticket_type_id.clone(),
                        quantity: line.quantity,
                    })
                    .collect()
            }),
            reason: self.reason.clone(),
        }
    }
}

/// The body of `POST /tickets/{id}/payment`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequest {
    /// A test card token: `tok_visa` (or none) succeeds, `tok_chargeDeclined` is declined.
    #[schema(example = "tok_visa")]
    pub payment_token: Option<String>,
    /// The buyer's device fingerprint, for clients that cannot send the
    /// `X-Device-Fingerprint` header (the header wins when both are present): up to 256
    /// characters, no control characters.
    #[schema(max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub user_fingerprint: Option<String>,
}

/// The body of `POST /events` as it arrives; every field optional so that each problem
/// can be reported against its field.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateEventRequest {
    /// 1 to 200 characters once normalized (NFC, whitespace runs made one space, invisible
    /// characters around it trimmed); a name with no visible character is refused as blank.
    #[schema(example = "RustConf 2027", required = true, nullable = false)]
    pub name: Option<String>,
    /// RFC 3339 date-time with an offset, from 1970-01-01T00:00:00Z to
    /// 9999-12-31T23:59:59.999999Z once converted to UTC; stored in UTC to the microsecond.
    #[schema(example = "2027-09-01T18:00:00Z", required = true, nullable = false)]
    pub date: Option<String>,
    /// 1 to 1,000,000.
    #[schema(example = 1000, required = true, nullable = false)]
    pub total_tickets: Option<i64>,
    /// 1 to totalTickets, or null for no cap.
    #[schema(example = 4)]
    pub max_tickets_per_fingerprint: Option<i64>,
    /// ISO 4217 code of the event's prices (default: the server's `--default-currency`,
    /// itself EUR by default).
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    pub currency: Option<String>,
    /// Price of the default ticket type ("General admission"), an integer in the currency's
    /// minor unit (cents for EUR), 0 (free, the default) to 1,000,000,000.
    #[schema(example = 2500, minimum = 0, maximum = 1_000_000_000)]
    pub price: Option<i64>,
    /// When sales open: RFC 3339 date-time with an offset (absent: at once).
    #[schema(example = "2027-06-01T10:00:00Z")]
    pub sales_start_at: Option<String>,
    /// When sales close, exclusive: RFC 3339, after salesStartAt (absent: never).
    #[schema(example = "2027-09-01T18:00:00Z")]
    pub sales_end_at: Option<String>,
}

/// `?page=&limit=` as it arrives; text so that a bad value is reported by name.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page number, 1 to 1,000,000,000 (default 1).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000)]
    pub page: Option<String>,
    /// Items per page, 1 to 100 (default 10).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
}

/// `GET /events/{id}/orders`'s query as it arrives: the page, as [`PageQuery`], and the
/// optional filters, as text so that a bad value is reported by name.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrdersQuery {
    /// Page number, 1 to 1,000,000,000 (default 1).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000)]
    pub page: Option<String>,
    /// Items per page, 1 to 100 (default 10).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// Only the order with this confirmation code, exactly as the buyer was given it:
    /// `BX-` and two groups of four upper-case letters or digits without 0, O, 1, I, L.
    #[serde(rename = "confirmationCode")]
    #[param(
        rename = "confirmationCode",
        nullable = false,
        pattern = "^BX-[2-9A-HJKMNP-Z]{4}-[2-9A-HJKMNP-Z]{4}$"
    )]
    pub confirmation_code: Option<String>,
    /// Only orders in this status.
    #[param(value_type = Option<crate::domain::status::AllocationStatus>, nullable = false)]
    pub status: Option<String>,
}

impl From<CreateEventRequest> for EventDraft {
    fn from(request: CreateEventRequest) -> Self {
        EventDraft {
            name: request.name,
            date: request.date,
            total_tickets: request.total_tickets,
            max_tickets_per_fingerprint: request.max_tickets_per_fingerprint,
            currency: request.currency,
            price: request.price,
            sales_start_at: request.sales_start_at,
            sales_end_at: request.sales_end_at,
        }
    }
}

/// A list of JSON objects, or `null`: each item is built only from an object, where serde
/// would also build a struct from a JSON array of its fields in order (`[id, 2]` as a line),
/// a shape no document names. An array item is its data error, "expected a JSON object",
/// naming its place (`lines[0]`), as for any other item of the wrong type.
pub(crate) fn objects<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let items = Option::<Vec<Object<T>>>::deserialize(deserializer)?;
    Ok(items.map(|items| items.into_iter().map(|Object(item)| item).collect()))
}

/// [`objects`] for a list that may be left out but not sent as `null`: absent stays `None`
/// (serde's `default`), and a `null` is the field's data error (422 naming it), as any other
/// value of the wrong type is.
fn objects_not_null<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let items = Vec::<Object<T>>::deserialize(deserializer)?;
    Ok(Some(items.into_iter().map(|Object(item)| item).collect()))
}

/// A `T` read from a JSON object only: the input is asked for a map, so an array (or any
/// other value) is refused as the wrong type before `T` sees it.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<T, M::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(Object)
    }
}

/// A `PATCH` field: absent stays `None`, an explicit `null` becomes `Some(None)` (serde's
/// `default` covers the absent case; this function only ever sees a present value).
fn present<'de, D, T>(deserializer: D) -> Result<Patch<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The body of `PATCH /events/{id}`: every field optional (absent: unchanged), each checked
/// as `POST /events` checks it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateEventRequest {
    /// As in `POST /events`; not null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable = false, example = "RustConf 2027")]
    pub name: Patch<String>,
    /// As in `POST /events`; not null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable = false, example = "2027-09-01T18:00:00Z")]
    pub date: Patch<String>,
    /// 1 to 1,000,000, and at least the tickets reserved and purchased
    /// (`CAPACITY_BELOW_SOLD` otherwise); not null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, nullable = false, example = 1200)]
    pub total_tickets: Patch<i64>,
    /// 1 to totalTickets and at least what one buyer already holds, or null for no cap.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, example = 4)]
    pub max_tickets_per_fingerprint: Patch<i64>,
    /// RFC 3339, or null to open sales at once.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "2027-06-01T10:00:00Z")]
    pub sales_start_at: Patch<String>,
    /// RFC 3339 after salesStartAt, or null for no end.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "2027-09-01T18:00:00Z")]
    pub sales_end_at: Patch<String>,
    /// Never changes: accepted only as the event's own code (a client may send back what it
    /// read); any other value, or null, is refused with 422.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable = false, example = "EUR")]
    pub currency: Patch<String>,
    /// Refused with 422 whatever its value: an event has no price of its own (`POST
    /// /events` takes one for its default type); a type's price changes with `PATCH
    /// /events/{id}/ticket-types/{typeId}`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, nullable = false)]
    pub price: Patch<serde::de::IgnoredAny>,
}

impl From<UpdateEventRequest> for EventPatch {
    fn from(request: UpdateEventRequest) -> Self {
        EventPatch {
            name: request.name,
            date: request.date,
            total_tickets: request.total_tickets,
            max_tickets_per_fingerprint: request.max_tickets_per_fingerprint,
            sales_start_at: request.sales_start_at,
            sales_end_at: request.sales_end_at,
            currency: request.currency,
            price_given: request.price.is_some(),
        }
    }
}

/// The body of `POST /events/{id}/ticket-types`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateTicketTypeRequest {
    /// 1 to 200 characters once normalized, as an event name; unique within the event
    /// (`TICKET_TYPE_EXISTS` otherwise).
    #[schema(example = "Weekend pass", required = true, nullable = false)]
    pub name: Option<String>,
    /// Price of one ticket, an integer in the event currency's minor unit, 0 to
    /// 1,000,000,000.
    #[schema(
        example = 4500,
        required = true,
        nullable = false,
        minimum = 0,
        maximum = 1_000_000_000
    )]
    pub price: Option<i64>,
    /// Up to 2,000 characters.
    #[schema(example = "Saturday and Sunday")]
    pub description: Option<String>,
    /// Most tickets of this type in one order, 1 to 1,000,000 (absent or null: no limit but
    /// the purchase maximum).
    #[schema(example = 4, minimum = 1, maximum = 1_000_000)]
    pub max_per_order: Option<i64>,
    /// When this type goes on sale (RFC 3339; absent: with the event).
    #[schema(example = "2027-06-01T10:00:00Z")]
    pub sales_start_at: Option<String>,
    /// When this type's sales close, exclusive (RFC 3339, after salesStartAt).
    #[schema(example = "2027-08-31T23:59:59Z")]
    pub sales_end_at: Option<String>,
    /// Whether it is sold (absent or null: true); an inactive type is listed but not sold.
    #[schema(example = true)]
    pub active: Option<bool>,
    /// A type is priced in its event's currency: accepted only as the event's own code (a
    /// client may send what it read); any other value, or null, is refused with 422.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable = false, example = "EUR")]
    pub currency: Patch<String>,
}

impl From<CreateTicketTypeRequest> for TicketTypePatch {
    fn from(request: CreateTicketTypeRequest) -> Self {
        TicketTypePatch {
            name: request.name.map(Some),
            description: request.description.map(Some),
            price: request.price.map(Some),
            max_per_order: request.max_per_order.map(Some),
            sales_start_at: request.sales_start_at.map(Some),
            sales_end_at: request.sales_end_at.map(Some),
            active: request.active.map(Some),
        }
    }
}

/// The body of `PATCH /events/{id}/ticket-types/{typeId}`: every field optional (absent:
/// unchanged); null clears description, maxPerOrder, salesStartAt and salesEndAt.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateTicketTypeRequest {
    /// As on creation; not null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable = false, example = "Weekend pass")]
    pub name: Patch<String>,
    /// As on creation; not null. Applies to new orders only: a hold keeps its price.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, nullable = false, example = 5000, minimum = 0, maximum = 1_000_000_000)]
    pub price: Patch<i64>,
    /// Up to 2,000 characters, or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub description: Patch<String>,
    /// 1 to 1,000,000, or null for no limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000)]
    pub max_per_order: Patch<i64>,
    /// RFC 3339, or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub sales_start_at: Patch<String>,
    /// RFC 3339 after salesStartAt, or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub sales_end_at: Patch<String>,
    /// Not null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<bool>, nullable = false)]
    pub active: Patch<bool>,
    /// Never changes: accepted only as the event's own code (a client may send back what it
    /// read); any other value, or null, is refused with 422.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable = false, example = "EUR")]
    pub currency: Patch<String>,
}

impl From<UpdateTicketTypeRequest> for TicketTypePatch {
    fn from(request: UpdateTicketTypeRequest) -> Self {
        TicketTypePatch {
            name: request.name,
            description: request.description,
            price: request.price,
            max_per_order: request.max_per_order,
            sales_start_at: request.sales_start_at,
            sales_end_at: request.sales_end_at,
            active: request.active,
        }
    }
}

/// The body of `POST /events/{id}/quotas`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateQuotaRequest {
    /// 1 to 200 characters once normalized, as an event name.
    #[schema(example = "Saturday", required = true, nullable = false)]
    pub name: Option<String>,
    /// Tickets the quota shares among its types, 0 to 1,000,000, and at least what its types
    /// already hold (`CAPACITY_BELOW_SOLD` otherwise).
    #[schema(
        example = 60,
        required = true,
        nullable = false,
        minimum = 0,
        maximum = 1_000_000
    )]
    pub size: Option<i64>,
    /// Ids of ticket types of this event, distinct, at most 100 (may be empty).
    #[schema(value_type = Vec<uuid::Uuid>, required = true, nullable = false, max_items = 100)]
    pub ticket_type_ids: Option<Vec<String>>,
}

impl From<CreateQuotaRequest> for QuotaPatch {
    fn from(request: CreateQuotaRequest) -> Self {
        QuotaPatch {
            name: request.name.map(Some),
            size: request.size.map(Some),
            ticket_type_ids: request.ticket_type_ids.map(Some),
        }
    }
}

/// The body of `PATCH /events/{id}/quotas/{quotaId}`: every field optional (absent:
/// unchanged), none nullable.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateQuotaRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable = false, example = "Saturday")]
    pub name: Patch<String>,
    /// 0 to 1,000,000, and at least what its types hold.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, nullable = false, minimum = 0, maximum = 1_000_000)]
    pub size: Patch<i64>,
    /// The new set of types (replaces the old one), as on creation.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<uuid::Uuid>>, nullable = false, max_items = 100)]
    pub ticket_type_ids: Patch<Vec<String>>,
}

impl From<UpdateQuotaRequest> for QuotaPatch {
    fn from(request: UpdateQuotaRequest) -> Self {
        QuotaPatch {
            name: request.name,
            size: request.size,
            ticket_type_ids: request.ticket_type_ids,
        }
    }
}
