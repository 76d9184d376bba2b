//! When a type sells and at what price: the event's and each type's sales window, decided by
//! the database clock under the lock (`salesStartAt` inclusive, `salesEndAt` exclusive); a
//! hold keeps the price it was made at; free orders total 0.
//!
//! Windows are set relative to the database clock, as the sale reads it. The exact edges
//! (the instant of the start sells, the instant of the end does not) are unit tests of
//! `SalesWindow::contains`; here a window closes and opens while the test waits across it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    allocation_rows, assert_event_matches_lines, assert_priced_as_asked, create_type, lines_body,
    order,
};
use crate::helpers::{
    Api, TestApp, assert_error, eventually, id_of, new_fingerprint, spawn_app, timestamp,
};

/// The database clock, as the purchase transaction reads it, moved by `offset`.
async fn db_now(pool: &PgPool, offset: time::Duration) -> OffsetDateTime {
    let now: OffsetDateTime = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
        .unwrap();
    now + offset
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

/// A type named `name` selling from `start` to `end` (either open when `None`).
async fn windowed_type(
    app: &TestApp,
    event_id: &str,
    name: &str,
    start: Option<OffsetDateTime>,
    end: Option<OffsetDateTime>,
) -> String {
    let view = create_type(
        app,
        event_id,
        json!({
            "name": name,
            "price": 100,
            "salesStartAt": start.map(rfc3339),
            "salesEndAt": end.map(rfc3339),
        }),
    )
    .await;
    id_of(&view)
}

/// Asserts a 409 `SALES_CLOSED` for `type_id` carrying the window `(start, end)`.
fn assert_closed(
    status: StatusCode,
    body: &Value,
    type_id: &str,
    window: (Option<OffsetDateTime>, Option<OffsetDateTime>),
) {
    assert_error(status, body, StatusCode::CONFLICT, "SALES_CLOSED");
    assert_eq!(body["ticketTypeId"], type_id, "{body}");
    let read = |field: &str| match &body[field] {
        Value::Null => None,
        value => Some(timestamp(value)),
    };
    assert!(
        body.get("salesStartAt").is_some() && body.get("salesEndAt").is_some(),
        "both ends present (null when open): {body}"
    );
    assert_eq!((read("salesStartAt"), read("salesEndAt")), window, "{body}");
}

async fn patch(api: &Api, path: &str, body: Value) -> (StatusCode, Value) {
    api.send(api.request(Method::PATCH, path).json(&body)).await
}

#[tokio::test]
async fn a_type_sells_only_inside_its_window() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Windows", 100, None).await);
    let second = time::Duration::SECOND;
    let hour = time::Duration::HOUR;
    let now = db_now(&app.pool, time::Duration::ZERO).await;
    let open = windowed_type(
        &app,
        &event_id,
        "Open",
        Some(now - second),
        Some(now + hour),
    )
    .await;
    let ended_window = (Some(now - hour), Some(now - second));
    let ended = windowed_type(&app, &event_id, "Ended", ended_window.0, ended_window.1).await;
    let future_window = (Some(now + hour), None);
    let future = windowed_type(&app, &event_id, "Future", future_window.0, None).await;

    let (status, body) = order(
        &app,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&open, 1)]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = order(
        &app,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&ended, 1)]),
    )
    .await;
    assert_closed(status, &body, &ended, ended_window);
    let single = json!({ "quantity": 1, "ticketTypeId": future });
    let (status, body) = order(&app, &event_id, &new_fingerprint(), single).await;
    assert_closed(status, &body, &future, future_window);
    // One closed line closes the whole order.
    let (status, body) = order(
        &app,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&open, 1), (&ended, 1)]),
    )
    .await;
    assert_closed(status, &body, &ended, ended_window);
    assert_eq!(app.counts(&event_id).await, (99, 1, 0), "nothing more held");
    assert_eq!(allocation_rows(&app.pool, &event_id).await, 1);

    // Across the edges: a type whose window ends in a moment sells until then and not
    // after; one whose window starts in a moment sells from then on.
    let soon = db_now(&app.pool, 2 * second).await;
    let closing = windowed_type(&app, &event_id, "Closing", None, Some(soon)).await;
    let opening = windowed_type(&app, &event_id, "Opening", Some(soon), None).await;
    let (status, body) = order(
        &app,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&closing, 1)]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "before its end: {body}");
    let (status, body) = order(
        &app,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&opening, 1)]),
    )
    .await;
    assert_closed(status, &body, &opening, (Some(soon), None));
    eventually(
        "the database clock to pass the edge",
        Duration::from_secs(10),
        || async { (db_now(&app.pool, time::Duration::ZERO).await >= soon).then_some(()) },
    )
    .await;
    let (status, body) = order(
        &app,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&closing, 1)]),
    )
    .await;
    assert_closed(status, &body, &closing, (None, Some(soon)));
    let (status, body) = order(
        &app,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&opening, 1)]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "from its start: {body}");
    assert_eq!(app.counts(&event_id).await, (97, 3, 0));
    assert_event_matches_lines(&app.pool, &event_id).await;
}

