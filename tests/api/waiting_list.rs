//! The waiting list through HTTP: joining only a sold-out type, one entry per buyer and type,
//! holder-only reads, offers in join order as `reserved` holds, strict order with a group at
//! the head (the set-aside tickets sold to nobody else), decline and lapse passing tickets on,
//! refunds and capacity raises feeding the line, and the counts balancing throughout.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_counts_match_rows, assert_error, id_of, new_fingerprint, spawn_app_with,
};

const ADMIN: &str = "waiting-organiser";

/// An app with an organiser token and a sweeper that runs only when a test asks.
async fn app(extra: &[&str]) -> TestApp {
    let mut flags = vec!["--admin-token", ADMIN, "--sweep-interval-ms", "3600000"];
    flags.extend_from_slice(extra);
    spawn_app_with(&flags).await
}

async fn admin(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = app
        .request(method, path)
        .header("Authorization", format!("Bearer {ADMIN}"));
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    app.send(request).await
}

/// A free event of `total` tickets: (event id, its default type id).
async fn event(app: &TestApp, total: i64) -> (String, String) {
    let (status, body) = admin(
        app,
        Method::POST,
        "/events",
        Some(json!({"name": format!("Waiting {}", new_fingerprint()),
                    "date": "2027-06-01T19:00:00Z", "totalTickets": total})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let type_id = body["ticketTypes"][0]["id"].as_str().unwrap().to_owned();
    (id_of(&body), type_id)
}

async fn join(app: &TestApp, event_id: &str, body: Value, buyer: &str) -> (StatusCode, Value) {
    app.send(
        app.request(Method::POST, &format!("/events/{event_id}/waiting-list"))
            .header("X-Device-Fingerprint", buyer)
            .json(&body),
    )
    .await
}

async fn entry(app: &TestApp, entry_id: &str, buyer: &str) -> (StatusCode, Value) {
    app.send(
        app.request(Method::GET, &format!("/waiting-list/{entry_id}"))
            .header("X-Device-Fingerprint", buyer),
    )
    .await
}

async fn leave(app: &TestApp, entry_id: &str, buyer: &str) -> (StatusCode, Value) {
    app.send(
        app.request(Method::DELETE, &format!("/waiting-list/{entry_id}"))
            .header("X-Device-Fingerprint", buyer),
    )
    .await
}

/// Buys `quantity` as a new buyer and returns (allocation id, buyer).
async fn hold(app: &TestApp, event_id: &str, quantity: i64) -> (String, String) {
    let buyer = new_fingerprint();
    let (status, body) = app.purchase(event_id, quantity, &buyer).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (id_of(&body), buyer)
}

/// Joins as a new buyer, expecting 201: (entry, buyer).
async fn joined(app: &TestApp, event_id: &str, quantity: i64) -> (Value, String) {
    let buyer = new_fingerprint();
    let (status, body) = join(app, event_id, json!({"quantity": quantity}), &buyer).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (body, buyer)
}

async fn status_of(app: &TestApp, entry: &Value, buyer: &str) -> Value {
    let (status, body) = entry_of(app, entry, buyer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn entry_of(app: &TestApp, entry_body: &Value, buyer: &str) -> (StatusCode, Value) {
    entry(app, entry_body["id"].as_str().unwrap(), buyer).await
}

/// The event as the API shows it, checked against its rows.
async fn balanced(app: &TestApp, event_id: &str) -> Value {
    let event = app.event(event_id).await;
    assert_counts_match_rows(&app.pool, &event).await;
    event
}

#[tokio::test]
async fn joining_needs_a_sold_out_type_and_answers_the_entry_with_its_position() {
    let app = app(&[]).await;
    let (event_id, type_id) = event(&app, 3).await;
    let buyer = new_fingerprint();
    let (status, body) = join(&app, &event_id, json!({"quantity": 2}), &buyer).await;
    assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_AVAILABLE");
    assert_eq!(body["available"], 3, "{body}");
    assert_eq!(body["ticketTypeId"], type_id.as_str(), "{body}");

    hold(&app, &event_id, 2).await;
    // One left: a join for 2 waits, a join for 1 must buy instead.
    let (status, body) = join(&app, &event_id, json!({"quantity": 1}), &buyer).await;
    assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_AVAILABLE");
    assert_eq!(body["available"], 1, "{body}");
    let (status, first) = join(
        &app,
        &event_id,
        json!({"quantity": 2, "ticketTypeId": type_id}),
        &buyer,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["status"], "waiting");
    assert_eq!(first["position"], 1);
    assert_eq!(first["quantity"], 2);
    assert_eq!(first["eventId"], event_id.as_str());
    assert_eq!(first["ticketTypeId"], type_id.as_str());
    assert!(first["createdAt"].is_string(), "{first}");
    assert!(first["offer"].is_null(), "{first}");

    // The one left is set aside for the head: the public sees nothing to buy.
    let shown = balanced(&app, &event_id).await;
    assert_eq!(shown["waitingListLength"], 1, "{shown}");
    assert_eq!(shown["setAsideTickets"], 1, "{shown}");
    assert_eq!(shown["ticketTypes"][0]["available"], 0, "{shown}");
    assert_eq!(shown["ticketTypes"][0]["waiting"], 1, "{shown}");
    let (status, body) = app.purchase(&event_id, 1, &new_fingerprint()).await;
    assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_SOLD_OUT");

    // One entry per buyer and type; the next buyer is second.
    let (status, body) = join(&app, &event_id, json!({"quantity": 1}), &buyer).await;
    assert_error(status, &body, StatusCode::CONFLICT, "ALREADY_WAITING");
    let (second, _) = joined(&app, &event_id, 1).await;
    assert_eq!(second["position"], 2, "{second}");
}

#[tokio::test]
async fn bad_joins_are_refused_and_change_nothing() {
    let app = app(&[]).await;
    let (event_id, _) = event(&app, 1).await;
    hold(&app, &event_id, 1).await;
    let buyer = new_fingerprint();
    for (body, code, status) in [
        (
            json!({}),
            "VALIDATION_ERROR",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"quantity": 0}),
            "VALIDATION_ERROR",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"quantity": 11}),
            "VALIDATION_ERROR",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"quantity": 1, "ticketTypeId": "not-a-uuid"}),
            "VALIDATION_ERROR",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"quantity": 1, "ticketTypeId": uuid::Uuid::new_v4()}),
            "VALIDATION_ERROR",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (got, answer) = join(&app, &event_id, body.clone(), &buyer).await;
        assert_error(got, &answer, status, code);
    }
    let (status, body) = join(
        &app,
        &uuid::Uuid::new_v4().to_string(),
        json!({"quantity": 1}),
        &buyer,
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(app.row_count("waiting_list_entries").await, 0);
}

