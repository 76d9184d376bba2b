//! Orders refused whole: one short line refuses every line (nothing held), a type whose
//! quota is full is sold out while the event still has tickets, malformed or unsellable
//! lines answer 422 naming the field, and the per-buyer cap counts tickets of every type.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{
    allocation_rows, assert_event_matches_lines, assert_priced_as_asked, assert_quotas_match_lines,
    create_quota, create_type, lines_body, order, type_availability,
};
use crate::helpers::{
    TestApp, assert_error, id_of, new_fingerprint, spawn_app, spawn_app_on, spawn_app_with,
};

/// An event of `total` tickets with types A (price 1000) and B (price 500): (event, A, B).
async fn event_with_two_types(
    app: &TestApp,
    total: i64,
    cap: Option<i64>,
) -> (String, String, String) {
    let event_id = id_of(&app.create_event("Two types", total, cap).await);
    let a = id_of(&create_type(app, &event_id, json!({ "name": "A", "price": 1000 })).await);
    let b = id_of(&create_type(app, &event_id, json!({ "name": "B", "price": 500 })).await);
    (event_id, a, b)
}

/// The fields named in a 422's details.
fn fields(body: &Value) -> Vec<String> {
    body["details"]
        .as_array()
        .unwrap_or_else(|| panic!("details: {body}"))
        .iter()
        .map(|d| d["field"].as_str().expect("field").to_owned())
        .collect()
}

#[tokio::test]
async fn one_short_line_refuses_the_whole_order_and_holds_nothing() {
    let app = spawn_app().await;
    let (event_id, a, b) = event_with_two_types(&app, 150, None).await;
    let quota = id_of(&create_quota(&app, &event_id, "A only", 5, &[&a]).await);
    let (status, first) = order(&app, &event_id, &new_fingerprint(), lines_body(&[(&a, 4)])).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let before = app.counts(&event_id).await;
    assert_eq!(before, (146, 4, 0));

    // B has 146 left, A only 1 (its quota): the order of 3 B and 2 A is refused whole.
    let (status, body) = order(
        &app,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&b, 3), (&a, 2)]),
    )
    .await;
    assert_error(status, &body, StatusCode::CONFLICT, "INSUFFICIENT_TICKETS");
    assert_eq!(body["availableTickets"], 146, "{body}");
    assert_eq!(
        body["lines"],
        json!([
            { "ticketTypeId": b, "available": 146 },
            { "ticketTypeId": a, "available": 1 },
        ])
    );
    assert_eq!(app.counts(&event_id).await, before, "nothing held");
    assert_eq!(
        allocation_rows(&app.pool, &event_id).await,
        1,
        "no allocation row"
    );
    let quotas = assert_quotas_match_lines(&app.pool, &event_id).await;
    assert_eq!(
        (quotas[0].available, quotas[0].reserved),
        (1, 4),
        "{quotas:?}"
    );
    assert_eq!(quotas[0].id.to_string(), quota);

    // The type's `available` is the least of the event's and its quotas'.
    let available = type_availability(&app, &event_id).await;
    assert!(available.contains(&(a.clone(), 1)), "{available:?}");
    assert!(available.contains(&(b.clone(), 146)), "{available:?}");

    // Within what is left, the same order shape is granted.
    let asked = [(b.as_str(), 3), (a.as_str(), 1)];
    let (status, granted) = order(&app, &event_id, &new_fingerprint(), lines_body(&asked)).await;
    assert_eq!(status, StatusCode::CREATED, "{granted}");
    assert_priced_as_asked(
        &granted,
        &asked,
        |id| if id == a { 1000 } else { 500 },
        "EUR",
    );
    assert_eq!(granted["total"], 2500);
    assert_eq!(app.counts(&event_id).await, (142, 8, 0));
    assert_event_matches_lines(&app.pool, &event_id).await;
    assert_quotas_match_lines(&app.pool, &event_id).await;
}

