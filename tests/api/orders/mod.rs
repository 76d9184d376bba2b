//! Orders of several ticket types through `POST /events/{id}/tickets`, against the event's
//! capacity and its shared quotas:
//!
//! - [`overlap_race`]: 2,000 concurrent orders of random lines over three types in two
//!   overlapping quotas, on two instances, in both purchase modes, with payments and
//!   cancellations: no quota and no event above its size, and every count equal to the lines
//!   that hold it;
//! - [`read_back`]: the 201 is the allocation as `GET /tickets/{id}` reads it back;
//! - [`refusals`]: all or nothing, sold-out types, validation naming the field, the per-buyer
//!   cap over all types;
//! - [`windows_and_prices`]: sales windows at their edges, a price change after a hold, free
//!   orders.

mod catalogue_changes;
mod overlap_race;
mod read_back;
mod refusals;
mod windows_and_prices;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{Api, id_of};

/// Creates a ticket type and returns its view.
async fn create_type(api: &Api, event_id: &str, body: Value) -> Value {
    let (status, view) = api
        .post_json(&format!("/events/{event_id}/ticket-types"), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    view
}

/// Creates a quota of `size` over `types` and returns its view.
async fn create_quota(api: &Api, event_id: &str, name: &str, size: i64, types: &[&str]) -> Value {
    let (status, view) = api
        .post_json(
            &format!("/events/{event_id}/quotas"),
            json!({ "name": name, "size": size, "ticketTypeIds": types }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    view
}

/// The request of an order (any body) by the buyer with this fingerprint, not yet sent.
fn order_request(api: &Api, event_id: &str, buyer: &str, body: &Value) -> reqwest::RequestBuilder {
    api.request(Method::POST, &format!("/events/{event_id}/tickets"))
        .header("X-Device-Fingerprint", buyer)
        .json(body)
}

/// Sends an order (any body) as the buyer with this fingerprint.
async fn order(api: &Api, event_id: &str, buyer: &str, body: Value) -> (StatusCode, Value) {
    api.send(order_request(api, event_id, buyer, &body)).await
}

/// The body of an order of `lines` (type id, quantity).
fn lines_body(lines: &[(&str, i64)]) -> Value {
    json!({
        "lines": lines
            .iter()
            .map(|(id, quantity)| json!({ "ticketTypeId": id, "quantity": quantity }))
            .collect::<Vec<_>>()
    })
}

/// Asserts a 201's allocation is exactly the order asked, priced as `price_of` says: one
/// line per type asked (in the event's type order, which [`read_back`] checks), each
/// `amount = unitPrice × quantity`; `quantity` and `total`
/// the sums of the lines; nothing refunded yet.
fn assert_priced_as_asked(
    allocation: &Value,
    asked: &[(&str, i64)],
    price_of: impl Fn(&str) -> i64,
    currency: &str,
) {
    let lines = allocation["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("lines in {allocation}"));
    assert_eq!(lines.len(), asked.len(), "{allocation}");
    let mut quantity = 0;
    let mut total = 0;
    for (type_id, asked_quantity) in asked {
        let line = lines
            .iter()
            .find(|line| line["ticketTypeId"] == *type_id)
            .unwrap_or_else(|| panic!("a line of {type_id} in {allocation}"));
        let unit_price = line["unitPrice"].as_i64().expect("unitPrice");
        assert_eq!(line["quantity"], *asked_quantity, "{allocation}");
        assert_eq!(unit_price, price_of(type_id), "{allocation}");
        assert_eq!(line["amount"], unit_price * asked_quantity, "{allocation}");
        assert_eq!(line["refundedQuantity"], 0, "{allocation}");
        quantity += asked_quantity;
        total += unit_price * asked_quantity;
    }
    assert_eq!(allocation["quantity"], quantity, "{allocation}");
    assert_eq!(allocation["total"], total, "{allocation}");
    assert_eq!(allocation["currency"], currency, "{allocation}");
    assert_eq!(allocation["refundedAmount"], 0, "{allocation}");
}

/// A quota as stored, beside what the lines of its types hold.
#[derive(Debug)]
struct QuotaTally {
    id: Uuid,
    size: i64,
    available: i64,
    reserved: i64,
    purchased: i64,
}

/// Asserts every quota of the event balances and holds exactly what the lines of its types
/// hold in live allocations (reserved or being paid) and in purchased ones (less what was
/// refunded); returns the quotas in id order.
async fn assert_quotas_match_lines(pool: &PgPool, event_id: &str) -> Vec<QuotaTally> {
    let rows: Vec<(Uuid, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT q.id, q.size::bigint, q.available_tickets::bigint, q.reserved_tickets::bigint, \
           q.purchased_tickets::bigint, \
           COALESCE((SELECT sum(l.quantity) FROM allocation_lines l \
              JOIN ticket_allocations a ON a.id = l.allocation_id \
              JOIN quota_ticket_types m ON m.ticket_type_id = l.ticket_type_id \
              WHERE m.quota_id = q.id AND a.status IN ('reserved', 'payment_pending')), 0)::bigint, \
           COALESCE((SELECT sum(l.quantity - l.refunded_quantity) FROM allocation_lines l \
              JOIN ticket_allocations a ON a.id = l.allocation_id \
              JOIN quota_ticket_types m ON m.ticket_type_id = l.ticket_type_id \
              WHERE m.quota_id = q.id AND a.status = 'purchased'), 0)::bigint \
         FROM quotas q WHERE q.event_id = $1::uuid ORDER BY q.id",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(
            |(id, size, available, reserved, purchased, lines_reserved, lines_purchased)| {
                assert_eq!(
                    (reserved, purchased),
                    (lines_reserved, lines_purchased),
                    "quota {id}: (reserved, purchased) counts vs its types' lines"
                );
                assert_eq!(
                    available + reserved + purchased,
                    size,
                    "quota {id} balances"
                );
                assert!(available >= 0, "quota {id} available {available}");
                QuotaTally {
                    id,
                    size,
                    available,
                    reserved,
                    purchased,
                }
            },
        )
        .collect()
}

/// Asserts the event's counts equal what the lines of its allocations hold (reserved or
/// being paid; purchased less refunded), and every allocation's quantity is the sum of its
/// lines; returns (available, reserved, purchased).
async fn assert_event_matches_lines(pool: &PgPool, event_id: &str) -> (i64, i64, i64) {
    let (total, available, reserved, purchased, lines_reserved, lines_purchased): (
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT e.total_tickets::bigint, e.available_tickets::bigint, \
           e.reserved_tickets::bigint, e.purchased_tickets::bigint, \
           COALESCE((SELECT sum(l.quantity) FROM allocation_lines l \
              JOIN ticket_allocations a ON a.id = l.allocation_id \
              WHERE a.event_id = e.id AND a.status IN ('reserved', 'payment_pending')), 0)::bigint, \
           COALESCE((SELECT sum(l.quantity - l.refunded_quantity) FROM allocation_lines l \
              JOIN ticket_allocations a ON a.id = l.allocation_id \
              WHERE a.event_id = e.id AND a.status = 'purchased'), 0)::bigint \
         FROM events e WHERE e.id = $1::uuid",
    )
    .bind(event_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (reserved, purchased),
        (lines_reserved, lines_purchased),
        "event (reserved, purchased) counts vs its lines"
    );
    assert_eq!(available + reserved + purchased, total, "event balances");
    assert!(available >= 0, "event available {available}");
    let unbalanced: Vec<(Uuid, i32, i64)> = sqlx::query_as(
        "SELECT a.id, a.quantity, COALESCE(sum(l.quantity), 0)::bigint \
         FROM ticket_allocations a LEFT JOIN allocation_lines l ON l.allocation_id = a.id \
         WHERE a.event_id = $1::uuid GROUP BY a.id HAVING a.quantity <> COALESCE(sum(l.quantity), 0)",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        unbalanced.is_empty(),
        "allocations whose quantity is not the sum of their lines: {unbalanced:?}"
    );
    (available, reserved, purchased)
}

/// The `available` of each of the event's types as `GET /events/{id}` shows it, by type id.
async fn type_availability(api: &Api, event_id: &str) -> Vec<(String, i64)> {
    api.event(event_id).await["ticketTypes"]
        .as_array()
        .expect("ticketTypes")
        .iter()
        .map(|t| (id_of(t), t["available"].as_i64().expect("available")))
        .collect()
}

/// Allocation rows of the event (every status).
async fn allocation_rows(pool: &PgPool, event_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ticket_allocations WHERE event_id = $1::uuid")
        .bind(event_id)
        .fetch_one(pool)
        .await
        .unwrap()
}