#[tokio::test]
async fn the_event_window_closes_every_type() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Event window", 100, None).await);
    let general = id_of(&app.event(&event_id).await["ticketTypes"][0]);
    let now = db_now(&app.pool, time::Duration::ZERO).await;
    // The type's own window is open; the event's has ended.
    let open = windowed_type(
        &app,
        &event_id,
        "Open",
        Some(now - time::Duration::HOUR),
        None,
    )
    .await;
    let ended = (
        Some(now - time::Duration::HOUR),
        Some(now - time::Duration::SECOND),
    );
    let path = format!("/events/{event_id}");
    let (status, body) = patch(
        &app,
        &path,
        json!({ "salesStartAt": rfc3339(ended.0.unwrap()), "salesEndAt": rfc3339(ended.1.unwrap()) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = app.purchase(&event_id, 1, &new_fingerprint()).await;
    assert_closed(status, &body, &general, ended);
    let (status, body) = order(
        &app,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&open, 2)]),
    )
    .await;
    assert_closed(status, &body, &open, ended);
    assert_eq!(app.counts(&event_id).await, (100, 0, 0), "nothing held");

    // An event window that opens in an hour closes them too; reopened, they sell.
    let later = (Some(now + time::Duration::HOUR), None);
    let (status, body) = patch(
        &app,
        &path,
        json!({ "salesStartAt": rfc3339(later.0.unwrap()), "salesEndAt": null }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = order(
        &app,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&open, 2)]),
    )
    .await;
    assert_closed(status, &body, &open, later);
    let (status, body) = patch(&app, &path, json!({ "salesStartAt": null })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = order(
        &app,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&open, 2), (&general, 1)]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(app.counts(&event_id).await, (97, 3, 0));
}

#[tokio::test]
async fn a_hold_keeps_the_price_it_was_made_at() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Repriced", 100, None).await);
    let a = id_of(&create_type(&app, &event_id, json!({ "name": "A", "price": 1000 })).await);
    let buyer = new_fingerprint();
    let asked = [(a.as_str(), 2)];
    let (status, hold) = order(&app, &event_id, &buyer, lines_body(&asked)).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    assert_priced_as_asked(&hold, &asked, |_| 1000, "EUR");
    assert_eq!(hold["lines"][0]["ticketTypeName"], "A");

    let (status, body) = patch(
        &app,
        &format!("/events/{event_id}/ticket-types/{a}"),
        json!({ "price": 1500 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The hold, read back and paid, still costs what it did.
    let (status, read) = app.ticket(&id_of(&hold), &buyer).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(
        (read["lines"].clone(), read["total"].clone()),
        (hold["lines"].clone(), json!(2000))
    );
    let (status, paid) = app.pay(&id_of(&hold), &buyer, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(
        (paid["status"].clone(), paid["total"].clone()),
        (json!("purchased"), json!(2000))
    );
    assert_eq!(paid["lines"][0]["unitPrice"], 1000, "{paid}");
    let charged: Vec<(i64, String)> = sqlx::query_as(
        "SELECT amount, currency FROM payment_charges \
         WHERE starts_with(reference, $1) AND outcome = 'charged'",
    )
    .bind(format!("pay_{}_", id_of(&hold).replace('-', "")))
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        charged,
        [(2000, "EUR".to_owned())],
        "charged the hold's total once"
    );

    // A new order pays the new price.
    let (status, new) = order(&app, &event_id, &new_fingerprint(), lines_body(&asked)).await;
    assert_eq!(status, StatusCode::CREATED, "{new}");
    assert_priced_as_asked(&new, &asked, |_| 1500, "EUR");
    assert_eq!(new["total"], 3000);
}

#[tokio::test]
async fn free_orders_total_zero_and_prices_add_up_in_the_event_currency() {
    let app = spawn_app().await;
    // An event made without a price: its default type is free.
    let (status, event) = app
        .post_json(
            "/events",
            json!({ "name": "Free", "date": "2027-06-01T19:00:00Z", "totalTickets": 100 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    let free_event = id_of(&event);
    let buyer = new_fingerprint();
    let (status, hold) = app.purchase(&free_event, 3, &buyer).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let general = id_of(&app.event(&free_event).await["ticketTypes"][0]);
    assert_priced_as_asked(&hold, &[(general.as_str(), 3)], |_| 0, "EUR");
    assert_eq!(hold["lines"][0]["ticketTypeName"], "General admission");
    let (status, paid) = app.pay(&id_of(&hold), &buyer, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(
        (paid["status"].clone(), paid["total"].clone()),
        (json!("purchased"), json!(0))
    );

    // An event in yen with a priced default type, and a free type beside it.
    let (status, event) = app
        .post_json(
            "/events",
            json!({ "name": "Yen", "date": "2027-06-01T19:00:00Z", "totalTickets": 50,
                    "currency": "JPY", "price": 3000 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    let yen = id_of(&event);
    let general = id_of(&event["ticketTypes"][0]);
    let child = id_of(&create_type(&app, &yen, json!({ "name": "Child", "price": 0 })).await);
    let price_of = |id: &str| if id == general { 3000 } else { 0 };
    let asked = [(child.as_str(), 2)];
    let (status, free) = order(&app, &yen, &new_fingerprint(), lines_body(&asked)).await;
    assert_eq!(status, StatusCode::CREATED, "{free}");
    assert_priced_as_asked(&free, &asked, price_of, "JPY");
    let asked = [(general.as_str(), 2), (child.as_str(), 1)];
    let (status, mixed) = order(&app, &yen, &new_fingerprint(), lines_body(&asked)).await;
    assert_eq!(status, StatusCode::CREATED, "{mixed}");
    assert_priced_as_asked(&mixed, &asked, price_of, "JPY");
    assert_eq!(mixed["total"], 6000);
    let (status, single) = app.purchase(&yen, 2, &new_fingerprint()).await;
    assert_eq!(status, StatusCode::CREATED, "{single}");
    assert_eq!(single["total"], 6000, "{single}");
    assert_event_matches_lines(&app.pool, &yen).await;
}