#[tokio::test]
async fn lines_that_each_fit_are_refused_when_together_they_do_not() {
    let app = spawn_app().await;
    let (event_id, a, b) = event_with_two_types(&app, 150, None).await;
    create_quota(&app, &event_id, "Shared", 3, &[&a, &b]).await;

    // A alone fits (3 left), B alone fits; both count against one quota of 3.
    let (status, body) = order(
        &app,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&a, 2), (&b, 2)]),
    )
    .await;
    assert_error(status, &body, StatusCode::CONFLICT, "INSUFFICIENT_TICKETS");
    assert_eq!(
        body["lines"],
        json!([
            { "ticketTypeId": a, "available": 3 },
            { "ticketTypeId": b, "available": 3 },
        ])
    );
    assert_eq!(app.counts(&event_id).await, (150, 0, 0), "nothing held");
    assert_eq!(allocation_rows(&app.pool, &event_id).await, 0);

    // The same, short of the event's capacity rather than a quota's.
    let (status, body) = order(
        &app,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&a, 2), (&b, 1)]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let small = id_of(&app.create_event("Small", 4, None).await);
    let general = app.event(&small).await["ticketTypes"][0]["id"].clone();
    let c = id_of(&create_type(&app, &small, json!({ "name": "C", "price": 0 })).await);
    let general = general.as_str().unwrap();
    let (status, body) = order(
        &app,
        &small,
        &new_fingerprint(),
        lines_body(&[(general, 3), (&c, 2)]),
    )
    .await;
    assert_error(status, &body, StatusCode::CONFLICT, "INSUFFICIENT_TICKETS");
    assert_eq!(body["availableTickets"], 4, "{body}");
    assert_eq!(app.counts(&small).await, (4, 0, 0), "nothing held");
}