#[tokio::test]
async fn only_the_holder_reads_or_leaves_an_entry_and_the_organiser_lists_the_line() {
    let app = app(&[]).await;
    let (event_id, _) = event(&app, 1).await;
    hold(&app, &event_id, 1).await;
    let (first, buyer) = joined(&app, &event_id, 1).await;
    let (second, other) = joined(&app, &event_id, 1).await;
    let (status, body) = entry_of(&app, &first, &other).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
    let (status, body) = leave(&app, first["id"].as_str().unwrap(), &other).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
    let (status, body) = entry(&app, &uuid::Uuid::new_v4().to_string(), &buyer).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");

    let (status, mine) = app
        .send(
            app.request(Method::GET, "/waiting-list")
                .header("X-Device-Fingerprint", buyer.as_str()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(mine["data"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["data"][0]["id"], first["id"]);

    let path = format!("/events/{event_id}/waiting-list");
    let (status, body) = app.get(&path).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (status, line) = admin(&app, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{line}");
    let positions: Vec<&Value> = line["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["position"])
        .collect();
    assert_eq!(positions, [&json!(1), &json!(2)], "{line}");

    // Leaving moves the next one up; a left entry cannot be left again.
    let (status, left) = leave(&app, first["id"].as_str().unwrap(), &buyer).await;
    assert_eq!(status, StatusCode::OK, "{left}");
    assert_eq!(left["status"], "left");
    assert!(left["position"].is_null(), "{left}");
    assert_eq!(status_of(&app, &second, &other).await["position"], 1);
    let (status, body) = leave(&app, first["id"].as_str().unwrap(), &buyer).await;
    assert_error(status, &body, StatusCode::CONFLICT, "INVALID_STATUS");
    // Having left, the buyer may join again, at the back.
    let (status, again) = join(&app, &event_id, json!({"quantity": 1}), &buyer).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["position"], 2, "{again}");
}

#[tokio::test]
async fn a_cancel_offers_its_tickets_to_the_first_in_line_who_pays_for_them() {
    let app = app(&[]).await;
    let (event_id, _) = event(&app, 2).await;
    let (held, holder) = hold(&app, &event_id, 2).await;
    let (first, first_buyer) = joined(&app, &event_id, 1).await;
    let (second, second_buyer) = joined(&app, &event_id, 1).await;
    let (third, third_buyer) = joined(&app, &event_id, 1).await;

    let (status, body) = app.cancel(&held, &holder).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let offered = status_of(&app, &first, &first_buyer).await;
    assert_eq!(offered["status"], "offered", "{offered}");
    assert!(offered["position"].is_null(), "{offered}");
    let allocation = offered["offer"]["allocationId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(offered["offer"]["expiresAt"].is_string(), "{offered}");
    assert_eq!(
        status_of(&app, &second, &second_buyer).await["status"],
        "offered"
    );
    let waiting = status_of(&app, &third, &third_buyer).await;
    assert_eq!(waiting["status"], "waiting");
    assert_eq!(waiting["position"], 1);

    // The offer is a reserved hold of the buyer's, paid like any other.
    let (status, ticket) = app.ticket(&allocation, &first_buyer).await;
    assert_eq!(status, StatusCode::OK, "{ticket}");
    assert_eq!(ticket["status"], "reserved");
    assert_eq!(ticket["quantity"], 1);
    let (status, paid) = app.pay(&allocation, &first_buyer, None).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "purchased");
    assert_eq!(
        status_of(&app, &first, &first_buyer).await["status"],
        "accepted"
    );

    let shown = balanced(&app, &event_id).await;
    assert_eq!(shown["waitingListLength"], 1, "{shown}");
    assert_eq!(shown["availableTickets"], 0, "{shown}");
}

#[tokio::test]
async fn a_group_at_the_head_keeps_what_comes_back_until_it_has_enough() {
    let app = app(&[]).await;
    let (event_id, _) = event(&app, 4).await;
    let holds = [
        hold(&app, &event_id, 1).await,
        hold(&app, &event_id, 1).await,
        hold(&app, &event_id, 1).await,
        hold(&app, &event_id, 1).await,
    ];
    let (group, group_buyer) = joined(&app, &event_id, 3).await;
    let (single, single_buyer) = joined(&app, &event_id, 1).await;

    for (allocation, holder) in &holds[..2] {
        let (status, body) = app.cancel(allocation, holder).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Two came back: set aside for the group, not offered to the single behind it, and not
    // sold to anyone.
    assert_eq!(
        status_of(&app, &group, &group_buyer).await["status"],
        "waiting"
    );
    assert_eq!(
        status_of(&app, &single, &single_buyer).await["status"],
        "waiting"
    );
    let shown = balanced(&app, &event_id).await;
    assert_eq!(shown["availableTickets"], 2, "{shown}");
    assert_eq!(shown["setAsideTickets"], 2, "{shown}");
    assert_eq!(shown["ticketTypes"][0]["available"], 0, "{shown}");
    let (status, body) = app.purchase(&event_id, 1, &new_fingerprint()).await;
    assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_SOLD_OUT");
    let (status, body) = join(&app, &event_id, json!({"quantity": 1}), &new_fingerprint()).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "joins behind, cannot buy: {body}"
    );

    // A third comes back: the group gets all three at once.
    let (status, body) = app.cancel(&holds[2].0, &holds[2].1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let offered = status_of(&app, &group, &group_buyer).await;
    assert_eq!(offered["status"], "offered", "{offered}");
    let allocation = offered["offer"]["allocationId"].as_str().unwrap();
    assert_eq!(app.ticket(allocation, &group_buyer).await.1["quantity"], 3);
    let shown = balanced(&app, &event_id).await;
    assert_eq!(shown["setAsideTickets"], 0, "{shown}");
    assert_eq!(shown["availableTickets"], 0, "{shown}");
}

#[tokio::test]
async fn a_declined_or_lapsed_offer_passes_its_tickets_to_the_next_in_line() {
    let app = app(&["--waiting-list-offer-seconds", "1"]).await;
    let (event_id, _) = event(&app, 1).await;
    let (held, holder) = hold(&app, &event_id, 1).await;
    let (first, first_buyer) = joined(&app, &event_id, 1).await;
    let (second, second_buyer) = joined(&app, &event_id, 1).await;
    let (third, third_buyer) = joined(&app, &event_id, 1).await;
    app.cancel(&held, &holder).await;
    assert_eq!(
        status_of(&app, &first, &first_buyer).await["status"],
        "offered"
    );

    // Declined: its hold is cancelled and the ticket goes to the second.
    let (status, declined) = leave(&app, first["id"].as_str().unwrap(), &first_buyer).await;
    assert_eq!(status, StatusCode::OK, "{declined}");
    assert_eq!(declined["status"], "declined", "{declined}");
    let allocation = declined["offer"]["allocationId"].as_str().unwrap();
    assert_eq!(
        app.ticket(allocation, &first_buyer).await.1["status"],
        "cancelled"
    );
    let offered = status_of(&app, &second, &second_buyer).await;
    assert_eq!(offered["status"], "offered", "{offered}");

    // Lapsed: the sweeper expires the hold and the ticket goes to the third.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    boxoffice::sweeper::sweep_once(&app.state.sweeper)
        .await
        .unwrap();
    assert_eq!(
        status_of(&app, &second, &second_buyer).await["status"],
        "expired"
    );
    assert_eq!(
        status_of(&app, &third, &third_buyer).await["status"],
        "offered"
    );
    let shown = balanced(&app, &event_id).await;
    assert_eq!(shown["waitingListLength"], 0, "{shown}");
    assert_eq!(shown["reservedTickets"], 1, "{shown}");
}

#[tokio::test]
async fn a_refund_and_a_capacity_raise_feed_the_line() {
    let app = app(&[]).await;
    let (event_id, _) = event(&app, 1).await;
    let (held, holder) = hold(&app, &event_id, 1).await;
    let (status, paid) = app.pay(&held, &holder, None).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let (first, first_buyer) = joined(&app, &event_id, 1).await;
    let (second, second_buyer) = joined(&app, &event_id, 2).await;

    let (status, refunded) = admin(
        &app,
        Method::POST,
        &format!("/tickets/{held}/refund"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    assert_eq!(
        status_of(&app, &first, &first_buyer).await["status"],
        "offered"
    );

    let (status, body) = admin(
        &app,
        Method::PATCH,
        &format!("/events/{event_id}"),
        Some(json!({"totalTickets": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // One more ticket: set aside for the second, who waits for two.
    assert_eq!(body["setAsideTickets"], 1, "{body}");
    assert_eq!(
        status_of(&app, &second, &second_buyer).await["status"],
        "waiting"
    );
    let (status, body) = admin(
        &app,
        Method::PATCH,
        &format!("/events/{event_id}"),
        Some(json!({"totalTickets": 3})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        status_of(&app, &second, &second_buyer).await["status"],
        "offered"
    );
    let shown = balanced(&app, &event_id).await;
    assert_eq!(shown["availableTickets"], 0, "{shown}");
    assert_eq!(shown["setAsideTickets"], 0, "{shown}");
    assert_eq!(shown["reservedTickets"], 3, "{shown}");
}

#[tokio::test]
async fn the_stream_carries_the_line_length_and_each_types_waiting() {
    let app = app(&[]).await;
    let (event_id, type_id) = event(&app, 1).await;
    hold(&app, &event_id, 1).await;
    let mut stream =
        crate::helpers::SseReader::connect(&app, &format!("/events/{event_id}/stream")).await;
    joined(&app, &event_id, 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let message = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = stream.next(left).await.expect("a message with the line");
        if message.data["waitingListLength"] == 1 {
            break message;
        }
    };
    let types = message.data["ticketTypes"].as_array().unwrap();
    assert_eq!(types[0]["id"], type_id.as_str());
    assert_eq!(types[0]["waiting"], 1, "{:?}", message.data);
    assert_eq!(types[0]["available"], 0);

    // A rename moves nothing in the line: the streams hear an `event_updated`, not a
    // `waiting_list_changed` standing in for it.
    let (status, body) = admin(
        &app,
        Method::PATCH,
        &format!("/events/{event_id}"),
        Some(json!({"name": format!("Renamed {}", new_fingerprint())})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let renamed = stream
        .next(Duration::from_secs(10))
        .await
        .expect("a message for the rename");
    assert_eq!(
        renamed.data["lastEvent"]["type"], "event_updated",
        "{:?}",
        renamed.data
    );
    assert_eq!(renamed.data["waitingListLength"], 1);
}

/// Buys `quantity` of `type_id` as `buyer`, expecting 201: the allocation id.
async fn hold_of_type(
    app: &TestApp,
    event_id: &str,
    type_id: &str,
    quantity: i64,
    buyer: &str,
) -> String {
    let (status, body) = app
        .send(
            app.request(Method::POST, &format!("/events/{event_id}/tickets"))
                .header("X-Device-Fingerprint", buyer)
                .json(&json!({"quantity": quantity, "ticketTypeId": type_id})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    id_of(&body)
}

/// Caps what one buyer may hold of the event at `cap` tickets.
async fn cap_per_buyer(app: &TestApp, event_id: &str, cap: i64) {
    let (status, body) = admin(
        app,
        Method::PATCH,
        &format!("/events/{event_id}"),
        Some(json!({"maxTicketsPerFingerprint": cap})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A quota "Stalls" of 2 tickets over `type_id`: its id.
async fn stalls(app: &TestApp, event_id: &str, type_id: &str) -> String {
    let (status, body) = admin(
        app,
        Method::POST,
        &format!("/events/{event_id}/quotas"),
        Some(json!({"name": "Stalls", "size": 2, "ticketTypeIds": [type_id]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    id_of(&body)
}

/// A second type of the event, free: its id.
async fn second_type(app: &TestApp, event_id: &str, name: &str) -> String {
    let (status, body) = admin(
        app,
        Method::POST,
        &format!("/events/{event_id}/ticket-types"),
        Some(json!({"name": name, "price": 0})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    id_of(&body)
}

#[tokio::test]
async fn the_per_buyer_cap_holds_for_a_join_and_a_buyer_it_leaves_no_room_for_is_passed_over() {
    let app = app(&[]).await;
    let (event_id, default_type) = event(&app, 10).await;
    cap_per_buyer(&app, &event_id, 2).await;
    let other_type = second_type(&app, &event_id, "Balcony").await;
    // The default type in a quota of 2, sold out; the event keeps 8 for the other type.
    stalls(&app, &event_id, &default_type).await;
    let (held, holder) = hold(&app, &event_id, 2).await;

    // Sold out, but a line is no way round the cap: 2 held + 1 wanted > 2.
    let (status, body) = join(&app, &event_id, json!({"quantity": 1}), &holder).await;
    assert_error(status, &body, StatusCode::CONFLICT, "FINGERPRINT_LIMIT");
    assert_eq!(body["held"], 2, "{body}");
    assert_eq!(app.row_count("waiting_list_entries").await, 0);
    let (status, body) = join(&app, &event_id, json!({"quantity": 3}), &new_fingerprint()).await;
    assert_error(status, &body, StatusCode::CONFLICT, "FINGERPRINT_LIMIT");
    assert_eq!(body["held"], 0, "more than the cap on its own: {body}");
    assert_eq!(app.row_count("waiting_list_entries").await, 0);

    // A buyer joins for 2, then buys 1 of the other type: at their turn they cannot take 2.
    let (first, first_buyer) = joined(&app, &event_id, 2).await;
    hold_of_type(&app, &event_id, &other_type, 1, &first_buyer).await;
    let (second, second_buyer) = joined(&app, &event_id, 2).await;
    let (status, body) = app.cancel(&held, &holder).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let passed = status_of(&app, &first, &first_buyer).await;
    assert_eq!(passed["status"], "expired", "{passed}");
    assert!(
        passed["offer"].is_null(),
        "passed over without an offer: {passed}"
    );
    let offered = status_of(&app, &second, &second_buyer).await;
    assert_eq!(offered["status"], "offered", "the line moves on: {offered}");
    let shown = balanced(&app, &event_id).await;
    assert_eq!(shown["setAsideTickets"], 0, "{shown}");
    assert_eq!(shown["waitingListLength"], 0, "{shown}");
}

#[tokio::test]
async fn a_head_wanting_more_than_the_type_can_ever_have_holds_nobody_up() {
    let app = app(&[]).await;
    let (event_id, default_type) = event(&app, 10).await;
    let quota_id = stalls(&app, &event_id, &default_type).await;
    let (held, holder) = hold(&app, &event_id, 1).await;
    hold(&app, &event_id, 1).await;
    let (status, body) = admin(
        &app,
        Method::PATCH,
        &format!("/events/{event_id}/quotas/{quota_id}"),
        Some(json!({"size": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Three can never fit a quota of 2: the group waits, the single behind it is not held up.
    let (group, group_buyer) = joined(&app, &event_id, 3).await;
    let (single, single_buyer) = joined(&app, &event_id, 1).await;
    let (status, body) = app.cancel(&held, &holder).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let waiting = status_of(&app, &group, &group_buyer).await;
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    assert_eq!(waiting["position"], 1, "{waiting}");
    assert_eq!(
        status_of(&app, &single, &single_buyer).await["status"],
        "offered"
    );
    let shown = balanced(&app, &event_id).await;
    assert_eq!(shown["setAsideTickets"], 0, "{shown}");

    // The quota raised to 5 (3 free): the group is served first.
    let (status, body) = admin(
        &app,
        Method::PATCH,
        &format!("/events/{event_id}/quotas/{quota_id}"),
        Some(json!({"size": 5})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        status_of(&app, &group, &group_buyer).await["status"],
        "offered"
    );
    balanced(&app, &event_id).await;
}

#[tokio::test]
async fn a_type_off_sale_is_offered_nothing_until_it_is_back_on_sale() {
    let app = app(&[]).await;
    let (event_id, default_type) = event(&app, 2).await;
    let other_type = second_type(&app, &event_id, "Balcony").await;
    let (held, holder) = hold(&app, &event_id, 2).await;
    let (waiting, waiting_buyer) = joined(&app, &event_id, 2).await;
    let (status, body) = admin(
        &app,
        Method::PATCH,
        &format!("/events/{event_id}/ticket-types/{default_type}"),
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Two come back while the type is inactive: no offer, nothing set aside, and the other
    // type's buyers may have them.
    let (status, body) = app.cancel(&held, &holder).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let still = status_of(&app, &waiting, &waiting_buyer).await;
    assert_eq!(still["status"], "waiting", "{still}");
    let shown = balanced(&app, &event_id).await;
    assert_eq!(shown["setAsideTickets"], 0, "{shown}");
    let other_buyer = new_fingerprint();
    let balcony = hold_of_type(&app, &event_id, &other_type, 1, &other_buyer).await;

    // Back on sale: the one left is set aside for the head, and the balcony's return makes two.
    let (status, body) = admin(
        &app,
        Method::PATCH,
        &format!("/events/{event_id}/ticket-types/{default_type}"),
        Some(json!({"active": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let shown = balanced(&app, &event_id).await;
    assert_eq!(shown["setAsideTickets"], 1, "{shown}");
    let (status, body) = app.cancel(&balcony, &other_buyer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let offered = status_of(&app, &waiting, &waiting_buyer).await;
    assert_eq!(offered["status"], "offered", "{offered}");
    let shown = balanced(&app, &event_id).await;
    assert_eq!(shown["reservedTickets"], 2, "{shown}");
    assert_eq!(shown["setAsideTickets"], 0, "{shown}");
}

#[tokio::test]
async fn asking_for_more_than_exists_stops_nobody_buying_and_nobody_behind() {
    let app = app(&[]).await;
    let (event_id, _) = event(&app, 2).await;
    // Three of an event of two: it may wait (for a raise), but closes nothing.
    let (greedy, greedy_buyer) = joined(&app, &event_id, 3).await;
    let shown = balanced(&app, &event_id).await;
    assert_eq!(shown["ticketTypes"][0]["available"], 2, "{shown}");
    assert_eq!(shown["ticketTypes"][0]["waiting"], 1, "{shown}");
    assert_eq!(shown["waitingListLength"], 1, "{shown}");
    let (held, holder) = hold(&app, &event_id, 1).await;
    let (status, body) = join(&app, &event_id, json!({"quantity": 1}), &new_fingerprint()).await;
    assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_AVAILABLE");
    assert_eq!(body["available"], 1, "{body}");
    hold(&app, &event_id, 1).await;

    // Sold out: a single joins behind the greedy entry and the next ticket back is theirs.
    let (single, single_buyer) = joined(&app, &event_id, 1).await;
    assert_eq!(single["position"], 2, "{single}");
    let (status, body) = app.cancel(&held, &holder).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        status_of(&app, &single, &single_buyer).await["status"],
        "offered"
    );
    let still = status_of(&app, &greedy, &greedy_buyer).await;
    assert_eq!(still["status"], "waiting", "{still}");
    assert_eq!(still["position"], 1, "{still}");
    balanced(&app, &event_id).await;
}

#[tokio::test]
async fn a_head_who_buys_up_to_the_cap_elsewhere_is_passed_over_by_that_purchase() {
    let app = app(&[]).await;
    let (event_id, default_type) = event(&app, 5).await;
    cap_per_buyer(&app, &event_id, 2).await;
    let vip = second_type(&app, &event_id, "VIP").await;
    stalls(&app, &event_id, &default_type).await;
    let (held, holder) = hold(&app, &event_id, 1).await;
    hold(&app, &event_id, 1).await;
    let (head, head_buyer) = joined(&app, &event_id, 2).await;
    let (next, next_buyer) = joined(&app, &event_id, 1).await;
    let (status, body) = app.cancel(&held, &holder).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let shown = balanced(&app, &event_id).await;
    assert_eq!(shown["setAsideTickets"], 1, "kept for the head: {shown}");

    // The head buys a VIP ticket: 1 held + 2 wanted > 2. That purchase passes it over, and the
    // ticket set aside for it goes to the next in line at once.
    hold_of_type(&app, &event_id, &vip, 1, &head_buyer).await;
    let passed = status_of(&app, &head, &head_buyer).await;
    assert_eq!(passed["status"], "expired", "{passed}");
    let offered = status_of(&app, &next, &next_buyer).await;
    assert_eq!(offered["status"], "offered", "{offered}");
    let shown = balanced(&app, &event_id).await;
    assert_eq!(shown["setAsideTickets"], 0, "{shown}");
    assert_eq!(shown["waitingListLength"], 0, "{shown}");
}