#[tokio::test]
async fn a_type_whose_quota_is_full_is_sold_out_while_the_event_has_tickets() {
    let app = spawn_app().await;
    let (event_id, a, b) = event_with_two_types(&app, 150, None).await;
    create_quota(&app, &event_id, "A only", 2, &[&a]).await;
    let (status, body) = order(&app, &event_id, &new_fingerprint(), lines_body(&[(&a, 2)])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    for body in [
        json!({ "quantity": 1, "ticketTypeId": a }),
        lines_body(&[(&b, 1), (&a, 1)]),
    ] {
        let (status, refused) = order(&app, &event_id, &new_fingerprint(), body).await;
        assert_error(status, &refused, StatusCode::CONFLICT, "TICKETS_SOLD_OUT");
        assert_eq!(refused["ticketTypeId"], a, "{refused}");
    }
    assert_eq!(
        app.counts(&event_id).await,
        (148, 2, 0),
        "nothing more held"
    );
    assert_eq!(allocation_rows(&app.pool, &event_id).await, 1);

    // B still sells.
    let (status, body) = order(&app, &event_id, &new_fingerprint(), lines_body(&[(&b, 1)])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_quotas_match_lines(&app.pool, &event_id).await;
}

#[tokio::test]
async fn unsellable_or_malformed_lines_are_422_naming_the_field_and_hold_nothing() {
    let app = spawn_app_with(&["--max-tickets-per-purchase", "6"]).await;
    let (event_id, a, b) = event_with_two_types(&app, 150, None).await;
    let limited = create_type(
        &app,
        &event_id,
        json!({ "name": "Limited", "price": 100, "maxPerOrder": 2 }),
    )
    .await;
    let limited = id_of(&limited);
    let inactive = create_type(
        &app,
        &event_id,
        json!({ "name": "Closed", "price": 100, "active": false }),
    )
    .await;
    let inactive = id_of(&inactive);
    let other_event = id_of(&app.create_event("Other", 10, None).await);
    let foreign = id_of(&create_type(&app, &other_event, json!({ "name": "F", "price": 1 })).await);
    let unknown = uuid::Uuid::new_v4().to_string();
    let twenty_one: Vec<Value> = (0..21)
        .map(|_| json!({ "ticketTypeId": uuid::Uuid::new_v4(), "quantity": 1 }))
        .collect();

    let cases = [
        (
            lines_body(&[(&a, 1), (&unknown, 1)]),
            "lines[1].ticketTypeId",
        ),
        (lines_body(&[(&foreign, 1)]), "lines[0].ticketTypeId"),
        (
            json!({ "quantity": 1, "ticketTypeId": unknown }),
            "ticketTypeId",
        ),
        (
            lines_body(&[(&a, 1), (&inactive, 1)]),
            "lines[1].ticketTypeId",
        ),
        (
            json!({ "quantity": 1, "ticketTypeId": inactive }),
            "ticketTypeId",
        ),
        (
            lines_body(&[(&a, 1), (&b, 1), (&a, 2)]),
            "lines[2].ticketTypeId",
        ),
        (lines_body(&[(&a, 1), (&b, 0)]), "lines[1].quantity"),
        (json!({ "quantity": 0, "ticketTypeId": a }), "quantity"),
        (
            json!({ "quantity": 1, "lines": [{ "ticketTypeId": a, "quantity": 1 }] }),
            "lines",
        ),
        (json!({ "ticketTypeId": a }), "quantity"),
        (json!({}), "quantity"),
        (json!({ "lines": [] }), "lines"),
        // A line is an object, never an array of its fields in order.
        (json!({ "lines": [[a, 1]] }), "lines[0]"),
        (
            json!({ "lines": [{ "ticketTypeId": a, "quantity": 1 }, [b, 1, 2]] }),
            "lines[1]",
        ),
        (json!({ "lines": twenty_one }), "lines"),
        (lines_body(&[(&b, 1), (&limited, 3)]), "lines[1].quantity"),
        (
            json!({ "quantity": 3, "ticketTypeId": limited }),
            "quantity",
        ),
        (lines_body(&[(&a, 4), (&b, 3)]), "lines"),
        (json!({ "quantity": 7, "ticketTypeId": a }), "quantity"),
    ];
    for (body, field) in cases {
        let (status, refused) = order(&app, &event_id, &new_fingerprint(), body.clone()).await;
        assert_error(
            status,
            &refused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert!(
            fields(&refused).iter().any(|f| f == field),
            "{body} names {field}: {refused}"
        );
    }
    assert_eq!(app.counts(&event_id).await, (150, 0, 0), "nothing held");
    assert_eq!(allocation_rows(&app.pool, &event_id).await, 0);

    // At the limits: 20 lines are allowed, as are maxPerOrder and the purchase limit.
    let (status, body) = order(
        &app,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&limited, 2), (&a, 3), (&b, 1)]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["total"], 2 * 100 + 3 * 1000 + 500);
    let mut twenty = Vec::new();
    for n in 0..18 {
        let view = create_type(
            &app,
            &event_id,
            json!({ "name": format!("T{n}"), "price": n }),
        )
        .await;
        twenty.push(id_of(&view));
    }
    twenty.extend([a.clone(), b.clone()]);
    let lines: Vec<(&str, i64)> = twenty.iter().map(|id| (id.as_str(), 1)).collect();
    let wide = spawn_app_on(
        &app.pool.connect_options(),
        &["--max-tickets-per-purchase", "20"],
    )
    .await;
    let (status, body) = order(&wide, &event_id, &new_fingerprint(), lines_body(&lines)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["lines"].as_array().map(Vec::len), Some(20), "{body}");
    assert_eq!(body["total"], (0..18).sum::<i64>() + 1000 + 500);
    assert_event_matches_lines(&app.pool, &event_id).await;
}

#[tokio::test]
async fn the_per_buyer_cap_counts_tickets_of_every_type() {
    let app = spawn_app().await;
    let (event_id, a, b) = event_with_two_types(&app, 150, Some(4)).await;
    let buyer = new_fingerprint();
    let (status, body) = order(&app, &event_id, &buyer, lines_body(&[(&a, 2)])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    for body in [lines_body(&[(&b, 3)]), lines_body(&[(&a, 1), (&b, 2)])] {
        let (status, refused) = order(&app, &event_id, &buyer, body).await;
        assert_error(status, &refused, StatusCode::CONFLICT, "FINGERPRINT_LIMIT");
        assert_eq!(
            (refused["limit"].clone(), refused["held"].clone()),
            (json!(4), json!(2))
        );
    }
    assert_eq!(
        app.counts(&event_id).await,
        (148, 2, 0),
        "nothing more held"
    );

    let (status, body) = order(&app, &event_id, &buyer, lines_body(&[(&b, 2)])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, refused) = order(&app, &event_id, &buyer, json!({ "quantity": 1 })).await;
    assert_error(status, &refused, StatusCode::CONFLICT, "FINGERPRINT_LIMIT");
    assert_eq!(refused["held"], 4, "{refused}");
    assert_eq!(app.counts(&event_id).await, (146, 4, 0));
}
